//! Admission under attack (SPEC.md 3.2): Retry decided on a hello's first
//! frame with nothing kept, unproven state that evicts rather than refuses
//! and never fills the proven slots, tokens bound to the address and the
//! client id, the largest hello, and hellos keyed by address and client id.

mod common;

use std::net::SocketAddr;

use common::*;
use xtmp_core::endpoint::{Remote, RemoteKind, RetryPolicy, prefix_of};
use xtmp_core::session::{Event, PathId, PathKind};
use xtmp_core::wire::{Frame, Header, MessageType};

/// The first datagram (or stream chunk) of a fresh client's hello.
fn first_hello_frame(p: &Pair, seed: u8) -> Vec<u8> {
    let s = Setup::new(PathKind::Datagram);
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([seed; 32]);
    let mut c = xtmp_core::session::Session::connect(
        p.now,
        std::sync::Arc::new(s.session),
        std::sync::Arc::new(s.client),
        PathKind::Datagram,
        &mut rng,
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let t = c.poll_transmit(p.now, &mut buf).unwrap().expect("the hello");
    buf.truncate(t.len);
    buf
}

fn spoofed(i: u32) -> Remote {
    let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 4000));
    Remote { addr, kind: RemoteKind::Datagram }
}

/// `datagram`'s single frame with its stage-00 token replaced by `token`.
fn with_token(datagram: &[u8], token: &[u8]) -> Vec<u8> {
    let (frame, n) = Frame::decode(datagram, u32::MAX).unwrap();
    assert_eq!(n, datagram.len(), "one frame");
    let p = frame.payload();
    assert_eq!((p[0], p[9]), (0, 0), "a stage-00 frame without a token");
    let mut payload = p[..9].to_vec();
    payload.push(token.len() as u8);
    payload.extend_from_slice(token);
    payload.extend_from_slice(&p[10..]);
    let mut out = vec![0u8; xtmp_core::wire::HEADER_LEN + payload.len()];
    let header: Header = *frame.header();
    Frame::encode(&header, &payload, &mut out).unwrap();
    out
}

/// The token of the Retry the server queued for `remote`, if any.
fn retry_token_for(p: &mut Pair, remote: Remote) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut token = None;
    while let Some((r, n)) = p.server.poll_transmit(p.now, &mut buf).unwrap() {
        if r != remote {
            continue;
        }
        let (frame, _) = Frame::decode(&buf[..n], u32::MAX).unwrap();
        let payload = frame.payload();
        if payload[0] == 3 {
            // stage ‖ offset ‖ ack, then the Retry message: type ‖ len u24 ‖ token len u16 ‖ token.
            let m = &payload[9..];
            token = Some(m[6..].to_vec());
        }
    }
    token
}

#[test]
fn spoofed_first_fragments_under_load_get_a_retry_and_leave_no_state() {
    let mut s = Setup::new(PathKind::Datagram);
    s.endpoint.retry = RetryPolicy::UnderLoad(4);
    s.endpoint.max_unproven_hellos = 1000;
    let mut p = s.start();
    let first = first_hello_frame(&p, 77);
    for i in 0..1000 {
        p.server.handle_input(p.now, spoofed(i), &first);
    }
    let stats = p.server.stats();
    // Four fill the unproven pool to the Retry threshold; from then on each
    // gets a Retry and nothing is kept (nothing evicted, nothing shed).
    assert_eq!((stats.retries_sent, stats.hellos_evicted, stats.hellos_shed), (996, 0, 0));
    // A short datagram (a spoofer saving bandwidth) gets nothing: a reply
    // would be an amplification.
    let short = {
        let (frame, _) = Frame::decode(&first, u32::MAX).unwrap();
        let payload = &frame.payload()[..40];
        let mut out = vec![0u8; xtmp_core::wire::HEADER_LEN + payload.len()];
        Frame::encode(frame.header(), payload, &mut out).unwrap();
        out
    };
    p.server.handle_input(p.now, spoofed(5000), &short);
    assert_eq!(p.server.stats().retries_sent, 996);
    // An honest client is asked for a Retry too, proves its address, and
    // gets in while the spoofed hellos are still held.
    p.connect();
    assert_eq!(p.server.stats().retries_sent, 997);
    assert_eq!(p.server.stats().sessions_created, 1);
}

#[test]
fn under_load_a_later_fragment_without_state_is_dropped_unanswered() {
    let mut s = Setup::new(PathKind::Datagram);
    s.endpoint.retry = RetryPolicy::Always;
    let mut p = s.start();
    let first = first_hello_frame(&p, 78);
    let (frame, _) = Frame::decode(&first, u32::MAX).unwrap();
    let mut payload = frame.payload().to_vec();
    payload[1..5].copy_from_slice(&1000u32.to_be_bytes());
    let mut later = vec![0u8; xtmp_core::wire::HEADER_LEN + payload.len()];
    Frame::encode(frame.header(), &payload, &mut later).unwrap();
    p.server.handle_input(p.now, spoofed(1), &later);
    assert_eq!(p.server.stats().retries_sent, 0, "only a hello's first frame is answered");
    assert!(retry_token_for(&mut p, spoofed(1)).is_none());
}

#[test]
fn a_full_unproven_pool_evicts_its_oldest_and_an_honest_client_still_gets_in() {
    let mut s = Setup::new(PathKind::Datagram);
    s.endpoint.retry = RetryPolicy::Never;
    s.endpoint.max_unproven_hellos = 8;
    s.endpoint.max_half_open = 8;
    let mut p = s.start();
    let first = first_hello_frame(&p, 79);
    for i in 0..50 {
        p.server.handle_input(p.now, spoofed(i), &first);
    }
    let stats = p.server.stats();
    assert_eq!((stats.hellos_evicted, stats.hellos_shed, stats.busy_sent), (42, 0, 0));
    p.connect();
    assert_eq!(p.server.stats().sessions_created, 1);
}

#[test]
fn unproven_hellos_never_take_the_proven_slots() {
    // The proven pool (tokens, streams) is bounded on its own: a stream
    // client gets in with every proven slot but its own free, however
    // many unproven hellos are held.
    let mut s = Setup::new(PathKind::Stream);
    s.endpoint.retry = RetryPolicy::Never;
    s.endpoint.max_half_open = 1;
    s.endpoint.max_unproven_hellos = 64;
    let mut p = s.start();
    let first = first_hello_frame(&p, 80);
    for i in 0..64 {
        p.server.handle_input(p.now, spoofed(i), &first);
    }
    p.connect();
    let stats = p.server.stats();
    assert_eq!((stats.sessions_created, stats.hellos_shed, stats.hellos_evicted), (1, 0, 0));
}

#[test]
fn a_token_is_bound_to_the_address_and_the_client_id() {
    let mut s = Setup::new(PathKind::Datagram);
    s.endpoint.retry = RetryPolicy::Always;
    let mut p = s.start();
    let first = first_hello_frame(&p, 81);
    p.server.handle_input(p.now, spoofed(1), &first);
    let token = retry_token_for(&mut p, spoofed(1)).expect("a Retry");
    // From another address: rejected, nothing kept.
    p.server.handle_input(p.now, spoofed(2), &with_token(&first, &token));
    assert_eq!(p.server.stats().tokens_rejected, 1);
    // For another client id from the same address: rejected.
    let other = first_hello_frame(&p, 82);
    p.server.handle_input(p.now, spoofed(1), &with_token(&other, &token));
    assert_eq!(p.server.stats().tokens_rejected, 2);
    // A flipped bit: rejected.
    let mut bad = token.clone();
    bad[12] ^= 1;
    p.server.handle_input(p.now, spoofed(1), &with_token(&first, &bad));
    assert_eq!(p.server.stats().tokens_rejected, 3);
    // The right address and id: taken (no new Retry).
    let retries = p.server.stats().retries_sent;
    p.server.handle_input(p.now, spoofed(1), &with_token(&first, &token));
    assert_eq!((p.server.stats().tokens_rejected, p.server.stats().retries_sent), (3, retries));
    // Past its lifetime: rejected.
    p.now += std::time::Duration::from_secs(11);
    p.server.handle_timeout(p.now);
    p.server.handle_input(p.now, spoofed(1), &with_token(&first, &token));
    assert_eq!(p.server.stats().tokens_rejected, 4);
}

#[test]
fn over_tcp_under_load_a_cookie_round_trip_comes_first() {
    let mut s = Setup::new(PathKind::Stream);
    s.endpoint.retry = RetryPolicy::Always;
    let mut p = s.start();
    p.connect();
    let stats = p.server.stats();
    assert_eq!((stats.retries_sent, stats.tokens_rejected, stats.sessions_created), (1, 0, 1));
}

#[test]
fn a_hello_past_the_largest_hello_is_refused_before_it_is_held() {
    let mut s = Setup::new(PathKind::Stream);
    s.endpoint.retry = RetryPolicy::Never;
    let mut p = s.start();
    let remote = Remote { addr: "198.51.100.1:1".parse().unwrap(), kind: RemoteKind::Stream };
    let frame = |offset: u32, data: &[u8]| {
        let mut payload = vec![0u8];
        payload.extend_from_slice(&offset.to_be_bytes());
        payload.extend_from_slice(&0u32.to_be_bytes());
        payload.push(0);
        payload.extend_from_slice(data);
        let mut out = vec![0u8; xtmp_core::wire::HEADER_LEN + payload.len()];
        Frame::encode(&Header::new(MessageType::HANDSHAKE, 42, 0), &payload, &mut out).unwrap();
        out
    };
    // Bytes beyond 4,096: refused.
    p.server.handle_input(p.now, remote, &frame(4000, &[0; 200]));
    assert_eq!(p.server.stats().hellos_refused, 1);
    // A ClientHello header declaring 5,000 bytes: refused at the header.
    let remote2 = Remote { addr: "198.51.100.2:1".parse().unwrap(), kind: RemoteKind::Stream };
    let mut head = vec![1u8];
    head.extend_from_slice(&5000u32.to_be_bytes()[1..]);
    head.extend_from_slice(&[1; 100]);
    let f = frame(0, &head);
    p.server.handle_input(p.now, remote2, &f);
    assert_eq!(p.server.stats().hellos_refused, 2);
}

#[test]
fn a_new_client_on_the_port_of_a_held_datagram_session_is_admitted() {
    // Hellos are keyed by address and client id: a client restarted on
    // the port of a session the server still holds is not ignored.
    let mut p = established(PathKind::Datagram);
    let before = p.server.stats().sessions_created;
    let mut s = Setup::new(PathKind::Datagram);
    s.seed = 83;
    let mut q = s.start();
    let mut buf = vec![0u8; 4096];
    while let Some(t) = q.client.poll_transmit(p.now, &mut buf).unwrap() {
        p.server.handle_input(p.now, p.remote, &buf[..t.len]);
    }
    assert_eq!(p.server.stats().sessions_created, before + 1);
    // The new session answers on that address and port.
    let mut answered = false;
    while let Some((r, n)) = p.server.poll_transmit(p.now, &mut buf).unwrap() {
        if r == p.remote {
            q.client.handle_input(p.now, PathId(0), &buf[..n]);
            answered = true;
        }
    }
    assert!(answered);
    assert!(std::iter::from_fn(|| q.client.poll_event()).all(|e| !matches!(e, Event::Closed(_))));
}

#[test]
fn prefixes_are_the_configured_leading_bits() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert_eq!(prefix_of(ip("192.0.2.77"), 24, 64), ip("192.0.2.0"));
    assert_eq!(prefix_of(ip("192.0.2.77"), 20, 64), ip("192.0.0.0"));
    assert_eq!(prefix_of(ip("192.0.2.77"), 32, 64), ip("192.0.2.77"));
    assert_eq!(prefix_of(ip("192.0.2.77"), 0, 64), ip("0.0.0.0"));
    assert_eq!(prefix_of(ip("2001:db8:1:2:3:4:5:6"), 24, 64), ip("2001:db8:1:2::"));
    assert_eq!(prefix_of(ip("2001:db8:1:2:3:4:5:6"), 24, 56), ip("2001:db8:1::"));
    assert_eq!(prefix_of(ip("2001:db8:1:2:3:4:5:6"), 24, 128), ip("2001:db8:1:2:3:4:5:6"));
    // An IPv4-mapped address counts as its IPv4 address.
    assert_eq!(prefix_of(ip("::ffff:192.0.2.77"), 24, 64), ip("192.0.2.0"));
}

#[test]
fn a_malformed_retry_or_busy_is_dropped_and_the_handshake_goes_on() {
    // Junk in the shape of a Retry or a Busy, naming the client's id, ends
    // nothing: the genuine server still answers.
    let mut p = Setup::new(PathKind::Datagram).start();
    let cid = p.client.local_session_id();
    for stage in [3u8, 4] {
        let mut payload = vec![stage];
        payload.extend_from_slice(&[0; 8]);
        payload.extend_from_slice(&[0xff, 0xff, 0x01]);
        let mut frame = vec![0u8; xtmp_core::wire::HEADER_LEN + payload.len()];
        Frame::encode(&Header::new(MessageType::HANDSHAKE_ACK, cid, 0), &payload, &mut frame).unwrap();
        p.client.handle_input(p.now, PathId(0), &frame);
    }
    assert!(!p.client.is_closed());
    p.connect();
    assert!(p.client.is_established());
}

#[test]
fn an_admitted_hello_has_its_mac1_computed_once() {
    // The endpoint checks a hello's mac1 before it spends a handshake on
    // it, and the handshake reuses that check (security review P0c).
    for kind in [PathKind::Datagram, PathKind::Stream] {
        let counting = std::sync::Arc::new(CountingVerifies::default());
        let mut p = Setup::with_providers(kind, provider(), counting.clone()).start();
        p.connect();
        assert!(p.client.is_established(), "{kind:?}");
        assert_eq!(counting.mac1s.load(std::sync::atomic::Ordering::Relaxed), 1, "{kind:?}: one mac1 per hello");
    }
}
