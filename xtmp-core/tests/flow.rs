//! Flow control (SPEC.md section 4.6) end to end through the in-memory
//! pair: a server application that stops reading holds its client back
//! (per priority class, within the window), unread unreliable messages are
//! bounded with the newest kept, a sender told "would block" learns when
//! it may send again, and a Forward releases the credit of what it skips.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use xtmp_core::session::{Event, FailReason, MessageId, PathKind, PriorityClass, SendError, SendOptions};
use xtmp_core::wire::MessageType;

const WINDOW: u32 = 64 * 1024;

fn body(seed: u8, len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| seed.wrapping_add(i as u8)).collect::<Vec<u8>>())
}

fn acked(events: &[Event]) -> Vec<MessageId> {
    events.iter().filter_map(|e| if let Event::Acked(id) = e { Some(*id) } else { None }).collect()
}

/// A connected pair whose server announces a receive window of `window`.
fn pair(kind: PathKind, window: u32) -> Pair {
    let mut s = Setup::new(kind);
    s.server().params.receive_window = window;
    s.connected()
}

/// Lets `d` of virtual time pass (heartbeats, probes and timers run).
fn run_for(p: &mut Pair, d: Duration) {
    let until = p.now + d;
    for _ in 0..100_000 {
        if p.now >= until || !p.step() {
            return;
        }
    }
    panic!("the pair livelocked");
}

#[test]
fn a_server_that_stops_reading_stalls_its_client_which_resumes_when_it_reads() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut p = pair(kind, WINDOW);
        p.server_reading = false;
        let size = 10 * 1024;
        let ids: Vec<MessageId> = (0..40)
            .map(|i| p.client.send(MessageType::BUNDLE_SUBMIT, body(i, size), SendOptions::default()).unwrap())
            .collect();
        run_for(&mut p, Duration::from_secs(5));
        let unread = p.server_session().stats().unread_bytes;
        // A message starts below the limit, so at most one overshoots it.
        assert!(unread <= u64::from(WINDOW) + size as u64, "{kind:?}: {unread} bytes unread");
        assert!(unread >= u64::from(WINDOW), "{kind:?}: the window is used: {unread}");
        let stats = p.client.stats();
        assert!(stats.flow_blocked, "{kind:?}: the client knows it waits for credit");
        assert_eq!(acked(&p.client_events).len() as u64, unread / size as u64, "{kind:?}: acknowledged what is held");
        assert!(p.client.is_established() && p.client.stats().messages_failed == 0);

        p.server_reading = true;
        p.drive(100_000, |p| acked(&p.client_events).len() == ids.len());
        let got: Vec<MessageId> = p.server_messages().iter().map(|m| m.id).collect();
        assert_eq!(got, ids, "{kind:?}: every message once, in order");
        assert!(p.server_messages().iter().enumerate().all(|(i, m)| m.body == body(i as u8, size)));
        assert!(!p.client.stats().flow_blocked);
        assert_eq!(p.server_session().stats().unread_bytes, 0);
    }
}

#[test]
fn a_blocked_class_does_not_hold_back_the_others() {
    let mut p = pair(PathKind::Datagram, 16 * 1024);
    p.server_reading = false;
    for i in 0..8 {
        p.client.send(MessageType::BUNDLE_SUBMIT, body(i, 8 * 1024), SendOptions::default()).unwrap();
    }
    run_for(&mut p, Duration::from_secs(1));
    assert!(p.client.stats().flow_blocked, "normal is out of credit");
    let urgent = SendOptions { priority: PriorityClass::Emergency, ..Default::default() };
    let id = p.client.send(MessageType::WALLET_REGISTER, body(99, 100), urgent).unwrap();
    p.drive(10_000, |p| acked(&p.client_events).contains(&id));
    assert_eq!(acked(&p.client_events).len(), 3, "two normal messages fill the window, the third overshoots it");
}

#[test]
fn unread_unreliable_messages_are_bounded_and_the_newest_kept() {
    let window = 16 * 1024;
    let mut p = pair(PathKind::Stream, window);
    p.server_reading = false;
    let ids: Vec<MessageId> = (0..100)
        .map(|i| p.client.send(MessageType::METRICS_STREAM, body(i, 1024), SendOptions::unreliable()).unwrap())
        .collect();
    run_for(&mut p, Duration::from_secs(1));
    let stats = p.server_session().stats();
    // Each counts its body and 32 bytes of overhead: 15 fit 16 KiB.
    let each = 1024 + 32;
    let kept = window as usize / each;
    assert_eq!(kept, 15);
    assert_eq!(stats.unread_bytes, (kept * each) as u64, "as many as fit the window are kept");
    assert_eq!(stats.messages_dropped, 100 - kept as u64);
    p.server_reading = true;
    p.collect();
    let got: Vec<MessageId> = p.server_messages().iter().map(|m| m.id).collect();
    assert_eq!(got, ids[100 - kept..], "the newest, in arrival order");
}

#[test]
fn a_sender_told_would_block_is_told_when_it_may_send_again() {
    let mut s = Setup::new(PathKind::Stream);
    s.server().params.receive_window = 8 * 1024;
    s.session.max_queued_messages = 8;
    let mut p = s.connected();
    p.server_reading = false;
    let fill = |p: &mut Pair| {
        let mut sent = 0;
        loop {
            match p.client.send(MessageType::BUNDLE_SUBMIT, body(sent, 4096), SendOptions::default()) {
                Ok(_) => sent += 1,
                Err(SendError::WouldBlock) => return sent,
                Err(e) => panic!("{e}"),
            }
        }
    };
    let writable = |p: &Pair| p.client_events.iter().filter(|e| **e == Event::Writable).count();
    assert_eq!(fill(&mut p), 8, "the queue limit");
    run_for(&mut p, Duration::from_secs(2));
    // Two messages fit the server's window and are acknowledged: room for two.
    assert_eq!(writable(&p), 1);
    assert_eq!(fill(&mut p), 2);
    run_for(&mut p, Duration::from_secs(2));
    assert_eq!(writable(&p), 1, "no more room while the server does not read");
    p.server_reading = true;
    p.drive(10_000, |p| writable(p) == 2);
    p.client.send(MessageType::BUNDLE_SUBMIT, body(0, 1), SendOptions::default()).unwrap();
}

#[test]
fn a_forward_releases_the_credit_of_what_it_skips() {
    let size = 10 * 1024;
    let mut p = pair(PathKind::Stream, 2 * size as u32);
    p.server_reading = false;
    let short = SendOptions { deadline: Some(Duration::from_secs(2)), ..Default::default() };
    let ids: Vec<MessageId> =
        (0..5).map(|i| p.client.send(MessageType::BUNDLE_SUBMIT, body(i, size), short).unwrap()).collect();
    // Two fit the window; the other three wait for credit until their deadline.
    p.drive(10_000, |p| p.client_events.iter().filter(|e| matches!(e, Event::Failed(..))).count() == 3);
    assert_eq!(acked(&p.client_events), ids[..2]);
    for id in &ids[2..] {
        assert!(p.client_events.contains(&Event::Failed(*id, FailReason::Timeout)));
    }
    run_for(&mut p, Duration::from_millis(500));
    p.server_reading = true;
    // The Forward skipped 30 KiB the server never got. Were it not released
    // with the two messages read, the next message (at credit offset
    // 50 KiB) would wait forever under a limit of 20 + 20 KiB.
    let next = p.client.send(MessageType::BUNDLE_SUBMIT, body(9, size), SendOptions::default()).unwrap();
    p.drive(10_000, |p| acked(&p.client_events).contains(&next));
    let got: Vec<MessageId> = p.server_messages().iter().map(|m| m.id).collect();
    assert_eq!(got, [ids[0], ids[1], next]);
}
