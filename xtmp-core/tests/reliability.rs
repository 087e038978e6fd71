//! Reliable delivery (SPEC.md section 4) end to end through the in-memory
//! pair: fragmentation, loss and duplication, ordering per priority class,
//! deadlines and Forward, priority, path failure, close, memory bounds.

mod common;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use xtmp_core::reliability::RttEstimator;
use xtmp_core::session::{CloseCode, Event, FailReason, MessageId, PathId, PathKind, PriorityClass, SendOptions};
use xtmp_core::wire::{MessageType, Priority};

/// A small deterministic generator for the filters.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn body(seed: u64, len: usize) -> Bytes {
    let mut g = Lcg(seed);
    Bytes::from((0..len).map(|_| g.next() as u8).collect::<Vec<u8>>())
}

fn acked(events: &[Event]) -> Vec<MessageId> {
    events.iter().filter_map(|e| if let Event::Acked(id) = e { Some(*id) } else { None }).collect()
}

#[test]
fn large_messages_are_fragmented_and_reassembled() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut p = Setup::new(kind).start();
        p.connect();
        let biggest = Rc::new(Cell::new(0usize));
        let b2 = biggest.clone();
        p.filter = Some(Box::new(move |_, b| {
            b2.set(b2.get().max(b.len()));
            Verdict::Deliver
        }));
        let bodies = [body(1, 1 << 20), body(2, 70_000), body(3, 10), body(4, 0)];
        let mut ids = Vec::new();
        for b in &bodies {
            ids.push(p.client.send(MessageType::BUNDLE_SUBMIT, b.clone(), SendOptions::default()).unwrap());
        }
        p.drive(100_000, |p| acked(&p.client_events).len() == bodies.len());
        let got: Vec<Bytes> = p.server_messages().iter().map(|m| m.body.clone()).collect();
        assert_eq!(got, bodies, "{kind:?}: every message whole, in order");
        assert_eq!(acked(&p.client_events), ids);
        if kind == PathKind::Datagram {
            // Nothing limits the pair's path: discovery takes it to the
            // default upper bound, and no datagram exceeds what it found.
            let mtu = p.client.stats().max_datagram as usize;
            assert_eq!(mtu, 1452, "path MTU discovered");
            assert!(biggest.get() <= mtu, "datagrams stay within the path's size: {}", biggest.get());
        }
        let s = p.server_session().stats();
        assert_eq!(s.reassembly_bytes, 0, "nothing left held");
        assert_eq!(p.client.stats().unacked_messages, 0);
    }
}

/// `max_transmit_len` bounds every transmit (the pair's buffers are exactly
/// that long); a shorter buffer gets `BufferTooSmall` saying what it needs,
/// and nothing is lost: the same frame goes out with a longer one.
#[test]
fn a_short_transmit_buffer_is_an_error_that_loses_nothing() {
    for frame in [64 * 1024, 200_000] {
        let mut s = Setup::new(PathKind::Stream);
        s.client.params.max_frame_payload = frame;
        s.server().params.max_frame_payload = frame;
        let mut p = s.start();
        p.connect();
        let max = p.client.max_transmit_len();
        assert_eq!(max, xtmp_core::wire::HEADER_LEN + frame as usize);
        assert_eq!(p.server.max_transmit_len(), max);
        let big = body(7, 3 * frame as usize);
        let id = p.client.send(MessageType::BUNDLE_SUBMIT, big.clone(), SendOptions::default()).unwrap();
        let mut short = vec![0u8; 64 * 1024];
        let sent = p.client.stats().frames_sent;
        match p.client.poll_transmit(p.now, &mut short) {
            Err(e) => assert_eq!(e.needed, max, "{frame}"),
            other => panic!("{frame}: {other:?}"),
        }
        assert_eq!(p.client.stats().frames_sent, sent, "the frame that did not fit was not counted as sent");
        p.drive(100_000, |p| acked(&p.client_events).contains(&id));
        let got: Vec<Bytes> = p.server_messages().iter().map(|m| m.body.clone()).collect();
        assert_eq!(got, vec![big], "{frame}: the message whole, once");
    }
}

#[test]
fn a_message_beyond_the_peers_maximum_is_refused_at_send() {
    let mut s = Setup::new(PathKind::Stream);
    s.server().params.max_message_len = 1 << 20;
    let mut p = s.start();
    p.connect();
    let max = p.client.max_message_len();
    assert_eq!(max, 1 << 20, "the server's announced maximum, not the client's own");
    let err = p.client.send(MessageType::BUNDLE_SUBMIT, body(1, max + 1), SendOptions::default()).unwrap_err();
    assert_eq!(err, xtmp_core::session::SendError::TooLarge { len: max + 1, max });
}

/// Loss, duplication and reordering both ways: every reliable message
/// arrives exactly once, in send order within its class, and is acknowledged.
#[test]
fn a_lossy_datagram_path_delivers_every_reliable_message_once_in_order() {
    for seed in 1..=4u64 {
        let mut p = Setup::new(PathKind::Datagram).start();
        p.connect();
        let mut g = Lcg(seed);
        p.filter = Some(Box::new(move |_, _| match g.next() % 100 {
            0..=14 => Verdict::Drop,
            15..=19 => Verdict::Duplicate,
            20..=24 => Verdict::Delay,
            _ => Verdict::Deliver,
        }));
        let classes = [PriorityClass::Normal, PriorityClass::High, PriorityClass::Emergency];
        let mut sent: HashMap<u64, (Priority, Bytes)> = HashMap::new();
        let mut order: Vec<u64> = Vec::new();
        for i in 0..150u64 {
            let class = classes[(i % 3) as usize];
            let len = if i % 10 == 0 { 5_000 } else { (i as usize * 37) % 900 };
            let b = body(seed * 1000 + i, len);
            let options = SendOptions { priority: class, ..Default::default() };
            let id = p.client.send(MessageType::BUNDLE_SUBMIT, b.clone(), options).unwrap();
            let prio = [Priority::Normal, Priority::High, Priority::Emergency][(i % 3) as usize];
            sent.insert(id.0, (prio, b));
            order.push(id.0);
            if i % 20 == 0 {
                p.step();
            }
        }
        p.drive(100_000, |p| acked(&p.client_events).len() == 150);
        p.filter = None;
        p.settle();
        let msgs = p.server_messages();
        assert_eq!(msgs.len(), 150, "seed {seed}: each message exactly once");
        for m in &msgs {
            let (prio, b) = &sent[&m.id.0];
            assert_eq!((&m.priority, &m.body), (prio, b), "seed {seed}: unmodified");
        }
        for prio in [Priority::Normal, Priority::High, Priority::Emergency] {
            let got: Vec<u64> = msgs.iter().filter(|m| m.priority == prio).map(|m| m.id.0).collect();
            let want: Vec<u64> = order.iter().copied().filter(|id| sent[id].0 == prio).collect();
            assert_eq!(got, want, "seed {seed}: send order within {prio:?}");
        }
        let s = p.client.stats();
        assert!(s.lost > 0 && s.retransmissions > 0, "seed {seed}: losses were repaired: {s:?}");
        assert!(s.rtt.is_some());
        assert!(p.client_events.iter().all(|e| !matches!(e, Event::Failed(..) | Event::Closed(_))));
    }
}

#[test]
fn unreliable_messages_are_never_repeated() {
    let mut p = Setup::new(PathKind::Datagram).start();
    p.connect();
    let mut g = Lcg(9);
    p.filter = Some(Box::new(move |dir, _| {
        if dir == Dir::ToServer && g.next().is_multiple_of(4) { Verdict::Drop } else { Verdict::Deliver }
    }));
    for i in 0..200u64 {
        let b = body(i, 100);
        p.client
            .send(MessageType::LIVE_UPDATES, b, SendOptions { stream_data: true, ..SendOptions::unreliable() })
            .unwrap();
        p.step();
    }
    p.drive(10_000, |p| p.client.poll_timeout().is_none_or(|t| t > p.now + Duration::from_secs(1)));
    let msgs = p.server_messages();
    assert!(msgs.len() < 200 && msgs.len() > 100, "about a quarter lost: {}", msgs.len());
    let mut ids: Vec<u64> = msgs.iter().map(|m| m.id.0).collect();
    ids.dedup();
    assert_eq!(ids.len(), msgs.len(), "none twice");
    assert_eq!(p.client.stats().retransmissions, 0);
    assert!(acked(&p.client_events).is_empty(), "no Acked for unreliable messages");
}

#[test]
fn a_missed_deadline_fails_the_message_and_forward_unblocks_the_next() {
    let mut p = Setup::new(PathKind::Datagram).start();
    p.connect();
    let blackhole = Rc::new(Cell::new(true));
    let b2 = blackhole.clone();
    p.filter =
        Some(Box::new(move |dir, _| if dir == Dir::ToServer && b2.get() { Verdict::Drop } else { Verdict::Deliver }));
    let options = SendOptions { deadline: Some(Duration::from_secs(2)), ..Default::default() };
    let lost = p.client.send(MessageType::BUNDLE_SUBMIT, body(1, 3000), options).unwrap();
    p.drive(1000, |p| p.client_events.iter().any(|e| matches!(e, Event::Failed(..))));
    assert!(p.client_events.contains(&Event::Failed(lost, FailReason::Timeout)));
    blackhole.set(false);
    let next = p.client.send(MessageType::BUNDLE_SUBMIT, body(2, 10), SendOptions::default()).unwrap();
    p.drive(1000, |p| acked(&p.client_events).contains(&next) && !p.server_messages().is_empty());
    let got: Vec<MessageId> = p.server_messages().iter().map(|m| m.id).collect();
    assert_eq!(got, [next], "the failed message is skipped, not waited for");
    assert_eq!(p.client.stats().messages_failed, 1);
}

#[test]
fn an_emergency_message_overtakes_a_bulk_transfer() {
    let mut p = Setup::new(PathKind::Stream).start();
    p.connect();
    let bulk = p.client.send(MessageType::BUNDLE_SYNC, body(1, 4 << 20), SendOptions::default()).unwrap();
    // One 64 KiB frame of the bulk message goes out...
    let mut buf = vec![0u8; 70_000];
    let t = p.client.poll_transmit(p.now, &mut buf).unwrap().unwrap();
    p.server.handle_input(p.now, p.remote, &buf[..t.len]);
    // ...then an emergency message is sent: it is next on the wire.
    let options = SendOptions { priority: PriorityClass::Emergency, ..Default::default() };
    let urgent = p.client.send(MessageType::WALLET_TRANSACTION, body(2, 100), options).unwrap();
    let t = p.client.poll_transmit(p.now, &mut buf).unwrap().unwrap();
    p.server.handle_input(p.now, p.remote, &buf[..t.len]);
    p.collect();
    let got: Vec<MessageId> = p.server_messages().iter().map(|m| m.id).collect();
    assert_eq!(got, [urgent], "delivered after at most one frame of the bulk message");
    p.drive(10_000, |p| p.server_messages().len() == 2);
    assert_eq!(p.server_messages()[1].id, bulk);
}

#[test]
fn a_broken_stream_loses_nothing_and_duplicates_nothing() {
    // Messages are sent; some reach the server but their acknowledgements
    // die with the connection, others die on the way. After a reconnection
    // each is delivered exactly once.
    let mut p = Setup::new(PathKind::Stream).start();
    p.connect();
    let cut = Rc::new(Cell::new(0u8));
    let c2 = cut.clone();
    p.filter = Some(Box::new(move |dir, _| match (c2.get(), dir) {
        (1, Dir::ToClient) | (2, _) => Verdict::Drop,
        _ => Verdict::Deliver,
    }));
    cut.set(1);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(p.client.send(MessageType::BUNDLE_SUBMIT, body(i, 500), SendOptions::default()).unwrap());
    }
    p.settle();
    assert_eq!(p.server_messages().len(), 5, "the server has them");
    cut.set(2);
    for i in 5..10 {
        ids.push(p.client.send(MessageType::BUNDLE_SUBMIT, body(i, 500), SendOptions::default()).unwrap());
    }
    p.settle();
    assert!(acked(&p.client_events).is_empty());
    // The connection breaks; the client reconnects.
    p.client.path_closed(PathId(0));
    p.server.remote_closed(p.remote);
    cut.set(0);
    p.add_client_path(PathKind::Stream, "192.0.2.7:40001");
    p.drive(1000, |p| acked(&p.client_events).len() == 10);
    let got: Vec<MessageId> = p.server_messages().iter().map(|m| m.id).collect();
    assert_eq!(got, ids, "each once, in order");
    assert_eq!(acked(&p.client_events), ids);
}

#[test]
fn close_waits_for_acknowledgements() {
    let mut p = Setup::new(PathKind::Datagram).start();
    p.connect();
    let mut g = Lcg(5);
    p.filter = Some(Box::new(move |_, _| if g.next().is_multiple_of(3) { Verdict::Drop } else { Verdict::Deliver }));
    for i in 0..20 {
        p.client.send(MessageType::BUNDLE_SUBMIT, body(i, 800), SendOptions::default()).unwrap();
    }
    p.client.close(p.now, CloseCode::NO_ERROR, "done");
    p.drive(10_000, |p| p.client.is_closed());
    assert_eq!(acked(&p.client_events).len(), 20, "every message was acknowledged before Disconnect");
    assert_eq!(p.server_messages().len(), 20);
}

#[test]
fn abort_fails_what_was_not_acknowledged() {
    let mut p = Setup::new(PathKind::Stream).start();
    p.connect();
    let a = p.client.send(MessageType::BUNDLE_SUBMIT, body(1, 10), SendOptions::default()).unwrap();
    p.client.abort(p.now, CloseCode::NO_ERROR, "bye");
    p.collect();
    assert_eq!(
        p.client_events.iter().find(|e| matches!(e, Event::Failed(..))),
        Some(&Event::Failed(a, FailReason::Closed))
    );
}

#[test]
fn an_empty_reliable_message_is_sent_again_when_lost() {
    // An empty body has no bytes to be missing, but its frame still is.
    let mut p = established(PathKind::Datagram);
    let mut dropped = 0;
    p.filter = Some(Box::new(move |dir, _| {
        if dir == Dir::ToServer && dropped < 2 {
            dropped += 1;
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    let id = p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::new(), SendOptions::default()).unwrap();
    p.drive(10_000, |p| p.client_events.contains(&Event::Acked(id)));
    assert_eq!(p.server_messages().iter().filter(|m| m.id == id && m.body.is_empty()).count(), 1);
    assert!(p.client.stats().retransmissions > 0);
}

#[test]
fn a_small_reassembly_budget_slows_but_never_loses() {
    // The server holds at most 64 KiB out of order; with reordering, many
    // frames are refused unacknowledged and sent again, and all arrive.
    let mut s = Setup::new(PathKind::Datagram);
    let mut server = s.session.clone();
    server.max_reassembly_bytes = 64 * 1024;
    s.server_session = Some(server);
    let mut p = s.start();
    p.connect();
    let mut g = Lcg(3);
    p.filter = Some(Box::new(move |dir, _| {
        if dir == Dir::ToServer && g.next().is_multiple_of(5) { Verdict::Drop } else { Verdict::Deliver }
    }));
    let bodies: Vec<Bytes> = (0..8).map(|i| body(i, 100_000)).collect();
    for b in &bodies {
        p.client.send(MessageType::BUNDLE_SUBMIT, b.clone(), SendOptions::default()).unwrap();
    }
    let mut peak = 0;
    for _ in 0..200_000 {
        if acked(&p.client_events).len() == bodies.len() || !p.step() {
            break;
        }
        peak = peak.max(p.server_session().stats().reassembly_bytes);
    }
    let refused = p.server_session().stats().frames_dropped;
    assert!(refused > 0, "the budget was reached");
    // The budget, plus the message next in line (with its buffer's growth).
    assert!(peak <= 64 * 1024 + 2 * 100_000, "held at most {peak} bytes");
    let got: Vec<Bytes> = p.server_messages().iter().map(|m| m.body.clone()).collect();
    assert_eq!(got, bodies);
}

/// SPEC.md section 4.8: a compressed message arrives as it was sent, in
/// fewer bytes on the wire; incompressible bodies go out as they are.
#[test]
fn compressed_messages_arrive_as_sent_in_fewer_bytes() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let wire = |compress: bool, b: &Bytes| {
            let mut p = Setup::new(kind).start();
            p.connect();
            let sent = Rc::new(Cell::new(0usize));
            let s2 = sent.clone();
            p.filter = Some(Box::new(move |dir, d| {
                if dir == Dir::ToServer {
                    s2.set(s2.get() + d.len());
                }
                Verdict::Deliver
            }));
            let opts = SendOptions { compress, ..SendOptions::default() };
            p.client.send(MessageType::BUNDLE_SUBMIT, b.clone(), opts).unwrap();
            p.drive(100_000, |p| acked(&p.client_events).len() == 1);
            let got = p.server_messages();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].body, *b, "{kind:?}: the application sees the original body");
            sent.get()
        };
        // A JSON-like bundle: repetitive, fragmented when sent as it is.
        let text: String = (0..4000).map(|i| format!("{{\"wallet\":\"w{}\",\"ok\":true}},", i % 50)).collect();
        let text = Bytes::from(text);
        let (plain, packed) = (wire(false, &text), wire(true, &text));
        assert!(packed * 5 < plain, "{kind:?}: {packed} bytes compressed vs {plain} plain");
        // Random bytes do not compress: the same bytes go out either way.
        let noise = body(9, 50_000);
        assert_eq!(wire(true, &noise), wire(false, &noise), "{kind:?}");
    }
}

#[test]
fn a_sender_with_nothing_more_to_send_is_acknowledged_at_once() {
    // An application that awaits each acknowledged send (the adapters'
    // `send`) used to wait the whole ACK delay (25 ms) for every message.
    for kind in [PathKind::Datagram, PathKind::Stream] {
        let mut p = Setup::new(kind).start();
        p.connect();
        for round in 0..3 {
            let id =
                p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"b"), SendOptions::default()).unwrap();
            // No time passes: the ACK comes without waiting for its delay.
            p.settle();
            assert!(p.client_events.contains(&Event::Acked(id)), "{kind:?} round {round}");
        }
        // A burst asks only with its last frame.
        let acks = p.server_session().stats().acks_sent;
        let ids: Vec<_> = (0..20)
            .map(|_| {
                p.client.send(MessageType::EVENT_STREAM, Bytes::from_static(b"e"), SendOptions::default()).unwrap()
            })
            .collect();
        p.settle();
        assert!(ids.iter().all(|id| p.client_events.contains(&Event::Acked(*id))), "{kind:?}");
        let burst_acks = p.server_session().stats().acks_sent - acks;
        assert!(burst_acks <= 2, "{kind:?}: {burst_acks} ACKs for one burst");
    }
}

#[test]
fn a_request_and_its_response_need_no_acknowledgement_frames_of_their_own() {
    // Nobody waits for the ACK of a request (its response follows) or of a
    // response: neither asks for one at once. The server's ACK goes inside
    // the response's frame, the client's inside its next request's, or
    // after the ACK delay when no request follows (SPEC.md 4.3).
    for kind in [PathKind::Datagram, PathKind::Stream] {
        let mut s = Setup::new(kind);
        s.session.mtu_discovery = None;
        let mut p = s.start();
        p.connect();
        // Past the ACK delay: no acknowledgement is owed from the handshake.
        let quiet = p.now + Duration::from_millis(25);
        p.drive(100, |p| p.now >= quiet);
        p.settle();
        let mut previous = None;
        for round in 0..3 {
            let (acks, frames) = (p.client.stats().acks_sent, p.client.stats().frames_sent);
            let req =
                p.client.send(MessageType::WALLET_BALANCE, Bytes::from_static(b"w"), SendOptions::request()).unwrap();
            p.settle();
            // The ACK the client owed for the last response went with the
            // request, inside its frame: one frame.
            let carried = p.client.stats().acks_sent - acks;
            assert_eq!(carried, u64::from(round > 0), "{kind:?} round {round}");
            assert_eq!(p.client.stats().acks_attached, round as u64, "{kind:?} round {round}");
            assert_eq!(p.client.stats().frames_sent - frames, 1, "{kind:?} round {round}");
            if let Some(rid) = previous {
                assert!(p.server_events.contains(&Event::Acked(rid)), "{kind:?} round {round}");
            }
            let m = p.server_messages().last().unwrap().id;
            let server = p.server_session().stats();
            let (server_acks, server_frames) = (server.acks_sent, server.frames_sent);
            let rid = p
                .server_session()
                .respond(m, MessageType::WALLET_BALANCE, Bytes::from_static(b"42"), SendOptions::default())
                .unwrap();
            p.settle();
            assert_eq!(p.client_messages().len(), round + 1, "{kind:?} round {round}");
            // The server's ACK of the request went with the response, and
            // the client sent nothing back: no time passed.
            let server = p.server_session().stats();
            assert_eq!(server.acks_sent - server_acks, 1, "{kind:?} round {round}");
            assert_eq!(server.frames_sent - server_frames, 1, "{kind:?} round {round}: the ACK is inside the response");
            assert_eq!(server.acks_attached, round as u64 + 1, "{kind:?} round {round}");
            assert!(p.client_events.contains(&Event::Acked(req)), "{kind:?} round {round}");
            assert_eq!(p.client.stats().acks_sent - acks, carried, "{kind:?} round {round}");
            assert!(!p.server_events.contains(&Event::Acked(rid)), "{kind:?} round {round}");
            previous = Some(rid);
        }
        // No request follows: the last response is acknowledged after the delay.
        let (t0, rid) = (p.now, previous.unwrap());
        p.drive(100, |p| p.server_events.contains(&Event::Acked(rid)));
        let waited = p.now.saturating_duration_since(t0);
        assert_eq!(waited, Duration::from_millis(25), "{kind:?}");
    }
}

/// A controller whose window never changes, so only the pacer limits a burst.
#[derive(Debug)]
struct FixedWindow(u64);

impl xtmp_core::reliability::Controller for FixedWindow {
    fn on_sent(&mut self, _: xtmp_core::time::Instant, _: u64) {}
    fn on_ack(&mut self, _: xtmp_core::time::Instant, _: xtmp_core::time::Instant, _: u64, _: &RttEstimator) {}
    fn on_congestion_event(&mut self, _: xtmp_core::time::Instant, _: xtmp_core::time::Instant, _: bool) {}
    fn window(&self) -> u64 {
        self.0
    }
}

impl xtmp_core::reliability::ControllerFactory for FixedWindow {
    fn build(&self, _: xtmp_core::time::Instant, _: u64) -> Box<dyn xtmp_core::reliability::Controller> {
        Box::new(FixedWindow(self.0))
    }
}

/// Datagrams the client sends at its current time, without advancing it.
fn burst(p: &mut Pair) -> usize {
    let mut buf = vec![0u8; 2048];
    let mut n = 0;
    while let Some(t) = p.client.poll_transmit(p.now, &mut buf).unwrap() {
        assert!(t.len <= 1200);
        n += 1;
    }
    n
}

#[test]
fn a_datagram_path_paces_a_large_window_and_can_be_told_not_to() {
    for pacing in [true, false] {
        let mut s = Setup::new(PathKind::Datagram);
        s.session.congestion = Arc::new(FixedWindow(10 << 20));
        s.session.pacing = pacing;
        let mut p = s.connected();
        for i in 0..400 {
            let opts = SendOptions::unreliable();
            p.client.send(MessageType::METRICS_STREAM, body(i, 1000), opts).unwrap();
        }
        let first = burst(&mut p);
        if !pacing {
            assert_eq!(first, 400, "without pacing the window alone decides");
            continue;
        }
        // A burst is at most 256 full datagrams' worth (MAX_BURST).
        let limit = 256 * 1200 / 1000;
        assert!((256..=limit).contains(&first), "a burst of {first} datagrams");
        let next = p.client.poll_timeout().expect("a pacing deadline");
        assert!(next > p.now, "the session waits for the pacer instead of spinning");
        p.now = next;
        p.client.handle_timeout(next);
        let more = burst(&mut p);
        assert!(more >= 1, "the pacer releases the next datagram at its deadline");
        let mut total = first + more;
        for _ in 0..10_000 {
            let Some(t) = p.client.poll_timeout() else { break };
            if total == 400 {
                break;
            }
            p.now = t.max(p.now);
            p.client.handle_timeout(p.now);
            total += burst(&mut p);
        }
        assert_eq!(total, 400, "every message goes out, paced");
    }
}

/// A datagram path whose MTU the test sets (0: no limit): larger datagrams vanish.
fn mtu_limited(p: &mut Pair) -> Rc<Cell<usize>> {
    let mtu = Rc::new(Cell::new(0usize));
    let m = mtu.clone();
    p.filter =
        Some(Box::new(move |_, b| if m.get() != 0 && b.len() > m.get() { Verdict::Drop } else { Verdict::Deliver }));
    mtu
}

#[test]
fn path_mtu_discovery_finds_the_path_and_falls_back_on_a_black_hole() {
    let mut p = Setup::new(PathKind::Datagram).start();
    let mtu = mtu_limited(&mut p);
    mtu.set(1300);
    p.connect();
    let mut ids = Vec::new();
    let mut send = |p: &mut Pair, i: u64| {
        ids.push(p.client.send(MessageType::BUNDLE_SUBMIT, body(i, 50_000), SendOptions::default()).unwrap());
        ids.len()
    };
    let n = send(&mut p, 1);
    p.drive(100_000, |p| acked(&p.client_events).len() == n);
    // The search goes on while the session idles (lost probes are found by
    // the probe timeout).
    p.drive(100_000, |p| p.client.stats().max_datagram > 1300 - 16);
    let s = p.client.stats();
    assert!((1300 - 16..=1300).contains(&(s.max_datagram as usize)), "found {}", s.max_datagram);
    assert!(s.mtu_probes >= 4, "the upper bound three times, then a search: {} probes", s.mtu_probes);
    // The path narrows: large datagrams vanish until the session falls back.
    mtu.set(1250);
    for i in 2..6 {
        send(&mut p, i);
    }
    p.drive(100_000, |p| acked(&p.client_events).len() == 5);
    let s = p.client.stats();
    assert_eq!(s.black_holes, 1);
    assert_eq!(s.max_datagram, 1200, "back at the base until the next search");
    let got: Vec<Bytes> = p.server_messages().iter().map(|m| m.body.clone()).collect();
    let want: Vec<Bytes> = (1..6).map(|i| body(i, 50_000)).collect();
    assert_eq!(got, want, "nothing lost, nothing repeated");

    // Without discovery the path stays at the configured size.
    let mut s = Setup::new(PathKind::Datagram);
    s.session.mtu_discovery = None;
    let mut p = s.connected();
    let id = p.client.send(MessageType::BUNDLE_SUBMIT, body(9, 50_000), SendOptions::default()).unwrap();
    p.drive(100_000, |p| acked(&p.client_events) == [id]);
    assert_eq!((p.client.stats().max_datagram, p.client.stats().mtu_probes), (1200, 0));
}
