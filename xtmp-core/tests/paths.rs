//! Paths (SPEC.md section 3.7): NAT rebinding, reconnection, hybrid
//! sessions, and what an attacker on another address can (not) do.

mod common;

use bytes::Bytes;
use common::*;
use core::time::Duration;
use xtmp_core::endpoint::{Remote, RemoteKind};
use xtmp_core::session::{Event, PathId, PathKind, SendOptions};
use xtmp_core::wire::MessageType;

fn validated(events: &[Event], path: PathId) -> Option<bool> {
    events.iter().find_map(|e| match e {
        Event::PathValidated { path: p, primary } if *p == path => Some(*primary),
        _ => None,
    })
}

#[test]
fn a_nat_rebinding_moves_the_server_to_the_new_address() {
    let mut p = Setup::new(PathKind::Datagram).start();
    p.connect();
    p.rebind(PathId(0), "198.51.100.9:51000");
    let req = p.client.send(MessageType::REGISTRY_QUERY, Bytes::from_static(b"q"), SendOptions::request()).unwrap();
    p.drive(100, |p| validated(&p.server_events, PathId(1)).is_some());
    assert_eq!(validated(&p.server_events, PathId(1)), Some(true), "the server follows the client");
    assert_eq!(p.server.stats().migrations, 1);
    let m = p.server_messages()[0].clone();
    p.server_session()
        .respond(m.id, MessageType::REGISTRY_QUERY, Bytes::from_static(b"a"), SendOptions::default())
        .unwrap();
    p.drive(100, |p| !p.client_messages().is_empty());
    assert_eq!(p.client_messages()[0].kind, xtmp_core::session::MessageKind::Response(req));
}

#[test]
fn replayed_or_forged_frames_from_another_address_open_no_path() {
    let mut p = Setup::new(PathKind::Datagram).start();
    p.connect();
    let captured = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let c2 = captured.clone();
    p.filter = Some(Box::new(move |dir, b| {
        if dir == Dir::ToServer {
            c2.borrow_mut().push(b.to_vec());
        }
        Verdict::Deliver
    }));
    p.client.send(MessageType::REGISTRY_QUERY, Bytes::from_static(b"q"), SendOptions::default()).unwrap();
    p.drive(100, |p| p.server_messages().len() == 1);
    p.filter = None;
    let frame = captured.borrow().last().unwrap().clone();
    let attacker = Remote { addr: "203.0.113.66:4444".parse().unwrap(), kind: RemoteKind::Datagram };
    // The same frame again, from elsewhere: a replay.
    p.server.handle_input(p.now, attacker, &frame);
    // A forged frame: right session id, wrong tag.
    let mut forged = frame.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    xtmp_core::wire::write_crc(&mut forged).unwrap();
    p.server.handle_input(p.now, attacker, &forged);
    p.settle();
    assert_eq!(p.server.stats().migrations, 0);
    assert_eq!(p.server_sent_to(attacker), 0, "nothing is sent to the attacker");
    assert!(p.server_session().stats().replays_rejected >= 1);
    assert_eq!(p.server_messages().len(), 1);
}

#[test]
fn a_hijacked_first_frame_gets_a_challenge_that_is_never_answered() {
    // An on-path attacker races a fresh client frame to the server from its
    // own address. The server accepts the frame (it is authentic) and opens
    // a path, but sends there only a few challenges, within the
    // amplification limit, and keeps talking to the real client.
    let mut p = Setup::new(PathKind::Datagram).start();
    p.connect();
    let attacker = Remote { addr: "203.0.113.66:4444".parse().unwrap(), kind: RemoteKind::Datagram };
    let stolen = std::rc::Rc::new(std::cell::RefCell::new(None));
    let s2 = stolen.clone();
    p.filter = Some(Box::new(move |dir, b| {
        if dir == Dir::ToServer && s2.borrow().is_none() {
            *s2.borrow_mut() = Some(b.to_vec());
            return Verdict::Drop;
        }
        Verdict::Deliver
    }));
    p.client.send(MessageType::REGISTRY_QUERY, Bytes::from_static(b"first"), SendOptions::default()).unwrap();
    p.flush();
    let frame = stolen.borrow_mut().take().unwrap();
    p.server.handle_input(p.now, attacker, &frame);
    p.filter = None;
    assert_eq!(p.server.stats().migrations, 1);
    p.drive(1000, |p| p.server_events.iter().any(|e| matches!(e, Event::PathFailed { path: PathId(1), .. })));
    let sent = p.server_sent_to(attacker);
    assert!(sent > 0 && sent <= 3 * frame.len() as u64, "{sent} bytes to the attacker for {} received", frame.len());
    assert_eq!(validated(&p.server_events, PathId(1)), None);
    // The real client is still served on the original path.
    p.client.send(MessageType::REGISTRY_QUERY, Bytes::from_static(b"second"), SendOptions::default()).unwrap();
    p.drive(100, |p| p.server_messages().len() == 2);
    p.server_session().send(MessageType::LIVE_UPDATES, Bytes::from_static(b"push"), SendOptions::default()).unwrap();
    p.drive(100, |p| p.client_messages().len() == 1);
}

#[test]
fn a_reconnection_continues_the_session_on_a_new_stream() {
    let mut p = Setup::new(PathKind::Stream).start();
    p.connect();
    // The TCP connection breaks.
    p.client.path_closed(PathId(0));
    let old = p.remote;
    p.server.remote_closed(old);
    let id = p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"bundle"), SendOptions::request()).unwrap();
    p.settle();
    assert!(p.server_messages().is_empty(), "no path: the message waits");
    let path = p.add_client_path(PathKind::Stream, "192.0.2.7:40001");
    p.drive(100, |p| validated(&p.client_events, path).is_some() && !p.server_messages().is_empty());
    assert_eq!(validated(&p.client_events, path), Some(true));
    assert_eq!(p.client.primary_path(), path);
    let m = p.server_messages()[0].clone();
    assert_eq!(&m.body[..], b"bundle");
    p.server_session()
        .respond(m.id, MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"ok"), SendOptions::default())
        .unwrap();
    p.drive(100, |p| !p.client_messages().is_empty());
    assert_eq!(p.client_messages()[0].kind, xtmp_core::session::MessageKind::Response(id));
    assert_eq!(p.server.stats().migrations, 1);
}

#[test]
fn a_hybrid_session_validates_its_datagram_path_and_can_switch_to_it() {
    let mut p = Setup::new(PathKind::Stream).start();
    p.connect();
    let udp = p.add_client_path(PathKind::Datagram, "192.0.2.7:40002");
    assert!(!p.client.set_primary_path(udp), "not before it is validated");
    p.drive(100, |p| validated(&p.client_events, udp).is_some());
    assert_eq!(validated(&p.client_events, udp), Some(false), "the stream path stays primary");
    assert!(p.client.is_path_validated(udp));
    assert!(p.client.set_primary_path(udp));
    let before = p.server_received;
    p.client.send(MessageType::METRICS_STREAM, Bytes::from_static(b"m"), SendOptions::default()).unwrap();
    p.drive(100, |p| p.server_messages().len() == 1);
    assert!(p.server_received > before);
    // Losing the datagram path moves traffic back to the stream.
    p.client.path_closed(udp);
    assert_eq!(p.client.primary_path(), PathId(0));
    p.client.send(MessageType::METRICS_STREAM, Bytes::from_static(b"n"), SendOptions::default()).unwrap();
    p.drive(100, |p| p.server_messages().len() == 2);
}

/// A hybrid pair: a stream session with a validated datagram path.
fn hybrid() -> (Pair, PathId) {
    let mut p = Setup::new(PathKind::Stream).start();
    p.connect();
    let udp = p.add_client_path(PathKind::Datagram, "192.0.2.7:40002");
    p.drive(100, |p| validated(&p.client_events, udp).is_some());
    p.drive(100, |p| p.server_events.iter().any(|e| matches!(e, Event::PathValidated { .. })));
    p.settle();
    (p, udp)
}

/// Bytes the client sends on each path (stream, datagram) while `f` runs.
fn client_bytes(p: &mut Pair, udp: PathId, f: impl FnOnce(&mut Pair)) -> (u64, u64) {
    let on = |p: &Pair, path| p.client_sent_by_path.get(&path).copied().unwrap_or(0);
    let before = (on(p, PathId(0)), on(p, udp));
    f(p);
    (on(p, PathId(0)) - before.0, on(p, udp) - before.1)
}

#[test]
fn a_hybrid_session_sends_each_message_on_the_path_its_type_prefers() {
    let (mut p, udp) = hybrid();
    let body = Bytes::from(vec![7u8; 600]);
    let send = |p: &mut Pair, ty, path| {
        p.client.send(ty, body.clone(), SendOptions { path, ..SendOptions::default() }).unwrap();
    };
    let start = p.server_messages().len();
    // Real-time streams prefer the datagram path.
    let (stream, dgram) = client_bytes(&mut p, udp, |p| {
        for _ in 0..20 {
            send(p, MessageType::METRICS_STREAM, None);
        }
        p.drive(200, |p| p.server_messages().len() == start + 20);
    });
    assert!(dgram >= 12_000 && stream < 2_000, "metrics: {stream} B on the stream, {dgram} B on the datagram path");
    // Everything else prefers the stream path.
    let (stream, dgram) = client_bytes(&mut p, udp, |p| {
        for _ in 0..20 {
            send(p, MessageType::WALLET_REGISTER, None);
        }
        p.drive(200, |p| p.server_messages().len() == start + 40);
    });
    assert!(stream >= 12_000 && dgram < 2_000, "wallets: {stream} B on the stream, {dgram} B on the datagram path");
    // A send may override its type's choice.
    let (stream, dgram) = client_bytes(&mut p, udp, |p| {
        for _ in 0..20 {
            send(p, MessageType::METRICS_STREAM, Some(PathKind::Stream));
        }
        p.drive(200, |p| p.server_messages().len() == start + 60);
    });
    assert!(stream >= 12_000 && dgram < 2_000, "overridden: {stream} B on the stream, {dgram} B on the datagram path");

    // The server routes the same way, whichever path it calls primary.
    let stream_remote = p.client_paths[0];
    let udp_remote = p.client_paths[udp.0 as usize];
    let (s0, d0) = (p.server_sent_to(stream_remote), p.server_sent_to(udp_remote));
    for _ in 0..20 {
        p.server_session().send(MessageType::LIVE_UPDATES, body.clone(), SendOptions::default()).unwrap();
    }
    p.drive(200, |p| p.client_messages().len() == 20);
    let (s1, d1) = (p.server_sent_to(stream_remote), p.server_sent_to(udp_remote));
    assert!(d1 - d0 >= 12_000 && s1 - s0 < 2_000, "server live updates: {} B stream, {} B datagram", s1 - s0, d1 - d0);
    for _ in 0..20 {
        p.server_session().send(MessageType::REGISTRY_UPDATE, body.clone(), SendOptions::default()).unwrap();
    }
    p.drive(200, |p| p.client_messages().len() == 40);
    let (s2, d2) = (p.server_sent_to(stream_remote), p.server_sent_to(udp_remote));
    assert!(s2 - s1 >= 12_000 && d2 - d1 < 2_000, "server registry: {} B stream, {} B datagram", s2 - s1, d2 - d1);
}

#[test]
fn losing_a_hybrid_sessions_stream_moves_its_reliable_messages_to_the_datagram_path() {
    let (mut p, udp) = hybrid();
    let start = p.server_messages().len();
    for i in 0..30u8 {
        p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from(vec![i; 800]), SendOptions::default()).unwrap();
    }
    // They are written to the stream, which then breaks before any of them
    // arrives.
    p.flush();
    let stream_remote = p.client_paths[0];
    let in_stream = p.to_server.iter().filter(|(r, _)| *r == stream_remote).count();
    assert!(in_stream > 0, "nothing was written to the stream");
    p.to_server.retain(|(r, _)| *r != stream_remote);
    p.client.path_closed(PathId(0));
    p.server.remote_closed(stream_remote);
    p.drive(500, |p| p.server_messages().len() == start + 30);
    let got: Vec<u8> = p.server_messages()[start..].iter().map(|m| m.body[0]).collect();
    assert_eq!(got, (0..30).collect::<Vec<u8>>(), "each message once, in order");
    assert_eq!(p.client.primary_path(), udp);
}

#[test]
fn in_a_hybrid_session_the_ack_of_a_stream_frame_goes_on_the_stream() {
    // Found by xtmp-sim (swarm_events, seed 161): the ACK of a frame that
    // came on the stream went on the datagram path and was lost there. A
    // stream frame is never declared lost, and ACKs of datagram frames kept
    // the stall rule quiet, so the message waited for an ACK until its
    // deadline failed it. Here every datagram to the client is lost.
    let (mut p, udp) = hybrid();
    p.black_holes.push((Dir::ToClient, p.client_paths[udp.0 as usize]));
    let start = p.server_messages().len();
    let sent = p.now;
    // One at a time, so the server's immediate ACKs would take turns on
    // its two paths.
    let mut ids = Vec::new();
    for i in 0..10u8 {
        ids.push(p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from(vec![i; 300]), SendOptions::default()).unwrap());
        p.settle();
    }
    p.drive(300, |p| ids.iter().all(|id| p.client_events.contains(&Event::Acked(*id))));
    let took = p.now.saturating_duration_since(sent);
    assert!(took < Duration::from_millis(100), "acknowledged after {took:?}");
    assert_eq!(p.client.primary_path(), PathId(0), "the stream still carries the session");
    assert_eq!(p.server_messages().len(), start + 10, "each message arrived once");
}

#[test]
fn a_hybrid_sessions_black_holed_stream_fails_although_its_datagram_path_is_acknowledged() {
    // Only an acknowledged stream frame shows that the stream delivers:
    // ACKs of datagram frames must not keep the stall rule quiet.
    let (mut p, udp) = hybrid();
    p.black_holes.push((Dir::ToServer, p.client_paths[0]));
    let start = p.server_messages().len();
    let bundle =
        p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"bundle"), SendOptions::default()).unwrap();
    let mut metrics = Vec::new();
    for _ in 0..30 {
        let body = Bytes::from_static(b"metrics");
        metrics.push(p.client.send(MessageType::METRICS_STREAM, body, SendOptions::default()).unwrap());
        p.settle();
        p.now += Duration::from_millis(100);
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
        p.collect();
    }
    p.settle();
    let failed = p.client_events.iter().any(|e| matches!(e, Event::PathFailed { path: PathId(0), .. }));
    assert!(failed, "the stream was never declared stalled: {:?}", p.client_events);
    assert_eq!(p.client.primary_path(), udp);
    assert!(p.client_events.contains(&Event::Acked(bundle)), "the bundle went again on the datagram path");
    assert!(metrics.iter().all(|id| p.client_events.contains(&Event::Acked(*id))));
    assert_eq!(p.server_messages().len(), start + 31, "each message arrived once");
}

#[test]
fn a_hybrid_sessions_dead_datagram_path_fails_and_its_messages_go_on_the_stream() {
    let (mut p, udp) = hybrid();
    let udp_remote = p.client_paths[udp.0 as usize];
    p.black_holes.extend([(Dir::ToServer, udp_remote), (Dir::ToClient, udp_remote)]);
    let start = p.server_messages().len();
    let sent = p.now;
    let ids: Vec<_> = (0..20u8)
        .map(|i| p.client.send(MessageType::METRICS_STREAM, Bytes::from(vec![i; 200]), SendOptions::default()).unwrap())
        .collect();
    p.drive(1000, |p| ids.iter().all(|id| p.client_events.contains(&Event::Acked(*id))));
    assert!(p.client_events.contains(&Event::PathFailed { path: udp, error: None }), "{:?}", p.client_events);
    assert_eq!(p.client.primary_path(), PathId(0));
    let took = p.now.saturating_duration_since(sent);
    assert!(took >= xtmp_core::reliability::MIN_STALL, "the datagram path was given up after only {took:?}");
    assert!(took < Duration::from_secs(5), "the datagram path was given up only after {took:?}");
    let got: Vec<u8> = p.server_messages()[start..].iter().map(|m| m.body[0]).collect();
    assert_eq!(got, (0..20).collect::<Vec<u8>>(), "each message once, in order");
    // New real-time messages go on the stream from now on.
    let id = p.client.send(MessageType::METRICS_STREAM, Bytes::from_static(b"later"), SendOptions::default()).unwrap();
    p.drive(100, |p| p.client_events.contains(&Event::Acked(id)));
}

#[test]
fn the_path_limit_is_enforced() {
    let mut s = Setup::new(PathKind::Stream);
    s.session.max_paths = 2;
    let mut p = s.start();
    p.connect();
    assert!(p.client.add_path(PathKind::Datagram, false).is_some());
    assert!(p.client.add_path(PathKind::Datagram, false).is_none());
}

#[test]
fn a_closing_session_that_lost_its_path_waits_without_spinning_and_closes_on_a_new_one() {
    // Found by xtmp-sim (stream_severed, seed 1): the Disconnect of a
    // graceful close waited for an acknowledgement while the only stream
    // had broken; `poll_timeout` answered "now" for output that could not
    // go, and a path added while closing was never challenged.
    let mut p = Setup::new(PathKind::Stream).start();
    p.connect();
    p.filter = Some(Box::new(|_, _| Verdict::Drop));
    let id = p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"late"), SendOptions::default()).unwrap();
    p.settle();
    p.client.close(p.now, xtmp_core::session::CloseCode::NO_ERROR, "bye");
    p.client.path_closed(PathId(0));
    p.server.remote_closed(p.remote);
    p.filter = None;
    p.settle();
    assert!(p.client.poll_transmit(p.now, &mut [0u8; 2048]).unwrap().is_none());
    assert!(p.client.poll_timeout().is_some_and(|t| t > p.now), "no output can go: the deadline is a real one");
    p.add_client_path(PathKind::Stream, "192.0.2.7:40001");
    p.drive(1000, |p| p.client_events.iter().any(|e| matches!(e, Event::Closed(_))));
    assert!(p.client_events.contains(&Event::Acked(id)), "the message went on the new path first");
    assert_eq!(p.server_messages().len(), 1);
    assert!(
        p.client_events.iter().any(|e| matches!(e, Event::Closed(xtmp_core::session::CloseReason::Local { .. }))),
        "{:?}",
        p.client_events
    );
}

#[test]
fn a_rebinding_whose_validation_failed_is_validated_again_once_the_path_works() {
    // Found by xtmp-sim (swarm, seed 83): the client's NAT rebinding fell
    // into a partition, the server's challenges went unanswered and the
    // new path failed; later frames from the same address were routed to
    // the dead path and ignored until both sides timed out.
    let mut p = Setup::new(PathKind::Datagram).start();
    p.connect();
    p.rebind(PathId(0), "198.51.100.9:51000");
    p.filter = Some(Box::new(|dir, _| if dir == Dir::ToClient { Verdict::Drop } else { Verdict::Deliver }));
    let id = p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"after"), SendOptions::default()).unwrap();
    p.drive(10_000, |p| p.server_events.iter().any(|e| matches!(e, Event::PathFailed { .. })));
    p.filter = None;
    p.drive(10_000, |p| p.client_events.contains(&Event::Acked(id)));
    assert!(p.server_events.iter().any(|e| matches!(e, Event::PathValidated { primary: true, .. })));
    assert_eq!(p.server_messages().len(), 1);
}

#[test]
fn a_rebinding_before_the_client_flight_is_acknowledged_loses_nothing() {
    // Found by xtmp-sim (swarm_events, seeds 139 and 76): the client's NAT
    // rebinding came after it had read the server's flight but before it
    // learnt that the server had its own. Its resent flight, cleartext,
    // came from an unknown address and was dropped, and the client, holding
    // its data until the flight was acknowledged, idled out.
    for server_has_flight in [false, true] {
        let mut p = Setup::new(PathKind::Datagram).start();
        p.drive(1000, |p| p.client.is_established());
        let id =
            p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"held"), SendOptions::default()).unwrap();
        // The flight goes out (and arrives, or not); nothing comes back.
        p.filter =
            Some(Box::new(
                move |dir, _| {
                    if dir == Dir::ToServer && server_has_flight { Verdict::Deliver } else { Verdict::Drop }
                },
            ));
        p.settle();
        p.filter = None;
        p.rebind(PathId(0), "198.51.100.9:51000");
        p.drive(10_000, |p| p.client_events.contains(&Event::Acked(id)));
        assert_eq!(p.server_messages().len(), 1, "server had the flight: {server_has_flight}");
        assert!(p.server_events.iter().any(|e| matches!(e, Event::PathValidated { primary: true, .. })));
        assert!(!p.client.is_closed());
    }
}

#[test]
fn a_stream_that_breaks_under_the_client_flight_is_resumed_on_the_next_one() {
    // Found by xtmp-sim (swarm_events, seeds 203, 239, 732 and more): the
    // TCP connection broke while it carried the client's final flight. The
    // server, still in its handshake, gave the session up; the client had
    // already reported `Connected` and reconnected to a session that was
    // gone. Now the server waits (until its handshake timeout), the client
    // reports `Connected` only once the server has proven it has the
    // flight, and it sends the flight again, first, on its next connection.
    for server_has_flight in [false, true] {
        let mut p = Setup::new(PathKind::Stream).start();
        p.drive(1000, |p| p.client.is_established());
        p.filter = Some(Box::new(move |dir, _| match dir {
            Dir::ToServer if server_has_flight => Verdict::Deliver,
            _ => Verdict::Drop,
        }));
        p.settle();
        assert!(!p.client_events.iter().any(|e| matches!(e, Event::Connected { .. })), "nothing confirmed yet");
        // The connection breaks.
        p.filter = None;
        p.client.path_closed(PathId(0));
        let old = p.remote;
        p.server.remote_closed(old);
        p.collect();
        assert!(!p.server_events.iter().any(|e| matches!(e, Event::Closed(_))), "the server waits");
        let path = p.add_client_path(PathKind::Stream, "192.0.2.7:40001");
        p.drive(1000, |p| p.client_events.iter().any(|e| matches!(e, Event::Connected { .. })));
        let id = p.client.send(MessageType::WALLET_REGISTER, Bytes::from_static(b"w"), SendOptions::request()).unwrap();
        p.drive(1000, |p| !p.server_messages().is_empty());
        let m = p.server_messages()[0].clone();
        p.server_session()
            .respond(m.id, MessageType::WALLET_REGISTER, Bytes::from_static(b"ok"), SendOptions::default())
            .unwrap();
        p.drive(1000, |p| !p.client_messages().is_empty());
        assert_eq!(p.client_messages()[0].kind, xtmp_core::session::MessageKind::Response(id));
        assert_eq!(p.client.primary_path(), path);
        let connected = |events: &[Event]| events.iter().filter(|e| matches!(e, Event::Connected { .. })).count();
        assert_eq!((connected(&p.client_events), connected(&p.server_events)), (1, 1), "{server_has_flight}");
    }
}

#[test]
fn a_client_whose_flight_is_never_confirmed_times_out_without_connecting() {
    // Found by xtmp-sim (swarm_events, seed 920): the server's handshake
    // timed out (its clock stepped forward) just before the client's final
    // flight arrived. The client had reported `Connected`, sent into a
    // session that no longer existed and idled out 30 s later.
    let mut p = Setup::new(PathKind::Datagram).start();
    let start = p.now;
    p.drive(1000, |p| p.client.is_established());
    // From now on nothing reaches the client.
    p.filter = Some(Box::new(|dir, _| if dir == Dir::ToClient { Verdict::Drop } else { Verdict::Deliver }));
    p.drive(100_000, |p| p.client.is_closed());
    assert!(!p.client_events.iter().any(|e| matches!(e, Event::Connected { .. })));
    assert_eq!(p.client_events.last(), Some(&Event::Closed(xtmp_core::session::CloseReason::HandshakeTimeout)));
    assert_eq!(p.now.saturating_duration_since(start), xtmp_core::session::SessionConfig::default().handshake_timeout);
}

#[test]
fn a_stalled_stream_fails_and_its_messages_go_again_on_the_next_one() {
    // Found by xtmp-sim (swarm_events, seeds 1850 and 1891): a corrupted
    // length left the server's deframer waiting for bytes that never came.
    // Frames on a stream are never declared lost, so the client's messages
    // failed at their deadline while the server's pushes still arrived.
    let mut p = Setup::new(PathKind::Stream).start();
    p.connect();
    p.filter = Some(Box::new(|dir, _| if dir == Dir::ToServer { Verdict::Drop } else { Verdict::Deliver }));
    let sent_at = p.now;
    let id = p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"b"), SendOptions::default()).unwrap();
    p.drive(100_000, |p| p.client_events.iter().any(|e| matches!(e, Event::PathFailed { path: PathId(0), .. })));
    let stalled = p.now.saturating_duration_since(sent_at);
    assert!(stalled >= xtmp_core::reliability::MIN_STALL, "failed after {stalled:?}");
    assert!(stalled < core::time::Duration::from_secs(10), "failed after {stalled:?}");
    assert!(!p.client.is_closed());
    // The application reconnects; the message goes again.
    p.filter = None;
    let old = p.remote;
    p.server.remote_closed(old);
    p.add_client_path(PathKind::Stream, "192.0.2.7:40001");
    p.drive(10_000, |p| p.client_events.contains(&Event::Acked(id)));
    assert_eq!(p.server_messages().len(), 1);
}

/// The server's path ids in its session's events.
fn server_path_ids(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PathValidated { path, .. } | Event::PathFailed { path, .. } => Some(path.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_session_that_reconnects_and_rebinds_again_and_again_reuses_its_dead_paths() {
    // A month of a flaky network: every reconnection (stream) or rebinding
    // (datagram) adds a path, and the dead ones are retired, so the
    // session's path table (and its memory) stays within the live limit
    // instead of growing with its history.
    for kind in [PathKind::Datagram, PathKind::Stream] {
        let mut p = Setup::new(kind).start();
        p.connect();
        let mut path = PathId(0);
        for i in 1..=200u32 {
            let addr = format!("192.0.2.{}:{}", 1 + i / 250, 40000 + i);
            match kind {
                PathKind::Stream => {
                    p.client.path_closed(path);
                    let old = p.client_paths[path.0 as usize];
                    p.server.remote_closed(old);
                    p.collect();
                    path = p.add_client_path(PathKind::Stream, &addr);
                }
                PathKind::Datagram => p.rebind(path, &addr),
            }
            let body = Bytes::from(i.to_be_bytes().to_vec());
            p.client.send(MessageType::BUNDLE_SUBMIT, body.clone(), SendOptions::request()).unwrap();
            // Until the message arrived and the server validated the new path.
            let validated = |p: &Pair| {
                p.server_events.iter().filter(|e| matches!(e, Event::PathValidated { .. })).count() == i as usize
            };
            p.drive(200, |p| p.server_messages().last().is_some_and(|m| m.body == body) && validated(p));
            assert!(path.0 < 4, "{kind:?} round {i}: client path id {}", path.0);
        }
        let ids = server_path_ids(&p.server_events);
        assert!(ids.len() >= 200, "{kind:?}: {} path events", ids.len());
        assert!(ids.iter().all(|&id| id < 4), "{kind:?}: server path ids {ids:?}");
        assert_eq!(p.server.stats().migrations, 200, "{kind:?}");
    }
}
