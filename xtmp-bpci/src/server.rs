//! The BPCI server: the services' handlers on an XTMP [`Router`], for any
//! runtime, over an [`Engine`].
//!
//! Every handler decodes its body (a malformed one is INVALID, naming the
//! body and what the decoder found), checks what can be checked without
//! the writer (forms, signatures, grants), then reads a snapshot or queues
//! a write. Streams (LiveUpdates, EventStream) read the event log from
//! their cursor and push only what the subscriber has room for, then wait
//! for the head to move.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use xtmp_adapter::{Peer, Publisher, Rejection, Reply, Request, Router, Runtime, Server, ServerSetup, Transport};
use xtmp_core::crypto::CryptoProvider;
use xtmp_core::handshake::{ClientVerifier, Fingerprints, IdentityKeypair, KeyId, danger::AnyClient};
use xtmp_core::wire::MessageType;

use crate::error::BpciError;
use crate::schema::{
    self, AuthRequest, BalanceRequest, BundleQuery, Capability, EventKind, Filter, Hash, MetricsItem, RegisterRequest,
    RegistryQuery, RegistryUpdate, StampRequest, StreamRequest, SubmitRequest, SyncRequest, TransferRequest, statement,
};
use crate::service::{Engine, NodeId};

/// Which BPI nodes the server admits (checked in the handshake, before
/// any request).
#[derive(Clone, Debug)]
pub enum Admission {
    /// Any node that authenticates with an identity.
    Open,
    /// Only nodes whose identity key id is listed.
    AllowList(Vec<KeyId>),
}

/// A server setup for BPCI: `identity`, `provider`, and client
/// authentication required as `admission` says.
pub fn setup(identity: Arc<IdentityKeypair>, provider: Arc<dyn CryptoProvider>, admission: Admission) -> ServerSetup {
    let mut setup = ServerSetup::new(identity);
    let mut endpoint = (*setup.endpoint).clone();
    let mut server = (*endpoint.server).clone();
    server.provider = provider;
    let verifier: Arc<dyn ClientVerifier> = match admission {
        Admission::Open => Arc::new(AnyClient),
        Admission::AllowList(keys) => Arc::new(Fingerprints(keys)),
    };
    server.client_auth = Some(verifier);
    endpoint.server = Arc::new(server);
    setup.endpoint = Arc::new(endpoint);
    // A watcher of every bundle follows the whole ledger: three items a
    // bundle at the engine's full rate. LiveUpdates and EventStream items
    // are reliable, held to the subscriber's window, so a watcher that
    // does not read costs nothing; the server-wide budget stays.
    setup.limits.max_session_items_per_second = 100_000;
    setup
}

/// A running BPCI server.
#[derive(Debug)]
pub struct BpciServer {
    server: Server,
    engine: Engine,
}

impl BpciServer {
    /// Starts serving `engine`'s services on `listeners`.
    pub async fn start(
        rt: Arc<dyn Runtime>,
        setup: ServerSetup,
        listeners: &[(Transport, SocketAddr)],
        engine: Engine,
    ) -> Result<BpciServer, xtmp_adapter::Error> {
        let router = router(rt.clone(), engine.clone());
        let server = Server::start(rt, setup, listeners, router).await?;
        Ok(BpciServer { server, engine })
    }

    /// The first listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Every listener.
    pub fn listeners(&self) -> &[(Transport, SocketAddr)] {
        self.server.listeners()
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The transport's counters.
    pub async fn stats(&self) -> xtmp_adapter::ServerStats {
        self.server.stats().await
    }

    /// Stops taking requests, lets those under way finish (at most
    /// `grace`), then stores what was queued and stops the engine.
    pub async fn shutdown(self, grace: Duration) {
        self.server.shutdown(grace).await;
        self.engine.shutdown();
    }
}

fn decode<'b, T: minicbor::Decode<'b, ()>>(what: &'static str, body: &'b [u8]) -> Result<T, BpciError> {
    schema::from_cbor(what, body).map_err(|e| BpciError::invalid(e.what, e.detail))
}

fn reply<T: minicbor::Encode<()>>(t: MessageType, value: &T) -> Reply {
    Reply::new(t, Bytes::from(schema::to_canonical(value)))
}

fn node(peer: &Peer) -> Result<NodeId, BpciError> {
    peer.identity.as_ref().map(|i| NodeId(i.key_id().0)).ok_or_else(|| BpciError::Unauthorized {
        reason: String::from("the node did not authenticate in the handshake"),
    })
}

/// Lets the runtime run others once: handlers do this before signature
/// checks, which must not run on the server's driver (SPEC-independent;
/// see [`Router::route`]).
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// The first of two futures to finish.
async fn race<A: Future, B: Future>(a: A, b: B) -> Result<A::Output, B::Output> {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Err(v));
        }
        Poll::Pending
    })
    .await
}

async fn sleep(rt: &Arc<dyn Runtime>, d: Duration) {
    let mut timer = rt.timer();
    timer.reset(std::time::Instant::now() + d);
    std::future::poll_fn(|cx| timer.poll_expired(cx)).await
}

macro_rules! route {
    ($router:ident, $engine:ident, $t:expr, $handler:ident) => {{
        let e = $engine.clone();
        $router.route($t, move |req: Request| {
            let e = e.clone();
            async move { $handler(&e, req).await.map_err(Rejection::from) }
        })
    }};
}

/// The services' routes on `engine`.
pub fn router(rt: Arc<dyn Runtime>, engine: Engine) -> Router {
    let r = Router::new();
    let r = route!(r, engine, MessageType::WALLET_REGISTER, wallet_register);
    let r = route!(r, engine, MessageType::WALLET_AUTH, wallet_auth);
    let r = route!(r, engine, MessageType::WALLET_BALANCE, wallet_balance);
    let r = route!(r, engine, MessageType::WALLET_TRANSACTION, wallet_transaction);
    let r = route!(r, engine, MessageType::BUNDLE_SUBMIT, bundle_submit);
    let r = route!(r, engine, MessageType::BUNDLE_STATUS, bundle_status);
    let r = route!(r, engine, MessageType::BUNDLE_CONFIRM, bundle_confirm);
    let r = route!(r, engine, MessageType::BUNDLE_SYNC, bundle_sync);
    let r = route!(r, engine, MessageType::REGISTRY_QUERY, registry_query);
    let r = route!(r, engine, MessageType::REGISTRY_UPDATE, registry_update);
    let r = route!(r, engine, MessageType::REGISTRY_STAMP, registry_stamp);
    let (e1, e2, e3) = (engine.clone(), engine.clone(), engine);
    r.subscription(MessageType::LIVE_UPDATES, move |req, publisher| {
        let e = e1.clone();
        async move { stream(&e, req, publisher, true).await.map_err(Rejection::from) }
    })
    .subscription(MessageType::EVENT_STREAM, move |req, publisher| {
        let e = e2.clone();
        async move { stream(&e, req, publisher, false).await.map_err(Rejection::from) }
    })
    .subscription(MessageType::METRICS_STREAM, move |req, publisher| {
        let (e, rt) = (e3.clone(), rt.clone());
        async move { metrics(&rt, &e, req, publisher).await.map_err(Rejection::from) }
    })
}

async fn wallet_register(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    let node = node(&req.peer)?;
    let body: RegisterRequest = decode("WalletRegister request", &req.message.body)?;
    yield_now().await;
    e.rules().check_registration(&body, &req.peer.channel_binding)?;
    let r = e.register(Some(node), body.identity.0).await?;
    Ok(reply(MessageType::WALLET_REGISTER, &r))
}

async fn wallet_auth(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    node(&req.peer)?;
    let body: AuthRequest = decode("WalletAuth request", &req.message.body)?;
    let binding = req.peer.channel_binding;
    let now = e.now();
    let Some(signature) = &body.signature else {
        e.read(|tx| e.rules().wallet_identity(tx, &body.wallet).map(drop))?;
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| BpciError::Internal { reason: e.to_string() })?;
        let c = e.sessions().challenge(&e.rules().config, now, body.wallet, binding, Hash(nonce))?;
        return Ok(reply(MessageType::WALLET_AUTH, &c));
    };
    let nonce = body.nonce.ok_or_else(|| BpciError::invalid("nonce", "required with a signature"))?;
    let caps = body.capabilities.clone().unwrap_or_default();
    if caps.is_empty() {
        return Err(BpciError::invalid("capabilities", "ask for at least one"));
    }
    let expires_at = e.sessions().take_challenge(now, &nonce, &body.wallet, &binding)?;
    let identity = e.read(|tx| e.rules().wallet_identity(tx, &body.wallet))?;
    yield_now().await;
    let st = statement::wallet_auth(&e.rules().config.domain, &body.wallet, &nonce, expires_at, &binding, &caps);
    if !schema::verify(&*e.rules().provider, &identity, &st, signature) {
        return Err(BpciError::Unauthorized {
            reason: String::from("signature: does not verify for this wallet, challenge and session"),
        });
    }
    let grant = e.sessions().grant(&e.rules().config, e.now(), binding, body.wallet, caps)?;
    Ok(reply(MessageType::WALLET_AUTH, &grant))
}

async fn wallet_balance(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    node(&req.peer)?;
    let body: BalanceRequest = decode("WalletBalance request", &req.message.body)?;
    e.sessions().require(e.now(), &req.peer.channel_binding, &body.wallet, Capability::ReadBalance)?;
    let b = e.read(|tx| e.rules().balance(tx, &body.wallet))?;
    Ok(reply(MessageType::WALLET_BALANCE, &b))
}

async fn wallet_transaction(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    let node = node(&req.peer)?;
    let body: TransferRequest = decode("WalletTransaction request", &req.message.body)?;
    yield_now().await;
    e.read(|tx| e.rules().check_transfer(tx, &body))?;
    let r = e.transfer(Some(node), body.transfer).await?;
    Ok(reply(MessageType::WALLET_TRANSACTION, &r))
}

async fn bundle_submit(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    let node = node(&req.peer)?;
    let body: SubmitRequest = decode("BundleSubmit request", &req.message.body)?;
    let now = e.now();
    if let Some(w) = &body.bundle.wallet {
        e.sessions().require(now, &req.peer.channel_binding, w, Capability::SubmitBundles)?;
    }
    yield_now().await;
    e.read(|tx| e.rules().check_bundle(tx, now, &body))?;
    let s = e.submit(node, body).await?;
    Ok(reply(MessageType::BUNDLE_SUBMIT, &s))
}

async fn bundle_status(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    node(&req.peer)?;
    let body: BundleQuery = decode("BundleStatus request", &req.message.body)?;
    let s = e.read(|tx| e.rules().status(tx, &body.bundle_id))?;
    Ok(reply(MessageType::BUNDLE_STATUS, &s))
}

async fn bundle_confirm(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    node(&req.peer)?;
    let body: BundleQuery = decode("BundleConfirm request", &req.message.body)?;
    let r = e.read(|tx| e.rules().receipt(tx, &body.bundle_id))?;
    Ok(reply(MessageType::BUNDLE_CONFIRM, &r))
}

async fn bundle_sync(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    node(&req.peer)?;
    let body: SyncRequest = decode("BundleSync request", &req.message.body)?;
    let filter = body.filter.clone().unwrap_or_default();
    if let Some(w) = &filter.wallet {
        e.sessions().require(e.now(), &req.peer.channel_binding, w, Capability::WatchBundles)?;
    }
    let page = e.read(|tx| e.rules().sync(tx, body.after, body.limit, &filter))?;
    Ok(reply(MessageType::BUNDLE_SYNC, &page))
}

async fn registry_query(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    node(&req.peer)?;
    let body: RegistryQuery = decode("RegistryQuery request", &req.message.body)?;
    let r = e.read(|tx| e.rules().query(tx, &body.name))?;
    Ok(reply(MessageType::REGISTRY_QUERY, &r))
}

async fn registry_update(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    let node = node(&req.peer)?;
    let body: RegistryUpdate = decode("RegistryUpdate request", &req.message.body)?;
    yield_now().await;
    e.read(|tx| e.rules().check_registry_update(tx, &body))?;
    let r = e.registry_update(Some(node), body).await?;
    Ok(reply(MessageType::REGISTRY_UPDATE, &r))
}

async fn registry_stamp(e: &Engine, req: Request) -> Result<Reply, BpciError> {
    let node = node(&req.peer)?;
    let body: StampRequest = decode("RegistryStamp request", &req.message.body)?;
    if body.hash.is_some() == body.name.is_some() {
        return Err(BpciError::invalid("hash", "exactly one of hash and name"));
    }
    let s = e.stamp(Some(node), body.hash, body.name).await?;
    Ok(reply(MessageType::REGISTRY_STAMP, &s))
}

/// Events a stream reads from the store at once.
const STREAM_PAGE: u64 = 256;

async fn stream(e: &Engine, req: Request, publisher: Publisher, bundles_only: bool) -> Result<(), BpciError> {
    node(&req.peer)?;
    let body: StreamRequest = decode("stream request", &req.message.body)?;
    let mut filter: Filter = body.filter.unwrap_or_default();
    if bundles_only {
        filter.kinds = Some(vec![EventKind::Bundle]);
    }
    if let Some(w) = &filter.wallet {
        e.sessions().require(e.now(), &req.peer.channel_binding, w, Capability::WatchBundles)?;
    }
    let mut cursor = match body.after {
        Some(after) => {
            // Refuse an expired cursor before accepting.
            e.read(|tx| e.rules().sync(tx, after, 1, &Filter::default()))?;
            after
        }
        None => e.head(),
    };
    if publisher.accept().is_err() {
        return Ok(());
    }
    loop {
        let page = e.read(|tx| e.rules().sync(tx, cursor, STREAM_PAGE, &filter))?;
        for ev in &page.events {
            // `push` waits for the subscriber's window: an unread
            // subscription costs no work beyond its window.
            if publisher.push(Bytes::from(schema::to_canonical(ev))).await.is_err() {
                return Ok(());
            }
        }
        cursor = page.next;
        if cursor < page.head {
            continue;
        }
        match race(e.wait_beyond(cursor), publisher.closed()).await {
            Ok(true) => {}
            // The engine stopped (the server is going away, its sessions
            // perhaps dropped without a goodbye): end the stream, which
            // also lets go of the engine and its store.
            Ok(false) => return Err(BpciError::Internal { reason: String::from("the server is stopping") }),
            Err(_) => return Ok(()),
        }
    }
}

async fn metrics(rt: &Arc<dyn Runtime>, e: &Engine, req: Request, publisher: Publisher) -> Result<(), BpciError> {
    node(&req.peer)?;
    if publisher.accept().is_err() {
        return Ok(());
    }
    loop {
        let s = e.stats();
        let item = MetricsItem {
            at: e.now(),
            head: s.head,
            height: s.height,
            bundles_submitted: s.bundles_submitted,
            bundles_confirmed: s.bundles_confirmed,
            bundles_failed: s.bundles_failed,
            write_queue: s.write_queue,
        };
        if publisher.push_best_effort(Bytes::from(schema::to_canonical(&item))).is_err() {
            return Ok(());
        }
        if race(sleep(rt, Duration::from_secs(1)), publisher.closed()).await.is_err() {
            return Ok(());
        }
    }
}
