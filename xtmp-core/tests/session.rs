//! Sessions end to end: a client `Session` against a server `Endpoint`,
//! in memory, with virtual time.

mod common;

use bytes::Bytes;
use common::*;
use xtmp_core::session::{CloseCode, CloseReason, ErrorCode, Event, MessageKind, PathKind, SendOptions};
use xtmp_core::wire::MessageType;

fn established(kind: PathKind) -> Pair {
    let mut p = Setup::new(kind).start();
    p.connect();
    p
}

#[test]
fn handshake_and_request_response_on_both_path_kinds() {
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut p = established(kind);
        assert!(matches!(p.client_events[0], Event::Connected { peer: Some(_), .. }), "{kind:?}");
        let req = p
            .client
            .send(MessageType::WALLET_BALANCE, Bytes::from_static(b"wallet-1"), SendOptions::request())
            .unwrap();
        p.drive(100, |p| !p.server_messages().is_empty());
        let m = p.server_messages()[0].clone();
        assert_eq!(
            (m.message_type, m.kind, &m.body[..]),
            (MessageType::WALLET_BALANCE, MessageKind::Request, &b"wallet-1"[..])
        );
        p.server_session()
            .respond(m.id, MessageType::WALLET_BALANCE, Bytes::from_static(b"42"), SendOptions::default())
            .unwrap();
        p.drive(100, |p| !p.client_messages().is_empty());
        let r = p.client_messages()[0];
        assert_eq!((r.kind, &r.body[..]), (MessageKind::Response(req), &b"42"[..]));
        // Responding twice to one request is refused.
        assert!(
            p.server_session()
                .respond(m.id, MessageType::WALLET_BALANCE, Bytes::new(), SendOptions::default())
                .is_err()
        );
    }
}

#[test]
fn requests_of_reserved_types_get_an_unknown_type_error() {
    let mut p = established(PathKind::Stream);
    // The public API refuses reserved types, so play a peer that sends one
    // by sending an extension type and checking the delivery path instead:
    // reserved application codes are refused at send.
    assert!(p.client.send(MessageType(0x14), Bytes::new(), SendOptions::request()).is_err());
    let id = p.client.send(MessageType(0x77), Bytes::from_static(b"ext"), SendOptions::request()).unwrap();
    p.drive(100, |p| !p.server_messages().is_empty());
    let m = p.server_messages()[0].clone();
    p.server_session().respond_error(m.id, ErrorCode::UNKNOWN_TYPE, "no handler for 0x77").unwrap();
    p.drive(100, |p| !p.client_messages().is_empty());
    let r = p.client_messages()[0];
    assert_eq!(r.kind, MessageKind::Response(id));
    assert_eq!(r.error(), Some((ErrorCode::UNKNOWN_TYPE, "no handler for 0x77".to_string())));
}

#[test]
fn handshake_survives_datagram_loss() {
    // Drop every third datagram in each direction during the handshake.
    let mut s = Setup::new(PathKind::Datagram);
    s.seed = 11;
    let mut p = s.start();
    let mut n = 0u32;
    p.filter = Some(Box::new(move |_, _| {
        n += 1;
        if n.is_multiple_of(3) { Verdict::Drop } else { Verdict::Deliver }
    }));
    p.connect();
    p.filter = None;
    assert!(p.client.stats().handshake_retransmits > 0 || p.server_session().stats().handshake_retransmits > 0);
    p.client.send(MessageType::REGISTRY_QUERY, Bytes::from_static(b"q"), SendOptions::default()).unwrap();
    p.drive(100, |p| p.server_messages().len() == 1);
}

#[test]
fn server_respects_the_amplification_limit() {
    // After the ClientHello, nothing from the client arrives: the server
    // may send at most three times what it received.
    let mut s = Setup::new(PathKind::Datagram);
    s.session.datagram_hello_padding = 0;
    let mut p = s.start();
    let client_sid = p.client.local_session_id().to_be_bytes();
    p.filter = Some(Box::new(move |dir, bytes| {
        // Only frames addressed with the client's own id (its ClientHello)
        // reach the server: nothing proves the client's address.
        if dir == Dir::ToServer && bytes[8..16] != client_sid {
            return Verdict::Drop;
        }
        Verdict::Deliver
    }));
    p.drive(200, |p| p.client.is_closed());
    assert!(p.server_received > 0);
    assert!(p.server_sent <= 3 * p.server_received, "sent {} for {} received", p.server_sent, p.server_received);
    assert!(matches!(p.client_events.last(), Some(Event::Closed(CloseReason::HandshakeTimeout))));
}

#[test]
fn retry_cookie_path() {
    let mut s = Setup::new(PathKind::Datagram);
    s.endpoint.retry = xtmp_core::endpoint::RetryPolicy::Always;
    let mut p = s.start();
    p.connect();
    assert_eq!(p.server.stats().retries_sent, 1);
    assert_eq!(p.server.stats().tokens_rejected, 0);
}

#[test]
fn close_flushes_queued_messages_then_reports_once() {
    let mut p = established(PathKind::Stream);
    for i in 0..10u8 {
        p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from(vec![i; 100]), SendOptions::default()).unwrap();
    }
    p.client.close(p.now, CloseCode(0x1000), "bye");
    p.drive(1000, |p| p.client.is_closed() && p.server.session_count() == 0);
    assert_eq!(p.server_messages().len(), 10);
    let closed: Vec<_> = p.server_events.iter().filter(|e| matches!(e, Event::Closed(_))).collect();
    assert_eq!(closed, [&Event::Closed(CloseReason::Peer { code: CloseCode(0x1000), reason: "bye".into() })]);
    let closed: Vec<_> = p.client_events.iter().filter(|e| matches!(e, Event::Closed(_))).collect();
    assert_eq!(closed, [&Event::Closed(CloseReason::Local { code: CloseCode(0x1000), reason: "bye".into() })]);
}
