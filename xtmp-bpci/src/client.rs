//! The BPI side: [`BpciClient`], typed methods over one XTMP session, and
//! the keys a node holds ([`Wallet`], [`Notary`]). Whatever the server
//! signed (receipts, registry records, stamps) is verified against the
//! server's identity before it is returned.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use xtmp_adapter::{Client, ClientSetup, Endpoint, Error, Runtime, Subscription, SubscriptionEnd};
use xtmp_core::crypto::{CryptoProvider, RustCrypto};
use xtmp_core::handshake::{IdentityKeypair, PublicIdentity};
use xtmp_core::session::SendOptions;
use xtmp_core::wire::MessageType;

use crate::error::BpciError;
use crate::schema::{
    self, Approval, AuthRequest, Balance, BalanceRequest, Bundle, BundleQuery, Capability, DecodeError, Event, Filter,
    Grant, Hash, Receipt, Record, RegisterRequest, Registration, RegistryQuery, RegistryUpdate, SignedRecord, Stamp,
    StampRequest, Status, StreamRequest, SubmitRequest, Submitted, SyncPage, SyncRequest, Transfer, TransferReceipt,
    TransferRequest, WalletId, statement,
};
use crate::service;

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The server refused, with its typed error.
    Bpci(BpciError),
    /// The session failed (closed, timed out, refused for load).
    Transport(xtmp_adapter::Error),
    /// The server's answer did not decode.
    Malformed(DecodeError),
    /// Something the server signed did not verify against its identity.
    BadSignature(&'static str),
    /// The session is not established (no channel binding to sign).
    NotConnected,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Bpci(e) => write!(f, "the server refused: {e}"),
            ClientError::Transport(e) => write!(f, "transport: {e}"),
            ClientError::Malformed(e) => write!(f, "the server's answer: {e}"),
            ClientError::BadSignature(what) => write!(f, "the server's signature does not verify: {what}"),
            ClientError::NotConnected => f.write_str("the session is not established"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<xtmp_adapter::Error> for ClientError {
    fn from(e: xtmp_adapter::Error) -> ClientError {
        match e {
            xtmp_adapter::Error::Remote { code, reason } => ClientError::Bpci(BpciError::from_wire(code, &reason)),
            e => ClientError::Transport(e),
        }
    }
}

impl ClientError {
    /// The server's typed refusal, if that is what this is.
    pub fn bpci(&self) -> Option<&BpciError> {
        match self {
            ClientError::Bpci(e) => Some(e),
            _ => None,
        }
    }
}

/// A wallet's keys: a hybrid identity of its own, separate from the
/// node's.
#[derive(Clone)]
pub struct Wallet {
    keys: Arc<IdentityKeypair>,
    id: WalletId,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wallet({})", self.id)
    }
}

impl Wallet {
    /// A fresh wallet.
    pub fn generate() -> Wallet {
        Wallet::from_keys(Arc::new(
            IdentityKeypair::generate(&RustCrypto, &mut crate::rng()).expect("generating an identity"),
        ))
    }

    /// The wallet of these keys.
    pub fn from_keys(keys: Arc<IdentityKeypair>) -> Wallet {
        let id = WalletId::of(keys.public());
        Wallet { keys, id }
    }

    /// Its id.
    pub fn id(&self) -> WalletId {
        self.id
    }

    /// Its keys.
    pub fn keys(&self) -> &Arc<IdentityKeypair> {
        &self.keys
    }

    /// Signs a transfer from this wallet.
    pub fn sign_transfer(&self, t: Transfer) -> TransferRequest {
        let signature = schema::sign(&self.keys, &statement::transfer(&t));
        TransferRequest { transfer: t, signature }
    }

    /// Signs an update of a record this wallet owns.
    pub fn sign_update(&self, record: Record, expected_version: u64) -> RegistryUpdate {
        let signature = schema::sign(&self.keys, &statement::registry_update(&record, expected_version));
        RegistryUpdate { record, expected_version, signature }
    }
}

/// A notary: a registry name (role notary) and the keys its record holds.
#[derive(Clone)]
pub struct Notary {
    /// Its registry name.
    pub name: String,
    keys: Arc<IdentityKeypair>,
}

impl std::fmt::Debug for Notary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Notary({})", self.name)
    }
}

impl Notary {
    /// The notary `name` with `keys`.
    pub fn new(name: impl Into<String>, keys: Arc<IdentityKeypair>) -> Notary {
        Notary { name: name.into(), keys }
    }

    /// Its public identity (what its registry record holds).
    pub fn public(&self) -> &PublicIdentity {
        self.keys.public()
    }

    /// Approves `bundle`: a signature over its id.
    pub fn approve(&self, bundle: &Bundle) -> Approval {
        Approval {
            notary: self.name.clone(),
            signature: schema::sign(&self.keys, &statement::notary_approval(&bundle.id())),
        }
    }
}

/// A BPCI client: typed methods over one XTMP session. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BpciClient {
    client: Client,
    server: PublicIdentity,
    provider: Arc<dyn CryptoProvider>,
    /// How long each call waits for its answer (`None`: the setup's
    /// request timeout).
    timeout: Option<Duration>,
}

impl BpciClient {
    /// Connects to `endpoint` as the node `node`, trusting exactly the
    /// server identity `server`.
    pub async fn connect(
        rt: Arc<dyn Runtime>,
        endpoint: &Endpoint,
        node: Arc<IdentityKeypair>,
        server: PublicIdentity,
    ) -> Result<BpciClient, ClientError> {
        BpciClient::connect_with(rt, endpoint, BpciClient::setup(node, server.clone()), server).await
    }

    /// The client setup [`BpciClient::connect`] uses: the node's identity,
    /// the server pinned, default settings (to change before connecting
    /// with [`BpciClient::connect_with`]).
    pub fn setup(node: Arc<IdentityKeypair>, server: PublicIdentity) -> ClientSetup {
        let mut setup = ClientSetup::pinned(server);
        let mut client = (*setup.client).clone();
        client.identity = Some(node);
        setup.client = Arc::new(client);
        setup
    }

    /// Connects to `endpoint` with `setup` (which must authenticate the
    /// node and trust `server`).
    pub async fn connect_with(
        rt: Arc<dyn Runtime>,
        endpoint: &Endpoint,
        setup: ClientSetup,
        server: PublicIdentity,
    ) -> Result<BpciClient, ClientError> {
        let client = Client::connect_to(rt, endpoint, setup).await?;
        Ok(BpciClient::new(client, server))
    }

    /// A BPCI client over an XTMP client already connected to the server
    /// whose identity is `server`.
    pub fn new(client: Client, server: PublicIdentity) -> BpciClient {
        BpciClient { client, server, provider: Arc::new(RustCrypto), timeout: None }
    }

    /// This client (the same session) with every call waiting at most
    /// `timeout` for its answer, then failing with
    /// [`ClientError::Transport`]`(`[`Error::Timeout`]`)`:
    /// `bpci.with_timeout(Duration::from_secs(2)).status(id)`.
    pub fn with_timeout(&self, timeout: Duration) -> BpciClient {
        BpciClient { timeout: Some(timeout), ..self.clone() }
    }

    /// Connects to the first of `endpoints` that answers (in order: the
    /// next after a socket error, a handshake timeout or a Busy server),
    /// as [`BpciClient::connect_with`].
    pub async fn connect_any(
        rt: Arc<dyn Runtime>,
        endpoints: &[Endpoint],
        setup: ClientSetup,
        server: PublicIdentity,
    ) -> Result<BpciClient, ClientError> {
        let mut last = ClientError::NotConnected;
        for endpoint in endpoints {
            match BpciClient::connect_with(rt.clone(), endpoint, setup.clone(), server.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connects to the server the registry names `name` (`bpci://NAME`):
    /// its record is asked of `registry`'s server and its signature
    /// checked against that server's identity; the client then pins the
    /// identity the record gives and tries the record's endpoints in order
    /// (as [`BpciClient::connect_any`]), authenticating as `node`.
    pub async fn connect_named(
        rt: Arc<dyn Runtime>,
        registry: &BpciClient,
        name: &str,
        node: Arc<IdentityKeypair>,
    ) -> Result<BpciClient, ClientError> {
        let resolver = crate::resolver::RegistryResolver::new(registry.clone(), rt.resolver());
        let record = resolver.server(name.strip_prefix("bpci://").unwrap_or(name)).await?;
        let setup = BpciClient::setup(node, record.identity.clone());
        BpciClient::connect_any(rt, &record.endpoints, setup, record.identity).await
    }

    /// Connects to the endpoint `BPCI_XTMP_ENDPOINT` names (default
    /// `xtmp://localhost:7778`), as [`BpciClient::connect`].
    pub async fn from_env(
        rt: Arc<dyn Runtime>,
        node: Arc<IdentityKeypair>,
        server: PublicIdentity,
    ) -> Result<BpciClient, ClientError> {
        let endpoint = Endpoint::from_env().map_err(|e| ClientError::Transport(Error::Config(e.to_string())))?;
        BpciClient::connect(rt, &endpoint, node, server).await
    }

    /// The XTMP client underneath.
    pub fn transport(&self) -> &Client {
        &self.client
    }

    /// The server's identity, against which receipts, records and stamps
    /// are verified.
    pub fn server(&self) -> &PublicIdentity {
        &self.server
    }

    async fn call<T: for<'b> minicbor::Decode<'b, ()>>(
        &self,
        t: MessageType,
        what: &'static str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let m = match self.timeout {
            Some(d) => self.client.request_within(t, Bytes::from(body), SendOptions::default(), d).await?,
            None => self.client.request(t, Bytes::from(body)).await?,
        };
        schema::from_cbor(what, &m.body).map_err(ClientError::Malformed)
    }

    fn binding(&self) -> Result<[u8; 32], ClientError> {
        self.client.channel_binding().ok_or(ClientError::NotConnected)
    }

    /// Registers `wallet` (idempotent: a registered wallet gets its
    /// original registration). Its proof of possession is bound to this
    /// session; if the session changed under the call, it is made again.
    pub async fn register_wallet(&self, wallet: &Wallet) -> Result<Registration, ClientError> {
        let mut tries = 0;
        loop {
            let binding = self.binding()?;
            let proof = schema::sign(&wallet.keys, &statement::wallet_register(&binding, wallet.keys.public()));
            let req = RegisterRequest { identity: schema::IdentityBytes(wallet.keys.public().clone()), proof };
            let r = self.call(MessageType::WALLET_REGISTER, "Registration", schema::to_canonical(&req)).await;
            match r {
                Err(ClientError::Bpci(BpciError::Unauthorized { .. }))
                    if tries < 2 && self.client.channel_binding() != Some(binding) =>
                {
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    /// Authenticates `wallet` in this session for `capabilities`
    /// (challenge, then the wallet's signature bound to the session). The
    /// grant ends with the session: after a reconnection that needed a new
    /// session, authenticate again.
    pub async fn authenticate(&self, wallet: &Wallet, capabilities: &[Capability]) -> Result<Grant, ClientError> {
        let ask = AuthRequest { wallet: wallet.id, nonce: None, capabilities: None, signature: None };
        let binding = self.binding()?;
        let c: schema::Challenge = self.call(MessageType::WALLET_AUTH, "Challenge", schema::to_canonical(&ask)).await?;
        let st = statement::wallet_auth(&c.domain, &wallet.id, &c.nonce, c.expires_at, &binding, capabilities);
        let answer = AuthRequest {
            wallet: wallet.id,
            nonce: Some(c.nonce),
            capabilities: Some(capabilities.to_vec()),
            signature: Some(schema::sign(&wallet.keys, &st)),
        };
        self.call(MessageType::WALLET_AUTH, "Grant", schema::to_canonical(&answer)).await
    }

    /// A wallet's balance (needs its ReadBalance grant in this session).
    pub async fn balance(&self, wallet: WalletId) -> Result<Balance, ClientError> {
        self.call(MessageType::WALLET_BALANCE, "Balance", schema::to_canonical(&BalanceRequest { wallet })).await
    }

    /// Transfers `amount` from `from` to `to` with the sender's `nonce`
    /// (its balance's `next_nonce`). Re-sending the same transfer returns
    /// the original receipt.
    pub async fn transfer(
        &self,
        from: &Wallet,
        to: WalletId,
        amount: u64,
        nonce: u64,
    ) -> Result<TransferReceipt, ClientError> {
        let req = from.sign_transfer(Transfer { from: from.id, to, amount, nonce, memo: None });
        self.send_transfer(&req).await
    }

    /// Sends a signed transfer.
    pub async fn send_transfer(&self, req: &TransferRequest) -> Result<TransferReceipt, ClientError> {
        self.call(MessageType::WALLET_TRANSACTION, "TransferReceipt", schema::to_canonical(req)).await
    }

    /// Submits a bundle with its approvals; answered once it is stored
    /// (Received), before it is processed. Re-submitting returns the
    /// original answer.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<Submitted, ClientError> {
        self.call(MessageType::BUNDLE_SUBMIT, "Submitted", schema::to_canonical(req)).await
    }

    /// A bundle's state.
    pub async fn status(&self, bundle_id: Hash) -> Result<Status, ClientError> {
        self.call(MessageType::BUNDLE_STATUS, "Status", schema::to_canonical(&BundleQuery { bundle_id })).await
    }

    /// A confirmed bundle's receipt, verified against the server's identity.
    pub async fn receipt(&self, bundle_id: Hash) -> Result<Receipt, ClientError> {
        let r: Receipt =
            self.call(MessageType::BUNDLE_CONFIRM, "Receipt", schema::to_canonical(&BundleQuery { bundle_id })).await?;
        if r.bundle_id != bundle_id {
            return Err(ClientError::BadSignature("the receipt is for another bundle"));
        }
        service::verify_receipt(&*self.provider, &self.server, &r).map_err(ClientError::BadSignature)?;
        Ok(r)
    }

    /// Events after `after` that pass `filter`, one page.
    pub async fn sync(&self, after: u64, limit: u64, filter: Option<Filter>) -> Result<SyncPage, ClientError> {
        self.call(MessageType::BUNDLE_SYNC, "SyncPage", schema::to_canonical(&SyncRequest { after, limit, filter }))
            .await
    }

    /// A registry record, verified against the server's identity.
    pub async fn registry_query(&self, name: &str) -> Result<SignedRecord, ClientError> {
        let q = RegistryQuery { name: name.to_string() };
        let r: SignedRecord = self.call(MessageType::REGISTRY_QUERY, "SignedRecord", schema::to_canonical(&q)).await?;
        self.check_record(name, r)
    }

    fn check_record(&self, name: &str, r: SignedRecord) -> Result<SignedRecord, ClientError> {
        if r.record.name != name {
            return Err(ClientError::BadSignature("the record has another name"));
        }
        if !service::verify_record(&*self.provider, &self.server, &r) {
            return Err(ClientError::BadSignature("registry record"));
        }
        Ok(r)
    }

    /// Creates (`expected_version` 0) or replaces a record owned by `owner`.
    pub async fn registry_update(
        &self,
        owner: &Wallet,
        record: Record,
        expected_version: u64,
    ) -> Result<SignedRecord, ClientError> {
        let name = record.name.clone();
        let u = owner.sign_update(record, expected_version);
        let r: SignedRecord = self.call(MessageType::REGISTRY_UPDATE, "SignedRecord", schema::to_canonical(&u)).await?;
        self.check_record(&name, r)
    }

    /// The server's signed timestamp of `hash`.
    pub async fn stamp(&self, hash: Hash) -> Result<Stamp, ClientError> {
        let req = StampRequest { hash: Some(hash), name: None };
        let s: Stamp = self.call(MessageType::REGISTRY_STAMP, "Stamp", schema::to_canonical(&req)).await?;
        if s.hash != hash || !service::verify_stamp(&*self.provider, &self.server, &s) {
            return Err(ClientError::BadSignature("stamp"));
        }
        Ok(s)
    }

    /// Bundle transitions (LiveUpdates) passing `filter`, after `after`
    /// (or from now).
    pub async fn live_updates(&self, filter: Filter, after: Option<u64>) -> Result<EventStream, ClientError> {
        self.stream(MessageType::LIVE_UPDATES, filter, after).await
    }

    /// Every event (EventStream) passing `filter`, after `after` (or from now).
    pub async fn events(&self, filter: Filter, after: Option<u64>) -> Result<EventStream, ClientError> {
        self.stream(MessageType::EVENT_STREAM, filter, after).await
    }

    async fn stream(&self, t: MessageType, filter: Filter, after: Option<u64>) -> Result<EventStream, ClientError> {
        let req = StreamRequest { filter: Some(filter), after };
        let sub = self.client.subscribe(t, Bytes::from(schema::to_canonical(&req))).await?;
        Ok(EventStream { sub, last: after.unwrap_or(0), end: None })
    }
}

/// A stream of events, in order. It ends when the server ends it
/// ([`EventStream::end`] says why: a CURSOR_EXPIRED end is
/// `BpciError::CursorExpired`).
#[derive(Debug)]
pub struct EventStream {
    sub: Subscription,
    last: u64,
    end: Option<ClientError>,
}

impl EventStream {
    /// The sequence number of the last event yielded.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Why the stream ended, once it has.
    pub fn end(&self) -> Option<&ClientError> {
        self.end.as_ref()
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            match Pin::new(&mut self.sub).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if self.end.is_none() {
                        self.end = Some(match self.sub.end() {
                            Some(
                                SubscriptionEnd::Ended { code, reason } | SubscriptionEnd::Refused { code, reason },
                            ) if code.0 != 0 => ClientError::Bpci(BpciError::from_wire(*code, reason)),
                            Some(SubscriptionEnd::Closed(r)) => {
                                ClientError::Transport(xtmp_adapter::Error::Closed(r.clone()))
                            }
                            _ => ClientError::Bpci(BpciError::Other { code: 0, reason: String::from("completed") }),
                        });
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(m)) => match schema::from_cbor::<Event>("Event", &m.body) {
                    Ok(e) if e.seq > self.last => {
                        self.last = e.seq;
                        return Poll::Ready(Some(e));
                    }
                    // A duplicate (after a renewed subscription): skip it.
                    Ok(_) => {}
                    Err(e) => {
                        self.end = Some(ClientError::Malformed(e));
                        return Poll::Ready(None);
                    }
                },
            }
        }
    }
}
