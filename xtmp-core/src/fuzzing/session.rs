//! An established session (fixed keys) fed arbitrary frames, and mutated
//! copies of real frames that must all be rejected without a trace.

use alloc::collections::BTreeSet;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use arbitrary::Unstructured;
use bytes::Bytes;

use super::fixture::{self, Sealer, established, forged_frame};
use crate::crypto::AeadAlgorithm;
use crate::handshake::Role;
use crate::session::{CloseCode, Event, PathId, PathKind, SendOptions, Session};
use crate::wire::{Flags, Frame, MessageType, offset};

fn cipher(bit: bool) -> AeadAlgorithm {
    if bit { AeadAlgorithm::ChaCha20Poly1305 } else { AeadAlgorithm::Aes256Gcm }
}

/// A message type the fuzzer picks, weighted towards the ones a session
/// handles after the handshake.
fn message_type(u: &mut Unstructured<'_>) -> arbitrary::Result<MessageType> {
    const KNOWN: [u8; 13] = [0x03, 0x04, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xFE, 0x01];
    Ok(MessageType(match u.int_in_range(0..=3u8)? {
        0 => *u.choose(&KNOWN)?,
        1 => u.int_in_range(0x10..=0x4F)?,
        2 => u.int_in_range(0x50..=0xBF)?,
        _ => u.arbitrary()?,
    }))
}

/// A plaintext the fuzzer builds: a data header (any kind, ids, order),
/// maybe a fragment header, then a body; or any bytes at all.
fn plaintext(u: &mut Unstructured<'_>, flags: Flags) -> arbitrary::Result<Vec<u8>> {
    if u.ratio(1, 4)? {
        return u.arbitrary();
    }
    let mut p = Vec::new();
    p.push(u.int_in_range(0..=3u8)?);
    p.extend_from_slice(&u.int_in_range(0..=40u64)?.to_be_bytes());
    p.extend_from_slice(&u.int_in_range(0..=40u64)?.to_be_bytes());
    p.extend_from_slice(&u.int_in_range(0..=20u64)?.to_be_bytes());
    if flags.contains(Flags::FRAGMENTED) {
        let total = match u.int_in_range(0..=3u8)? {
            0 => u32::MAX,
            _ => u.int_in_range(1..=70_000u32)?,
        };
        p.extend_from_slice(&u.int_in_range(0..=total)?.to_be_bytes());
        p.extend_from_slice(&total.to_be_bytes());
    }
    let body: Vec<u8> = u.arbitrary()?;
    p.extend_from_slice(&body);
    Ok(p)
}

/// Drains `s`'s output and events; checks the bounds that hold after any
/// input. Returns the messages delivered.
fn drain(s: &mut Session, now: crate::time::Instant, buf: &mut [u8], bound: u64) -> Vec<Bytes> {
    let mut n = 0;
    while let Ok(Some(_)) = s.poll_transmit(now, buf) {
        n += 1;
        assert!(n < 10_000, "poll_transmit never runs dry");
    }
    let mut got = Vec::new();
    while let Some(e) = s.poll_event() {
        if let Event::Message(m) = e {
            got.push(m.body);
        }
    }
    let stats = s.stats();
    assert!(stats.reassembly_bytes <= bound, "{} bytes held for reassembly", stats.reassembly_bytes);
    assert!(s.is_closed() || s.poll_timeout().is_some(), "a live session without a timer");
    got
}

/// A server session fed frames sealed with the client's real keys (any
/// type, flags, sequence number, key generation and plaintext), forged and
/// raw bytes, replays of earlier inputs, time, and its own sends.
pub fn session_input(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut u = Unstructured::new(rest);
    let kind = if mode & 1 == 0 { PathKind::Datagram } else { PathKind::Stream };
    let alg = cipher(mode & 2 != 0);
    let config = Arc::new(fixture::small_config());
    let bound = (config.max_reassembly_bytes + 3 * 2 * (16 << 20)) as u64;
    let mut server = established(Role::Server, kind, alg, config);
    let mut sealers: Vec<Sealer> = (0..3).map(|g| Sealer::with_generation(alg, g)).collect();
    let mut now = fixture::start();
    let mut buf = alloc::vec![0u8; 65_536];
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut next_seq = 0u64;
    while !u.is_empty() {
        let Ok(op) = u.int_in_range(0..=9u8) else { break };
        let input = match op {
            0..=4 => (|| {
                let ty = message_type(&mut u)?;
                let flags = Flags::from_bits_retain(u.arbitrary()?);
                let seq = match u.int_in_range(0..=5u8)? {
                    0 => u.arbitrary()?,
                    1 => next_seq.saturating_sub(u.int_in_range(1..=8u64)?),
                    _ => {
                        next_seq += 1;
                        next_seq - 1
                    }
                };
                let generation = u.int_in_range(0..=5usize)? % 3;
                let p = plaintext(&mut u, flags)?;
                sealers[generation].seal(ty, flags, seq, &p).ok_or(arbitrary::Error::IncorrectFormat)
            })()
            .ok(),
            5 => forged_frame(&mut u, &[fixture::SERVER_SID]).ok(),
            6 => u.arbitrary::<Vec<u8>>().ok(),
            7 => u.choose(&sent).ok().cloned(),
            8 => {
                now = now.saturating_add(Duration::from_millis(u.int_in_range(0..=20_000u64).unwrap_or(0)));
                server.handle_timeout(now);
                None
            }
            _ => {
                match u.int_in_range(0..=4u8).unwrap_or(0) {
                    0 => {
                        let _ = server.update_key_now(now);
                    }
                    1 => server.close(now, CloseCode::NO_ERROR, "done"),
                    2 => {
                        let to = crate::session::MessageId(u.int_in_range(1..=40u64).unwrap_or(1));
                        let _ = server.respond(
                            to,
                            MessageType(0x20),
                            Bytes::from_static(b"answer"),
                            SendOptions::default(),
                        );
                    }
                    _ => {
                        let size = u.int_in_range(0..=5_000usize).unwrap_or(0);
                        let opts = SendOptions { reliable: u.arbitrary().unwrap_or(true), ..SendOptions::default() };
                        let _ = server.send(MessageType(0x20), Bytes::from(alloc::vec![7u8; size]), opts);
                    }
                }
                None
            }
        };
        if let Some(bytes) = input {
            server.handle_input(now, PathId(0), &bytes);
            sent.push(bytes);
        }
        drain(&mut server, now, &mut buf, bound);
    }
}

/// Sets ENCRYPTED again (a frame turned cleartext is a handshake frame, a
/// different input) and maybe fixes the CRC.
fn reencrypt_flag(frame: &mut [u8], fix_crc: bool) {
    if frame.len() > offset::FLAGS {
        frame[offset::FLAGS] |= Flags::ENCRYPTED.bits();
    }
    if fix_crc {
        super::fixture::fix_crcs(frame);
    }
}

/// Real frames from a client, not yet delivered, mutated (bit flips and
/// byte writes anywhere in the frame, or a truncation; the CRC fixed or
/// not): every one is rejected, and the server's authenticated state (its
/// replay window, key generations, paths, queues, events, timers) does not
/// move. Then the real frames go through, and every message arrives once.
pub fn session_tamper(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut u = Unstructured::new(rest);
    let alg = cipher(mode & 1 != 0);
    // The client sends a few messages; its frames are collected one by one.
    // They fit in the initial congestion window, so all leave at once: no
    // pacer or path MTU probe holds any back while time stands still.
    let mut config = fixture::small_config();
    config.pacing = false;
    config.mtu_discovery = None;
    let config = Arc::new(config);
    let mut client = established(Role::Client, PathKind::Datagram, alg, config.clone());
    let mut server = established(Role::Server, PathKind::Datagram, alg, config);
    let now = fixture::start();
    let mut buf = alloc::vec![0u8; 65_536];
    let count = u.int_in_range(1..=6usize).unwrap_or(1);
    let mut bodies = BTreeSet::new();
    for i in 0..count {
        let size = u.int_in_range(1..=1_500usize).unwrap_or(10);
        let body = Bytes::from(alloc::vec![i as u8; size]);
        let opts = SendOptions { reliable: u.arbitrary().unwrap_or(true), ..SendOptions::default() };
        if client.send(MessageType(0x20), body.clone(), opts).is_ok() {
            bodies.insert(body);
        }
        if i == 0 && u.arbitrary().unwrap_or(false) {
            let _ = client.update_key_now(now);
        }
    }
    let mut frames: Vec<Vec<u8>> = Vec::new();
    while let Ok(Some(t)) = client.poll_transmit(now, &mut buf) {
        let mut rest = &buf[..t.len];
        while let Ok((_, used)) = Frame::decode(rest, u32::MAX) {
            frames.push(rest[..used].to_vec());
            rest = &rest[used..];
        }
    }
    let mut delivered = alloc::vec![false; frames.len()];
    let mut received: Vec<Bytes> = Vec::new();
    while !u.is_empty() {
        let Ok(i) = u.choose_index(frames.len()) else { break };
        if u.ratio(1, 4).unwrap_or(false) {
            // A genuine frame goes through: later tampering starts from a
            // window that has moved.
            server.handle_input(now, PathId(0), &frames[i]);
            delivered[i] = true;
            received.extend(drain(&mut server, now, &mut buf, u64::MAX));
            continue;
        }
        if delivered[i] {
            continue;
        }
        let mut bad = frames[i].clone();
        let Ok(flips) = u.int_in_range(1..=4u8) else { break };
        for _ in 0..flips {
            let (Ok(at), Ok(x)) = (u.choose_index(bad.len()), u.int_in_range(1..=255u8)) else { break };
            bad[at] ^= x;
        }
        if u.ratio(1, 6).unwrap_or(false) {
            let keep = u.int_in_range(0..=bad.len() - 1).unwrap_or(0);
            bad.truncate(keep);
        }
        reencrypt_flag(&mut bad, u.ratio(3, 4).unwrap_or(true));
        if bad == frames[i] {
            continue;
        }
        let before = server.authenticated_state();
        server.handle_input(now, PathId(0), &bad);
        assert_eq!(server.authenticated_state(), before, "a tampered frame changed the session");
        assert!(server.poll_event().is_none(), "a tampered frame produced an event");
    }
    for (i, f) in frames.iter().enumerate() {
        if !delivered[i] {
            server.handle_input(now, PathId(0), f);
            received.extend(drain(&mut server, now, &mut buf, u64::MAX));
        }
    }
    assert!(!server.is_closed(), "tampering closed the session");
    let got: BTreeSet<Bytes> = received.iter().cloned().collect();
    let summary = |set: &BTreeSet<Bytes>| set.iter().map(|b| (b[0], b.len())).collect::<Vec<_>>();
    assert_eq!(got.len(), received.len(), "a message arrived twice");
    assert!(got == bodies, "messages lost or changed: got {:?}, sent {:?}", summary(&got), summary(&bodies));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::CloseReason;

    /// A data record: kind 0, message id 1, no correlation, order 1.
    fn record(fragment: Option<(u32, u32)>, body: &[u8]) -> Vec<u8> {
        let mut p = alloc::vec![0u8];
        p.extend_from_slice(&1u64.to_be_bytes());
        p.extend_from_slice(&0u64.to_be_bytes());
        p.extend_from_slice(&1u64.to_be_bytes());
        if let Some((offset, total)) = fragment {
            p.extend_from_slice(&offset.to_be_bytes());
            p.extend_from_slice(&total.to_be_bytes());
        }
        p.extend_from_slice(body);
        p
    }

    /// Closes `server` after `frame` and returns why it closed.
    fn closed_after(frame: &[u8]) -> (Option<CloseReason>, Vec<Event>) {
        let mut server = established(Role::Server, PathKind::Datagram, AeadAlgorithm::Aes256Gcm, Arc::default());
        server.handle_input(fixture::start(), PathId(0), frame);
        let mut buf = alloc::vec![0u8; 2048];
        while let Ok(Some(_)) = server.poll_transmit(fixture::start(), &mut buf) {}
        server.handle_timeout(fixture::start().saturating_add(Duration::from_secs(60)));
        let events: Vec<Event> = core::iter::from_fn(|| server.poll_event()).collect();
        let closed = events.iter().find_map(|e| match e {
            Event::Closed(r) => Some(r.clone()),
            _ => None,
        });
        (closed, events)
    }

    /// SPEC.md section 4.3: an ACK block carried in a data frame (kind bit
    /// `40`) is checked like an ACK frame, and a bad one closes the session
    /// before the message is delivered.
    #[test]
    fn a_malformed_attached_ack_closes_the_session_and_delivers_nothing() {
        // largest 0 ‖ delay ‖ count ‖ first range 0: valid, but this server
        // has sent nothing.
        let never_sent = [0u8; 21];
        let mut too_many = [0u8; 21];
        too_many[12] = 32;
        let mut ranges_missing = [0u8; 21];
        ranges_missing[12] = 1;
        let cases: [(&[u8], &str); 4] = [
            (&never_sent, "never sent"),
            (&too_many, "malformed ACK in a data frame"),
            (&ranges_missing, "malformed ACK in a data frame"),
            (&never_sent[..20], "malformed ACK in a data frame"),
        ];
        for (ack, why) in cases {
            let mut plain = record(None, b"");
            plain[0] |= 0x40;
            plain.extend_from_slice(ack);
            if ack.len() == 21 {
                plain.extend_from_slice(b"body");
            }
            let frame = Sealer::with_generation(AeadAlgorithm::Aes256Gcm, 0)
                .seal(MessageType::BUNDLE_SUBMIT, Flags::REQUIRES_ACK, 0, &plain)
                .unwrap();
            let (closed, events) = closed_after(&frame);
            assert!(matches!(&closed, Some(CloseReason::ProtocolViolation(w)) if w.contains(why)), "{why}: {closed:?}");
            assert!(!events.iter().any(|e| matches!(e, Event::Message(_))), "{why}: nothing delivered");
        }
    }

    /// SPEC.md section 4.8: a compressed body that declares more than the
    /// receiver's maximum message is refused from its prefix (whole, or in
    /// the first fragment), before anything is allocated for it.
    #[test]
    fn a_compression_bomb_closes_the_session_before_allocating() {
        let mut bomb = (u32::MAX).to_be_bytes().to_vec();
        bomb.extend_from_slice(&[0x1f, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff]);
        let flags = Flags::COMPRESSED | Flags::REQUIRES_ACK;
        let cases = [(flags, record(None, &bomb)), (flags | Flags::FRAGMENTED, record(Some((0, 1_000_000)), &bomb))];
        for (flags, plain) in cases {
            let mut server = established(Role::Server, PathKind::Datagram, AeadAlgorithm::Aes256Gcm, Arc::default());
            let frame = Sealer::with_generation(AeadAlgorithm::Aes256Gcm, 0)
                .seal(MessageType::BUNDLE_SUBMIT, flags, 0, &plain)
                .unwrap();
            server.handle_input(fixture::start(), PathId(0), &frame);
            assert_eq!(server.stats().reassembly_bytes, 0, "{flags:?}: nothing held");
            // The Disconnect goes out, then the session drains and closes.
            let mut buf = alloc::vec![0u8; 2048];
            while let Ok(Some(_)) = server.poll_transmit(fixture::start(), &mut buf) {}
            server.handle_timeout(fixture::start().saturating_add(Duration::from_secs(60)));
            let closed = core::iter::from_fn(|| server.poll_event()).find_map(|e| match e {
                Event::Closed(r) => Some(r),
                _ => None,
            });
            assert!(
                matches!(&closed, Some(CloseReason::ProtocolViolation(w)) if w.contains("compressed body declares")),
                "{flags:?}: {closed:?}"
            );
        }
    }
}
