//! The hello flood (SPEC.md 3.2, "Admission"): copies of the clients'
//! ClientHello datagrams sent from spoofed addresses over many prefixes,
//! and the invariants it is held to: the server amplifies nothing toward
//! a spoofed address, and its half-open state stays within its limits.

use super::*;

/// The /16 the flood's spoofed addresses come from.
pub(super) fn is_spoofed(addr: SocketAddr) -> bool {
    matches!(addr.ip(), std::net::IpAddr::V4(a) if a.octets()[..2] == [172, 16])
}

/// At most this many hellos are kept to copy.
const KEPT_HELLOS: usize = 8;

/// Data bytes per spoofed datagram (a 1,200-byte datagram with its frame
/// and handshake headers).
const CHUNK: usize = 1200 - xtmp_core::wire::HEADER_LEN - 10;

impl World {
    /// Reassembles the ClientHellos the clients send (stage `00` chunks,
    /// by client id) and keeps a few whole ones for the flood to copy.
    pub(super) fn capture_hello(&mut self, mut bytes: &[u8]) {
        if self.scenario.flood.is_none() {
            return;
        }
        // A datagram, or a stream write: one frame or several.
        while self.hellos.len() < KEPT_HELLOS {
            let Ok((frame, n)) = xtmp_core::wire::Frame::decode(bytes, 1 << 20) else { return };
            self.capture_hello_frame(&frame);
            bytes = &bytes[n..];
        }
    }

    fn capture_hello_frame(&mut self, frame: &xtmp_core::wire::Frame<'_>) {
        let h = frame.header();
        let p = frame.payload();
        let stage00 = h.message_type == MessageType::HANDSHAKE
            && !h.flags.contains(xtmp_core::wire::Flags::ENCRYPTED)
            && p.first() == Some(&0)
            && p.len() > 10 + usize::from(p[9]);
        if !stage00 {
            return;
        }
        let offset = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
        let data = &p[10 + usize::from(p[9])..];
        let buf = match self.hello_parts.iter_mut().find(|(cid, _)| *cid == h.session_id) {
            Some((_, b)) => b,
            None => {
                self.hello_parts.push((h.session_id, Vec::new()));
                &mut self.hello_parts.last_mut().expect("just pushed").1
            }
        };
        if buf.len() < offset + data.len() {
            buf.resize(offset + data.len(), 0);
        }
        buf[offset..offset + data.len()].copy_from_slice(data);
        let done = buf.len() >= 4 && buf.len() >= 4 + u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
        if done {
            let hello = buf.clone();
            self.hello_parts.retain(|(cid, _)| *cid != h.session_id);
            self.hellos.push(hello);
        }
    }

    /// One spoofed hello, from an address in one of the flood's prefixes:
    /// a kept hello made new (a fresh client id and its mac1, as anyone
    /// who knows the server's public key id can), its first datagram or
    /// all of it.
    pub(super) fn flood(&mut self) {
        let Some(f) = self.scenario.flood else { return };
        let gap = self.choices.exponential(nanos(f.interval) as f64) as u64 + 1;
        let next = self.now + gap;
        self.next_flood = (next < nanos(f.until)).then_some(next);
        if f.forgeries > 0.0 && self.choices.chance(f.forgeries) {
            return self.forge_off_path();
        }
        if self.hellos.is_empty() {
            return;
        }
        if f.tcp_hellos > 0.0 && self.choices.chance(f.tcp_hellos) {
            return self.tcp_hello();
        }
        if f.stalled_streams > 0.0 && self.choices.chance(f.stalled_streams) {
            return self.stalled_stream();
        }
        let k = self.choices.below(self.hellos.len() as u64) as usize;
        let cid = self.choices.between(1, u64::MAX - 1);
        let Some(hello) = fresh_hello(&self.hellos[k], cid) else { return };
        let prefix = self.choices.below(u64::from(f.prefixes.max(1))) as u8;
        let host = self.choices.between(1, 254) as u8;
        let port = self.choices.between(1024, 65_535) as u16;
        let src = SocketAddr::from(([172, 16, prefix, host], port));
        let whole = self.choices.chance(f.whole);
        self.counters.injected += 1;
        self.marks.insert(Mark::Flooded);
        self.note(&[16, whole as u64], || "flood".into(), "inject", || format!("hello from {src}, whole {whole}"));
        let frames = hello_frames(&hello, cid, CHUNK);
        let count = if whole { frames.len() } else { 1 };
        for bytes in frames.into_iter().take(count) {
            *self.spoofed_in.entry(src).or_default() += bytes.len() as u64;
            let n = self.next_packet;
            self.next_packet += 1;
            let at = self.now + self.choices.below(SECOND / 1000);
            let dest = Dest::Server { src, kind: RemoteKind::Datagram, conn: None };
            self.inflight.insert((at, n), Packet { dest, bytes, fault: Fault::None, forged: true });
        }
    }

    /// A fresh hello, whole, over a new TCP connection from one of 32
    /// addresses, never finished (the attacker reads nothing).
    fn tcp_hello(&mut self) {
        let k = self.choices.below(self.hellos.len() as u64) as usize;
        let cid = self.choices.between(1, u64::MAX - 1);
        let Some(hello) = fresh_hello(&self.hellos[k], cid) else { return };
        // A stream's handshake frames carry at most 1,024 payload bytes.
        let bytes = hello_frames(&hello, cid, 1024 - 10).concat();
        let host = 1 + self.choices.below(32) as u8;
        let src = SocketAddr::from(([172, 16, 200, host], self.choices.between(1024, 65_535) as u16));
        self.counters.injected += 1;
        self.marks.insert(Mark::Flooded);
        if let Some(e) = &mut self.server.endpoint {
            e.stream_opened(self.server.clock.local(self.now), Remote { addr: src, kind: RemoteKind::Stream });
        }
        let n = self.next_packet;
        self.next_packet += 1;
        let at = self.now + self.choices.below(SECOND / 1000);
        let dest = Dest::Server { src, kind: RemoteKind::Stream, conn: None };
        self.inflight.insert((at, n), Packet { dest, bytes, fault: Fault::None, forged: true });
    }

    /// A TCP connection from one of 250 addresses that stays silent, or
    /// sends the start of a frame and stalls: a handshake frame of 1,000
    /// bytes (within what a connection outside a session may send), one of
    /// 60,000 (closed at its header), or a sealed frame of 60,000 bytes
    /// naming a session the server does not hold (skipped unread, answered
    /// with a stateless reset if the server has a reset key).
    fn stalled_stream(&mut self) {
        use xtmp_core::wire::{EncryptionType, Flags, Frame, HEADER_LEN, Header};
        let host = 1 + self.choices.below(250) as u8;
        let src = SocketAddr::from(([172, 16, 201, host], self.choices.between(1024, 65_535) as u16));
        let remote = Remote { addr: src, kind: RemoteKind::Stream };
        self.counters.injected += 1;
        self.marks.insert(Mark::Flooded);
        if let Some(e) = &mut self.server.endpoint {
            e.stream_opened(self.server.clock.local(self.now), remote);
        }
        if self.choices.chance(0.4) {
            return; // silent
        }
        let mut header = Header::new(MessageType::HANDSHAKE, self.choices.between(1, u64::MAX - 1), 0);
        let (len, sent) = match self.choices.below(3) {
            0 => (1_000, 500),
            1 => (60_000, 1_000),
            _ => {
                header.message_type = MessageType::WALLET_BALANCE;
                header.flags = Flags::ENCRYPTED;
                header.encryption = EncryptionType::AES_256_GCM;
                (60_000, 1_000)
            }
        };
        let mut frame = vec![0u8; HEADER_LEN + len];
        let n = Frame::encode(&header, &vec![7u8; len], &mut frame).expect("a well-formed frame");
        frame.truncate(n.min(HEADER_LEN + sent));
        let k = self.next_packet;
        self.next_packet += 1;
        let at = self.now + self.choices.below(SECOND / 1000);
        let dest = Dest::Server { src, kind: RemoteKind::Stream, conn: None };
        self.inflight.insert((at, k), Packet { dest, bytes: frame, fault: Fault::None, forged: true });
    }

    /// A captured sealed frame of a client, forged (another sequence
    /// number, a fresh CRC) and sent to the server from a spoofed address.
    fn forge_off_path(&mut self) {
        let sealed: Vec<usize> = (0..self.captured.len())
            .filter(|&i| {
                let (dest, _, bytes) = &self.captured[i];
                matches!(dest, Dest::Server { kind: RemoteKind::Datagram, .. })
                    && xtmp_core::wire::Frame::decode(bytes, 1 << 20)
                        .is_ok_and(|(f, _)| f.header().flags.contains(xtmp_core::wire::Flags::ENCRYPTED))
            })
            .collect();
        // The latest of them, one ciphertext bit flipped, racing the
        // genuine frame (which is still on its way): its sequence number is
        // unseen, so only the AEAD refuses it.
        let Some(&k) = sealed.last() else { return };
        let Some(bytes) = flip(&self.captured[k].2, self.choices.draw()) else { return };
        let prefix = self.choices.below(16) as u8;
        let src = SocketAddr::from(([172, 16, prefix, self.choices.between(1, 254) as u8], 7000));
        *self.spoofed_in.entry(src).or_default() += bytes.len() as u64;
        self.counters.injected += 1;
        let n = self.next_packet;
        self.next_packet += 1;
        let dest = Dest::Server { src, kind: RemoteKind::Datagram, conn: None };
        self.inflight.insert((self.now, n), Packet { dest, bytes, fault: Fault::None, forged: true });
    }

    /// The server sent `len` bytes to a spoofed address: never more than
    /// three times what it received from it (SPEC.md 3.2, "Amplification").
    pub(super) fn sent_to_spoofed(&mut self, addr: SocketAddr, len: usize) {
        let out = self.spoofed_out.entry(addr).or_default();
        *out += len as u64;
        let (out, inn) = (*out, self.spoofed_in.get(&addr).copied().unwrap_or(0));
        if out > 3 * inn {
            self.violation(format!("server sent {out} B to spoofed {addr}, which sent {inn} B: amplification"));
        }
    }

    /// The endpoint's half-open state is within its limits, and so are
    /// the stream connections not in a session: each is reset within the
    /// hello timeout (of the server's clock, checked every 100 ms) and
    /// holds at most one frame.
    pub(super) fn check_half_open(&mut self) {
        let Some(e) = &self.server.endpoint else { return };
        let (proven, unproven) = e.half_open_counts();
        let (streams, bytes, oldest) = e.unrouted_streams();
        let c = self.endpoint_config.clone();
        let mut problems = Vec::new();
        if proven > c.max_half_open || unproven > c.max_unproven_hellos + c.max_half_open {
            problems.push(format!("server: {proven} proven and {unproven} unproven hellos half open"));
        }
        let frame = xtmp_core::wire::HEADER_LEN + c.server.params.max_frame_payload as usize;
        if bytes > streams * frame {
            problems.push(format!("server: {bytes} bytes held for {streams} streams not in a session"));
        }
        let local = self.server.clock.local(self.now);
        if let Some(t) = oldest
            && local.saturating_duration_since(t) > c.hello_timeout + Duration::from_millis(200)
        {
            problems.push(format!("server: a stream not in a session outlived the hello timeout ({streams} held)"));
        }
        for p in problems {
            self.violation(p);
        }
    }
}

/// `hello` (a whole ClientHello message) with client id `cid` and mac1
/// recomputed, keyed with the server's key id (SPEC.md 2.2).
fn fresh_hello(hello: &[u8], cid: u64) -> Option<Vec<u8>> {
    use xtmp_core::crypto::CryptoProvider;
    let mut h = hello.to_vec();
    let suites = usize::from(*h.get(5)?);
    let ciphers = usize::from(*h.get(6 + 2 * suites)?);
    let at = 7 + 2 * suites + ciphers + 32;
    h.get_mut(at..at + 8)?.copy_from_slice(&cid.to_be_bytes());
    let split = h.len().checked_sub(16)?;
    let key_id = identity().key_id().0;
    let mac = RustCrypto.hmac_sha384(&key_id, &[b"xtmp1 mac1", &h[..split]]);
    h[split..].copy_from_slice(&mac.expose()[..16]);
    Some(h)
}

/// `bytes`' first frame with one bit of its ciphertext flipped and its CRC
/// recomputed: only the AEAD can refuse it.
fn flip(bytes: &[u8], salt: u32) -> Option<Vec<u8>> {
    use xtmp_core::wire::{Frame, HEADER_LEN};
    let (frame, _) = Frame::decode(bytes, 1 << 20).ok()?;
    let mut payload = frame.payload().to_vec();
    let i = salt as usize % payload.len().max(1);
    *payload.get_mut(i)? ^= 1 << (salt % 8);
    let mut out = vec![0u8; HEADER_LEN + payload.len()];
    let n = Frame::encode(frame.header(), &payload, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

/// `hello` cut into stage-`00` frames (no token) of `chunk` data bytes
/// each, naming client id `cid`.
fn hello_frames(hello: &[u8], cid: u64, chunk: usize) -> Vec<Vec<u8>> {
    use xtmp_core::wire::{Frame, HEADER_LEN, Header};
    hello
        .chunks(chunk)
        .enumerate()
        .filter_map(|(i, data)| {
            let mut payload = vec![0u8];
            payload.extend_from_slice(&((i * chunk) as u32).to_be_bytes());
            payload.extend_from_slice(&[0; 5]);
            payload.extend_from_slice(data);
            let mut frame = vec![0u8; HEADER_LEN + payload.len()];
            Frame::encode(&Header::new(MessageType::HANDSHAKE, cid, i as u64), &payload, &mut frame).ok()?;
            Some(frame)
        })
        .collect()
}
