//! Peers that ignore flow control (SPEC.md 4.6 and 4.9), end to end: a
//! sender whose credit state is tampered with so it ignores the receiver's
//! limits, talking to an honest receiver over a stream path. Only the
//! crate itself can make a session misbehave like this, hence a unit test.

extern crate std;

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::crypto::{AeadAlgorithm, RustCrypto};

fn pair(config: SessionConfig, kind: PathKind) -> (Session, Session) {
    let config = Arc::new(config);
    let make = |role| {
        Session::established_for_fuzzing(
            role,
            Instant::ZERO,
            config.clone(),
            Arc::new(RustCrypto),
            kind,
            AeadAlgorithm::Aes256Gcm,
            [[0xC1; 48], [0x5E; 48]],
            [1, 2],
        )
    };
    (make(Role::Client), make(Role::Server))
}

/// Moves what `from` has to send into `to`. Returns whether anything moved.
fn pump(from: &mut Session, to: &mut Session, now: Instant, buf: &mut [u8]) -> bool {
    let mut moved = false;
    while let Ok(Some(t)) = from.poll_transmit(now, buf) {
        to.handle_input(now, PathId(0), &buf[..t.len]);
        moved = true;
    }
    moved
}

/// Exchanges frames and lets timers run until `until`.
fn run(a: &mut Session, b: &mut Session, now: &mut Instant, until: Instant) {
    loop {
        exchange(a, b, *now);
        let next = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min();
        match next {
            Some(t) if t <= until => {
                *now = (*now).max(t);
                a.handle_timeout(*now);
                b.handle_timeout(*now);
            }
            _ => return *now = until,
        }
    }
}

/// Exchanges frames until both sides are quiet.
fn exchange(a: &mut Session, b: &mut Session, now: Instant) {
    let mut buf = vec![0u8; 1 << 17];
    for _ in 0..10_000 {
        let there = pump(a, b, now, &mut buf);
        let back = pump(b, a, now, &mut buf);
        if !there && !back {
            return;
        }
    }
    panic!("the pair never settled");
}

fn messages(s: &mut Session) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(e) = s.poll_event() {
        if let Event::Message(m) = e {
            out.push(m);
        }
    }
    out
}

#[test]
fn a_sender_that_ignores_the_class_window_loses_its_session() {
    let (mut client, mut server) = pair(SessionConfig::default(), PathKind::Stream);
    // The server announced (by default) a 4 MiB window and 16 MiB messages;
    // this client pretends it may send without limit.
    client.send_credit = SendCredit::new(u32::MAX);
    let now = Instant::from_nanos(1_000_000);
    let body = Bytes::from(vec![7u8; 1 << 20]);
    // The server's application reads nothing. An honest client delivers at
    // most the window and one largest message beyond what was read:
    // 4 MiB + (16 MiB + 32). Twenty 1 MiB messages (with their 32 bytes
    // each) are past that.
    let mut closed_at = None;
    for n in 1..=30 {
        client.send(MessageType::BUNDLE_SUBMIT, body.clone(), SendOptions::default()).unwrap();
        exchange(&mut client, &mut server, now);
        if !server.is_established() {
            closed_at = Some(n);
            break;
        }
    }
    assert_eq!(closed_at, Some(20), "the server closed the session at the first message past the bound");
    assert!(!client.is_established(), "and told the client");
    assert_eq!(server.close_reason, Some(CloseReason::ProtocolViolation(crate::reliability::flow::OVERRUN)));
}

#[test]
fn a_publisher_that_ignores_the_subscription_window_holds_back_only_itself() {
    let config = SessionConfig { explicit_item_release: true, ..SessionConfig::default() };
    let (mut client, mut server) = pair(config, PathKind::Datagram);
    // 64 KiB messages at most, so the bound is reached quickly.
    client.local_max_message = 64 * 1024;
    server.peer_max_message = 64 * 1024;
    let mut now = Instant::from_nanos(1_000_000);
    // The client keeps a 1 MiB subscription window; the server pushes as
    // if there were none.
    client.subs.set_local_window(1 << 20);
    let sub = client.subscribe(MessageType::LIVE_UPDATES, Bytes::new(), SendOptions::default()).unwrap();
    run(&mut client, &mut server, &mut now, Instant::from_nanos(100_000_000));
    let subscribe = messages(&mut server);
    assert_eq!(subscribe.len(), 1);
    server.subs.ignore_peer_window(sub.0);
    let item = Bytes::from(vec![1u8; 64 * 1024]);
    for _ in 0..40 {
        server.push(sub, item.clone(), SendOptions::default()).unwrap();
    }
    run(&mut client, &mut server, &mut now, Instant::from_nanos(5_000_000_000));
    let got = messages(&mut client);
    // The client takes frames of items while at most a window and one
    // largest message (1 MiB + 64 KiB + 32) of them wait unread: 16 items
    // (16 × (64 KiB + 32) = 1 MiB + 512) leave room for the 17th; with
    // it, 1 MiB + 64 KiB + 544 wait, and the 18th is held back ...
    assert_eq!(got.len(), 17);
    let held: u64 = got.iter().map(|m| m.body.len() as u64 + 32).sum();
    assert!(held <= (1 << 20) + 2 * (64 * 1024 + 32), "{held} bytes: at most the window and two messages");
    // ... and acknowledges nothing more: the rest waits at the publisher.
    assert!(server.outbound.len() > 0, "unacknowledged items stay with the publisher");
    assert!(client.stats().frames_dropped > 0);
    // The rest of the session is unaffected: a request still goes through.
    let id = client.send(MessageType::WALLET_REGISTER, Bytes::from_static(b"w"), SendOptions::default()).unwrap();
    run(&mut client, &mut server, &mut now, Instant::from_nanos(6_000_000_000));
    assert!(messages(&mut server).iter().any(|m| m.id == id));
    assert!(client.is_established() && server.is_established());
    // Reading lets the rest in (the publisher repeats what was not
    // acknowledged), each item exactly once, in order.
    let mut all = got;
    for round in 1..=40 {
        while client.release_item(sub) {}
        let until = now + Duration::from_secs(2);
        run(&mut client, &mut server, &mut now, until);
        all.extend(messages(&mut client));
        if all.len() == 40 {
            break;
        }
        assert!(round < 40, "no progress at {} items", all.len());
    }
    assert_eq!(server.stats().messages_failed, 0);
    let ids: Vec<u64> = all.iter().map(|m| m.id.0).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "once each, in push order");
}

#[test]
fn a_publisher_that_ignores_the_window_with_best_effort_items_only_spends_its_own_credit() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let config = SessionConfig { explicit_item_release: true, ..SessionConfig::default() };
        let (mut client, mut server) = pair(config, kind);
        let mut now = Instant::from_nanos(1_000_000);
        client.subs.set_local_window(8 * 1024);
        // 4 KiB messages at most, so the bound is reached quickly.
        client.local_max_message = 4096;
        server.peer_max_message = 4096;
        let max = 4096;
        let sub = client.subscribe(MessageType::EVENT_STREAM, Bytes::new(), SendOptions::default()).unwrap();
        run(&mut client, &mut server, &mut now, Instant::from_nanos(100_000_000));
        assert_eq!(messages(&mut server).len(), 1);
        server.subs.ignore_peer_window(sub.0);
        let item = Bytes::from(vec![7u8; 1024]);
        for _ in 0..100 {
            server.push(sub, item.clone(), SendOptions::unreliable()).unwrap();
            let until = now + Duration::from_millis(1);
            run(&mut client, &mut server, &mut now, until);
        }
        let until = now + Duration::from_secs(2);
        run(&mut client, &mut server, &mut now, until);
        // Taken while at most a window and one largest message wait
        // unread; the rest dropped, acknowledged and never counted.
        let held: u64 = messages(&mut client).iter().map(|m| m.body.len() as u64 + 32).sum();
        assert!(held >= 8 * 1024, "{kind:?}: {held} bytes held");
        assert!(held <= 8 * 1024 + max + 32 + 1056, "{kind:?}: {held} bytes held");
        assert!(client.stats().frames_dropped >= 80, "{kind:?}: {:?}", client.stats());
        assert_eq!(server.stats().lost, 0, "{kind:?}: dropped frames are acknowledged");
        assert!(client.is_established() && server.is_established(), "{kind:?}");
    }
}
