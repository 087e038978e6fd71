//! Server push, limits and graceful shutdown on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::sync::{Notify, mpsc};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::IdentityKeypair;
use xtmp_core::session::{CloseReason, ErrorCode};
use xtmp_core::wire::MessageType;
use xtmp_tokio::{
    Client, ClientSetup, Error, PublisherClosed, Rejection, Reply, Router, Server, ServerLimits, ServerSetup,
    SubscriptionEnd, Transport,
};

fn identity() -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([3; 32])).unwrap())
}

async fn start(router: Router, limits: ServerLimits, transport: Transport) -> (Server, Client) {
    let id = identity();
    let setup = ServerSetup { limits, ..ServerSetup::new(id.clone()) };
    let server = Server::bind(setup, transport, "127.0.0.1:0".parse().unwrap(), router).await.unwrap();
    let client =
        Client::connect(server.local_addr(), transport, ClientSetup::pinned(id.public().clone())).await.unwrap();
    (server, client)
}

/// Publishes `n` numbered reliable items (the filter says how many), then
/// ends the stream; refuses a filter of zero.
fn counting() -> Router {
    Router::new().subscription(MessageType::LIVE_UPDATES, |req, publisher| async move {
        let n = u32::from_be_bytes(req.message.body[..4].try_into().map_err(|_| Rejection::refused("bad filter"))?);
        if n == 0 {
            return Err(Rejection::refused("nothing to count"));
        }
        for i in 0..n {
            publisher
                .push(Bytes::from(i.to_be_bytes().to_vec()))
                .await
                .map_err(|e| Rejection::refused(e.to_string()))?;
        }
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_delivers_every_reliable_item_in_order_then_its_end() {
    for transport in [Transport::Tcp, Transport::Udp] {
        let (_server, client) = start(counting(), ServerLimits::default(), transport).await;
        let n = 2_000u32;
        let mut sub = client.subscribe(MessageType::LIVE_UPDATES, Bytes::from(n.to_be_bytes().to_vec())).await.unwrap();
        let mut next = 0u32;
        while let Some(item) = sub.next().await {
            assert_eq!(item.message_type, MessageType::LIVE_UPDATES);
            assert_eq!(u32::from_be_bytes(item.body[..].try_into().unwrap()), next, "{transport:?}");
            next += 1;
        }
        assert_eq!(next, n, "{transport:?}");
        assert!(matches!(sub.end(), Some(SubscriptionEnd::Ended { code: ErrorCode(0), .. })), "{:?}", sub.end());
        // A refused subscription is a typed error; the session carries on.
        match client.subscribe(MessageType::LIVE_UPDATES, Bytes::from(0u32.to_be_bytes().to_vec())).await {
            Err(Error::Remote { code, reason }) => {
                assert_eq!(code, ErrorCode::REFUSED);
                assert_eq!(reason, "nothing to count");
            }
            other => panic!("{transport:?}: expected a refusal, got {other:?}"),
        }
        match client.subscribe(MessageType::EVENT_STREAM, Bytes::new()).await {
            Err(Error::Remote { code, .. }) => assert_eq!(code, ErrorCode::UNKNOWN_TYPE),
            other => panic!("{transport:?}: expected UNKNOWN_TYPE, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_holds_back_only_its_own_publisher() {
    // The publisher counts how far it got; the subscriber reads nothing
    // for a while; requests on the same session still get answers.
    let pushed = Arc::new(AtomicUsize::new(0));
    let p2 = pushed.clone();
    let router = counting()
        .subscription(MessageType::METRICS_STREAM, move |_, publisher| {
            let pushed = p2.clone();
            async move {
                for i in 0..100_000u32 {
                    let body = Bytes::from(vec![i as u8; 1000]);
                    publisher.push(body).await.map_err(|e| Rejection::refused(e.to_string()))?;
                    pushed.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        })
        .route(
            MessageType::REGISTRY_QUERY,
            |r| async move { Ok(Reply::new(MessageType::REGISTRY_QUERY, r.message.body)) },
        );
    let (_server, client) = start(router, ServerLimits::default(), Transport::Tcp).await;
    let mut sub = client.subscribe(MessageType::METRICS_STREAM, Bytes::new()).await.unwrap();
    // Requests go through while the subscription is stalled.
    for i in 0..50u32 {
        let body = Bytes::from(i.to_be_bytes().to_vec());
        let r = client.request(MessageType::REGISTRY_QUERY, body.clone()).await.unwrap();
        assert_eq!(r.body, body);
    }
    let stalled = pushed.load(Ordering::SeqCst);
    assert!(stalled < 100_000, "the publisher ran ahead of an idle subscriber: {stalled} items");
    // The subscriber's window (1 MiB by default) plus the publisher's queue
    // bound what was pushed and not read.
    assert!(stalled <= 2_000, "{stalled} items of 1 kB pushed to a subscriber that read none");
    // Reading resumes the flow, in order.
    for i in 0..5_000u32 {
        let item = sub.next().await.unwrap();
        assert_eq!(item.body[0], i as u8);
    }
    assert!(pushed.load(Ordering::SeqCst) >= 5_000);
}

#[tokio::test]
async fn dropping_a_subscription_closes_its_publisher() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let router = Router::new().subscription(MessageType::EVENT_STREAM, move |_, publisher| {
        let tx = tx.clone();
        async move {
            publisher.push(Bytes::from_static(b"first")).await.map_err(|e| Rejection::refused(e.to_string()))?;
            let why = publisher.closed().await;
            tx.send(why).unwrap();
            Ok(())
        }
    });
    let (_server, client) = start(router, ServerLimits::default(), Transport::Udp).await;
    let mut sub = client.subscribe(MessageType::EVENT_STREAM, Bytes::new()).await.unwrap();
    assert_eq!(&sub.next().await.unwrap().body[..], b"first");
    drop(sub);
    assert_eq!(rx.recv().await.unwrap(), PublisherClosed::Unsubscribed);
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_refused_and_the_rest_answered() {
    let (open_tx, open_rx) = tokio::sync::watch::channel(false);
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let router = Router::new().route(MessageType::BUNDLE_SUBMIT, move |r| {
        let (mut open, entered) = (open_rx.clone(), entered_tx.clone());
        async move {
            entered.send(()).unwrap();
            open.wait_for(|o| *o).await.unwrap();
            Ok(Reply::new(MessageType::BUNDLE_SUBMIT, r.message.body))
        }
    });
    let limits = ServerLimits { max_in_flight: 2, ..ServerLimits::default() };
    let (server, client) = start(router, limits, Transport::Tcp).await;
    let held: Vec<_> = (0..2u8)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.request(MessageType::BUNDLE_SUBMIT, Bytes::from(vec![i])).await })
        })
        .collect();
    // Both are being handled: a third is refused at once.
    entered.recv().await.unwrap();
    entered.recv().await.unwrap();
    match client.request(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"3")).await {
        Err(Error::Remote { code, reason }) => {
            assert_eq!((code, reason.as_str()), (ErrorCode::REFUSED, "too many requests in flight"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(server.stats().await.requests_refused, 1);
    open_tx.send(true).unwrap();
    let mut answers: Vec<u8> = Vec::new();
    for h in held {
        answers.push(h.await.unwrap().unwrap().body[0]);
    }
    answers.sort();
    assert_eq!(answers, [0, 1]);
    // A slot is free again.
    let r = client.request(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"4")).await.unwrap();
    assert_eq!(&r.body[..], b"4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_requests_in_flight_then_tells_the_client() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s2, r2) = (started.clone(), release.clone());
    let router = Router::new().route(MessageType::BUNDLE_SUBMIT, move |r| {
        let (s, rel) = (s2.clone(), r2.clone());
        async move {
            let wait = rel.notified();
            s.notify_one();
            wait.await;
            Ok(Reply::new(MessageType::BUNDLE_SUBMIT, r.message.body))
        }
    });
    let id = identity();
    let server = Server::bind(ServerSetup::new(id.clone()), Transport::Tcp, "127.0.0.1:0".parse().unwrap(), router)
        .await
        .unwrap();
    let addr = server.local_addr();
    let setup = ClientSetup { reconnect: None, ..ClientSetup::pinned(id.public().clone()) };
    let client = Client::connect(addr, Transport::Tcp, setup.clone()).await.unwrap();
    let c = client.clone();
    let request =
        tokio::spawn(async move { c.request(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"bundle")).await });
    started.notified().await;
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    // New connections are refused (the listener is gone) while the
    // request in flight is still being handled.
    let refused = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => break e,
        }
    };
    // (Reset: it reached the backlog as the listener closed.)
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset};
    assert!(matches!(refused.kind(), ConnectionRefused | ConnectionReset), "{refused}");
    assert!(!request.is_finished());
    release.notify_one();
    let answer = request.await.unwrap().unwrap();
    assert_eq!(&answer.body[..], b"bundle");
    match client.closed().await {
        CloseReason::Peer { reason, .. } => assert_eq!(reason, "server shutting down"),
        other => panic!("expected the server's Disconnect, got {other}"),
    }
    shutdown.await.unwrap();
}
