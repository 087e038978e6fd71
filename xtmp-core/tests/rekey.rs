//! The in-session hybrid re-key (SPEC.md section 3.6): on demand, on
//! schedule, through loss, and the close of a client that never re-keys.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use xtmp_core::session::{CloseCode, CloseReason, Event, PathKind, SendOptions};
use xtmp_core::wire::MessageType;

fn rekeyed(p: &Pair) -> bool {
    p.client.stats().rekeys >= 1 && p.handle.is_some() && p.server_events_rekeys() >= 1
}

trait Rekeys {
    fn server_events_rekeys(&self) -> usize;
}

impl Rekeys for Pair {
    fn server_events_rekeys(&self) -> usize {
        // The server's own count is in its stats; its KeyUpdated events
        // after a re-key carry the sending flag.
        self.server_events.iter().filter(|e| matches!(e, Event::KeyUpdated { sending: true, .. })).count()
    }
}

fn exchange_both_ways(p: &mut Pair, tag: &'static [u8]) {
    let before_c = p.client_messages().len();
    let before_s = p.server_messages().len();
    p.client.send(MessageType::WALLET_REGISTER, Bytes::from_static(tag), SendOptions::default()).unwrap();
    p.server_session().send(MessageType::LIVE_UPDATES, Bytes::from_static(tag), SendOptions::default()).unwrap();
    p.drive(1000, |p| p.client_messages().len() > before_c && p.server_messages().len() > before_s);
    assert_eq!(&p.server_messages().last().unwrap().body[..], tag);
    assert_eq!(&p.client_messages().last().unwrap().body[..], tag);
}

#[test]
fn a_rekey_on_demand_moves_both_directions_to_fresh_keys() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut p = Setup::new(kind).start();
        p.connect();
        let (c0, s0) = (p.client.stats(), p.server_session().stats());
        assert!(p.client.rekey_now(p.now), "{kind:?}");
        assert!(!p.client.rekey_now(p.now), "one exchange at a time");
        let now = p.now;
        assert!(!p.server_session().rekey_now(now), "the client starts re-keys");
        p.drive(1000, rekeyed);
        p.settle();
        let (c1, s1) = (p.client.stats(), p.server_session().stats());
        assert_eq!((c1.rekeys, s1.rekeys), (1, 1), "{kind:?}");
        assert_eq!(c1.send_generation, c0.send_generation + 1);
        assert_eq!(s1.send_generation, s0.send_generation + 1);
        assert_eq!(c1.recv_generation, s1.send_generation, "the client follows the server's new key");
        assert_eq!(s1.recv_generation, c1.send_generation, "the server follows the client's new key");
        assert_eq!(c1.decrypt_failures + s1.decrypt_failures, 0);
        exchange_both_ways(&mut p, b"after the re-key");
        // A second exchange works the same way.
        assert!(p.client.rekey_now(p.now));
        p.drive(1000, |p| p.client.stats().rekeys == 2 && p.server_events_rekeys() == 2);
        exchange_both_ways(&mut p, b"after the second re-key");
    }
}

#[test]
fn a_rekey_completes_through_lost_requests_and_answers() {
    let mut p = Setup::new(PathKind::Datagram).start();
    p.connect();
    // Drop the first two datagrams each way that carry a re-key chunk
    // (the largest frames: more than 1,000 bytes).
    let mut dropped = [0u32; 2];
    p.filter = Some(Box::new(move |dir, b| {
        let i = dir as usize;
        if b.len() > 1000 && dropped[i] < 2 {
            dropped[i] += 1;
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    assert!(p.client.rekey_now(p.now));
    p.drive(2000, rekeyed);
    assert!(p.client.stats().retransmissions >= 1, "the request was repeated");
    p.filter = None;
    exchange_both_ways(&mut p, b"through loss");
}

#[test]
fn rekey_messages_are_split_to_fit_small_datagrams() {
    let mut s = Setup::new(PathKind::Datagram);
    s.session.max_datagram = 600;
    s.session.mtu_discovery = None;
    let mut p = s.start();
    p.connect();
    let seen = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let s2 = seen.clone();
    p.filter = Some(Box::new(move |_, b| {
        s2.set(s2.get().max(b.len()));
        Verdict::Deliver
    }));
    assert!(p.client.rekey_now(p.now));
    p.drive(1000, rekeyed);
    let largest = seen.get();
    assert!(largest <= 600, "largest datagram {largest}");
    assert!(largest > 500, "re-key chunks fill the datagrams: {largest}");
}

#[test]
fn rekeys_run_on_schedule() {
    let mut s = Setup::new(PathKind::Datagram);
    s.session.rekey_interval = Duration::from_secs(60);
    s.session.rekey_overdue = Duration::from_secs(180);
    let mut p = s.start();
    p.connect();
    let start = p.now;
    p.drive(100_000, |p| p.now >= start + Duration::from_secs(600));
    let n = p.client.stats().rekeys;
    assert!((9..=10).contains(&n), "{n} re-keys in 10 minutes at one a minute");
    assert_eq!(p.server_session().stats().rekeys, n);
    exchange_both_ways(&mut p, b"still talking");
}

#[test]
fn a_client_that_never_rekeys_is_closed_by_the_server() {
    let mut s = Setup::new(PathKind::Stream);
    s.session.rekey_interval = Duration::from_secs(36_000);
    s.session.rekey_overdue = Duration::from_secs(72_000);
    let mut server = s.session.clone();
    server.rekey_interval = Duration::from_secs(60);
    server.rekey_overdue = Duration::from_secs(120);
    s.server_session = Some(server);
    let mut p = s.start();
    p.connect();
    let start = p.now;
    p.drive(100_000, |p| p.client.is_closed());
    assert!(p.now >= start + Duration::from_secs(120));
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::Closed(CloseReason::ProtocolViolation(w)) if w.contains("re-key"))),
        "{:?}",
        p.server_events.last()
    );
    assert!(
        p.client_events.iter().any(
            |e| matches!(e, Event::Closed(CloseReason::Peer { code, .. }) if *code == CloseCode::KEY_UPDATE_OVERDUE)
        ),
        "{:?}",
        p.client_events.last()
    );
}
