//! The conformance scenarios, each written once against the
//! runtime-neutral client and server ([`xtmp_adapter`]); [`Pair`] says on
//! which runtimes they run.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::join_all;
use futures::{FutureExt, StreamExt};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_adapter::{
    Backoff, Client, ClientSetup, ConnectionState, Error, Link, PublisherClosed, Rejection, Reply, Request, Router,
    ServerSetup, SubscriptionEnd, Transport,
};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::IdentityKeypair;
use xtmp_core::session::{CloseReason, ErrorCode, PathKind, SendOptions};
use xtmp_core::wire::{HEADER_LEN, MAGIC, MessageType, VERSION, offset};

use crate::harness::{Pair, yield_now};
use crate::proxy::Proxy;

mod peers;
pub use peers::{a_burst_from_one_address, bad_peers, bad_websocket_peers};

/// The transports every scenario runs over.
pub const TRANSPORTS: [Transport; 4] = [Transport::Tcp, Transport::Udp, Transport::WebSocket, Transport::Hybrid];

/// The transports with a byte stream a proxy can cut.
pub const STREAM_TRANSPORTS: [Transport; 3] = [Transport::Tcp, Transport::WebSocket, Transport::Hybrid];

/// Answers `REGISTRY_QUERY` with "answer to " and the body; refuses
/// `WALLET_AUTH`.
fn echo() -> Router {
    Router::new()
        .route(MessageType::REGISTRY_QUERY, answer)
        .route(MessageType::WALLET_AUTH, |_| async move { Err(Rejection::refused("wallet locked")) })
        // Panics in its first poll (on the server's driver), or after it
        // waited (in a task of its own).
        .route(MessageType::WALLET_BALANCE, |_| async move { panic!("a handler bug") })
        .route(MessageType::WALLET_TRANSACTION, |_| async move {
            yield_now().await;
            panic!("a handler bug after an await")
        })
}

async fn answer(req: Request) -> Result<Reply, Rejection> {
    let mut body = b"answer to ".to_vec();
    body.extend_from_slice(&req.message.body);
    Ok(Reply::new(MessageType::REGISTRY_QUERY, body))
}

async fn ask(client: &Client, body: &[u8]) {
    let answer = client.request(MessageType::REGISTRY_QUERY, Bytes::copy_from_slice(body)).await.expect("an answer");
    assert_eq!(answer.message_type, MessageType::REGISTRY_QUERY);
    assert_eq!(&answer.body[..10], b"answer to ");
    assert_eq!(&answer.body[10..], body, "an answer to another request");
}

/// Asserts that the server answered with an Error response of `code` (and
/// `reason`, if given).
fn expect_remote<T: std::fmt::Debug>(r: Result<T, Error>, code: ErrorCode, reason: Option<&str>, t: Transport) {
    match r {
        Err(Error::Remote { code: c, reason: why }) => {
            assert_eq!(c, code, "{t:?}: {why}");
            if let Some(reason) = reason {
                assert_eq!(why, reason, "{t:?}");
            }
        }
        other => panic!("{t:?}: expected {code:?}, got {other:?}"),
    }
}

/// Counts what a handler saw, by body, and wakes whoever waits for a total.
#[derive(Clone)]
struct Tally {
    seen: Arc<Mutex<HashMap<Bytes, usize>>>,
    tick: mpsc::UnboundedSender<()>,
}

impl Tally {
    fn new() -> (Tally, mpsc::UnboundedReceiver<()>) {
        let (tick, ticks) = mpsc::unbounded();
        (Tally { seen: Arc::default(), tick }, ticks)
    }

    fn record(&self, body: Bytes) {
        *self.seen.lock().expect("not poisoned").entry(body).or_default() += 1;
        let _ = self.tick.unbounded_send(());
    }

    /// Waits until `n` distinct bodies were seen; returns the counts.
    async fn until(&self, ticks: &mut mpsc::UnboundedReceiver<()>, n: usize) -> HashMap<Bytes, usize> {
        loop {
            {
                let seen = self.seen.lock().expect("not poisoned");
                if seen.len() >= n {
                    return seen.clone();
                }
            }
            ticks.next().await.expect("the tally is alive");
        }
    }
}

fn short_handshake(mut setup: ClientSetup) -> ClientSetup {
    let mut session = (*setup.session).clone();
    session.handshake_timeout = Duration::from_secs(2);
    setup.session = Arc::new(session);
    setup
}

/// Handshake on every transport: the client connects, is answered, and
/// closes; a client that pins another identity is refused.
pub async fn handshake(pair: Pair) {
    static OTHER: OnceLock<Arc<IdentityKeypair>> = OnceLock::new();
    let other = OTHER.get_or_init(|| {
        Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([43; 32])).expect("keypair"))
    });
    for t in TRANSPORTS {
        let server = pair.serve(t, echo()).await;
        let client = pair.connect(server.local_addr(), t, pair.setup()).await;
        assert_eq!(client.state(), ConnectionState::Connected, "{t:?}");
        ask(&client, b"hello").await;
        let stats = client.stats();
        assert!(stats.session.rtt.is_some(), "{t:?}: no RTT sample after a request: {stats:?}");
        let s = server.stats().await;
        assert_eq!((s.endpoint.sessions_created, s.sessions), (1, 1), "{t:?}: {s:?}");
        let closed = client.close().await;
        assert!(matches!(closed, CloseReason::Local { .. }), "{t:?}: {closed}");

        let wrong = ClientSetup::pinned(other.public().clone());
        match xtmp_adapter::Client::connect(pair.client.clone(), server.local_addr(), t, short_handshake(wrong)).await {
            Err(Error::Closed(CloseReason::HandshakeTimeout | CloseReason::HandshakeFailed(_))) => {}
            other => panic!("{t:?}: a server with another identity was accepted: {other:?}"),
        }
        server.shutdown(Duration::from_secs(1)).await;
    }
}

/// Many tasks share one client; each answer goes to its own request;
/// refusals and unknown types are typed errors and the session survives.
pub async fn requests_under_concurrency(pair: Pair) {
    for t in TRANSPORTS {
        let server = pair.serve(t, echo()).await;
        let client = pair.connect(server.local_addr(), t, pair.setup()).await;
        let tasks: Vec<_> = (0..300u32)
            .map(|i| {
                let c = client.clone();
                pair.spawn(async move {
                    // Some large enough to be fragmented on UDP.
                    let len = if i % 25 == 0 { 5_000 } else { 16 };
                    let body: Vec<u8> = format!("{i:08}").into_bytes().into_iter().cycle().take(len).collect();
                    ask(&c, &body).await;
                })
            })
            .collect();
        join_all(tasks).await;
        let refused = client.request(MessageType::WALLET_AUTH, Bytes::from_static(b"w1")).await;
        expect_remote(refused, ErrorCode::REFUSED, Some("wallet locked"), t);
        let unknown = client.request(MessageType::BUNDLE_SYNC, Bytes::new()).await;
        expect_remote(unknown, ErrorCode::UNKNOWN_TYPE, None, t);
        for ty in [MessageType::WALLET_BALANCE, MessageType::WALLET_TRANSACTION] {
            let panicked = client.request(ty, Bytes::new()).await;
            expect_remote(panicked, ErrorCode::INTERNAL, Some("the handler panicked"), t);
        }
        ask(&client, b"still there").await;
    }
}

fn recording(tally: Tally) -> Router {
    echo().route(MessageType::WALLET_REGISTER, move |r| {
        let tally = tally.clone();
        async move {
            tally.record(r.message.body);
            Ok(Reply::new(MessageType::WALLET_REGISTER, Bytes::new()))
        }
    })
}

/// Acknowledged sends resolve once the server has the message; each is
/// handled exactly once.
pub async fn acknowledged_sends(pair: Pair) {
    const N: usize = 400;
    for t in TRANSPORTS {
        let (tally, mut ticks) = Tally::new();
        let server = pair.serve(t, recording(tally.clone())).await;
        let client = pair.connect(server.local_addr(), t, pair.setup()).await;
        let sends: Vec<_> = (0..N)
            .map(|i| {
                let c = client.clone();
                pair.spawn(
                    async move { c.send(MessageType::WALLET_REGISTER, Bytes::from(format!("wallet {i:04}"))).await },
                )
            })
            .collect();
        for r in join_all(sends).await {
            r.unwrap_or_else(|e| panic!("{t:?}: an acknowledged send failed: {e}"));
        }
        let seen = tally.until(&mut ticks, N).await;
        assert_eq!(seen.len(), N, "{t:?}");
        assert!(seen.values().all(|&n| n == 1), "{t:?}: a message was handled twice");
    }
}

/// Messages one task sends arrive in the order it sent them, whether each
/// went out in the task itself or waited for the driver (busy with other
/// tasks' requests).
pub async fn ordered_sends(pair: Pair) {
    const N: usize = 600;
    for t in TRANSPORTS {
        let order = Arc::new(Mutex::new(Vec::new()));
        let seen = order.clone();
        let router = echo().route(MessageType::WALLET_REGISTER, move |r| {
            seen.lock().expect("not poisoned").push(r.message.body);
            async move { Ok(Reply::new(MessageType::WALLET_REGISTER, Bytes::new())) }
        });
        let server = pair.serve(t, router).await;
        let client = pair.connect(server.local_addr(), t, pair.setup()).await;
        let busy: Vec<_> = (0..4)
            .map(|i| {
                let c = client.clone();
                pair.spawn(async move {
                    for j in 0..50 {
                        ask(&c, format!("busy {i} {j}").as_bytes()).await;
                    }
                })
            })
            .collect();
        for i in 0..N {
            let body = Bytes::from(format!("{i:04}"));
            client.post(MessageType::WALLET_REGISTER, body, SendOptions::default()).expect("queued");
            if i % 7 == 0 {
                yield_now().await;
            }
        }
        join_all(busy).await;
        client.send(MessageType::WALLET_REGISTER, Bytes::from_static(b"last")).await.expect("acknowledged");
        let got = order.lock().expect("not poisoned").clone();
        let want: Vec<Bytes> =
            (0..N).map(|i| Bytes::from(format!("{i:04}"))).chain([Bytes::from_static(b"last")]).collect();
        assert_eq!(got.len(), want.len(), "{t:?}");
        let first_wrong = got.iter().zip(&want).position(|(g, w)| g != w);
        assert_eq!(first_wrong, None, "{t:?}: out of order at {first_wrong:?}");
        client.close().await;
    }
}

/// Messages larger than a frame, on every transport: each is fragmented,
/// reassembled whole and answered (the answer as large), at sizes around
/// the frame payload limit (64 KiB) and up to 1 MB, one at a time and
/// several at once; an acknowledged send of 1 MB is handled once.
pub async fn large_messages(pair: Pair) {
    const SIZES: [usize; 7] = [65_400, 65_440, 65_441, 65_536, 65_700, 100_000, 1_000_000];
    let body = |len: usize, seed: usize| -> Vec<u8> { (0..len).map(|j| (j.wrapping_mul(31) + seed) as u8).collect() };
    for t in TRANSPORTS {
        let (tally, mut ticks) = Tally::new();
        let server = pair.serve(t, recording(tally.clone())).await;
        let client = pair.connect(server.local_addr(), t, pair.setup()).await;
        for (i, len) in SIZES.into_iter().enumerate() {
            ask(&client, &body(len, i)).await;
        }
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (c, b) = (client.clone(), body(200_000 + i, i));
                pair.spawn(async move { ask(&c, &b).await })
            })
            .collect();
        join_all(tasks).await;
        let big = Bytes::from(body(1_000_000, 99));
        client
            .send(MessageType::WALLET_REGISTER, big.clone())
            .await
            .unwrap_or_else(|e| panic!("{t:?}: an acknowledged 1 MB send failed: {e}"));
        let seen = tally.until(&mut ticks, 1).await;
        assert_eq!(seen.get(&big), Some(&1), "{t:?}: the 1 MB message was not handled exactly once");
        let stats = client.stats();
        assert_eq!(stats.session.decrypt_failures, 0, "{t:?}: {stats:?}");
        client.close().await;
        server.shutdown(Duration::from_secs(1)).await;
    }
}

/// Publishes `n` numbered reliable items (the filter says how many), then
/// ends the stream; refuses a filter of zero. `EVENT_STREAM` pushes one
/// item and reports how its publisher was closed.
fn publishing(closed: mpsc::UnboundedSender<PublisherClosed>) -> Router {
    Router::new()
        .subscription(MessageType::LIVE_UPDATES, |req, publisher| async move {
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
        .subscription(MessageType::EVENT_STREAM, move |_, publisher| {
            let closed = closed.clone();
            async move {
                publisher.push(Bytes::from_static(b"first")).await.map_err(|e| Rejection::refused(e.to_string()))?;
                let _ = closed.unbounded_send(publisher.closed().await);
                Ok(())
            }
        })
}

/// Server push: every reliable item in order and then the end; a refused
/// subscription and an unknown type are typed errors; dropping a
/// subscription closes its publisher.
pub async fn subscriptions(pair: Pair) {
    for t in TRANSPORTS {
        let (closed_tx, mut closed) = mpsc::unbounded();
        let server = pair.serve(t, publishing(closed_tx)).await;
        let client = pair.connect(server.local_addr(), t, pair.setup()).await;
        let n = 1_000u32;
        let mut sub = client.subscribe(MessageType::LIVE_UPDATES, Bytes::from(n.to_be_bytes().to_vec())).await.unwrap();
        let mut next = 0u32;
        while let Some(item) = sub.next().await {
            assert_eq!(item.message_type, MessageType::LIVE_UPDATES);
            assert_eq!(u32::from_be_bytes(item.body[..].try_into().unwrap()), next, "{t:?}: out of order");
            next += 1;
        }
        assert_eq!(next, n, "{t:?}");
        assert!(matches!(sub.end(), Some(SubscriptionEnd::Ended { code: ErrorCode(0), .. })), "{:?}", sub.end());
        let refused = client.subscribe(MessageType::LIVE_UPDATES, Bytes::from(0u32.to_be_bytes().to_vec())).await;
        expect_remote(refused, ErrorCode::REFUSED, Some("nothing to count"), t);
        let unknown = client.subscribe(MessageType::METRICS_STREAM, Bytes::new()).await;
        expect_remote(unknown, ErrorCode::UNKNOWN_TYPE, None, t);
        let mut sub = client.subscribe(MessageType::EVENT_STREAM, Bytes::new()).await.unwrap();
        assert_eq!(&sub.next().await.expect("an item").body[..], b"first");
        drop(sub);
        assert_eq!(closed.next().await, Some(PublisherClosed::Unsubscribed), "{t:?}");
    }
}

/// The server's subscription budget (`ServerLimits::max_subscriptions`):
/// one subscription past it is refused with a typed error naming the
/// budget, and a subscription that ends gives its place back.
pub async fn subscription_budget(pair: Pair) {
    let (closed_tx, mut closed) = mpsc::unbounded();
    let mut setup = ServerSetup::new(crate::harness::identity());
    setup.limits.max_subscriptions = 2;
    let server = pair.serve_with(setup, Transport::Tcp, publishing(closed_tx)).await;
    let client = pair.connect(server.local_addr(), Transport::Tcp, pair.setup()).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut sub = client.subscribe(MessageType::EVENT_STREAM, Bytes::new()).await.expect("within the budget");
        assert_eq!(&sub.next().await.expect("an item").body[..], b"first");
        held.push(sub);
    }
    let over = client.subscribe(MessageType::EVENT_STREAM, Bytes::new()).await;
    expect_remote(over, ErrorCode::REFUSED, Some("the server's subscription budget is spent"), Transport::Tcp);
    drop(held.pop());
    assert_eq!(closed.next().await, Some(PublisherClosed::Unsubscribed));
    // The place comes back once the publisher's handler has returned.
    let mut again = None;
    for _ in 0..1000 {
        match client.subscribe(MessageType::EVENT_STREAM, Bytes::new()).await {
            Ok(sub) => {
                again = Some(sub);
                break;
            }
            // A round trip (answered UNKNOWN_TYPE) lets the handler finish.
            Err(_) => drop(client.request(MessageType::WALLET_BALANCE, Bytes::new()).await),
        }
    }
    let mut again = again.expect("the place given back");
    assert_eq!(&again.next().await.expect("an item").body[..], b"first");
    server.shutdown(Duration::from_secs(1)).await;
}

/// The items-per-second budgets (`ServerLimits::max_session_items_per_second`):
/// a publisher faster than its session's budget is held back (counted in
/// `ServerStats::items_throttled`), and every reliable item still arrives,
/// in order; with no budget nothing is held back.
pub async fn item_budget(pair: Pair) {
    for budget in [100, 0] {
        let (closed_tx, _closed) = mpsc::unbounded();
        let mut setup = ServerSetup::new(crate::harness::identity());
        setup.limits.max_session_items_per_second = budget;
        setup.limits.max_items_per_second = 0;
        let server = pair.serve_with(setup, Transport::Tcp, publishing(closed_tx)).await;
        let client = pair.connect(server.local_addr(), Transport::Tcp, pair.setup()).await;
        // A tenth of a second's worth (10) goes at once; the rest waits.
        let n = 40u32;
        let mut sub = client.subscribe(MessageType::LIVE_UPDATES, Bytes::from(n.to_be_bytes().to_vec())).await.unwrap();
        let mut next = 0u32;
        while let Some(item) = sub.next().await {
            assert_eq!(u32::from_be_bytes(item.body[..].try_into().unwrap()), next, "out of order");
            next += 1;
        }
        assert_eq!(next, n);
        let throttled = server.stats().await.items_throttled;
        if budget == 0 {
            assert_eq!(throttled, 0, "no budget, nothing held back");
        } else {
            assert!(throttled > 0, "40 items at once past a budget of 100/s");
        }
        server.shutdown(Duration::from_secs(1)).await;
    }
}

/// Asks until `done` holds, for at most 10 s: for what happens in the
/// background, each request a round trip that lets it progress.
async fn ask_until(client: &Client, what: &str, done: impl Fn(&Client) -> bool) {
    let start = std::time::Instant::now();
    while !done(client) {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: not after 10 s: {:?}", client.stats());
        ask(client, b"meanwhile").await;
    }
}

/// A TCP connection (bare, under WebSocket, or a hybrid session's) cut
/// mid-stream: the client reconnects to the same session (a hybrid one
/// carries on over UDP meanwhile, without ever counting as disconnected),
/// and every acknowledged send is handled exactly once.
pub async fn reconnection(pair: Pair) {
    const N: usize = 400;
    for t in STREAM_TRANSPORTS {
        let (tally, mut ticks) = Tally::new();
        let server = pair.serve(t, recording(tally.clone())).await;
        let proxy = Proxy::start(pair.client.clone(), server.local_addr()).await.expect("proxy");
        let backoff = Backoff { initial: Duration::from_millis(20), ..Backoff::default() };
        let setup = ClientSetup { reconnect: Some(backoff), ..pair.setup() };
        let client = pair.connect(proxy.addr, t, setup).await;
        let send = |i: usize| {
            let c = client.clone();
            pair.spawn(async move { c.send(MessageType::WALLET_REGISTER, Bytes::from(format!("wallet {i:04}"))).await })
        };
        for r in join_all((0..N / 2).map(send)).await {
            r.unwrap_or_else(|e| panic!("{t:?}: not acknowledged before the cut: {e}"));
        }
        let hybrid = t == Transport::Hybrid;
        if hybrid {
            ask_until(&client, "the UDP path joins", |c| c.stats().paths == 2).await;
        }
        let mut changed = Box::pin(client.state_changed());
        assert!(futures::poll!(&mut changed).is_pending(), "{t:?}: the state changed with nothing happening");
        proxy.cut();
        // The other half while the connection is being lost and redialed.
        let second: Vec<_> = (N / 2..N).map(send).collect();
        if !hybrid {
            assert!(matches!((&mut changed).await, ConnectionState::Reconnecting { .. }), "{t:?}");
        }
        for r in join_all(second).await {
            r.unwrap_or_else(|e| panic!("{t:?}: not acknowledged after the reconnection: {e}"));
        }
        let seen = tally.until(&mut ticks, N).await;
        assert_eq!(seen.len(), N, "{t:?}: every message arrived");
        assert!(seen.values().all(|&n| n == 1), "{t:?}: a message was applied twice");
        // The second half may all have been acknowledged on the old
        // connection before the proxy tore it down: only an answer after
        // the cut shows the new connection works.
        ask(&client, b"after").await;
        if hybrid {
            ask_until(&client, "the stream is redialed", |c| c.stats().paths_redialed >= 1 && c.stats().paths == 2)
                .await;
            assert!(futures::poll!(&mut changed).is_pending(), "hybrid: the state changed: {:?}", client.state());
        }
        assert_eq!(client.state(), ConnectionState::Connected, "{t:?}");
        let stats = client.stats();
        assert!(stats.paths_redialed >= 1, "{t:?}: {stats:?}");
        assert_eq!(stats.sessions, 1, "{t:?}: the session was resumed, not replaced: {stats:?}");
    }
}

/// Echoes `BUNDLE_SUBMIT` once the returned sender fires (or is
/// dropped); each handler that starts ticks the returned receiver.
fn gated() -> (Router, mpsc::UnboundedReceiver<()>, oneshot::Sender<()>) {
    let (started_tx, started) = mpsc::unbounded::<()>();
    let (open, gate) = oneshot::channel::<()>();
    let gate = gate.shared();
    let router = Router::new().route(MessageType::BUNDLE_SUBMIT, move |r| {
        let (started, gate) = (started_tx.clone(), gate.clone());
        async move {
            let _ = started.unbounded_send(());
            let _ = gate.await;
            Ok(Reply::new(MessageType::BUNDLE_SUBMIT, r.message.body))
        }
    });
    (router, started, open)
}

/// Request timeouts: requests the server does not answer in time fail
/// with `Error::Timeout` and the session goes on; their late answers are
/// dropped; a request waiting for a reconnection times out too.
pub async fn request_timeouts(pair: Pair) {
    const STUCK: usize = 3;
    let timeout = Duration::from_millis(300);
    for t in [Transport::Tcp, Transport::Udp] {
        let (router, mut started, open) = gated();
        let server = pair.serve(t, router.route(MessageType::REGISTRY_QUERY, answer)).await;
        let setup = ClientSetup { request_timeout: timeout, reconnect: None, ..pair.setup() };
        let client = pair.connect(server.local_addr(), t, setup).await;
        let stuck: Vec<_> = (0..STUCK)
            .map(|i| {
                let c = client.clone();
                pair.spawn(async move {
                    let began = std::time::Instant::now();
                    let r = c.request(MessageType::BUNDLE_SUBMIT, Bytes::from(vec![i as u8])).await;
                    (r, began.elapsed())
                })
            })
            .collect();
        for _ in 0..STUCK {
            started.next().await.expect("a handler started");
        }
        // Answered while the others wait.
        ask(&client, b"not stuck").await;
        for (r, waited) in join_all(stuck).await {
            assert!(matches!(r, Err(Error::Timeout)), "{t:?}: {r:?}");
            assert!(waited >= timeout, "{t:?}: timed out after {waited:?}");
        }
        // The late answers reach a client that no longer waits for them.
        open.send(()).expect("handlers wait");
        ask(&client, b"after the late answers").await;
        assert_eq!(client.state(), ConnectionState::Connected, "{t:?}");
        client.close().await;
        server.shutdown(Duration::from_secs(1)).await;
    }

    // Waiting for a reconnection that does not come in time: with the
    // session alive on the server (the connection was cut), and with no
    // session (the server left).
    let server = pair.serve(Transport::Tcp, echo()).await;
    let proxy = Proxy::start(pair.client.clone(), server.local_addr()).await.expect("proxy");
    let backoff = Backoff { initial: Duration::from_secs(30), ..Backoff::default() };
    let mut setup = ClientSetup { request_timeout: timeout, reconnect: Some(backoff), ..pair.setup() };
    let mut session = (*setup.session).clone();
    session.drain_period = Duration::from_millis(10);
    setup.session = Arc::new(session);
    let away = |client: Client, changed| async move {
        let state = changed.await;
        assert!(matches!(state, ConnectionState::Reconnecting { .. }), "{state:?}");
        // The first goes to the session that is ending, the second (the
        // session has drained by then) waits for the next one.
        for _ in 0..2 {
            let r = client.request(MessageType::REGISTRY_QUERY, Bytes::from_static(b"while away")).await;
            assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        }
        client.abort();
    };
    let client = pair.connect(proxy.addr, Transport::Tcp, setup.clone()).await;
    ask(&client, b"before").await;
    let mut changed = Box::pin(client.state_changed());
    assert!(futures::poll!(&mut changed).is_pending());
    proxy.cut();
    away(client.clone(), changed).await;
    let client = pair.connect(proxy.addr, Transport::Tcp, setup).await;
    ask(&client, b"before").await;
    let mut changed = Box::pin(client.state_changed());
    assert!(futures::poll!(&mut changed).is_pending());
    server.shutdown(Duration::ZERO).await;
    away(client.clone(), changed).await;
}

/// Shutdown under load: new connections are refused, the requests being
/// handled are answered, then the client is told why the session ended.
pub async fn graceful_shutdown(pair: Pair) {
    const IN_FLIGHT: usize = 20;
    let (router, mut started, open) = gated();
    let server = pair.serve(Transport::Tcp, router).await;
    let addr = server.local_addr();
    let client = pair.connect(addr, Transport::Tcp, ClientSetup { reconnect: None, ..pair.setup() }).await;
    let mut requests: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let c = client.clone();
            Box::pin(pair.spawn(async move { c.request(MessageType::BUNDLE_SUBMIT, Bytes::from(vec![i as u8])).await }))
        })
        .collect();
    for _ in 0..IN_FLIGHT {
        started.next().await.expect("a handler started");
    }
    let mut shutdown = Box::pin(pair.spawn(server.shutdown(Duration::from_secs(20))));
    // New connections are refused (the listener is gone) while the
    // requests in flight are still being handled.
    let refused = loop {
        match pair.client.dial(addr, PathKind::Stream).await {
            Ok(_) => yield_now().await,
            Err(e) => break e,
        }
    };
    assert!(matches!(refused.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset), "{refused}");
    for r in &mut requests {
        assert!(futures::poll!(r).is_pending(), "answered before its handler finished");
    }
    assert!(futures::poll!(&mut shutdown).is_pending(), "shutdown did not wait for the handlers");
    open.send(()).expect("handlers wait");
    for (i, r) in join_all(requests).await.into_iter().enumerate() {
        assert_eq!(&r.expect("answered during shutdown").body[..], [i as u8]);
    }
    match client.closed().await {
        CloseReason::Peer { reason, .. } => assert_eq!(reason, "server shutting down"),
        other => panic!("expected the server's Disconnect, got {other}"),
    }
    shutdown.await;
}

/// A server of several shards (SPEC.md 3.8.1) on one hybrid port: TCP,
/// UDP and hybrid clients are served, their sessions spread over the
/// shards, and every later frame (a hybrid session's UDP path, a request
/// after a reconnection) reaches the shard that holds the session. With
/// kernel routing (Linux) no datagram lands on another shard's socket;
/// without it, those that do are handed on.
pub async fn sharded_server(pair: Pair) {
    for (shards, kernel_routing) in [(3, true), (2, false)] {
        let mut setup = ServerSetup::new(crate::harness::identity());
        setup.limits.shards = shards;
        setup.limits.kernel_routing = kernel_routing;
        let server = pair.serve_with(setup, Transport::Hybrid, echo()).await;
        let addr = server.local_addr();
        // The TCP clients go through a proxy, to be cut and come back.
        let proxy = Proxy::start(pair.client.clone(), addr).await.expect("proxy");
        let backoff = Backoff { initial: Duration::from_millis(20), ..Backoff::default() };
        let mut clients = Vec::new();
        for transport in [Transport::Tcp, Transport::Udp, Transport::Hybrid] {
            for _ in 0..8 {
                clients.push(match transport {
                    Transport::Tcp => {
                        let setup = ClientSetup { reconnect: Some(backoff), ..pair.setup() };
                        pair.connect(proxy.addr, transport, setup).await
                    }
                    _ => pair.connect(addr, transport, pair.setup()).await,
                });
            }
        }
        for (i, c) in clients.iter().enumerate() {
            ask(c, format!("client {i} of {shards} shards").as_bytes()).await;
        }
        for c in &clients[16..] {
            ask_until(c, "the UDP path joins", |c| c.stats().paths == 2).await;
        }
        let stats = server.stats().await;
        assert_eq!(stats.shards, shards, "{stats:?}");
        assert_eq!(stats.sessions, clients.len(), "one session per client: {stats:?}");
        assert_eq!(stats.endpoint.sessions_created, clients.len() as u64, "{stats:?}");
        // 24 random session ids in one shard of 2 or 3: about 1 in 10^7.
        assert!(stats.shard_sessions.iter().filter(|n| **n > 0).count() > 1, "{stats:?}");
        if kernel_routing && cfg!(target_os = "linux") {
            assert_eq!(stats.datagrams_forwarded, 0, "the kernel routes every datagram: {stats:?}");
        } else if !kernel_routing && cfg!(unix) {
            // Spread by address, 16 UDP flows over 2 sockets all land on
            // their shard's about once in 65,536 runs.
            assert!(stats.datagrams_forwarded > 0, "handed on: {stats:?}");
        }
        // The TCP clients' new connections reach their sessions' shards.
        proxy.cut();
        for (i, c) in clients.iter().enumerate() {
            ask(c, format!("client {i} again").as_bytes()).await;
        }
        for c in &clients[..8] {
            ask_until(c, "the connection is redialed", |c| c.stats().paths_redialed >= 1).await;
            assert_eq!(c.stats().sessions, 1, "resumed, not replaced");
        }
        let after = server.stats().await;
        assert_eq!(after.endpoint.sessions_created, clients.len() as u64, "resumed, not new: {after:?}");
        server.shutdown(Duration::from_secs(1)).await;
    }
}

/// Keys are ratcheted in both directions every 64 frames while requests
/// flow, without a lost or misdirected answer; a hybrid re-key asked for
/// with `Client::rekey` completes while requests go on.
pub async fn key_rotation(pair: Pair) {
    let mut session = (*pair.setup().session).clone();
    session.key_update_frames = 64;
    let session = Arc::new(session);
    let mut endpoint = (*ServerSetup::new(crate::harness::identity()).endpoint).clone();
    endpoint.session = session.clone();
    let setup = ServerSetup { endpoint: Arc::new(endpoint), ..ServerSetup::new(crate::harness::identity()) };
    for t in TRANSPORTS {
        let server = pair.serve_with(setup.clone(), t, echo()).await;
        let client =
            pair.connect(server.local_addr(), t, ClientSetup { session: session.clone(), ..pair.setup() }).await;
        let tasks: Vec<_> = (0..8u32)
            .map(|task| {
                let c = client.clone();
                pair.spawn(async move {
                    for i in 0..60u32 {
                        ask(&c, format!("{task}/{i}").as_bytes()).await;
                    }
                })
            })
            .collect();
        join_all(tasks).await;
        let s = client.stats().session;
        assert!(s.send_generation >= 4 && s.recv_generation >= 4, "{t:?}: keys were not rotated: {s:?}");
        assert_eq!(s.decrypt_failures, 0, "{t:?}");

        // A hybrid re-key on demand completes within a few round trips,
        // while requests go on.
        assert_eq!(s.rekeys, 0, "{t:?}: the interval is an hour");
        assert!(client.rekey().await, "{t:?}: the re-key did not start");
        let mut asked = 0;
        while client.stats().session.rekeys == 0 {
            assert!(asked < 100, "{t:?}: the re-key did not complete in 100 round trips");
            ask(&client, b"during the re-key").await;
            asked += 1;
        }
        assert_eq!(client.stats().session.decrypt_failures, 0, "{t:?}");
    }
}

/// A subscriber that stops reading holds back only its own publisher: its
/// window and the publisher's queue bound what is pushed, requests on the
/// same session are still answered, and reading resumes the flow in order.
pub async fn slow_subscriber(pair: Pair) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pushed = Arc::new(AtomicUsize::new(0));
    let p2 = pushed.clone();
    let router = echo().subscription(MessageType::METRICS_STREAM, move |_, publisher| {
        let pushed = p2.clone();
        async move {
            for i in 0..100_000u32 {
                publisher
                    .push(Bytes::from(vec![i as u8; 1000]))
                    .await
                    .map_err(|e| Rejection::refused(e.to_string()))?;
                pushed.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    });
    let server = pair.serve(Transport::Tcp, router).await;
    let client = pair.connect(server.local_addr(), Transport::Tcp, pair.setup()).await;
    let mut sub = client.subscribe(MessageType::METRICS_STREAM, Bytes::new()).await.unwrap();
    for i in 0..50u32 {
        ask(&client, &i.to_be_bytes()).await;
    }
    let stalled = pushed.load(Ordering::SeqCst);
    // The subscriber's window (64 KiB by default) plus the publisher's
    // queue bound what was pushed and not read.
    assert!(stalled <= 200, "{stalled} items of 1 kB pushed to a subscriber that read none");
    // What the application holds unread is reported, and bounded by the
    // subscription's window (64 KiB by default) plus one item.
    let st = client.stats();
    assert!(st.items_unread > 0, "{st:?}");
    assert_eq!(st.item_bytes_unread, st.items_unread * 1000, "{st:?}");
    assert!(st.item_bytes_unread <= (64 << 10) + 1000, "{st:?}");
    for i in 0..5_000u32 {
        let item = sub.next().await.expect("the stream goes on");
        assert_eq!(item.body[0], i as u8, "out of order");
    }
    assert!(pushed.load(Ordering::SeqCst) >= 5_000);
    // Leaving the subscription discards what it held unread.
    drop(sub);
    ask(&client, b"after").await;
    let st = client.stats();
    assert_eq!((st.items_unread, st.item_bytes_unread), (0, 0), "{st:?}");
}

/// A subscriber that stops reading a best-effort subscription stops its
/// publisher too (SPEC.md 4.9: best-effort items take the subscription's
/// credit when the subscriber announced a window): a handler that waits
/// for `writable()` builds nothing more, the client drops nothing, and
/// reading resumes the flow, newest items in push order.
pub async fn slow_best_effort_subscriber(pair: Pair) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for t in [Transport::Tcp, Transport::Udp] {
        let pushed = Arc::new(AtomicUsize::new(0));
        let p2 = pushed.clone();
        let router = echo().subscription(MessageType::METRICS_STREAM, move |_, publisher| {
            let pushed = p2.clone();
            async move {
                for i in 0..100_000u32 {
                    publisher.writable().await.map_err(|e| Rejection::refused(e.to_string()))?;
                    publisher
                        .push_best_effort(Bytes::from([&i.to_be_bytes()[..], &[0u8; 996]].concat()))
                        .map_err(|e| Rejection::refused(e.to_string()))?;
                    pushed.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        });
        let server = pair.serve(t, router).await;
        let client = pair.connect(server.local_addr(), t, pair.setup()).await;
        let mut sub = client.subscribe(MessageType::METRICS_STREAM, Bytes::new()).await.unwrap();
        for i in 0..50u32 {
            ask(&client, &i.to_be_bytes()).await;
        }
        let stalled = pushed.load(Ordering::SeqCst);
        // The window (64 KiB by default: 63 items of 1,000 bytes and 32 of
        // overhead) plus the publisher's queue bound what was built.
        assert!(stalled <= 200, "{t:?}: {stalled} best-effort items built for a subscriber that read none");
        for i in 0..50u32 {
            ask(&client, &i.to_be_bytes()).await;
        }
        assert_eq!(pushed.load(Ordering::SeqCst), stalled, "{t:?}: the publisher waits while nobody reads");
        let st = client.stats();
        assert_eq!(st.items_dropped, 0, "{t:?}: {st:?}");
        assert!(st.item_bytes_unread <= (64 << 10) + 1000, "{t:?}: {st:?}");
        let mut last = None;
        for _ in 0..2_000 {
            let item = sub.next().await.expect("the stream goes on");
            let n = u32::from_be_bytes(item.body[..4].try_into().unwrap());
            assert!(last.is_none_or(|l| n > l), "{t:?}: {n} after {last:?}");
            last = Some(n);
        }
        // (2,000 items read: the publisher went on once the subscriber read.)
        assert_eq!(client.stats().items_dropped, 0, "{t:?}");
    }
}

/// Requests beyond the server's in-flight limit for a session are refused
/// at once; the others are answered, and a freed slot is used again.
pub async fn in_flight_limit(pair: Pair) {
    let (router, mut entered, open) = gated();
    let mut setup = ServerSetup::new(crate::harness::identity());
    setup.limits.max_in_flight = 2;
    let server = pair.serve_with(setup, Transport::Tcp, router).await;
    let client = pair.connect(server.local_addr(), Transport::Tcp, pair.setup()).await;
    let held: Vec<_> = (0..2u8)
        .map(|i| {
            let c = client.clone();
            pair.spawn(async move { c.request(MessageType::BUNDLE_SUBMIT, Bytes::from(vec![i])).await })
        })
        .collect();
    entered.next().await.expect("handler ran");
    entered.next().await.expect("handler ran");
    let refused = client.request(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"3")).await;
    expect_remote(refused, ErrorCode::REFUSED, Some("too many requests in flight"), Transport::Tcp);
    assert_eq!(server.stats().await.requests_refused, 1);
    open.send(()).expect("handlers wait");
    let mut answers: Vec<u8> = join_all(held).await.into_iter().map(|r| r.expect("answered").body[0]).collect();
    answers.sort();
    assert_eq!(answers, [0, 1]);
    let r = client.request(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"4")).await.expect("a free slot");
    assert_eq!(&r.body[..], b"4");
}

/// A runtime whose listeners fail to accept while `failing` is set, as
/// when the process is out of file descriptors; it counts accept polls.
#[derive(Debug)]
struct FailingAccept {
    inner: Arc<dyn xtmp_adapter::Runtime>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    polls: Arc<std::sync::atomic::AtomicUsize>,
}

struct FailingListener {
    inner: Box<dyn xtmp_adapter::Listener>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    polls: Arc<std::sync::atomic::AtomicUsize>,
}

impl xtmp_adapter::Listener for FailingListener {
    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_accept(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<(Box<dyn Link>, std::net::SocketAddr)>> {
        use std::sync::atomic::Ordering;
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::other("too many open files")));
        }
        self.inner.poll_accept(cx)
    }
}

impl xtmp_adapter::Runtime for FailingAccept {
    fn spawn(&self, task: xtmp_adapter::BoxFuture<'static, ()>) {
        self.inner.spawn(task)
    }

    fn timer(&self) -> Box<dyn xtmp_adapter::Timer> {
        self.inner.timer()
    }

    fn dial(
        &self,
        addr: std::net::SocketAddr,
        kind: PathKind,
    ) -> xtmp_adapter::BoxFuture<'static, io::Result<Box<dyn Link>>> {
        self.inner.dial(addr, kind)
    }

    fn listen(
        &self,
        addr: std::net::SocketAddr,
    ) -> xtmp_adapter::BoxFuture<'static, io::Result<Box<dyn xtmp_adapter::Listener>>> {
        let (listen, failing, polls) = (self.inner.listen(addr), self.failing.clone(), self.polls.clone());
        Box::pin(async move {
            let inner = listen.await?;
            Ok(Box::new(FailingListener { inner, failing, polls }) as Box<dyn xtmp_adapter::Listener>)
        })
    }

    fn adopt_udp(&self, socket: std::net::UdpSocket) -> io::Result<Box<dyn xtmp_adapter::DatagramSocket>> {
        self.inner.adopt_udp(socket)
    }

    fn resolver(&self) -> Arc<dyn xtmp_adapter::Resolver> {
        self.inner.resolver()
    }
}

/// A listener that fails (out of file descriptors) makes the server pause
/// accepting rather than spin, and the connection waiting in the backlog
/// is accepted once accepting works again.
pub async fn accept_failures(pair: Pair) {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rt = Arc::new(FailingAccept { inner: pair.server.clone(), failing: failing.clone(), polls: polls.clone() });
    let setup = ServerSetup::new(crate::harness::identity());
    let server = xtmp_adapter::Server::start(rt, setup, &[(Transport::Tcp, crate::harness::any_port())], echo())
        .await
        .expect("server starts");
    let connecting = pair.spawn(xtmp_adapter::Client::connect(
        pair.client.clone(),
        server.local_addr(),
        Transport::Tcp,
        pair.setup(),
    ));
    // The rate of retries over a window of the client's clock: the window
    // only scales the bound, it synchronises nothing.
    let start = Instant::now();
    xtmp_adapter::runtime::sleep_until(&*pair.client, start + Duration::from_millis(300)).await;
    let during = polls.load(Ordering::SeqCst);
    let bound = (start.elapsed().as_millis() / 50) as usize + 4;
    assert!(during <= bound, "a failing accept was retried {during} times in {:?} (at most {bound})", start.elapsed());
    failing.store(false, Ordering::SeqCst);
    let client = connecting.await.expect("accepted once accept works again");
    ask(&client, b"accepted").await;
}
