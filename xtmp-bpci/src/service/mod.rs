//! The services' rules (SPEC.md 5.3-5.8), as plain code over one store
//! transaction with the time passed in: no runtime, no clock, no thread.
//! [`Engine`] runs them against a store with group commit and parallel
//! signature checks; the simulator can run them as they are.

mod engine;
mod sessions;

use std::collections::BTreeSet;
use std::sync::Arc;

use xtmp_core::crypto::CryptoProvider;
use xtmp_core::handshake::{IdentityKeypair, PublicIdentity};

pub use engine::{Clock, Engine, EngineStats, Verdict, system_clock};
pub use sessions::{NodeId, Sessions};

use crate::error::BpciError;
use crate::schema::{
    self, Balance, BlockHeader, Bundle, BundleState, Event, EventKind, Filter, Hash, Millis, Receipt, Record,
    Registration, RegistryUpdate, Role, SignedRecord, Stamp, Status, SubmitRequest, Submitted, SyncPage, Transfer,
    TransferReceipt, TransferRequest, WalletId, merkle, statement,
};
use crate::store::ledger::{self, BlockRecord, BundleRecord, TransferRecord, WalletRecord};
use crate::store::{ReadTxn, StoreError, Txn};

/// The services' settings, with documented defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// The domain wallets sign in their authentication (default `"bpci"`).
    pub domain: String,
    /// The balance a new wallet gets, in minor units (default 1,000,000).
    pub initial_balance: u64,
    /// Approvals by distinct registered notaries a bundle needs (default 1).
    pub notary_threshold: usize,
    /// Transactions in one bundle, at most (default 10,000).
    pub max_transactions: usize,
    /// Bytes of a bundle's endorsement proof, at most (default 64 KiB).
    pub max_endorsement: usize,
    /// How far after its creation a bundle's deadline may be (default 24 h).
    pub max_validity_ms: u64,
    /// How far in the future a bundle's creation time may be (default 5 min).
    pub max_clock_skew_ms: u64,
    /// Bundles in one block, at most (default 4,096).
    pub block_max_bundles: usize,
    /// Events kept (default 1,000,000); older cursors get CURSOR_EXPIRED.
    pub event_retention: u64,
    /// Events in one BundleSync page, at most (default 1,000).
    pub sync_page_max: usize,
    /// How long a WalletAuth challenge is good for (default 60 s).
    pub challenge_ttl_ms: u64,
    /// How long a WalletAuth grant lasts, at most (default 1 h; it also
    /// ends with its session).
    pub grant_ttl_ms: u64,
    /// Writes (submissions, transfers, registrations, registry updates,
    /// stamps) waiting for the store, at most, server-wide (default
    /// 8,192); more get RATE_LIMITED.
    pub write_queue: usize,
    /// Writes of one node waiting for the store, at most (default 1,024).
    pub node_queue: usize,
    /// Writes per second one node may make, sustained (default 2,000).
    pub node_rate: u32,
    /// Writes one node may make in a burst (default 4,000).
    pub node_burst: u32,
    /// WalletAuth challenges and grants held, at most (default 65,536 each).
    pub max_auth_entries: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            domain: String::from("bpci"),
            initial_balance: 1_000_000,
            notary_threshold: 1,
            max_transactions: 10_000,
            max_endorsement: 64 * 1024,
            max_validity_ms: 24 * 3600 * 1000,
            max_clock_skew_ms: 5 * 60 * 1000,
            block_max_bundles: 4096,
            event_retention: 1_000_000,
            sync_page_max: 1000,
            challenge_ttl_ms: 60_000,
            grant_ttl_ms: 3600 * 1000,
            write_queue: 8192,
            node_queue: 1024,
            node_rate: 2000,
            node_burst: 4000,
            max_auth_entries: 65_536,
        }
    }
}

/// The rules, with what they need: the settings, the crypto provider and
/// the server's identity (which signs blocks, records and stamps).
#[derive(Clone)]
pub struct Rules {
    /// The settings.
    pub config: Arc<Config>,
    /// Signature checks go through it.
    pub provider: Arc<dyn CryptoProvider>,
    /// The server's identity.
    pub identity: Arc<IdentityKeypair>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").field("identity", &self.identity.key_id()).finish()
    }
}

fn store_err(e: StoreError) -> BpciError {
    BpciError::Internal { reason: e.to_string() }
}

const NAME_MAX: usize = 128;
const MEMO_MAX: usize = 256;
const ENDPOINTS_MAX: usize = 16;

/// Whether `name` is a valid registry name (1-128 of `a-z 0-9 . - _`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl Rules {
    /// Rules with `config`, checking signatures with `provider` and
    /// signing with `identity`.
    pub fn new(config: Config, provider: Arc<dyn CryptoProvider>, identity: Arc<IdentityKeypair>) -> Rules {
        Rules { config: Arc::new(config), provider, identity }
    }

    fn sign(&self, statement: &[u8]) -> schema::Signature {
        schema::sign(&self.identity, statement)
    }

    fn verify(&self, who: &PublicIdentity, statement: &[u8], sig: &schema::Signature) -> bool {
        schema::verify(&*self.provider, who, statement, sig)
    }

    // ------------------------------------------------------------ wallets

    /// Checks a registration's proof of possession, made in the session
    /// whose channel binding is `binding` (no store access: run it before
    /// queueing the write).
    pub fn check_registration(&self, req: &schema::RegisterRequest, binding: &[u8; 32]) -> Result<(), BpciError> {
        let st = statement::wallet_register(binding, &req.identity.0);
        if self.verify(&req.identity.0, &st, &req.proof) {
            Ok(())
        } else {
            Err(BpciError::Unauthorized {
                reason: String::from("proof: the signature does not verify for this wallet in this session"),
            })
        }
    }

    /// Registers a wallet (idempotent by its id: a registered wallet gets
    /// its original answer).
    pub fn register(
        &self,
        tx: &mut dyn Txn,
        now: Millis,
        identity: &PublicIdentity,
    ) -> Result<Registration, BpciError> {
        let id = WalletId::of(identity);
        if let Some(w) = ledger::wallet(tx, &id).map_err(store_err)? {
            return Ok(w.registration);
        }
        let mut e = Event::new(EventKind::WalletRegistered);
        e.at = now;
        e.wallet = Some(id);
        e.amount = Some(self.config.initial_balance);
        let seq = ledger::append_event(tx, e).map_err(store_err)?;
        let registration = Registration {
            wallet: id,
            registration: seq,
            initial_balance: self.config.initial_balance,
            registered_at: now,
        };
        let w = WalletRecord {
            identity: schema::IdentityBytes(identity.clone()),
            balance: self.config.initial_balance,
            next_nonce: 0,
            registration: registration.clone(),
        };
        ledger::put_wallet(tx, &id, &w).map_err(store_err)?;
        Ok(registration)
    }

    /// A wallet's public identity, or NOT_FOUND.
    pub fn wallet_identity(&self, tx: &dyn ReadTxn, id: &WalletId) -> Result<PublicIdentity, BpciError> {
        match ledger::wallet(tx, id).map_err(store_err)? {
            Some(w) => Ok(w.identity.0),
            None => Err(BpciError::not_found(format!("wallet {id}"))),
        }
    }

    /// A wallet's balance.
    pub fn balance(&self, tx: &dyn ReadTxn, id: &WalletId) -> Result<Balance, BpciError> {
        let w =
            ledger::wallet(tx, id).map_err(store_err)?.ok_or_else(|| BpciError::not_found(format!("wallet {id}")))?;
        Ok(Balance {
            wallet: *id,
            balance: w.balance,
            next_nonce: w.next_nonce,
            as_of: ledger::head(tx).map_err(store_err)?,
        })
    }

    /// Checks a transfer's form and its sender's signature (reads only:
    /// run it before queueing the write).
    pub fn check_transfer(&self, tx: &dyn ReadTxn, req: &TransferRequest) -> Result<(), BpciError> {
        let t = &req.transfer;
        if t.amount == 0 {
            return Err(BpciError::invalid("transfer.amount", "must be at least 1"));
        }
        if t.from == t.to {
            return Err(BpciError::invalid("transfer.to", "must differ from transfer.from"));
        }
        if t.memo.as_ref().is_some_and(|m| m.len() > MEMO_MAX) {
            return Err(BpciError::invalid("transfer.memo", "at most 256 bytes"));
        }
        let from = self.wallet_identity(tx, &t.from)?;
        if ledger::wallet(tx, &t.to).map_err(store_err)?.is_none() {
            return Err(BpciError::not_found(format!("wallet {}", t.to)));
        }
        if !self.verify(&from, &statement::transfer(t), &req.signature) {
            return Err(BpciError::Unauthorized {
                reason: String::from("signature: does not verify for the sending wallet"),
            });
        }
        Ok(())
    }

    /// Applies a transfer whose signature was checked: atomically, with no
    /// overdraft and the total conserved. The same transfer again (same
    /// sender and nonce, same body) gets the original receipt; another
    /// body with a used nonce is a CONFLICT.
    pub fn transfer(&self, tx: &mut dyn Txn, now: Millis, t: &Transfer) -> Result<TransferReceipt, BpciError> {
        let id = Hash::of(&schema::to_canonical(t));
        if let Some(done) = ledger::transfer(tx, &t.from, t.nonce).map_err(store_err)? {
            if done.transfer == *t {
                return Ok(done.receipt);
            }
            return Err(BpciError::Conflict {
                reason: format!("transfer nonce {} of {} was used by another transfer", t.nonce, t.from),
            });
        }
        let mut from = ledger::wallet(tx, &t.from)
            .map_err(store_err)?
            .ok_or_else(|| BpciError::not_found(format!("wallet {}", t.from)))?;
        let mut to = ledger::wallet(tx, &t.to)
            .map_err(store_err)?
            .ok_or_else(|| BpciError::not_found(format!("wallet {}", t.to)))?;
        if t.nonce != from.next_nonce {
            return Err(BpciError::invalid(
                "transfer.nonce",
                format!("expected {} (the sender's next nonce), got {}", from.next_nonce, t.nonce),
            ));
        }
        if from.balance < t.amount {
            return Err(BpciError::InsufficientFunds { balance: from.balance, amount: t.amount });
        }
        let credited = to
            .balance
            .checked_add(t.amount)
            .ok_or_else(|| BpciError::invalid("transfer.amount", "the receiver's balance would overflow 2^64 - 1"))?;
        from.balance -= t.amount;
        from.next_nonce += 1;
        to.balance = credited;
        let mut e = Event::new(EventKind::Transfer);
        e.at = now;
        e.wallet = Some(t.from);
        e.to = Some(t.to);
        e.amount = Some(t.amount);
        e.nonce = Some(t.nonce);
        let seq = ledger::append_event(tx, e).map_err(store_err)?;
        let receipt = TransferReceipt { transfer_id: id, seq, balance: from.balance, at: now };
        ledger::put_wallet(tx, &t.from, &from).map_err(store_err)?;
        ledger::put_wallet(tx, &t.to, &to).map_err(store_err)?;
        ledger::put_transfer(tx, &TransferRecord { transfer: t.clone(), receipt: receipt.clone() })
            .map_err(store_err)?;
        Ok(receipt)
    }

    // ------------------------------------------------------------ bundles

    /// Checks a bundle's form before anything is stored: counts, the
    /// Merkle root, the deadline, sizes, and that its approvals name
    /// enough distinct registered notaries. Returns the bundle id. A
    /// bundle already known passes unchecked: its resubmission gets the
    /// original answer even after its deadline (SPEC.md 5).
    pub fn check_bundle(&self, tx: &dyn ReadTxn, now: Millis, req: &SubmitRequest) -> Result<Hash, BpciError> {
        let b = &req.bundle;
        let id = b.id();
        if ledger::bundle(tx, &id).map_err(store_err)?.is_some() {
            return Ok(id);
        }
        let c = &self.config;
        if b.transactions.is_empty() {
            return Err(BpciError::invalid("bundle.transactions", "at least one transaction"));
        }
        if b.transactions.len() > c.max_transactions {
            return Err(BpciError::invalid("bundle.transactions", format!("at most {}", c.max_transactions)));
        }
        if b.transaction_count != b.transactions.len() as u64 {
            return Err(BpciError::invalid(
                "bundle.transaction_count",
                format!("is {} but there are {} transactions", b.transaction_count, b.transactions.len()),
            ));
        }
        let distinct: BTreeSet<&Hash> = b.transactions.iter().collect();
        if distinct.len() != b.transactions.len() {
            return Err(BpciError::invalid("bundle.transactions", "a transaction id appears twice"));
        }
        if merkle::root(&b.transactions) != b.merkle_root {
            return Err(BpciError::invalid("bundle.merkle_root", "does not match the transactions (RFC 6962)"));
        }
        if b.endorsement.len() > c.max_endorsement {
            return Err(BpciError::invalid("bundle.endorsement", format!("at most {} bytes", c.max_endorsement)));
        }
        if b.created_at > now.saturating_add(c.max_clock_skew_ms) {
            return Err(BpciError::invalid("bundle.created_at", "is in the future"));
        }
        if b.valid_until <= now {
            return Err(BpciError::invalid("bundle.valid_until", "has passed"));
        }
        if b.valid_until <= b.created_at || b.valid_until - b.created_at > c.max_validity_ms {
            return Err(BpciError::invalid(
                "bundle.valid_until",
                format!("must be after created_at and at most {} ms after it", c.max_validity_ms),
            ));
        }
        for (field, v) in [
            ("bundle.node.node_id", &b.node.node_id),
            ("bundle.node.ledger_version", &b.node.ledger_version),
            ("bundle.node.consensus", &b.node.consensus),
            ("bundle.node.network", &b.node.network),
        ] {
            if v.len() > NAME_MAX {
                return Err(BpciError::invalid(field, "at most 128 bytes"));
            }
        }
        if let Some(w) = &b.wallet {
            self.wallet_identity(tx, w)?;
        }
        let mut notaries = BTreeSet::new();
        for (i, a) in req.approvals.iter().enumerate() {
            let field = || format!("approvals[{i}].notary");
            match ledger::record(tx, &a.notary).map_err(store_err)? {
                None => return Err(BpciError::invalid(field(), format!("no registry record named {:?}", a.notary))),
                Some(r) if r.record.role != Role::Notary => {
                    return Err(BpciError::invalid(field(), format!("{:?} is not a notary", a.notary)));
                }
                Some(_) => {}
            }
            if !notaries.insert(a.notary.as_str()) {
                return Err(BpciError::invalid(field(), format!("{:?} approves twice", a.notary)));
            }
        }
        if notaries.len() < c.notary_threshold {
            return Err(BpciError::invalid(
                "approvals",
                format!("{} notaries approve, at least {} must", notaries.len(), c.notary_threshold),
            ));
        }
        Ok(id)
    }

    /// Stores a checked bundle as Received (its event numbered in this
    /// transaction); a bundle already known gets its original answer.
    /// Returns the answer and whether it is new.
    pub fn submit(
        &self,
        tx: &mut dyn Txn,
        now: Millis,
        node: &NodeId,
        req: &SubmitRequest,
    ) -> Result<(Submitted, bool), BpciError> {
        let id = req.bundle.id();
        if let Some(b) = ledger::bundle(tx, &id).map_err(store_err)? {
            return Ok((b.submitted, false));
        }
        let seq = self.bundle_event(tx, now, &id, BundleState::Received, None, None, req.bundle.wallet)?;
        let submitted = Submitted { bundle_id: id, state: BundleState::Received, seq };
        let record = BundleRecord {
            valid_until: req.bundle.valid_until,
            submitted: submitted.clone(),
            state: BundleState::Received,
            state_seq: seq,
            reason: None,
            height: None,
            index: None,
            node: node.0.to_vec(),
            wallet: req.bundle.wallet,
        };
        ledger::put_bundle_body(tx, &id, req).map_err(store_err)?;
        ledger::put_bundle(tx, &id, &record, None).map_err(store_err)?;
        Ok((submitted, true))
    }

    #[allow(clippy::too_many_arguments)]
    fn bundle_event(
        &self,
        tx: &mut dyn Txn,
        now: Millis,
        id: &Hash,
        state: BundleState,
        reason: Option<String>,
        height: Option<u64>,
        wallet: Option<WalletId>,
    ) -> Result<u64, BpciError> {
        let mut e = Event::new(EventKind::Bundle);
        e.at = now;
        e.bundle_id = Some(*id);
        e.state = Some(state);
        e.reason = reason;
        e.height = height;
        e.wallet = wallet;
        ledger::append_event(tx, e).map_err(store_err)
    }

    /// Checks a bundle's approvals: every signature by its notary's
    /// registered identity (reads only; the expensive part, run in
    /// parallel). `Err` names the first approval that fails.
    pub fn verify_approvals(&self, tx: &dyn ReadTxn, req: &SubmitRequest) -> Result<Result<(), String>, StoreError> {
        let id = req.bundle.id();
        let st = statement::notary_approval(&id);
        for (i, a) in req.approvals.iter().enumerate() {
            let Some(r) = ledger::record(tx, &a.notary)? else {
                return Ok(Err(format!("approvals[{i}]: notary {:?} is no longer registered", a.notary)));
            };
            if r.record.role != Role::Notary {
                return Ok(Err(format!("approvals[{i}]: {:?} is no longer a notary", a.notary)));
            }
            if !self.verify(&r.record.identity.0, &st, &a.signature) {
                return Ok(Err(format!("approvals[{i}]: the signature of notary {:?} does not verify", a.notary)));
            }
        }
        Ok(Ok(()))
    }

    /// Moves a Received bundle on after its check: Validated, Rejected
    /// (with the reason) or, past its deadline, Expired. Anything else is
    /// left as it is (a verdict that came twice).
    pub fn settle(
        &self,
        tx: &mut dyn Txn,
        now: Millis,
        id: &Hash,
        verdict: Result<(), String>,
    ) -> Result<Option<BundleState>, BpciError> {
        let Some(mut b) = ledger::bundle(tx, id).map_err(store_err)? else { return Ok(None) };
        if b.state != BundleState::Received {
            return Ok(None);
        }
        let (state, reason) = match verdict {
            _ if b.valid_until <= now => (BundleState::Expired, Some(String::from("deadline passed"))),
            Ok(()) => (BundleState::Validated, None),
            Err(why) => (BundleState::Rejected, Some(why)),
        };
        self.transition(tx, now, id, &mut b, state, reason, None)?;
        Ok(Some(state))
    }

    #[allow(clippy::too_many_arguments)]
    fn transition(
        &self,
        tx: &mut dyn Txn,
        now: Millis,
        id: &Hash,
        b: &mut BundleRecord,
        state: BundleState,
        reason: Option<String>,
        place: Option<(u64, u64)>,
    ) -> Result<(), BpciError> {
        let before = (b.state, b.state_seq);
        let height = place.map(|(h, _)| h);
        let seq = self.bundle_event(tx, now, id, state, reason.clone(), height, b.wallet)?;
        b.state = state;
        b.state_seq = seq;
        b.reason = reason;
        b.height = height;
        b.index = place.map(|(_, i)| i);
        ledger::put_bundle(tx, id, b, Some(before)).map_err(store_err)
    }

    /// Moves `b` to Expired if its deadline passed; says whether it did.
    fn expire_if_due(&self, tx: &mut dyn Txn, now: Millis, id: &Hash, b: &mut BundleRecord) -> Result<bool, BpciError> {
        if b.valid_until > now {
            return Ok(false);
        }
        self.transition(tx, now, id, b, BundleState::Expired, Some(String::from("deadline passed")), None)?;
        Ok(true)
    }

    /// Expires bundles not yet final whose deadline passed (at most
    /// `limit` of each state). Returns how many.
    pub fn expire(&self, tx: &mut dyn Txn, now: Millis, limit: usize) -> Result<usize, BpciError> {
        let mut n = 0;
        for state in [BundleState::Received, BundleState::Validated] {
            for id in ledger::pending(tx, state, limit).map_err(store_err)? {
                let Some(mut b) = ledger::bundle(tx, &id).map_err(store_err)? else { continue };
                if self.expire_if_due(tx, now, &id, &mut b)? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Builds the next block from Validated bundles (at most
    /// `block_max_bundles`, oldest first; those past their deadline expire
    /// instead), signs its header once, confirms each bundle. `None` when
    /// no bundle is waiting.
    pub fn build_block(&self, tx: &mut dyn Txn, now: Millis) -> Result<Option<BlockHeader>, BpciError> {
        let waiting = ledger::pending(tx, BundleState::Validated, self.config.block_max_bundles).map_err(store_err)?;
        let mut members = Vec::with_capacity(waiting.len());
        let mut records = Vec::with_capacity(waiting.len());
        for id in waiting {
            let Some(mut b) = ledger::bundle(tx, &id).map_err(store_err)? else { continue };
            if !self.expire_if_due(tx, now, &id, &mut b)? {
                members.push(id);
                records.push(b);
            }
        }
        if members.is_empty() {
            return Ok(None);
        }
        let (height, previous) = ledger::tip(tx).map_err(store_err)?;
        let header = BlockHeader {
            height: height + 1,
            previous,
            bundles_root: merkle::root(&members),
            bundle_count: members.len() as u64,
            time: now,
        };
        let signature = self.sign(&statement::block(&header));
        for (i, (id, b)) in members.iter().zip(records.iter_mut()).enumerate() {
            self.transition(tx, now, id, b, BundleState::Confirmed, None, Some((header.height, i as u64)))?;
        }
        let mut e = Event::new(EventKind::Block);
        e.at = now;
        e.height = Some(header.height);
        e.hash = Some(header.hash());
        ledger::append_event(tx, e).map_err(store_err)?;
        ledger::put_block(tx, &BlockRecord { header: header.clone(), signature, bundles: members })
            .map_err(store_err)?;
        Ok(Some(header))
    }

    /// A bundle's state.
    pub fn status(&self, tx: &dyn ReadTxn, id: &Hash) -> Result<Status, BpciError> {
        let b =
            ledger::bundle(tx, id).map_err(store_err)?.ok_or_else(|| BpciError::not_found(format!("bundle {id}")))?;
        Ok(Status { bundle_id: *id, state: b.state, seq: b.state_seq, reason: b.reason, height: b.height })
    }

    /// A confirmed bundle's receipt; NOT_FINAL before, NO_RECEIPT when it
    /// ended otherwise.
    pub fn receipt(&self, tx: &dyn ReadTxn, id: &Hash) -> Result<Receipt, BpciError> {
        let b =
            ledger::bundle(tx, id).map_err(store_err)?.ok_or_else(|| BpciError::not_found(format!("bundle {id}")))?;
        match b.state {
            BundleState::Confirmed => {}
            s if s.is_final() => return Err(BpciError::NoReceipt { state: s }),
            s => return Err(BpciError::NotFinal { state: s }),
        }
        let (Some(height), Some(index)) = (b.height, b.index) else {
            return Err(BpciError::Internal { reason: format!("bundle {id} is Confirmed without a block") });
        };
        let block = ledger::block(tx, height)
            .map_err(store_err)?
            .ok_or_else(|| BpciError::Internal { reason: format!("block {height} is missing") })?;
        let path = merkle::path(&block.bundles, index as usize);
        Ok(Receipt { bundle_id: *id, header: block.header, signature: block.signature, index, path })
    }

    /// Events after `after` that pass `filter`, a page at a time.
    pub fn sync(&self, tx: &dyn ReadTxn, after: u64, limit: u64, filter: &Filter) -> Result<SyncPage, BpciError> {
        let first = ledger::first_kept(tx).map_err(store_err)?;
        let head = ledger::head(tx).map_err(store_err)?;
        if after + 1 < first && head >= first {
            return Err(BpciError::CursorExpired { first });
        }
        let limit = (limit as usize).clamp(1, self.config.sync_page_max);
        let mut events = Vec::new();
        let mut next = after;
        // Examine at most four pages' worth, so a sparse filter cannot
        // make one request read the whole log.
        let mut budget = limit * 4;
        while events.len() < limit && budget > 0 {
            let page = ledger::events_after(tx, next, limit.min(budget)).map_err(store_err)?;
            if page.is_empty() {
                break;
            }
            budget = budget.saturating_sub(page.len());
            for e in page {
                next = e.seq;
                if filter.matches(&e) {
                    events.push(e);
                    if events.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(SyncPage { events, next, head })
    }

    // ----------------------------------------------------------- registry

    /// A registry record, as signed by the server.
    pub fn query(&self, tx: &dyn ReadTxn, name: &str) -> Result<SignedRecord, BpciError> {
        ledger::record(tx, name).map_err(store_err)?.ok_or_else(|| BpciError::not_found(format!("record {name:?}")))
    }

    /// Checks an update's form and its owner's signature (reads only).
    pub fn check_registry_update(&self, tx: &dyn ReadTxn, u: &RegistryUpdate) -> Result<(), BpciError> {
        let r = &u.record;
        if !valid_name(&r.name) {
            return Err(BpciError::invalid("record.name", "1 to 128 characters of a-z 0-9 . - _"));
        }
        if r.version != u.expected_version.saturating_add(1) {
            return Err(BpciError::invalid("record.version", "must be expected_version + 1"));
        }
        if r.endpoints.len() > ENDPOINTS_MAX || r.endpoints.iter().any(|e| e.len() > 256) {
            return Err(BpciError::invalid("record.endpoints", "at most 16, each at most 256 bytes"));
        }
        for (i, e) in r.endpoints.iter().enumerate() {
            if e.parse::<xtmp_adapter::Endpoint>().is_err() {
                return Err(BpciError::invalid(format!("record.endpoints[{i}]"), "not an XTMP endpoint string"));
            }
        }
        let owner = self.wallet_identity(tx, &r.owner)?;
        if let Some(current) = ledger::record(tx, &r.name).map_err(store_err)?
            && current.record.owner != r.owner
        {
            return Err(BpciError::Forbidden { reason: format!("record {:?} is owned by another wallet", r.name) });
        }
        if !self.verify(&owner, &statement::registry_update(r, u.expected_version), &u.signature) {
            return Err(BpciError::Unauthorized { reason: String::from("signature: does not verify for the owner") });
        }
        Ok(())
    }

    /// Writes a checked update if `expected_version` is current (compare
    /// and set); the same update again gets the same answer.
    pub fn registry_update(
        &self,
        tx: &mut dyn Txn,
        now: Millis,
        u: &RegistryUpdate,
    ) -> Result<SignedRecord, BpciError> {
        let r = &u.record;
        let current = ledger::record(tx, &r.name).map_err(store_err)?;
        let version = current.as_ref().map_or(0, |c| c.record.version);
        if let Some(c) = &current
            && c.record == *r
        {
            return Ok(c.clone());
        }
        if current.as_ref().is_some_and(|c| c.record.owner != r.owner) {
            return Err(BpciError::Forbidden { reason: format!("record {:?} is owned by another wallet", r.name) });
        }
        if version != u.expected_version {
            return Err(BpciError::Conflict {
                reason: format!("record {:?} is at version {version}, not {}", r.name, u.expected_version),
            });
        }
        let mut e = Event::new(EventKind::Registry);
        e.at = now;
        e.name = Some(r.name.clone());
        e.version = Some(r.version);
        e.wallet = Some(r.owner);
        let seq = ledger::append_event(tx, e).map_err(store_err)?;
        let signature = self.sign(&statement::registry_record(r, seq));
        let signed = SignedRecord { record: r.clone(), seq, signature };
        ledger::put_record(tx, &signed).map_err(store_err)?;
        Ok(signed)
    }

    /// Stamps `hash` (or the current version of the record `name`).
    pub fn stamp(
        &self,
        tx: &mut dyn Txn,
        now: Millis,
        hash: Option<Hash>,
        name: Option<&str>,
    ) -> Result<Stamp, BpciError> {
        let hash = match (hash, name) {
            (Some(h), None) => h,
            (None, Some(n)) => Hash::of(&schema::to_canonical(&self.query(tx, n)?.record)),
            _ => return Err(BpciError::invalid("hash", "exactly one of hash and name")),
        };
        let mut e = Event::new(EventKind::Stamp);
        e.at = now;
        e.hash = Some(hash);
        let seq = ledger::append_event(tx, e).map_err(store_err)?;
        let signature = self.sign(&statement::stamp(&hash, now, seq));
        Ok(Stamp { hash, at: now, seq, signature })
    }
}

/// Checks a receipt offline: the block header's signature by `server` and
/// the bundle's inclusion proof.
pub fn verify_receipt(provider: &dyn CryptoProvider, server: &PublicIdentity, r: &Receipt) -> Result<(), &'static str> {
    if !schema::verify(provider, server, &statement::block(&r.header), &r.signature) {
        return Err("the block's signature does not verify for the server's identity");
    }
    if !merkle::verify(&r.bundle_id, r.index, r.header.bundle_count, &r.path, &r.header.bundles_root) {
        return Err("the inclusion proof does not lead to the block's bundle root");
    }
    Ok(())
}

/// Checks a signed registry record offline against `server`.
pub fn verify_record(provider: &dyn CryptoProvider, server: &PublicIdentity, r: &SignedRecord) -> bool {
    schema::verify(provider, server, &statement::registry_record(&r.record, r.seq), &r.signature)
}

/// Checks a stamp offline against `server`.
pub fn verify_stamp(provider: &dyn CryptoProvider, server: &PublicIdentity, s: &Stamp) -> bool {
    schema::verify(provider, server, &statement::stamp(&s.hash, s.at, s.seq), &s.signature)
}

/// A record's hash, as RegistryStamp stamps it.
pub fn record_hash(r: &Record) -> Hash {
    Hash::of(&schema::to_canonical(r))
}

/// Builds a canonical bundle from transaction ids and their total (for
/// tests and benches; a node uses [`Bundle::builder`], which adds each
/// transaction's value and checks the deadline).
pub fn bundle_of(transactions: Vec<Hash>, total_value: u64, created_at: Millis, valid_until: Millis) -> Bundle {
    Bundle {
        merkle_root: merkle::root(&transactions),
        transaction_count: transactions.len() as u64,
        transactions,
        total_value,
        created_at,
        valid_until,
        node: Default::default(),
        endorsement: Vec::new(),
        wallet: None,
    }
}
