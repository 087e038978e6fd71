//! Subscriptions (SPEC.md 4.9) through the in-memory pair: subscribe with
//! a filter, accept or refuse, reliable and best-effort items, unsubscribe,
//! end of stream, limits.

mod common;

use bytes::Bytes;
use common::*;
use xtmp_core::session::{
    ErrorCode, Event, FailReason, Message, MessageId, MessageKind, PathKind, SendError, SendOptions, SubscriptionId,
};
use xtmp_core::wire::MessageType;

fn server_kinds(p: &Pair) -> Vec<MessageKind> {
    p.server_messages().iter().map(|m| m.kind).collect()
}

fn items(p: &Pair, sub: SubscriptionId) -> Vec<Bytes> {
    p.client_messages().iter().filter(|m| m.kind == MessageKind::Item(sub)).map(|m| m.body.clone()).collect()
}

/// The client subscribes to live updates; returns the subscription and
/// the server's view of the subscribe request.
fn subscribe(p: &mut Pair, filter: &'static [u8]) -> (SubscriptionId, Message) {
    let sub =
        p.client.subscribe(MessageType::LIVE_UPDATES, Bytes::from_static(filter), SendOptions::default()).unwrap();
    p.settle();
    let m = p.server_messages().into_iter().rfind(|m| m.kind == MessageKind::Subscribe).unwrap().clone();
    assert_eq!(SubscriptionId(m.id.0), sub, "the subscription id is the request's message id");
    (sub, m)
}

#[test]
fn a_subscription_is_accepted_fed_and_ended() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut p = established(kind);
        let (sub, m) = subscribe(&mut p, b"bundle 42");
        assert_eq!((m.message_type, &m.body[..]), (MessageType::LIVE_UPDATES, &b"bundle 42"[..]));
        p.server_session().respond(m.id, MessageType::LIVE_UPDATES, Bytes::new(), SendOptions::default()).unwrap();
        for i in 0..10u8 {
            p.server_session().push(sub, Bytes::from(vec![i; 100]), SendOptions::default()).unwrap();
        }
        let end_id = p.server_session().end_subscription(sub, ErrorCode(0x100), "bundle confirmed").unwrap();
        p.settle();
        assert!(p.server_events.contains(&Event::Acked(end_id)), "{kind:?}: the end's own id is acknowledged");
        let got = items(&p, sub);
        assert_eq!(got, (0..10u8).map(|i| Bytes::from(vec![i; 100])).collect::<Vec<_>>(), "{kind:?}");
        assert!(p.client_messages().iter().all(|m| m.kind != MessageKind::Item(sub) || m.stream_data));
        let kinds: Vec<MessageKind> = p.client_messages().iter().map(|m| m.kind).collect();
        assert_eq!(kinds.first(), Some(&MessageKind::Response(MessageId(sub.0))), "{kind:?}: accepted first");
        let end = p.client_messages().into_iter().find(|m| m.kind == MessageKind::End(sub)).unwrap().clone();
        assert_eq!(end.id, end_id);
        assert_eq!(end.end_reason(), Some((ErrorCode(0x100), "bundle confirmed".into())));
        assert_eq!(kinds.last(), Some(&MessageKind::End(sub)), "{kind:?}: the end comes after every item");
        assert_eq!(
            p.server_session().push(sub, Bytes::new(), SendOptions::default()),
            Err(SendError::NoSuchSubscription(sub))
        );
        assert_eq!(p.client.unsubscribe(sub), Err(SendError::NoSuchSubscription(sub)), "already ended");
        assert_eq!((p.client.stats().subscriptions, p.server_session().stats().subscriptions), (0, 0));
    }
}

#[test]
fn items_not_yet_taken_are_withdrawn_by_an_unsubscribe() {
    let mut p = established(PathKind::Datagram);
    let (sub, m) = subscribe(&mut p, b"");
    p.server_session().respond(m.id, MessageType::LIVE_UPDATES, Bytes::new(), SendOptions::default()).unwrap();
    p.settle();
    // The client's application stops reading; items and a plain message arrive.
    p.client_reading = false;
    for i in 0..6u8 {
        let opts = if i % 2 == 0 { SendOptions::default() } else { SendOptions::unreliable() };
        p.server_session().push(sub, Bytes::from(vec![i; 500]), opts).unwrap();
    }
    let plain =
        p.server_session().send(MessageType::LIVE_UPDATES, Bytes::from_static(b"plain"), SendOptions::default());
    p.settle();
    assert!(p.client.stats().unread_bytes > 6 * 500, "delivered, not yet taken");
    p.client.unsubscribe(sub).unwrap();
    p.client_reading = true;
    p.settle();
    assert!(items(&p, sub).is_empty(), "no item after unsubscribe returned");
    let got: Vec<MessageId> = p.client_messages().iter().map(|m| m.id).collect();
    assert!(got.contains(&plain.unwrap()), "other messages are still delivered");
    assert_eq!(p.client.stats().unread_bytes, 0, "the withdrawn items' credit is released");
}

#[test]
fn a_refused_subscription_is_gone_on_both_sides() {
    let mut p = established(PathKind::Stream);
    let (sub, m) = subscribe(&mut p, b"everything");
    p.server_session().respond_error(m.id, ErrorCode::REFUSED, "too broad").unwrap();
    p.settle();
    let answer = p.client_messages().into_iter().find(|m| m.kind == MessageKind::Response(MessageId(sub.0))).unwrap();
    assert_eq!(answer.error(), Some((ErrorCode::REFUSED, "too broad".into())));
    assert_eq!(p.client.unsubscribe(sub), Err(SendError::NoSuchSubscription(sub)));
    assert_eq!(
        p.server_session().push(sub, Bytes::new(), SendOptions::default()),
        Err(SendError::NoSuchSubscription(sub))
    );
}

#[test]
fn an_unsubscribe_stops_the_publisher_and_late_items_are_dropped() {
    let mut p = established(PathKind::Stream);
    let (sub, m) = subscribe(&mut p, b"");
    p.server_session().respond(m.id, MessageType::LIVE_UPDATES, Bytes::new(), SendOptions::default()).unwrap();
    p.settle();
    let unsub_id = p.client.unsubscribe(sub).unwrap();
    // Pushed before the server learns of it: on its way, then dropped.
    p.server_session().push(sub, Bytes::from_static(b"late"), SendOptions::default()).unwrap();
    p.settle();
    assert!(server_kinds(&p).contains(&MessageKind::Unsubscribe(sub)));
    assert!(p.client_events.contains(&Event::Acked(unsub_id)), "the unsubscribe's own id is acknowledged");
    assert!(items(&p, sub).is_empty(), "an item after unsubscribing is not delivered");
    assert_eq!(
        p.server_session().push(sub, Bytes::new(), SendOptions::default()),
        Err(SendError::NoSuchSubscription(sub))
    );
    assert!(p.client.stats().frames_dropped >= 1);
}

#[test]
fn best_effort_items_waiting_to_be_sent_keep_the_newest() {
    let mut s = Setup::new(PathKind::Datagram);
    s.session.subscription_queue = 16;
    let mut p = s.connected();
    let (sub, m) = subscribe(&mut p, b"metrics");
    p.server_session().respond(m.id, MessageType::LIVE_UPDATES, Bytes::new(), SendOptions::default()).unwrap();
    p.settle();
    // Pushed faster than anything goes out (nothing is transmitted between pushes).
    for i in 0..100u8 {
        p.server_session().push(sub, Bytes::from(vec![i]), SendOptions::unreliable()).unwrap();
    }
    assert_eq!(p.server_session().stats().items_superseded, 84);
    p.settle();
    let got: Vec<u8> = items(&p, sub).iter().map(|b| b[0]).collect();
    assert_eq!(got, (84..100).collect::<Vec<u8>>(), "the newest 16, in order");
}

#[test]
fn subscriptions_beyond_the_limit_are_refused() {
    let mut s = Setup::new(PathKind::Stream);
    let mut server = s.session.clone();
    server.max_subscriptions = 2;
    s.server_session = Some(server);
    let mut p = s.connected();
    let subs: Vec<SubscriptionId> = (0..3)
        .map(|_| p.client.subscribe(MessageType::EVENT_STREAM, Bytes::new(), SendOptions::default()).unwrap())
        .collect();
    p.settle();
    assert_eq!(server_kinds(&p), [MessageKind::Subscribe, MessageKind::Subscribe], "the third never reaches the app");
    let refused = p.client_messages().into_iter().find(|m| m.kind == MessageKind::Response(MessageId(subs[2].0)));
    assert_eq!(refused.and_then(|m| m.error()), Some((ErrorCode::REFUSED, "too many subscriptions".into())));
    assert_eq!(p.client.stats().subscriptions, 2);
    assert!(!p.client_events.iter().any(|e| matches!(e, Event::Closed(_))));
}

#[test]
fn only_application_and_extension_types_can_be_subscribed_to() {
    let mut p = established(PathKind::Stream);
    for ty in [MessageType::HEARTBEAT, MessageType(0x4F), MessageType::ERROR] {
        assert_eq!(p.client.subscribe(ty, Bytes::new(), SendOptions::default()), Err(SendError::InvalidType(ty)));
    }
    assert!(p.client.subscribe(MessageType(0x80), Bytes::new(), SendOptions::default()).is_ok(), "extension");
}

/// A pair whose client subscribes with an 8 KiB subscription window and
/// releases items itself (as an adapter with one consumer per
/// subscription does).
fn windowed(kind: PathKind) -> Pair {
    let mut s = Setup::new(kind);
    s.client.params.subscription_window = WINDOW;
    s.session.explicit_item_release = true;
    s.connected()
}

const WINDOW: u32 = 8 * 1024;

fn accepted(p: &mut Pair, filter: &'static [u8]) -> SubscriptionId {
    let (sub, m) = subscribe(p, filter);
    p.server_session().respond(m.id, MessageType::LIVE_UPDATES, Bytes::new(), SendOptions::default()).unwrap();
    p.settle();
    sub
}

fn item(sub: SubscriptionId, i: usize) -> Bytes {
    Bytes::from(vec![(sub.0 as u8).wrapping_mul(16).wrapping_add(i as u8); 1024])
}

#[test]
fn a_subscription_whose_consumer_is_slow_holds_back_only_itself() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut p = windowed(kind);
        let (slow, fast) = (accepted(&mut p, b"slow"), accepted(&mut p, b"fast"));
        for i in 0..20 {
            for sub in [slow, fast] {
                p.server_session().push(sub, item(sub, i), SendOptions::default()).unwrap();
            }
        }
        // A message of the same class pushed after them all.
        let after =
            p.server_session().send(MessageType::LIVE_UPDATES, Bytes::from_static(b"after"), SendOptions::default());
        let after = after.unwrap();
        // Five seconds (the items' deadlines are 30 s): the fast consumer
        // keeps up, the slow one reads nothing.
        let until = p.now + std::time::Duration::from_secs(5);
        while p.now < until {
            while p.client.release_item(fast) {}
            if !p.step() {
                break;
            }
        }
        // 1,056 bytes of credit each: 8 items start below 8 KiB.
        assert_eq!(items(&p, slow).len(), 8, "{kind:?}: a window's worth of the slow subscription");
        assert_eq!(items(&p, fast), (0..20).map(|i| item(fast, i)).collect::<Vec<_>>(), "{kind:?}");
        assert!(p.client_messages().iter().any(|m| m.id == after), "{kind:?}: the class is not blocked");
        let stats = p.server_session().stats();
        assert_eq!(stats.items_waiting, 12, "{kind:?}: 12 items wait for credit");
        assert!(stats.flow_blocked, "{kind:?}");
        // The slow consumer catches up: the rest follows, in order.
        for _ in 0..10_000 {
            while p.client.release_item(slow) {}
            if items(&p, slow).len() == 20 || !p.step() {
                break;
            }
        }
        assert_eq!(items(&p, slow), (0..20).map(|i| item(slow, i)).collect::<Vec<_>>(), "{kind:?}");
        // The last acknowledgements come back.
        let until = p.now + std::time::Duration::from_secs(1);
        while p.now < until && p.step() {}
        let stats = p.server_session().stats();
        assert_eq!((stats.unacked_messages, stats.items_waiting, stats.messages_failed), (0, 0, 0), "{kind:?}");
        assert!(!p.client.release_item(slow), "{kind:?}: nothing left to release");
    }
}

#[test]
fn items_waiting_for_credit_fail_at_their_deadline_or_when_unsubscribed() {
    let mut p = windowed(PathKind::Datagram);
    let sub = accepted(&mut p, b"bundles");
    let short = SendOptions { deadline: Some(std::time::Duration::from_secs(2)), ..SendOptions::default() };
    let ids: Vec<MessageId> = (0..10).map(|i| p.server_session().push(sub, item(sub, i), short).unwrap()).collect();
    p.drive(100_000, |p| p.server_events.iter().filter(|e| matches!(e, Event::Failed(..))).count() == 2);
    for id in &ids[8..] {
        assert!(p.server_events.contains(&Event::Failed(*id, FailReason::Timeout)), "{id:?} never started");
    }
    assert_eq!(items(&p, sub).len(), 8);
    // Those that never started took no credit: once the consumer reads,
    // the next item goes at once.
    while p.client.release_item(sub) {}
    let next = p.server_session().push(sub, item(sub, 10), SendOptions::default()).unwrap();
    p.drive(10_000, |p| p.server_events.contains(&Event::Acked(next)));
    p.settle();
    assert!(p.client.release_item(sub) && !p.client.release_item(sub), "item 10, read");
    // Items waiting when the subscriber leaves fail as unsubscribed.
    let waiting: Vec<MessageId> =
        (11..30).map(|i| p.server_session().push(sub, item(sub, i), SendOptions::default()).unwrap()).collect();
    p.settle();
    p.client.unsubscribe(sub).unwrap();
    p.settle();
    let unsubscribed =
        p.server_events.iter().filter(|e| matches!(e, Event::Failed(_, FailReason::Unsubscribed))).count();
    // The subscriber read 9 items (9,504 bytes of credit) but advertised
    // its limit last at 8 read (8 × 1,056 + 8,192 = 16,640: a SubscriptionCredit
    // goes once the limit grows by half a window), so 7 more start.
    assert_eq!(unsubscribed, waiting.len() - 7, "those beyond the limit");
    assert_eq!(p.server_session().stats().subscriptions, 0);
}

#[test]
fn an_end_waits_behind_items_waiting_for_credit() {
    let mut p = windowed(PathKind::Stream);
    let sub = accepted(&mut p, b"bundle 9");
    for i in 0..12 {
        p.server_session().push(sub, item(sub, i), SendOptions::default()).unwrap();
    }
    p.server_session().end_subscription(sub, ErrorCode(0x100), "confirmed").unwrap();
    assert_eq!(
        p.server_session().push(sub, Bytes::new(), SendOptions::default()),
        Err(SendError::NoSuchSubscription(sub)),
        "nothing after the end, even while it waits"
    );
    p.settle();
    assert_eq!(items(&p, sub).len(), 8);
    assert!(!p.client_messages().iter().any(|m| m.kind == MessageKind::End(sub)), "not before the items");
    for _ in 0..1000 {
        while p.client.release_item(sub) {}
        if !p.step() {
            break;
        }
    }
    let kinds: Vec<MessageKind> = p.client_messages().iter().map(|m| m.kind).collect();
    assert_eq!(items(&p, sub).len(), 12);
    assert_eq!(kinds.last(), Some(&MessageKind::End(sub)));
    assert_eq!((p.client.stats().subscriptions, p.server_session().stats().subscriptions), (0, 0));
}

#[test]
fn a_stalled_subscription_refuses_pushes_of_its_own_not_the_sessions_sends() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut s = Setup::new(kind);
        s.client.params.subscription_window = WINDOW;
        s.session.explicit_item_release = true;
        s.session.subscription_queue = 16;
        // A small session queue: items waiting for credit must not fill it.
        s.session.max_queued_messages = 20;
        let mut p = s.connected();
        let slow = accepted(&mut p, b"slow");
        let mut pushed = 0;
        let full = loop {
            match p.server_session().push(slow, item(slow, pushed), SendOptions::default()) {
                Ok(_) => pushed += 1,
                Err(e) => break e,
            }
            assert!(pushed < 1_000, "{kind:?}: pushes never refused: {:?}", p.server_session().stats());
        };
        assert_eq!(full, SendError::SubscriptionFull(slow), "{kind:?}");
        // 8 items within the window, 16 waiting for it.
        assert_eq!(pushed, 8 + 16, "{kind:?}");
        assert!(full.to_string().contains("has not read enough"), "{full}");
        // The session still sends: more than its queue limit, one by one.
        for i in 0..40u8 {
            p.server_session().send(MessageType::REGISTRY_QUERY, Bytes::from(vec![i]), SendOptions::default()).unwrap();
            p.step();
        }
        p.settle();
        let sent: Vec<u8> = p
            .client_messages()
            .iter()
            .filter(|m| m.message_type == MessageType::REGISTRY_QUERY)
            .map(|m| m.body[0])
            .collect();
        assert_eq!(sent, (0..40).collect::<Vec<u8>>(), "{kind:?}");
        assert!(!p.server_events.iter().any(|e| matches!(e, Event::SubscriptionWritable(_))), "{kind:?}");
        // The consumer reads: one SubscriptionWritable, and pushes go on.
        for _ in 0..10_000 {
            while p.client.release_item(slow) {}
            if p.server_events.iter().any(|e| matches!(e, Event::SubscriptionWritable(_))) || !p.step() {
                break;
            }
        }
        let writable: Vec<_> =
            p.server_events.iter().filter(|e| matches!(e, Event::SubscriptionWritable(_))).cloned().collect();
        assert_eq!(writable, vec![Event::SubscriptionWritable(slow)], "{kind:?}");
        p.server_session().push(slow, item(slow, pushed), SendOptions::default()).unwrap();
    }
}

/// Best-effort pushes to `sub` until one is refused: how many went.
fn push_best_effort_until_full(p: &mut Pair, sub: SubscriptionId, from: usize) -> usize {
    let mut pushed = 0;
    loop {
        match p.server_session().push(sub, item(sub, from + pushed), SendOptions::unreliable()) {
            Ok(_) => pushed += 1,
            Err(e) => {
                assert_eq!(e, SendError::SubscriptionFull(sub));
                return pushed;
            }
        }
        assert!(pushed < 1_000, "best-effort pushes never refused: {:?}", p.server_session().stats());
    }
}

fn writable_events(p: &Pair) -> usize {
    p.server_events.iter().filter(|e| matches!(e, Event::SubscriptionWritable(_))).count()
}

#[test]
fn an_unread_best_effort_subscription_stops_its_publisher() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut p = windowed(kind);
        let sub = accepted(&mut p, b"metrics");
        // 1,056 bytes of credit each: 8 start below the 8 KiB window, and
        // a best-effort item never waits for credit: the ninth is refused.
        assert_eq!(push_best_effort_until_full(&mut p, sub, 0), 8, "{kind:?}");
        // Ten seconds with nobody reading: nothing more goes out.
        let until = p.now + std::time::Duration::from_secs(10);
        while p.now < until && p.step() {}
        let frames = p.server_session().stats().frames_sent;
        assert_eq!(items(&p, sub), (0..8).map(|i| item(sub, i)).collect::<Vec<_>>(), "{kind:?}: none dropped");
        assert_eq!(push_best_effort_until_full(&mut p, sub, 8), 0, "{kind:?}: still no credit");
        assert_eq!(writable_events(&p), 0, "{kind:?}");
        let until = p.now + std::time::Duration::from_secs(10);
        while p.now < until && p.step() {}
        assert!(
            p.server_session().stats().frames_sent <= frames + 2,
            "{kind:?}: an idle publisher, at most a keepalive"
        );
        // The consumer reads: credit comes back, and pushes go on.
        for _ in 0..10_000 {
            while p.client.release_item(sub) {}
            if writable_events(&p) > 0 || !p.step() {
                break;
            }
        }
        assert_eq!(writable_events(&p), 1, "{kind:?}");
        assert!(push_best_effort_until_full(&mut p, sub, 8) >= 4, "{kind:?}: half a window at least");
        assert_eq!(p.client.stats().messages_dropped, 0, "{kind:?}");
    }
}

#[test]
fn lost_best_effort_items_give_their_credit_back() {
    let mut p = windowed(PathKind::Datagram);
    let sub = accepted(&mut p, b"metrics");
    // Every item of a window is lost on the way.
    let path = p.client_paths[0];
    p.black_holes.push((Dir::ToClient, path));
    assert_eq!(push_best_effort_until_full(&mut p, sub, 0), 8);
    let until = p.now + std::time::Duration::from_millis(300);
    while p.now < until && p.step() {}
    assert!(items(&p, sub).is_empty());
    p.black_holes.clear();
    // Nobody reads, yet the publisher may send again: the subscriber never
    // had those items, and the publisher learns that they were lost.
    for _ in 0..10_000 {
        if writable_events(&p) > 0 || !p.step() {
            break;
        }
    }
    assert_eq!(writable_events(&p), 1, "{:?}", p.server_session().stats());
    assert!(p.server_session().stats().lost >= 8);
    assert_eq!(push_best_effort_until_full(&mut p, sub, 8), 8, "the whole window again");
    p.settle();
    assert_eq!(items(&p, sub), (8..16).map(|i| item(sub, i)).collect::<Vec<_>>());
}
