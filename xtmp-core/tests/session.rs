//! Sessions end to end: a client `Session` against a server `Endpoint`,
//! in memory, with virtual time.

mod common;

use bytes::Bytes;
use common::*;
use xtmp_core::session::{CloseCode, CloseReason, ErrorCode, Event, MessageKind, PathKind, SendOptions};
use xtmp_core::wire::MessageType;

#[test]
fn handshake_and_request_response_on_both_path_kinds() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut p = established(kind);
        assert!(matches!(p.client_events[0], Event::Connected { peer: Some(_), .. }), "{kind:?}");
        let req = p
            .client
            .send(MessageType::WALLET_BALANCE, Bytes::from_static(b"wallet-1"), SendOptions::request())
            .unwrap();
        p.drive(100, |p| !p.server_messages().is_empty());
        let m = p.server_messages()[0].clone();
        assert_eq!(
            (m.message_type, m.kind, &m.body[..]),
            (MessageType::WALLET_BALANCE, MessageKind::Request, &b"wallet-1"[..])
        );
        p.server_session()
            .respond(m.id, MessageType::WALLET_BALANCE, Bytes::from_static(b"42"), SendOptions::default())
            .unwrap();
        p.drive(100, |p| !p.client_messages().is_empty());
        let r = p.client_messages()[0];
        assert_eq!((r.kind, &r.body[..]), (MessageKind::Response(req), &b"42"[..]));
        // Responding twice to one request is refused.
        assert!(
            p.server_session()
                .respond(m.id, MessageType::WALLET_BALANCE, Bytes::new(), SendOptions::default())
                .is_err()
        );
    }
}

#[test]
fn requests_of_reserved_types_get_an_unknown_type_error() {
    let mut p = established(PathKind::Stream);
    // The public API refuses reserved types, so play a peer that sends one
    // by sending an extension type and checking the delivery path instead:
    // reserved application codes are refused at send.
    assert!(p.client.send(MessageType(0x14), Bytes::new(), SendOptions::request()).is_err());
    let id = p.client.send(MessageType(0x77), Bytes::from_static(b"ext"), SendOptions::request()).unwrap();
    p.drive(100, |p| !p.server_messages().is_empty());
    let m = p.server_messages()[0].clone();
    p.server_session().respond_error(m.id, ErrorCode::UNKNOWN_TYPE, "no handler for 0x77").unwrap();
    p.drive(100, |p| !p.client_messages().is_empty());
    let r = p.client_messages()[0];
    assert_eq!(r.kind, MessageKind::Response(id));
    assert_eq!(r.error(), Some((ErrorCode::UNKNOWN_TYPE, "no handler for 0x77".to_string())));
}

#[test]
fn handshake_survives_datagram_loss() {
    // Drop every third datagram in each direction during the handshake.
    let mut s = Setup::new(PathKind::Datagram);
    s.seed = 11;
    let mut p = s.start();
    let mut n = 0u32;
    p.filter = Some(Box::new(move |_, _| {
        n += 1;
        if n.is_multiple_of(3) { Verdict::Drop } else { Verdict::Deliver }
    }));
    p.connect();
    p.filter = None;
    assert!(p.client.stats().handshake_retransmits > 0 || p.server_session().stats().handshake_retransmits > 0);
    p.client.send(MessageType::REGISTRY_QUERY, Bytes::from_static(b"q"), SendOptions::default()).unwrap();
    p.drive(100, |p| p.server_messages().len() == 1);
}

#[test]
fn server_respects_the_amplification_limit() {
    // After the ClientHello, nothing from the client arrives: the server
    // may send at most three times what it received.
    let mut s = Setup::new(PathKind::Datagram);
    s.session.datagram_hello_padding = 0;
    let mut p = s.start();
    let client_sid = p.client.local_session_id().to_be_bytes();
    p.filter = Some(Box::new(move |dir, bytes| {
        // Only frames addressed with the client's own id (its ClientHello)
        // reach the server: nothing proves the client's address.
        if dir == Dir::ToServer && bytes[8..16] != client_sid {
            return Verdict::Drop;
        }
        Verdict::Deliver
    }));
    p.drive(200, |p| p.client.is_closed());
    assert!(p.server_received > 0);
    assert!(p.server_sent <= 3 * p.server_received, "sent {} for {} received", p.server_sent, p.server_received);
    assert!(matches!(p.client_events.last(), Some(Event::Closed(CloseReason::HandshakeTimeout))));
}

#[test]
fn retry_cookie_path() {
    let mut s = Setup::new(PathKind::Datagram);
    s.endpoint.retry = xtmp_core::endpoint::RetryPolicy::Always;
    let mut p = s.start();
    p.connect();
    assert_eq!(p.server.stats().retries_sent, 1);
    assert_eq!(p.server.stats().tokens_rejected, 0);
}

#[test]
fn close_flushes_queued_messages_then_reports_once() {
    let mut p = established(PathKind::Stream);
    for i in 0..10u8 {
        p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from(vec![i; 100]), SendOptions::default()).unwrap();
    }
    p.client.close(p.now, CloseCode(0x1000), "bye");
    p.drive(1000, |p| p.client.is_closed() && p.server.session_count() == 0);
    assert_eq!(p.server_messages().len(), 10);
    let closed: Vec<_> = p.server_events.iter().filter(|e| matches!(e, Event::Closed(_))).collect();
    assert_eq!(closed, [&Event::Closed(CloseReason::Peer { code: CloseCode(0x1000), reason: "bye".into() })]);
    let closed: Vec<_> = p.client_events.iter().filter(|e| matches!(e, Event::Closed(_))).collect();
    assert_eq!(closed, [&Event::Closed(CloseReason::Local { code: CloseCode(0x1000), reason: "bye".into() })]);
}

/// Captures the next sealed datagram from client to server.
fn capture_one(p: &mut Pair, body: &'static [u8]) -> Vec<u8> {
    capture_with(p, body, SendOptions::default())
}

fn capture_with(p: &mut Pair, body: &'static [u8], options: SendOptions) -> Vec<u8> {
    p.client.send(MessageType::REGISTRY_QUERY, Bytes::from_static(body), options).unwrap();
    let mut buf = vec![0u8; 2000];
    let t = p.client.poll_transmit(p.now, &mut buf).unwrap().unwrap();
    buf.truncate(t.len);
    buf
}

#[test]
fn tampered_frames_are_rejected_without_side_effects() {
    let mut p = established(PathKind::Datagram);
    let frame = capture_one(&mut p, b"tamper me");
    let before = p.server_session().stats();
    // Every byte of the header and payload, one bit flipped at a time.
    for i in 0..frame.len() {
        let mut bad = frame.clone();
        bad[i] ^= 0x01;
        if (28..32).contains(&i) {
            // A flipped CRC byte is caught by the CRC; otherwise fix the CRC
            // up so the frame reaches the AEAD.
        } else {
            xtmp_core::wire::write_crc(&mut bad).unwrap();
        }
        p.server.handle_input(p.now, p.remote, &bad);
        p.collect();
        assert!(p.server_messages().is_empty(), "byte {i} tampered was accepted");
    }
    let after = p.server_session().stats();
    assert_eq!(after.frames_received, before.frames_received, "nothing was accepted");
    assert_eq!(after.recv_generation, before.recv_generation);
    // The untouched frame is still accepted: no window moved, no key changed.
    p.server.handle_input(p.now, p.remote, &frame);
    p.collect();
    assert_eq!(p.server_messages().len(), 1);
    assert_eq!(&p.server_messages()[0].body[..], b"tamper me");
}

#[test]
fn replayed_and_duplicated_frames_are_delivered_once() {
    // Reliable messages come out once each, in send order; unreliable
    // ones once each, in arrival order.
    for (options, expected) in [(SendOptions::default(), [b"a", b"b"]), (SendOptions::unreliable(), [b"b", b"a"])] {
        let mut p = established(PathKind::Datagram);
        let a = capture_with(&mut p, b"a", options);
        let b = capture_with(&mut p, b"b", options);
        for d in [&b, &a, &a, &b, &a] {
            p.server.handle_input(p.now, p.remote, d);
        }
        p.collect();
        let bodies: Vec<&[u8]> = p.server_messages().iter().map(|m| &m.body[..]).collect();
        assert_eq!(bodies, expected, "{options:?}");
        assert_eq!(p.server_session().stats().replays_rejected, 3);
    }
}

#[test]
fn keys_rotate_at_exactly_the_frame_limit() {
    let mut s = Setup::new(PathKind::Stream);
    s.session.key_update_frames = 16;
    let mut p = s.start();
    p.connect();
    // The client's only sealed frame so far answers the Ping that
    // confirmed the handshake: 15 messages fill generation 0.
    for i in 0..15u32 {
        p.client
            .send(MessageType::EVENT_STREAM, Bytes::from(i.to_be_bytes().to_vec()), SendOptions::default())
            .unwrap();
    }
    p.drive(100, |p| p.server_messages().len() == 15);
    assert_eq!(p.client.stats().send_generation, 0, "16 frames fit in generation 0");
    p.client.send(MessageType::EVENT_STREAM, Bytes::from_static(b"17"), SendOptions::default()).unwrap();
    p.drive(100, |p| p.server_messages().len() == 16);
    assert_eq!(p.client.stats().send_generation, 1, "the 17th frame starts generation 1");
    assert_eq!(p.server_session().stats().recv_generation, 1);
}

/// A million messages (half each way) with both sides ratcheting every
/// thousand frames and a hybrid re-key every 100,000 messages: all arrive,
/// in order, exactly once, with no authentication failure.
#[test]
fn a_million_messages_with_rotations_every_thousand_frames() {
    let mut s = Setup::new(PathKind::Datagram);
    s.session.key_update_frames = 1000;
    let mut p = s.start();
    p.connect();
    let n: u32 = 500_000;
    let (mut sent, mut up, mut down) = (0u32, 0u32, 0u32);
    while up < n || down < n {
        while sent < n && sent - up.min(down) < 500 {
            let body = Bytes::copy_from_slice(&sent.to_be_bytes());
            p.client.send(MessageType::METRICS_STREAM, body.clone(), SendOptions::default()).unwrap();
            p.server_session().send(MessageType::LIVE_UPDATES, body, SendOptions::default()).unwrap();
            sent += 1;
            if sent.is_multiple_of(100_000) {
                assert!(p.client.rekey_now(p.now));
            }
        }
        p.step();
        for m in p.server_events.drain(..) {
            if let Event::Message(m) = m {
                assert_eq!(&m.body[..], &up.to_be_bytes(), "in order, exactly once");
                up += 1;
            }
        }
        for m in p.client_events.drain(..) {
            if let Event::Message(m) = m {
                assert_eq!(&m.body[..], &down.to_be_bytes(), "in order, exactly once");
                down += 1;
            }
        }
    }
    let (c, s) = (p.client.stats(), p.server_session().stats());
    // 500 generations of a thousand frames, less at most one for each of
    // the five re-keys (an open re-key freezes the sending generation
    // while at most 500 messages are in flight, and its new key starts
    // counting afresh).
    assert!(
        s.recv_generation >= 494 && c.recv_generation >= 494,
        "rotated {} / {} times",
        s.recv_generation,
        c.recv_generation
    );
    assert!(c.rekeys >= 4 && s.rekeys == c.rekeys, "{} hybrid re-keys", c.rekeys);
    assert_eq!((c.decrypt_failures, s.decrypt_failures), (0, 0));
    assert_eq!((c.replays_rejected, s.replays_rejected), (0, 0));
}

#[test]
fn idle_timeout_closes_both_sides_when_the_network_dies() {
    let mut p = established(PathKind::Datagram);
    p.filter = Some(Box::new(|_, _| Verdict::Drop));
    p.drive(1000, |p| p.client.is_closed() && p.server.session_count() == 0);
    assert!(p.client_events.contains(&Event::Closed(CloseReason::IdleTimeout)));
    assert!(p.server_events.contains(&Event::Closed(CloseReason::IdleTimeout)));
}

#[test]
fn heartbeats_keep_a_quiet_session_alive_and_measure_rtt() {
    let mut p = established(PathKind::Stream);
    let start = p.now;
    // Nothing is sent for ten idle timeouts: heartbeats keep it open.
    p.drive(10_000, |p| p.now >= start + std::time::Duration::from_secs(300));
    assert!(p.client.is_established());
    assert!(p.client.stats().rtt.is_some());
    assert!(p.client.stats().frames_sent > 10);
}

#[test]
fn a_peer_that_never_rotates_is_closed() {
    let mut s = Setup::new(PathKind::Stream);
    s.session.key_update_interval = std::time::Duration::from_secs(60);
    let mut server = s.session.clone();
    server.key_update_interval = std::time::Duration::from_secs(86_400);
    s.server_session = Some(server);
    let mut p = s.start();
    p.connect();
    p.drive(100_000, |p| p.client.is_closed());
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, Event::Closed(CloseReason::ProtocolViolation(w)) if w.contains("update"))),
        "{:?}",
        p.client_events.last()
    );
}

#[test]
fn repeated_authentication_failures_close_the_session() {
    let mut s = Setup::new(PathKind::Datagram);
    let mut server = s.session.clone();
    server.max_decrypt_failures = 5;
    s.server_session = Some(server);
    let mut p = s.start();
    p.connect();
    let frame = capture_one(&mut p, b"x");
    for i in 0..5 {
        let mut bad = frame.clone();
        bad[96] ^= 1 + i as u8;
        xtmp_core::wire::write_crc(&mut bad).unwrap();
        p.server.handle_input(p.now, p.remote, &bad);
    }
    p.drive(100, |p| p.server.session_count() == 0);
    assert!(p.server_events.contains(&Event::Closed(CloseReason::IntegrityLimit)));
}

#[test]
fn forged_frames_from_off_the_path_never_count_toward_the_integrity_limit() {
    // Whoever has seen one frame can forge its like from any address: such
    // frames fail to open on a path not validated as the peer's, and count
    // toward nothing (SPEC.md 3.6), however many there are.
    let mut s = Setup::new(PathKind::Datagram);
    let mut server = s.session.clone();
    server.max_decrypt_failures = 5;
    s.server_session = Some(server);
    let mut p = s.start();
    p.connect();
    let frame = capture_one(&mut p, b"x");
    for i in 0..50u32 {
        let mut bad = frame.clone();
        bad[96] ^= 1 + (i % 255) as u8;
        xtmp_core::wire::write_crc(&mut bad).unwrap();
        let elsewhere = xtmp_core::endpoint::Remote {
            addr: std::net::SocketAddr::from(([203, 0, 113, (i % 250) as u8], 6000 + i as u16)),
            kind: xtmp_core::endpoint::RemoteKind::Datagram,
        };
        p.server.handle_input(p.now, elsewhere, &bad);
    }
    p.settle();
    assert_eq!(p.server.session_count(), 1, "the session stays up");
    let stats = p.server_session().stats();
    assert_eq!((stats.decrypt_failures, stats.forgeries_ignored), (0, 50));
    // The session still works both ways.
    p.client.send(MessageType::WALLET_BALANCE, Bytes::from_static(b"after"), SendOptions::request()).unwrap();
    p.drive(100, |p| p.server_messages().iter().any(|m| &m.body[..] == b"after"));
    // By default the cipher's own limit (RFC 9001 6.6) is the only one.
    assert_eq!(xtmp_core::session::SessionConfig::default().max_decrypt_failures, u64::MAX);
}

#[test]
fn handshake_failure_is_typed_locally_and_generic_for_the_peer() {
    // The client pins a different server identity.
    let mut s = Setup::new(PathKind::Stream);
    s.client.verifier = std::sync::Arc::new(xtmp_core::handshake::Fingerprints(vec![identity(9).key_id()]));
    let mut p = s.start();
    p.drive(100, |p| p.client.is_closed() && p.server.session_count() == 0);
    assert!(matches!(p.client_events.last(), Some(Event::Closed(CloseReason::HandshakeFailed(_)))));
    assert_eq!(
        p.server_events.last(),
        Some(&Event::Closed(CloseReason::Peer { code: CloseCode::HANDSHAKE_FAILED, reason: String::new() }))
    );
}

#[test]
fn a_dead_network_times_the_handshake_out() {
    let mut p = Setup::new(PathKind::Datagram).start();
    p.filter = Some(Box::new(|_, _| Verdict::Drop));
    p.drive(1000, |p| p.client.is_closed());
    assert_eq!(p.client_events, [Event::Closed(CloseReason::HandshakeTimeout)]);
}

#[test]
fn closing_during_the_handshake_ends_both_sides() {
    // Before the client knows the server's id: it just stops.
    let mut p = Setup::new(PathKind::Datagram).start();
    p.client.close(p.now, CloseCode::NO_ERROR, "changed my mind");
    p.drive(10, |p| p.client.is_closed());
    p.collect();
    assert_eq!(
        p.client_events,
        [Event::Closed(CloseReason::Local { code: CloseCode::NO_ERROR, reason: "changed my mind".into() })]
    );
    // After the server created its session: the server closes through the
    // endpoint and the client hears a generic handshake failure.
    let mut p = Setup::new(PathKind::Stream).start();
    p.drive(100, |p| p.handle.is_some());
    let now = p.now;
    p.server_session().close(now, CloseCode::NO_ERROR, "shutting down");
    p.drive(100, |p| p.client.is_closed() && p.server.session_count() == 0);
    assert_eq!(
        p.client_events,
        [Event::Closed(CloseReason::Peer { code: CloseCode::HANDSHAKE_FAILED, reason: String::new() })]
    );
    assert!(matches!(p.server_events.last(), Some(Event::Closed(CloseReason::Local { .. }))));
}

/// The test-only null cipher negotiates like any other, leaves payloads in
/// the clear (so fuzzers and the simulator can reach past the AEAD), and
/// still has the CRC catch corruption.
#[cfg(feature = "__null-cipher")]
#[test]
fn the_null_cipher_is_negotiated_only_when_both_sides_offer_it() {
    use xtmp_core::crypto::AeadAlgorithm;
    let mut s = Setup::new(PathKind::Datagram);
    s.client.ciphers = vec![AeadAlgorithm::TestNull];
    s.server().ciphers = vec![AeadAlgorithm::TestNull, AeadAlgorithm::Aes256Gcm];
    let mut p = s.start();
    p.connect();
    assert!(matches!(p.client_events[0], Event::Connected { cipher: AeadAlgorithm::TestNull, .. }));
    let frame = capture_one(&mut p, b"visible payload");
    assert!(frame.windows(15).any(|w| w == b"visible payload"), "null cipher leaves the payload in the clear");
    let mut bad = frame.clone();
    let i = bad.len() - 3;
    bad[i] ^= 0x20;
    p.server.handle_input(p.now, p.remote, &bad);
    p.server.handle_input(p.now, p.remote, &frame);
    p.collect();
    let got: Vec<_> = p.server_messages().iter().map(|m| m.body.clone()).collect();
    assert_eq!(got, vec![bytes::Bytes::from_static(b"visible payload")], "the corrupted copy was dropped");

    // A server that does not offer it refuses a client that offers only it.
    let mut s = Setup::new(PathKind::Stream);
    s.client.ciphers = vec![AeadAlgorithm::TestNull];
    let mut p = s.start();
    p.drive(1000, |p| p.client.is_closed());
    assert!(matches!(p.client_events.last(), Some(Event::Closed(_))));
}

/// Root-signed credentials through whole sessions: the client's clock is
/// `unix_time_origin` plus the session's monotonic time, and the server's
/// credential must be valid at that moment.
#[test]
fn credentials_are_checked_against_the_session_clock() {
    use std::sync::Arc;
    use xtmp_core::handshake::{ClientConfig, Credential, HandshakeError, RootOfTrust, TrustError};
    let root = identity(9);
    let server_id = identity(1);
    let issued = 1_800_000_000u64;
    let run = |origin: Option<u64>| {
        let mut s = Setup::new(PathKind::Stream);
        let cred =
            Credential::issue(&root, server_id.public(), issued, issued + 3600, &mut rand_chacha_rng(3)).unwrap();
        s.server().credential = Some(cred);
        s.client = ClientConfig::new(provider(), Arc::new(RootOfTrust(root.public().clone())));
        s.session.unix_time_origin = origin;
        let mut p = s.start();
        p.drive(1000, |p| p.client.is_established() || p.client.is_closed());
        p
    };
    // The pair starts at 1 s of monotonic time.
    let p = run(Some(issued + 100));
    assert!(p.client.is_established(), "{:?}", p.client_events);
    for (origin, want) in [
        (Some(issued + 3600), TrustError::CredentialExpired),
        (Some(issued - 10), TrustError::CredentialNotYetValid),
        (None, TrustError::NoTime),
    ] {
        let p = run(origin);
        assert!(
            matches!(
                p.client_events.last(),
                Some(Event::Closed(CloseReason::HandshakeFailed(HandshakeError::Untrusted(e)))) if *e == want
            ),
            "origin {origin:?}: {:?}",
            p.client_events.last()
        );
    }
}

fn rand_chacha_rng(seed: u8) -> rand_chacha::ChaCha20Rng {
    use rand_core::SeedableRng;
    rand_chacha::ChaCha20Rng::from_seed([seed; 32])
}

#[test]
fn data_held_for_the_handshake_acknowledgement_is_not_waiting_output() {
    // Found by xtmp-sim (clean, seed 1): on a datagram path the client
    // holds its first data until the server has its flight, and
    // `poll_timeout` used to answer "now" meanwhile: a caller spun.
    let mut p = Setup::new(PathKind::Datagram).start();
    while !p.client.is_established() {
        p.flush();
        p.deliver();
    }
    p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"early"), SendOptions::default()).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut sent = 0;
    while p.client.poll_transmit(p.now, &mut buf).unwrap().is_some() {
        sent += 1;
    }
    assert_eq!(sent, 1, "the client's flight only; the data waits");
    let deadline = p.client.poll_timeout().expect("a deadline");
    assert!(deadline > p.now, "held data must not make the deadline 'now'");
}

#[test]
fn the_previous_receive_key_is_erased_on_time_while_draining() {
    // Found by xtmp-sim (key_rotation, seed 1).
    let mut s = Setup::new(PathKind::Datagram);
    s.session.key_grace = std::time::Duration::from_millis(300);
    let mut p = s.start();
    p.connect();
    let now = p.now;
    assert!(p.server_session().update_key_now(now));
    p.server_session().send(MessageType::BUNDLE_STATUS, Bytes::from_static(b"k"), SendOptions::default()).unwrap();
    p.settle();
    assert!(p.client.stats().previous_recv_key, "the peer's old key is kept for the grace period");
    p.client.close(p.now, xtmp_core::session::CloseCode::NO_ERROR, "bye");
    p.settle();
    let grace_end = p.now + std::time::Duration::from_millis(300);
    assert!(p.client.poll_timeout().is_some_and(|t| t <= grace_end), "draining still wakes for the key");
    p.now = grace_end;
    p.client.handle_timeout(p.now);
    assert!(!p.client.is_closed(), "still draining");
    assert!(!p.client.stats().previous_recv_key, "erased at the end of its grace period");
}

#[test]
fn a_session_without_a_live_path_does_not_pile_up_heartbeats() {
    // Found by xtmp-sim (swarm, seed 1): with every path down, each
    // timeout queued another heartbeat (100,000 of them) and the deadline
    // stayed "now".
    let mut s = Setup::new(PathKind::Stream);
    s.session.heartbeat_interval = Some(std::time::Duration::from_secs(1));
    let mut p = s.start();
    p.connect();
    p.client.path_closed(xtmp_core::session::PathId(0));
    let mut now = p.now;
    for _ in 0..20 {
        let t = p.client.poll_timeout().expect("the idle timeout at least");
        assert!(t > now, "a deadline that is not 'now'");
        now = t;
        p.client.handle_timeout(now);
        if p.client.is_closed() {
            break;
        }
    }
    assert!(now >= p.now + std::time::Duration::from_secs(19) || p.client.is_closed());
}

#[test]
fn an_endpoint_that_stopped_accepting_sheds_new_hellos_and_keeps_its_sessions() {
    let mut p = established(PathKind::Datagram);
    p.server.stop_accepting();
    assert_eq!(p.server.sessions().collect::<Vec<_>>(), vec![p.handle.unwrap()]);
    // A second client's hello is dropped, as under the session limit.
    let second = Setup::new(PathKind::Datagram);
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([9; 32]);
    let mut c2 = xtmp_core::session::Session::connect(
        p.now,
        std::sync::Arc::new(second.session),
        std::sync::Arc::new(second.client),
        PathKind::Datagram,
        &mut rng,
    )
    .unwrap();
    let other = xtmp_core::endpoint::Remote {
        addr: "192.0.2.9:5000".parse().unwrap(),
        kind: xtmp_core::endpoint::RemoteKind::Datagram,
    };
    let mut buf = vec![0u8; 4096];
    let mut sent = 0;
    while let Some(t) = c2.poll_transmit(p.now, &mut buf).unwrap() {
        p.server.handle_input(p.now, other, &buf[..t.len]);
        sent += 1;
    }
    assert!(sent > 0);
    assert!(p.server.stats().hellos_shed >= 1);
    assert_eq!(p.server.session_count(), 1);
    // The new client is told Busy, once, and keeps nothing open.
    let mut to_other = 0;
    while let Some((r, n)) = p.server.poll_transmit(p.now, &mut buf).unwrap() {
        if r == other {
            to_other += 1;
            c2.handle_input(p.now, xtmp_core::session::PathId(0), &buf[..n]);
        }
    }
    assert_eq!((to_other, p.server.stats().busy_sent), (1, 1));
    let told = std::iter::from_fn(|| c2.poll_event()).any(|e| matches!(e, Event::Closed(CloseReason::Busy { .. })));
    assert!(told && c2.is_closed(), "the client learns it was not taken");
    // The held session still carries messages both ways.
    p.client.send(MessageType::WALLET_BALANCE, Bytes::from_static(b"after"), SendOptions::request()).unwrap();
    p.drive(100, |p| p.server_messages().iter().any(|m| &m.body[..] == b"after"));
}

#[test]
fn clients_that_leave_right_after_the_handshake_do_not_hold_half_open_slots() {
    // Each client completes its handshake and aborts at once; its server
    // session drains for a while. Draining sessions are not half open, so
    // twice the half-open limit of such clients within one drain period
    // leaves room for the next one.
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut s = Setup::new(kind);
        s.endpoint.max_half_open = 4;
        let (session, client) = (std::sync::Arc::new(s.session.clone()), std::sync::Arc::new(s.client.clone()));
        let mut p = s.start();
        let start = p.now;
        for i in 0..9u8 {
            let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([100 + i; 32]);
            p.client =
                xtmp_core::session::Session::connect(p.now, session.clone(), client.clone(), kind, &mut rng).unwrap();
            p.client_paths[0].addr = format!("192.0.2.{}:4000", 10 + i).parse().unwrap();
            p.client_events.clear();
            p.drive(1000, |p| p.client.is_established());
            p.client.abort(p.now, CloseCode(0), "gone");
            p.settle();
        }
        let drain = xtmp_core::session::SessionConfig::default().drain_period;
        assert!(p.now < start + drain, "{kind:?}: all within one drain period");
        assert_eq!(p.server.stats().hellos_shed, 0, "{kind:?}");
        assert_eq!(p.server.stats().sessions_created, 9, "{kind:?}");
        // Every session learnt of its client's abort (and ends after its drain).
        p.drive(1000, |p| p.server.session_count() == 0);
        let closed = p.server_events.iter().filter(|e| matches!(e, Event::Closed(CloseReason::Peer { .. }))).count();
        assert_eq!(closed, 9, "{kind:?}");
    }
}

/// A client session of `configs` (its RNG seeded with `seed`), as if on a
/// stream connection from `addr`: a flood's member.
fn flooder(
    p: &Pair,
    configs: (&std::sync::Arc<xtmp_core::session::SessionConfig>, &std::sync::Arc<xtmp_core::handshake::ClientConfig>),
    seed: u8,
    addr: String,
) -> (xtmp_core::session::Session, xtmp_core::endpoint::Remote) {
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([seed; 32]);
    let (session, client) = (configs.0.clone(), configs.1.clone());
    let s = xtmp_core::session::Session::connect(p.now, session, client, PathKind::Stream, &mut rng).unwrap();
    let remote =
        xtmp_core::endpoint::Remote { addr: addr.parse().unwrap(), kind: xtmp_core::endpoint::RemoteKind::Stream };
    (s, remote)
}

#[test]
fn a_hello_flood_from_one_prefix_sheds_its_own_hellos_only_and_each_is_told_busy() {
    // A peer with 30 addresses in one /24 opens connection after
    // connection and sends only hellos: it fills its prefix's share of the
    // half-open slots, each hello beyond it is answered with Busy (once,
    // on its first frame), and a client from elsewhere still connects.
    let mut s = Setup::new(PathKind::Stream);
    s.endpoint.max_half_open = 100;
    s.endpoint.max_half_open_per_prefix = 8;
    let (session, client) = (std::sync::Arc::new(s.session.clone()), std::sync::Arc::new(s.client.clone()));
    let mut p = s.start();
    let mut buf = vec![0u8; 64 * 1024];
    let mut flood = Vec::new();
    for i in 0..30u16 {
        let (mut flooder, remote) =
            flooder(&p, (&session, &client), i as u8 + 50, format!("198.51.100.{}:{}", i + 1, 20000 + i));
        while let Some(t) = flooder.poll_transmit(p.now, &mut buf).unwrap() {
            p.server.handle_input(p.now, remote, &buf[..t.len]);
        }
        flood.push((flooder, remote));
    }
    let stats = p.server.stats();
    // (The shed counter counts the hellos' frames: each hello here is two.)
    assert_eq!((stats.sessions_created, stats.hellos_shed_per_prefix, stats.hellos_shed), (8, 44, 0));
    assert_eq!(stats.busy_sent, 22, "one Busy per hello not taken");
    // Each flooder beyond the share learns it at once.
    while let Some((remote, n)) = p.server.poll_transmit(p.now, &mut buf).unwrap() {
        let (f, _) = flood.iter_mut().find(|(_, r)| *r == remote).unwrap();
        f.handle_input(p.now, xtmp_core::session::PathId(0), &buf[..n]);
    }
    let mut busy = 0;
    for (f, _) in &mut flood {
        let told = std::iter::from_fn(|| f.poll_event())
            .any(|e| matches!(e, Event::Closed(CloseReason::Busy { retry_after }) if retry_after.as_millis() == 100));
        busy += usize::from(told);
    }
    assert_eq!(busy, 22);
    p.connect();
    assert_eq!(p.server.stats().sessions_created, 9);
}

#[test]
fn half_sent_hellos_hold_their_address_share_until_they_time_out_or_their_connection_closes() {
    // Each flooder sends the first of its hello's two frames only: the
    // hello waits in reassembly, counted against its address, until the
    // hello timeout or its connection's end gives the slot back.
    let mut s = Setup::new(PathKind::Stream);
    s.endpoint.max_half_open_per_prefix = 4;
    let timeout = s.endpoint.hello_timeout;
    let (session, client) = (std::sync::Arc::new(s.session.clone()), std::sync::Arc::new(s.client.clone()));
    let mut p = s.start();
    let mut buf = vec![0u8; 64 * 1024];
    let mut half_hello = |p: &mut Pair, i: u16| {
        let (mut flooder, remote) =
            flooder(p, (&session, &client), i as u8 + 90, format!("198.51.100.7:{}", 30000 + i));
        let t = flooder.poll_transmit(p.now, &mut buf).unwrap().expect("the hello");
        let (_, first) = xtmp_core::wire::Frame::decode(&buf[..t.len], u32::MAX).expect("a frame");
        assert!(first < t.len, "the hello takes more than one frame");
        p.server.handle_input(p.now, remote, &buf[..first]);
        remote
    };
    let shed = |p: &Pair| p.server.stats().hellos_shed_per_prefix;
    let first: Vec<_> = (0..4).map(|i| half_hello(&mut p, i)).collect();
    assert_eq!(shed(&p), 0);
    half_hello(&mut p, 4);
    assert_eq!(shed(&p), 1, "the address's share is full");

    // A closed connection gives its slot back.
    p.server.remote_closed(first[0]);
    half_hello(&mut p, 5);
    assert_eq!(shed(&p), 1, "the slot of the closed connection is free");
    half_hello(&mut p, 6);
    assert_eq!(shed(&p), 2);

    // The hello timeout gives every slot back.
    p.now += timeout;
    p.server.handle_timeout(p.now);
    for i in 7..11 {
        half_hello(&mut p, i);
    }
    assert_eq!(shed(&p), 2, "the timed-out hellos' slots are free");
    half_hello(&mut p, 11);
    assert_eq!(shed(&p), 3);
    assert_eq!(p.server.stats().sessions_created, 0);
}

#[test]
fn both_ends_export_the_same_values_and_another_session_differs() {
    use xtmp_core::session::ExportError;
    let mut p = Setup::new(PathKind::Stream).start();
    let mut early = [0u8; 32];
    assert_eq!(p.client.export(b"label", b"", &mut early), Err(ExportError::NotEstablished));
    p.connect();
    let client = p.client.channel_binding().unwrap();
    let server = p.server_session().channel_binding().unwrap();
    assert_eq!(client, server, "both ends derive one channel binding");
    let mut a = [0u8; 48];
    let mut b = [0u8; 48];
    p.client.export(b"bpci test", b"ctx", &mut a).unwrap();
    p.server_session().export(b"bpci test", b"ctx", &mut b).unwrap();
    assert_eq!(a, b);
    assert_ne!(&a[..32], &client[..], "another label gives another value");
    let mut other = Setup::new(PathKind::Stream);
    other.seed = 9;
    let mut q = other.connected();
    assert_ne!(q.client.channel_binding().unwrap(), client, "another session, another binding");
    assert_eq!(q.client.channel_binding().unwrap(), q.server_session().channel_binding().unwrap());
}
