//! Subscriptions (SPEC.md 4.9) through the in-memory pair: subscribe with
//! a filter, accept or refuse, reliable and best-effort items, unsubscribe,
//! end of stream, limits.

mod common;

use bytes::Bytes;
use common::*;
use xtmp_core::session::{
    ErrorCode, Event, Message, MessageId, MessageKind, PathKind, SendError, SendOptions, SubscriptionId,
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
        p.server_session().end_subscription(sub, ErrorCode(0x100), "bundle confirmed").unwrap();
        p.settle();
        let got = items(&p, sub);
        assert_eq!(got, (0..10u8).map(|i| Bytes::from(vec![i; 100])).collect::<Vec<_>>(), "{kind:?}");
        assert!(p.client_messages().iter().all(|m| m.kind != MessageKind::Item(sub) || m.stream_data));
        let kinds: Vec<MessageKind> = p.client_messages().iter().map(|m| m.kind).collect();
        assert_eq!(kinds.first(), Some(&MessageKind::Response(MessageId(sub.0))), "{kind:?}: accepted first");
        let end = p.client_messages().into_iter().find(|m| m.kind == MessageKind::End(sub)).unwrap().clone();
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
    p.client.unsubscribe(sub).unwrap();
    // Pushed before the server learns of it: on its way, then dropped.
    p.server_session().push(sub, Bytes::from_static(b"late"), SendOptions::default()).unwrap();
    p.settle();
    assert!(server_kinds(&p).contains(&MessageKind::Unsubscribe(sub)));
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
