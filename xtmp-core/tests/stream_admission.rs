//! Stream connections that never join a session: garbage, half a frame,
//! silence. Each is closed (SPEC.md 1.7 and 5.x), alone; the established
//! session beside it carries on.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Setup, established};
use xtmp_core::endpoint::{EndpointEvent, Remote, RemoteKind};
use xtmp_core::session::{Event, PathKind, SendOptions};
use xtmp_core::time::Instant;
use xtmp_core::wire::{Frame, HEADER_LEN, Header, MIN_MAX_PAYLOAD, MessageType};

fn stranger(port: u16) -> Remote {
    Remote { addr: format!("198.51.100.9:{port}").parse().unwrap(), kind: RemoteKind::Stream }
}

/// The remotes the endpoint asked to close, leaving other events alone.
fn closes(p: &mut common::Pair) -> Vec<Remote> {
    let mut out = Vec::new();
    while let Some(e) = p.server.poll_event() {
        match e {
            EndpointEvent::CloseRemote(r, _) => out.push(r),
            EndpointEvent::Session(_, e) => p.server_events.push(e),
            _ => {}
        }
    }
    out
}

/// The established client can still talk to the server.
fn still_works(p: &mut common::Pair) {
    let body = Bytes::from_static(b"still here");
    p.client.send(MessageType::REGISTRY_QUERY, body.clone(), SendOptions::default()).unwrap();
    p.drive(1_000, |p| p.server_events.iter().any(|e| matches!(e, Event::Message(m) if m.body == body)));
}

#[test]
fn garbage_on_a_new_stream_closes_that_stream_only() {
    let mut p = established(PathKind::Stream);
    let bad = stranger(1);
    p.server.handle_input(p.now, bad, &[0x5a; 200]);
    assert_eq!(closes(&mut p), [bad], "the garbage connection is closed at once");
    assert_eq!(p.server.stats().streams_reset, 1);
    // More bytes from it (in flight before the reset) change nothing.
    p.server.handle_input(p.now, bad, &[0x5a; 200]);
    assert_eq!(closes(&mut p), [bad]);
    p.server.remote_closed(bad);
    still_works(&mut p);
}

#[test]
fn a_stream_that_stalls_mid_frame_is_closed_at_the_hello_timeout() {
    let mut p = established(PathKind::Stream);
    let timeout = Duration::from_secs(5); // EndpointConfig::default().hello_timeout
    let slow = stranger(2);
    let silent = stranger(3);
    let start = p.now;
    // Ten bytes of a header, then nothing; and a connection that says nothing.
    p.server.handle_input(start, slow, &[0u8; 10]);
    p.server.stream_opened(start, silent);
    assert!(closes(&mut p).is_empty());
    assert!(p.server.poll_timeout().is_some_and(|t| t <= start + timeout));
    // Just before the timeout: still open.
    let before = Instant::from_nanos((start + timeout).as_nanos() - 1);
    p.server.handle_timeout(before);
    assert!(closes(&mut p).is_empty());
    p.server.handle_timeout(start + timeout);
    let mut closed = closes(&mut p);
    closed.sort();
    let mut expected = vec![slow, silent];
    expected.sort();
    assert_eq!(closed, expected);
    assert_eq!(p.server.stats().streams_reset, 2);
    // The established session, older than the timeout, was not touched.
    p.now = start + timeout;
    still_works(&mut p);
}

#[test]
fn a_stream_that_completes_its_handshake_is_not_reset() {
    // The pair's own connection is opened, then handshakes; after the
    // hello timeout (and within the idle timeout) it is still the session's.
    let mut p = Setup::new(PathKind::Stream).start();
    p.server.stream_opened(p.now, p.remote);
    p.connect();
    p.now += Duration::from_secs(6);
    p.server.handle_timeout(p.now);
    assert!(!closes(&mut p).contains(&p.remote));
    assert_eq!(p.server.stats().streams_reset, 0);
    still_works(&mut p);
}

#[test]
fn a_sessions_connection_is_closed_when_the_session_ends() {
    // After its drain period nothing more goes on a session's stream: the
    // endpoint asks for it to be closed, rather than hold it open.
    use xtmp_core::endpoint::CloseRemoteReason;
    use xtmp_core::session::CloseCode;
    let mut p = established(PathKind::Stream);
    p.client.close(p.now, CloseCode(0), "bye");
    let start = p.now;
    p.drive(1_000, |p| p.server.session_count() == 0);
    let closed: Vec<_> = p.closed_remotes.iter().filter(|(r, _, _)| *r == p.remote).collect();
    assert_eq!(closed.len(), 1, "{:?}", p.closed_remotes);
    let (_, why, at) = closed[0];
    assert_eq!(*why, CloseRemoteReason::SessionClosed);
    let drain = xtmp_core::session::SessionConfig::default().drain_period;
    assert!(*at <= start + drain, "closed within the drain period");
}

#[test]
fn a_failed_handshakes_connection_is_closed_within_the_hello_timeout() {
    // The client refuses the server (it pins another identity): the
    // server's session fails too, and its connection is closed at once,
    // not left open.
    use xtmp_core::endpoint::CloseRemoteReason;
    let mut s = Setup::new(PathKind::Stream);
    s.client.verifier = std::sync::Arc::new(xtmp_core::handshake::Fingerprints(vec![common::identity(9).key_id()]));
    let timeout = s.endpoint.hello_timeout;
    let mut p = s.start();
    let start = p.now;
    p.drive(1_000, |p| p.client.is_closed() && p.server.session_count() == 0);
    let closed: Vec<_> = p.closed_remotes.iter().filter(|(r, _, _)| *r == p.remote).collect();
    assert_eq!(closed.len(), 1, "{:?}", p.closed_remotes);
    assert_eq!(closed[0].1, CloseRemoteReason::SessionClosed);
    assert!(closed[0].2 <= start + timeout, "closed {:?} after the start", closed[0].2 - start);
}

#[test]
fn a_handshake_frame_on_a_new_stream_is_capped_at_the_smallest_frame_limit() {
    let mut p = established(PathKind::Stream);
    for (port, len) in [(4, MIN_MAX_PAYLOAD as usize), (5, MIN_MAX_PAYLOAD as usize + 1), (6, 60_000)] {
        let remote = stranger(port);
        let mut frame = vec![0u8; HEADER_LEN + len];
        Frame::encode(&Header::new(MessageType::HANDSHAKE, 77, 0), &vec![0u8; len], &mut frame).unwrap();
        // Its header and a few bytes: the length alone decides.
        p.server.handle_input(p.now, remote, &frame[..HEADER_LEN + 10]);
        let closed = closes(&mut p);
        if len <= MIN_MAX_PAYLOAD as usize {
            assert!(closed.is_empty(), "{len}: within what any client sends before it knows the limit");
            assert_eq!(p.server.unrouted_streams().1, HEADER_LEN + 10);
        } else {
            assert_eq!(closed, [remote], "{len}: closed at its header");
        }
        p.server.remote_closed(remote);
    }
    assert_eq!(p.server.unrouted_streams().1, 0);
    still_works(&mut p);
}
