//! The BPCI application hosted by the simulator (`xtmp_sim::app`): a BPCI
//! server running the services' rules on a [`MemoryStore`] that survives
//! its crashes (as redb survives a process kill; what it held only in
//! memory, the approval checks queued, is rebuilt from the store as
//! `Engine::start` does), and BPI nodes, each with a wallet, a durable
//! outbox of bundles and transfers, a watcher that follows the event log
//! from a durable cursor with BundleSync, and the receipts of its
//! confirmed bundles, verified offline.
//!
//! The invariants ([`Application::check`]):
//! - every bundle a node made reaches exactly one final state, the one
//!   expected of it (Confirmed; Rejected for a bad approval; Expired only
//!   for a short deadline), and is confirmed at most once, in one block;
//! - a resubmission and a resent transfer get the same answer as the
//!   first time;
//! - each node's watcher saw every transition of its bundles once and in
//!   the store's order, and its cursor never went back;
//! - the total supply is conserved at every check and every balance is
//!   what the transfers applied once each make it;
//! - every receipt verifies against the server's identity;
//! - no outbox holds more than its bound.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_bpci::schema::{
    self, BundleState, Event, EventKind, Hash, Receipt, Record, RegisterRequest, Registration, SubmitRequest,
    Submitted, SyncPage, SyncRequest, Transfer, TransferReceipt, TransferRequest, WalletId, statement,
};
use xtmp_bpci::service::{self, NodeId};
use xtmp_bpci::store::{Store, ledger};
use xtmp_bpci::{BpciError, Config, MemoryStore, Notary, Rules, Wallet};
use xtmp_core::crypto::{CryptoProvider, RustCrypto};
use xtmp_core::handshake::IdentityKeypair;
use xtmp_core::wire::MessageType;
use xtmp_sim::{AppError, AppRequest, Application};

/// What each node does in a run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Workload {
    /// Bundles each node makes.
    pub(crate) bundles: u32,
    /// Transfers each node makes (to the next node's wallet).
    pub(crate) transfers: u32,
    /// A new bundle every this many ms.
    pub(crate) interval_ms: u64,
    /// Unanswered items an outbox holds, at most.
    pub(crate) outbox: usize,
    /// The watcher asks for events every this many ms.
    pub(crate) sync_ms: u64,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload { bundles: 6, transfers: 3, interval_ms: 150, outbox: 4, sync_ms: 20 }
    }
}

const TRANSFER_AMOUNT: u64 = 1_000;
/// A short deadline (every fifth bundle): it may expire under faults.
const SHORT_DEADLINE_MS: u64 = 400;
const LONG_DEADLINE_MS: u64 = 3_600_000;
/// Events per BundleSync page.
const PAGE: u64 = 64;

fn keys(seed: u8) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([seed; 32])).expect("keys"))
}

/// The run's keys: the server, the notary, the notary record's owner and
/// the nodes' wallets.
struct Identities {
    server: Arc<IdentityKeypair>,
    notary: Arc<IdentityKeypair>,
    owner: Arc<IdentityKeypair>,
    wallets: Vec<Arc<IdentityKeypair>>,
}

/// Identities are configuration, generated once per process.
fn identities() -> &'static Identities {
    static IDS: OnceLock<Identities> = OnceLock::new();
    IDS.get_or_init(|| Identities {
        server: keys(0xb0),
        notary: keys(0xb1),
        owner: keys(0xb2),
        wallets: (0..8).map(|i| keys(0xc0 + i)).collect(),
    })
}

/// An item of a node's outbox.
#[derive(Clone, Debug)]
enum Item {
    Bundle(Box<SubmitRequest>),
    Transfer(Box<TransferRequest>),
}

/// The final state a bundle may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Confirmed,
    ConfirmedOrExpired,
    RejectedOrExpired,
}

impl Expect {
    fn allows(self, s: BundleState) -> bool {
        match self {
            Expect::Confirmed => s == BundleState::Confirmed,
            Expect::ConfirmedOrExpired => matches!(s, BundleState::Confirmed | BundleState::Expired),
            Expect::RejectedOrExpired => matches!(s, BundleState::Rejected | BundleState::Expired),
        }
    }
}

/// A request in flight (the node's memory: lost with its process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    Register,
    Item(u64),
    Sync,
    Receipt(Hash),
}

/// A BPI node.
struct Node {
    wallet: Wallet,
    // Durable (the node's redb outbox file).
    registration: Option<Registration>,
    outbox: BTreeMap<u64, Item>,
    next_item: u64,
    bundles_made: u32,
    transfers_made: u32,
    next_nonce: u64,
    next_make_at: u64,
    /// Every bundle it made: its expected end and its first answer.
    bundles: BTreeMap<Hash, (Expect, Option<Submitted>)>,
    transfers: BTreeMap<u64, TransferReceipt>,
    /// The watcher's cursor and what it saw of the node's bundles.
    cursor: u64,
    seen: BTreeMap<Hash, Vec<(u64, BundleState)>>,
    receipts: BTreeSet<Hash>,
    /// Bundles whose deadline passed before the server ever received
    /// them (refused INVALID `bundle.valid_until`): final at the node.
    never_received: BTreeSet<Hash>,
    // Volatile.
    asked: BTreeMap<u64, Asked>,
    next_tag: u64,
    next_sync_at: u64,
    /// Items refused for now (a wallet not yet registered): not before.
    hold_until: u64,
}

/// The application: the server and the nodes.
pub(crate) struct BpciApp {
    w: Workload,
    rules: Rules,
    provider: Arc<dyn CryptoProvider>,
    server: xtmp_core::handshake::PublicIdentity,
    store: Arc<MemoryStore>,
    notary: Notary,
    /// A key that is no notary: its approvals do not verify.
    forger: Notary,
    nodes: Vec<Node>,
    /// The server's queue of approval checks (lost when it crashes).
    to_check: Vec<(Hash, SubmitRequest)>,
    recover: bool,
    problems: Vec<String>,
    initial: u64,
    server_crashes: u32,
    resubmissions: u64,
}

impl BpciApp {
    /// The application for `nodes` BPI nodes.
    pub(crate) fn new(w: Workload, nodes: usize) -> BpciApp {
        let Identities { server, notary: notary_keys, owner: owner_keys, wallets } = identities();
        let provider: Arc<dyn CryptoProvider> = Arc::new(RustCrypto);
        let config = Config::default();
        let initial = config.initial_balance;
        let rules = Rules::new(config, provider.clone(), server.clone());
        let store = Arc::new(MemoryStore::new());
        let notary = Notary::new("notary-1", notary_keys.clone());
        let owner = Wallet::from_keys(owner_keys.clone());
        let update = owner.sign_update(Record::notary("notary-1", notary.public().clone(), owner.id()), 0);
        store
            .write(&mut |tx| {
                rules
                    .register(tx, 0, owner.keys().public())
                    .map_err(|e| xtmp_bpci::store::StoreError::Engine(e.to_string()))?;
                rules
                    .check_registry_update(tx, &update)
                    .map_err(|e| xtmp_bpci::store::StoreError::Engine(e.to_string()))?;
                rules
                    .registry_update(tx, 0, &update)
                    .map_err(|e| xtmp_bpci::store::StoreError::Engine(e.to_string()))?;
                Ok(())
            })
            .expect("the notary's record");
        let nodes = (0..nodes)
            .map(|i| Node {
                wallet: Wallet::from_keys(wallets[i % wallets.len()].clone()),
                registration: None,
                outbox: BTreeMap::new(),
                next_item: 0,
                bundles_made: 0,
                transfers_made: 0,
                next_nonce: 0,
                next_make_at: 0,
                bundles: BTreeMap::new(),
                transfers: BTreeMap::new(),
                cursor: 0,
                seen: BTreeMap::new(),
                receipts: BTreeSet::new(),
                never_received: BTreeSet::new(),
                asked: BTreeMap::new(),
                next_tag: 1,
                next_sync_at: 0,
                hold_until: 0,
            })
            .collect();
        BpciApp {
            w,
            rules,
            provider,
            server: server.public().clone(),
            store,
            notary,
            forger: Notary::new("notary-1", keys(0xbf)),
            nodes,
            to_check: Vec::new(),
            recover: false,
            problems: Vec::new(),
            initial,
            server_crashes: 0,
            resubmissions: 0,
        }
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 16 {
            self.problems.push(p);
        }
    }

    fn read<T>(&self, f: impl FnOnce(&dyn xtmp_bpci::store::ReadTxn) -> Result<T, BpciError>) -> Result<T, BpciError> {
        let mut f = Some(f);
        let mut out = None;
        self.store
            .read(&mut |tx| {
                if let Some(f) = f.take() {
                    out = Some(f(tx));
                }
                Ok(())
            })
            .map_err(|e| BpciError::Internal { reason: e.to_string() })?;
        out.unwrap_or_else(|| Err(BpciError::Internal { reason: String::from("no read") }))
    }

    fn write<T>(&self, f: impl FnOnce(&mut dyn xtmp_bpci::store::Txn) -> Result<T, BpciError>) -> Result<T, BpciError> {
        let mut f = Some(f);
        let mut out = None;
        self.store
            .write(&mut |tx| {
                if let Some(f) = f.take() {
                    out = Some(f(tx));
                }
                Ok(())
            })
            .map_err(|e| BpciError::Internal { reason: e.to_string() })?;
        out.unwrap_or_else(|| Err(BpciError::Internal { reason: String::from("no write") }))
    }

    fn serve_typed(
        &mut self,
        now: u64,
        session: u64,
        binding: &[u8; 32],
        t: MessageType,
        body: &[u8],
    ) -> Result<Vec<u8>, BpciError> {
        let node = NodeId(session.to_be_bytes().repeat(2).try_into().unwrap_or([0; 16]));
        match t {
            MessageType::WALLET_REGISTER => {
                let req: RegisterRequest = decode("WalletRegister request", body)?;
                self.rules.check_registration(&req, binding)?;
                let r = self.write(|tx| self.rules.register(tx, now, &req.identity.0))?;
                Ok(schema::to_canonical(&r))
            }
            MessageType::WALLET_TRANSACTION => {
                let req: TransferRequest = decode("WalletTransaction request", body)?;
                self.read(|tx| self.rules.check_transfer(tx, &req))?;
                let r = self.write(|tx| self.rules.transfer(tx, now, &req.transfer))?;
                Ok(schema::to_canonical(&r))
            }
            MessageType::BUNDLE_SUBMIT => {
                let req: SubmitRequest = decode("BundleSubmit request", body)?;
                self.read(|tx| self.rules.check_bundle(tx, now, &req))?;
                let (s, new) = self.write(|tx| self.rules.submit(tx, now, &node, &req))?;
                if new {
                    self.to_check.push((s.bundle_id, req));
                } else {
                    self.resubmissions += 1;
                }
                Ok(schema::to_canonical(&s))
            }
            MessageType::BUNDLE_SYNC => {
                let req: SyncRequest = decode("BundleSync request", body)?;
                let filter = req.filter.clone().unwrap_or_default();
                let page = self.read(|tx| self.rules.sync(tx, req.after, req.limit, &filter))?;
                Ok(schema::to_canonical(&page))
            }
            MessageType::BUNDLE_CONFIRM => {
                let q: schema::BundleQuery = decode("BundleConfirm request", body)?;
                let r = self.read(|tx| self.rules.receipt(tx, &q.bundle_id))?;
                Ok(schema::to_canonical(&r))
            }
            other => Err(BpciError::invalid("message type", format!("{other:?} is not served here"))),
        }
    }

    fn make_items(&mut self, i: usize, now: u64) {
        let w = self.w;
        let n = self.nodes.len();
        let to = self.nodes[(i + 1) % n].wallet.id();
        let node = &mut self.nodes[i];
        while node.outbox.len() < w.outbox && now >= node.next_make_at {
            let make_bundle = node.bundles_made < w.bundles;
            let make_transfer = node.transfers_made < w.transfers && n > 1;
            if !make_bundle && !make_transfer {
                return;
            }
            // Bundles and transfers alternate while both remain.
            let item = if make_bundle && (!make_transfer || node.bundles_made <= node.transfers_made * 2) {
                let k = node.bundles_made;
                node.bundles_made += 1;
                let txs = (0..4u32)
                    .map(|t| Hash::of(&[&[i as u8][..], &k.to_be_bytes(), &t.to_be_bytes()].concat()))
                    .collect();
                let short = k % 5 == 4;
                let deadline = now + if short { SHORT_DEADLINE_MS } else { LONG_DEADLINE_MS };
                let bundle = service::bundle_of(txs, 100 + u64::from(k), now, deadline);
                let bad = i == 0 && k % 4 == 1;
                let approval = if bad { self.forger.approve(&bundle) } else { self.notary.approve(&bundle) };
                let expect = match (bad, short) {
                    (true, _) => Expect::RejectedOrExpired,
                    (false, true) => Expect::ConfirmedOrExpired,
                    (false, false) => Expect::Confirmed,
                };
                node.bundles.insert(bundle.id(), (expect, None));
                node.next_make_at = now + w.interval_ms;
                Item::Bundle(Box::new(SubmitRequest { bundle, approvals: vec![approval] }))
            } else {
                let nonce = node.next_nonce;
                node.next_nonce += 1;
                node.transfers_made += 1;
                let t = Transfer { from: node.wallet.id(), to, amount: TRANSFER_AMOUNT, nonce, memo: None };
                Item::Transfer(Box::new(node.wallet.sign_transfer(t)))
            };
            node.outbox.insert(node.next_item, item);
            node.next_item += 1;
        }
    }

    fn answer_item(&mut self, i: usize, now: u64, id: u64, answer: Result<&[u8], AppError>) {
        let Some(item) = self.nodes[i].outbox.get(&id).cloned() else { return };
        let node = i;
        match (item, answer) {
            (Item::Bundle(req), Ok(body)) => {
                let s: Submitted = match schema::from_cbor("Submitted", body) {
                    Ok(s) => s,
                    Err(e) => return self.problem(format!("node{node}: a BundleSubmit answer does not decode: {e}")),
                };
                let id_expected = req.bundle.id();
                if s.bundle_id != id_expected {
                    return self
                        .problem(format!("node{node}: BundleSubmit answered for {} not {id_expected}", s.bundle_id));
                }
                let entry = self.nodes[i].bundles.get_mut(&id_expected);
                if let Some((_, first)) = entry {
                    match first {
                        Some(f) if *f != s => {
                            let f = f.clone();
                            return self
                                .problem(format!("node{node}: bundle {id_expected} answered {s:?} after {f:?}"));
                        }
                        _ => *first = Some(s),
                    }
                }
                self.nodes[i].outbox.remove(&id);
            }
            (Item::Transfer(t), Ok(body)) => {
                let r: TransferReceipt = match schema::from_cbor("TransferReceipt", body) {
                    Ok(r) => r,
                    Err(e) => return self.problem(format!("node{node}: a transfer answer does not decode: {e}")),
                };
                let nonce = t.transfer.nonce;
                if let Some(first) = self.nodes[i].transfers.get(&nonce)
                    && *first != r
                {
                    let first = first.clone();
                    return self.problem(format!("node{node}: transfer {nonce} answered {r:?} after {first:?}"));
                }
                self.nodes[i].transfers.insert(nonce, r);
                self.nodes[i].outbox.remove(&id);
            }
            (item, Err((code, reason))) => {
                let e = BpciError::from_wire(code, &reason);
                match e {
                    // Its deadline passed before the server ever had it (a
                    // known bundle gets its original answer instead).
                    BpciError::Invalid { ref field, .. }
                        if field == "bundle.valid_until"
                            && matches!(&item, Item::Bundle(req) if req.bundle.valid_until <= now) =>
                    {
                        if let Item::Bundle(req) = &item {
                            self.nodes[i].never_received.insert(req.bundle.id());
                        }
                        self.nodes[i].outbox.remove(&id);
                    }
                    // The receiver's wallet is not registered yet, or the
                    // server sheds load: the outbox sends it again later.
                    BpciError::NotFound { .. } | BpciError::RateLimited { .. } => {
                        self.nodes[i].hold_until = now + 50;
                    }
                    e => self.problem(format!("node{node}: {item:?} refused: {e}")),
                }
            }
        }
    }

    fn answer_sync(&mut self, i: usize, answer: Result<&[u8], AppError>) {
        let page: SyncPage = match answer {
            Ok(body) => match schema::from_cbor("SyncPage", body) {
                Ok(p) => p,
                Err(e) => return self.problem(format!("node{i}: a BundleSync answer does not decode: {e}")),
            },
            Err((code, reason)) => {
                return self.problem(format!("node{i}: BundleSync refused: {}", BpciError::from_wire(code, &reason)));
            }
        };
        let node = &mut self.nodes[i];
        // An answer to a request made from an older cursor (the node
        // crashed after asking) is still in order: it starts after it.
        let mut last = node.cursor;
        let mut problems = Vec::new();
        for e in &page.events {
            if e.seq <= last {
                continue;
            }
            if e.seq != last + 1 && last >= node.cursor {
                // Events are numbered without gaps; a page holds a run.
                problems.push(format!("node{i}: the watcher jumped from {last} to {}", e.seq));
            }
            last = e.seq;
            if let (EventKind::Bundle, Some(id), Some(state)) = (e.kind, e.bundle_id, e.state)
                && node.bundles.contains_key(&id)
            {
                node.seen.entry(id).or_default().push((e.seq, state));
            }
        }
        if page.next > node.cursor {
            node.cursor = page.next.max(last);
        }
        for p in problems {
            self.problem(p);
        }
    }

    fn answer_receipt(&mut self, i: usize, id: Hash, answer: Result<&[u8], AppError>) {
        match answer {
            Ok(body) => {
                let r: Receipt = match schema::from_cbor("Receipt", body) {
                    Ok(r) => r,
                    Err(e) => return self.problem(format!("node{i}: a receipt does not decode: {e}")),
                };
                if r.bundle_id != id {
                    return self.problem(format!("node{i}: asked the receipt of {id}, got {}", r.bundle_id));
                }
                match service::verify_receipt(&*self.provider, &self.server, &r) {
                    Ok(()) => {
                        self.nodes[i].receipts.insert(id);
                    }
                    Err(why) => self.problem(format!("node{i}: the receipt of {id} does not verify: {why}")),
                }
            }
            Err((code, reason)) => {
                self.problem(format!("node{i}: no receipt for {id}: {}", BpciError::from_wire(code, &reason)))
            }
        }
    }

    /// The store's events of one bundle, in order.
    fn log_of(&self) -> Result<BTreeMap<Hash, Vec<(u64, BundleState)>>, String> {
        let events: Vec<Event> = self
            .read(|tx| {
                ledger::events_after(tx, 0, usize::MAX).map_err(|e| BpciError::Internal { reason: e.to_string() })
            })
            .map_err(|e| e.to_string())?;
        let mut log: BTreeMap<Hash, Vec<(u64, BundleState)>> = BTreeMap::new();
        for e in events {
            if let (EventKind::Bundle, Some(id), Some(s)) = (e.kind, e.bundle_id, e.state) {
                log.entry(id).or_default().push((e.seq, s));
            }
        }
        Ok(log)
    }
}

fn decode<'b, T: minicbor::Decode<'b, ()>>(what: &'static str, body: &'b [u8]) -> Result<T, BpciError> {
    schema::from_cbor(what, body).map_err(|e| BpciError::invalid(e.what, e.detail))
}

fn tag(node: &mut Node, asked: Asked) -> u64 {
    let t = node.next_tag;
    node.next_tag += 1;
    node.asked.insert(t, asked);
    t
}

fn request(message_type: MessageType, body: Vec<u8>, tag: u64) -> AppRequest {
    AppRequest { message_type, body, tag }
}

/// A bundle's transitions are one of the state machine's paths.
fn valid_path(states: &[BundleState]) -> bool {
    use BundleState::*;
    matches!(
        states,
        [Received]
            | [Received, Validated]
            | [Received, Rejected]
            | [Received, Expired]
            | [Received, Validated, Confirmed]
            | [Received, Validated, Expired]
    )
}

impl Application for BpciApp {
    fn serve(
        &mut self,
        now: u64,
        session: u64,
        binding: &[u8; 32],
        t: MessageType,
        body: &[u8],
    ) -> Result<Vec<u8>, AppError> {
        self.serve_typed(now, session, binding, t, body).map_err(|e| (e.code(), e.reason()))
    }

    fn server_tick(&mut self, now: u64) {
        if self.recover {
            // As `Engine::start`: bundles left Received are checked again.
            self.recover = false;
            let rules = self.rules.clone();
            let received = self.read(|tx| {
                let mut out = Vec::new();
                let ids = ledger::pending(tx, BundleState::Received, usize::MAX)
                    .map_err(|e| BpciError::Internal { reason: e.to_string() })?;
                for id in ids {
                    if let Some(b) =
                        ledger::bundle_body(tx, &id).map_err(|e| BpciError::Internal { reason: e.to_string() })?
                    {
                        out.push((id, b));
                    }
                }
                Ok(out)
            });
            match received {
                Ok(r) => self.to_check = r,
                Err(e) => self.problem(format!("server: recovery failed: {e}")),
            }
            drop(rules);
        }
        let checks = std::mem::take(&mut self.to_check);
        let verdicts: Vec<(Hash, Result<(), String>)> = checks
            .iter()
            .map(|(id, req)| {
                let v = self.read(|tx| {
                    self.rules.verify_approvals(tx, req).map_err(|e| BpciError::Internal { reason: e.to_string() })
                });
                (*id, v.unwrap_or_else(|e| Err(e.to_string())))
            })
            .collect();
        let r = self.write(|tx| {
            for (id, v) in &verdicts {
                self.rules.settle(tx, now, id, v.clone())?;
            }
            self.rules.expire(tx, now, 1024)?;
            while self.rules.build_block(tx, now)?.is_some() {}
            Ok(())
        });
        if let Err(e) = r {
            self.problem(format!("server: the tick's transaction failed: {e}"));
        }
    }

    fn server_crashed(&mut self) {
        self.to_check.clear();
        self.recover = true;
        self.server_crashes += 1;
    }

    fn next_request(&mut self, i: usize, now: u64, _session: u32, binding: &[u8; 32]) -> Option<AppRequest> {
        if self.done(i) {
            // Its work is over: nothing more to ask (the run settles).
            return None;
        }
        let asked_register = self.nodes[i].asked.values().any(|a| *a == Asked::Register);
        if self.nodes[i].registration.is_none() {
            if asked_register {
                return None;
            }
            let node = &mut self.nodes[i];
            let keys = node.wallet.keys();
            let proof = schema::sign(keys, &statement::wallet_register(binding, keys.public()));
            let req = RegisterRequest { identity: schema::IdentityBytes(keys.public().clone()), proof };
            let t = tag(node, Asked::Register);
            return Some(request(MessageType::WALLET_REGISTER, schema::to_canonical(&req), t));
        }
        self.make_items(i, now);
        let node = &mut self.nodes[i];
        if now >= node.hold_until {
            let in_flight: BTreeSet<u64> =
                node.asked.values().filter_map(|a| if let Asked::Item(id) = a { Some(*id) } else { None }).collect();
            // Transfers carry per-wallet nonces: one at a time, in order.
            let transfer_in_flight = in_flight.iter().any(|id| matches!(node.outbox.get(id), Some(Item::Transfer(_))));
            let next = node.outbox.iter().find(|(id, item)| {
                !(in_flight.contains(id) || (transfer_in_flight && matches!(item, Item::Transfer(_))))
            });
            if let Some((&id, item)) = next {
                let (message_type, body) = match item {
                    Item::Bundle(req) => (MessageType::BUNDLE_SUBMIT, schema::to_canonical(&**req)),
                    Item::Transfer(t) => (MessageType::WALLET_TRANSACTION, schema::to_canonical(&**t)),
                };
                let t = tag(node, Asked::Item(id));
                return Some(request(message_type, body, t));
            }
        }
        if now >= node.next_sync_at && !node.asked.values().any(|a| *a == Asked::Sync) {
            node.next_sync_at = now + self.w.sync_ms;
            let req = SyncRequest { after: node.cursor, limit: PAGE, filter: None };
            let t = tag(node, Asked::Sync);
            return Some(request(MessageType::BUNDLE_SYNC, schema::to_canonical(&req), t));
        }
        let confirmed = node
            .seen
            .iter()
            .filter(|(id, s)| {
                s.last().is_some_and(|(_, st)| *st == BundleState::Confirmed) && !node.receipts.contains(id)
            })
            .map(|(id, _)| *id)
            .find(|id| !node.asked.values().any(|a| *a == Asked::Receipt(*id)));
        if let Some(id) = confirmed {
            let t = tag(node, Asked::Receipt(id));
            return Some(request(
                MessageType::BUNDLE_CONFIRM,
                schema::to_canonical(&schema::BundleQuery { bundle_id: id }),
                t,
            ));
        }
        None
    }

    fn answered(&mut self, i: usize, now: u64, tag: u64, answer: Result<&[u8], AppError>) {
        let Some(asked) = self.nodes[i].asked.remove(&tag) else { return };
        match asked {
            Asked::Register => match answer {
                Ok(body) => match schema::from_cbor::<Registration>("Registration", body) {
                    Ok(r) if r.wallet == self.nodes[i].wallet.id() => self.nodes[i].registration = Some(r),
                    Ok(r) => self.problem(format!("node{i}: registered {} not its wallet", r.wallet)),
                    Err(e) => self.problem(format!("node{i}: a Registration does not decode: {e}")),
                },
                Err((code, reason)) => {
                    self.problem(format!("node{i}: registration refused: {}", BpciError::from_wire(code, &reason)))
                }
            },
            Asked::Item(id) => self.answer_item(i, now, id, answer),
            Asked::Sync => self.answer_sync(i, answer),
            Asked::Receipt(id) => self.answer_receipt(i, id, answer),
        }
    }

    fn unanswered(&mut self, i: usize, tag: u64) {
        self.nodes[i].asked.remove(&tag);
    }

    fn client_crashed(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.asked.clear();
        node.next_sync_at = 0;
        node.hold_until = 0;
    }

    fn done(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        let transfers = if self.nodes.len() > 1 { self.w.transfers } else { 0 };
        n.registration.is_some()
            && n.bundles_made == self.w.bundles
            && n.transfers_made == transfers
            && n.outbox.is_empty()
            && n.bundles.keys().all(|id| {
                n.never_received.contains(id)
                    || n.seen.get(id).and_then(|s| s.last()).is_some_and(|(_, st)| {
                        st.is_final() && (*st != BundleState::Confirmed || n.receipts.contains(id))
                    })
            })
    }

    fn check(&self, end: bool) -> Result<(), String> {
        if let Some(p) = self.problems.first() {
            return Err(format!("{p} ({} problems)", self.problems.len()));
        }
        // Supply: every registered wallet got the initial balance; the
        // transfers move it, never make or lose it.
        let wallets = self
            .read(|tx| ledger::wallets(tx, usize::MAX).map_err(|e| BpciError::Internal { reason: e.to_string() }))
            .map_err(|e| e.to_string())?;
        let total: u128 = wallets.iter().map(|(_, w)| u128::from(w.balance)).sum();
        if total != u128::from(self.initial) * wallets.len() as u128 {
            return Err(format!("total supply {total} for {} wallets of {} each", wallets.len(), self.initial));
        }
        let log = self.log_of()?;
        for (id, states) in &log {
            let s: Vec<BundleState> = states.iter().map(|(_, s)| *s).collect();
            if !valid_path(&s) {
                return Err(format!("bundle {id} went through {s:?}"));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.outbox.len() > self.w.outbox {
                return Err(format!("node{i}: {} items in an outbox of {}", n.outbox.len(), self.w.outbox));
            }
            for (id, seen) in &n.seen {
                let stored = log.get(id).map(Vec::as_slice).unwrap_or(&[]);
                if !stored.starts_with(seen) {
                    return Err(format!(
                        "node{i}: its watcher saw {seen:?} of bundle {id}, the store holds {stored:?}"
                    ));
                }
            }
        }
        if !end {
            return Ok(());
        }
        // Each bundle is in exactly one block if Confirmed, in none
        // otherwise.
        let mut in_blocks: BTreeMap<Hash, u32> = BTreeMap::new();
        let height = self
            .read(|tx| ledger::tip(tx).map_err(|e| BpciError::Internal { reason: e.to_string() }))
            .map_err(|e| e.to_string())?
            .0;
        for h in 1..=height {
            let b = self
                .read(|tx| ledger::block(tx, h).map_err(|e| BpciError::Internal { reason: e.to_string() }))
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("block {h} is missing"))?;
            for id in b.bundles {
                *in_blocks.entry(id).or_default() += 1;
            }
        }
        let mut expected_balance: BTreeMap<WalletId, i128> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for (id, (expect, first)) in &n.bundles {
                if n.never_received.contains(id) {
                    if log.contains_key(id) || !expect.allows(BundleState::Expired) {
                        return Err(format!("node{i}: bundle {id} was refused as late, yet the server has it"));
                    }
                    continue;
                }
                let stored = log.get(id).ok_or_else(|| format!("node{i}: bundle {id} never reached the server"))?;
                let last = stored.last().map(|(_, s)| *s).unwrap_or(BundleState::Received);
                if !last.is_final() || !expect.allows(last) {
                    return Err(format!("node{i}: bundle {id} ended {last:?}, expected {expect:?}"));
                }
                let blocks = in_blocks.get(id).copied().unwrap_or(0);
                if blocks != u32::from(last == BundleState::Confirmed) {
                    return Err(format!("node{i}: bundle {id} ({last:?}) is in {blocks} blocks"));
                }
                if first.is_none() {
                    return Err(format!("node{i}: bundle {id} never got an answer"));
                }
                if n.seen.get(id).map(Vec::as_slice) != Some(stored.as_slice()) {
                    return Err(format!(
                        "node{i}: its watcher saw {:?} of bundle {id}, the store holds {stored:?}",
                        n.seen.get(id)
                    ));
                }
                if last == BundleState::Confirmed && !n.receipts.contains(id) {
                    return Err(format!("node{i}: no verified receipt for confirmed bundle {id}"));
                }
            }
            let me = n.wallet.id();
            let to = self.nodes[(i + 1) % self.nodes.len()].wallet.id();
            let sent = n.transfers.len() as i128 * i128::from(TRANSFER_AMOUNT);
            *expected_balance.entry(me).or_insert(i128::from(self.initial)) -= sent;
            *expected_balance.entry(to).or_insert(i128::from(self.initial)) += sent;
        }
        for (id, w) in &wallets {
            if let Some(b) = expected_balance.get(id)
                && i128::from(w.balance) != *b
            {
                return Err(format!("wallet {id}: balance {} where the transfers make it {b}", w.balance));
            }
        }
        Ok(())
    }

    fn summary(&self) -> String {
        let log = self.log_of().unwrap_or_default();
        let mut by_state: BTreeMap<String, u32> = BTreeMap::new();
        for states in log.values() {
            if let Some((_, s)) = states.last() {
                *by_state.entry(format!("{s:?}")).or_default() += 1;
            }
        }
        format!(
            "bundles {by_state:?}, transfers {}, server crashes {}, resubmissions {}",
            self.nodes.iter().map(|n| n.transfers.len()).sum::<usize>(),
            self.server_crashes,
            self.resubmissions
        )
    }
}
