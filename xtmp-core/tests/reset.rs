//! Stateless reset (SPEC.md 3.7.1): a server that lost a session (it
//! restarted) answers the client's next frame with a Reset the client can
//! authenticate, and the client ends the session at once; nobody else can
//! end it that way.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::crypto::RustCrypto;
use xtmp_core::endpoint::{Endpoint, EndpointConfig};
use xtmp_core::session::reset::{RESET_FRAME_LEN, STATELESS_RESET, reset_frame};
use xtmp_core::session::{CloseReason, Event, PathKind, SendOptions};
use xtmp_core::wire::{Frame, Header, MessageType};

/// A pair whose server has a reset key derived from its identity; returns
/// the endpoint configuration, to restart the server with it.
fn pair(kind: PathKind) -> (Pair, Arc<EndpointConfig>) {
    let mut s = Setup::new(kind);
    let key = s.server().identity.derive_key(&RustCrypto, b"stateless reset key").unwrap();
    s.server().reset_key = Some(Arc::new(key));
    let config = Arc::new(s.endpoint.clone());
    let mut p = s.start();
    p.connect();
    (p, config)
}

/// The server process restarts: same configuration (same identity and
/// reset key), no sessions.
fn restart(p: &mut Pair, config: &Arc<EndpointConfig>) {
    p.server = Endpoint::new(p.now, config.clone(), &mut ChaCha20Rng::from_seed([42; 32])).unwrap();
    p.handle = None;
}

fn request(p: &mut Pair) {
    let options = SendOptions { request: true, reliable: true, ..SendOptions::default() };
    p.client.send(MessageType::WALLET_BALANCE, Bytes::from(vec![7u8; 200]), options).unwrap();
}

fn closed(p: &Pair) -> Option<&CloseReason> {
    p.client_events.iter().find_map(|e| match e {
        Event::Closed(r) => Some(r),
        _ => None,
    })
}

#[test]
fn a_restarted_server_resets_the_session_at_the_clients_next_frame() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let (mut p, config) = pair(kind);
        restart(&mut p, &config);
        let started = p.now;
        request(&mut p);
        p.drive(100, |p| closed(p).is_some());
        assert_eq!(closed(&p), Some(&CloseReason::StatelessReset), "{kind:?}");
        assert_eq!(p.server.stats().resets_sent, 1);
        assert_eq!(p.client.stats().resets_received, 1);
        assert!(p.now - started < std::time::Duration::from_millis(100), "{kind:?}: at once, not at a timeout");
    }
}

#[test]
fn without_a_reset_key_nothing_is_sent() {
    let s = Setup::new(PathKind::Datagram);
    assert!(s.endpoint.server.reset_key.is_none(), "off by default");
    let config = Arc::new(s.endpoint.clone());
    let mut p = s.connected();
    restart(&mut p, &config);
    request(&mut p);
    p.settle();
    assert_eq!(p.server.stats().resets_sent, 0);
    assert!(closed(&p).is_none());
}

#[test]
fn a_reset_without_the_token_or_for_another_session_changes_nothing() {
    let (mut p, config) = pair(PathKind::Datagram);
    let server_sid = p.client.peer_session_id().unwrap();
    let remote = p.client_paths[0];
    // A Reset with the right id but a wrong token, one with another
    // session's token, one from a server with another key.
    let mut forged = Vec::new();
    let h = Header::new(STATELESS_RESET, server_sid, 0);
    let mut f = vec![0u8; RESET_FRAME_LEN];
    Frame::encode(&h, &[0u8; 16], &mut f).unwrap();
    forged.push(f);
    let key = config.server.reset_key.clone().unwrap();
    forged.push(reset_frame(&RustCrypto, &key, server_sid ^ 1));
    let other = xtmp_core::crypto::Secret::new([9u8; 48]);
    forged.push(reset_frame(&RustCrypto, &other, server_sid));
    for f in &forged {
        p.client.handle_input(p.now, xtmp_core::session::PathId(0), f);
    }
    p.collect();
    assert!(closed(&p).is_none(), "no forged Reset ends the session");
    assert_eq!(p.client.stats().resets_received, 0);
    // The genuine one does.
    p.client.handle_input(p.now, xtmp_core::session::PathId(0), &reset_frame(&RustCrypto, &key, server_sid));
    p.collect();
    assert_eq!(closed(&p), Some(&CloseReason::StatelessReset));
    assert_eq!(remote, p.client_paths[0]);
}

#[test]
fn resets_are_rate_limited_and_never_answer_a_short_datagram() {
    let mut s = Setup::new(PathKind::Datagram);
    s.endpoint.max_resets_per_second = 2;
    s.server().reset_key = Some(Arc::new(xtmp_core::crypto::Secret::new([3u8; 48])));
    let config = Arc::new(s.endpoint.clone());
    let mut p = s.connected();
    restart(&mut p, &config);
    let remote = p.client_paths[0];
    let sealed = |len: usize| {
        let mut h = Header::new(MessageType::HEARTBEAT, 0x1234, 9);
        h.flags = xtmp_core::wire::Flags::ENCRYPTED;
        h.encryption = xtmp_core::wire::EncryptionType::AES_256_GCM;
        let mut f = vec![0u8; 96 + len];
        Frame::encode(&h, &vec![1u8; len], &mut f).unwrap();
        f
    };
    // Exactly a Reset's length: no answer (it could not be smaller).
    p.server.handle_input(p.now, remote, &sealed(RESET_FRAME_LEN - 96));
    assert_eq!(p.server.stats().resets_sent, 0);
    assert_eq!(p.server.stats().resets_withheld, 1);
    for _ in 0..5 {
        p.server.handle_input(p.now, remote, &sealed(64));
    }
    assert_eq!(p.server.stats().resets_sent, 2, "the rate's burst");
    assert_eq!(p.server.stats().resets_withheld, 4);
    let mut buf = vec![0u8; p.server.max_transmit_len()];
    let mut sent = Vec::new();
    while let Some((r, len)) = p.server.poll_transmit(p.now, &mut buf).unwrap() {
        sent.push((r, len));
    }
    assert_eq!(sent, vec![(remote, RESET_FRAME_LEN); 2]);
    p.now += std::time::Duration::from_secs(1);
    p.server.handle_input(p.now, remote, &sealed(64));
    assert_eq!(p.server.stats().resets_sent, 3, "a second later, more");
}

#[test]
fn the_same_identity_gives_the_same_reset_key_and_another_label_another() {
    let id = identity(5);
    let a = id.derive_key(&RustCrypto, b"stateless reset key").unwrap();
    let b = id.derive_key(&RustCrypto, b"stateless reset key").unwrap();
    let c = id.derive_key(&RustCrypto, b"another").unwrap();
    assert!(a.ct_eq(b.expose()));
    assert!(!a.ct_eq(c.expose()));
    assert!(!a.ct_eq(identity(6).derive_key(&RustCrypto, b"stateless reset key").unwrap().expose()));
}

#[test]
fn a_restarted_server_resets_a_stream_from_the_header_of_a_large_frame_holding_none_of_it() {
    let (mut p, config) = pair(PathKind::Stream);
    restart(&mut p, &config);
    // A 40 KB request: one sealed frame, of which only the first 1,000
    // bytes have arrived.
    let options = SendOptions { request: true, reliable: true, ..SendOptions::default() };
    p.client.send(MessageType::WALLET_BALANCE, Bytes::from(vec![7u8; 40_000]), options).unwrap();
    p.flush();
    let (remote, bytes) = p.to_server.pop_front().expect("the request's frame");
    assert!(bytes.len() > 30_000, "one large frame: {}", bytes.len());
    p.server.handle_input(p.now, remote, &bytes[..1_000]);
    assert_eq!(p.server.stats().resets_sent, 1, "answered from the header");
    assert_eq!(p.server.unrouted_streams().1, 0, "none of the frame is held");
    // The rest of it is discarded as it arrives, and framing goes on.
    p.server.handle_input(p.now, remote, &bytes[1_000..]);
    assert_eq!(p.server.unrouted_streams().1, 0);
    assert_eq!(p.server.stats().streams_reset, 0, "the connection stays for the client's next hello");
    p.drive(100, |p| closed(p).is_some());
    assert_eq!(closed(&p), Some(&CloseReason::StatelessReset));
}
