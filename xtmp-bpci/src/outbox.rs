//! The node's outbox: a durable queue (one redb file) of bundles and
//! transfers to send. [`Outbox::submit`] and [`Outbox::transfer`] return
//! once the item is on disk; [`Outbox::run`] sends items in order,
//! retrying with backoff, and records each answer. A node that crashes
//! and restarts on the same file sends what was not answered again, and
//! since bundles (by id) and transfers (by sender and nonce) are
//! idempotent at the server, each is applied once in effect, whatever
//! failed when. [`Outbox::reconcile`] then learns the final state of every
//! bundle it sent, through BundleSync.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use event_listener::Event as Notify;
use minicbor::{Decode, Encode};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use xtmp_adapter::{Backoff, Runtime};

use crate::client::{BpciClient, ClientError};
use crate::error::BpciError;
use crate::schema::{self, BundleState, Filter, Hash, SubmitRequest, TransferRequest};

const ITEMS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("outbox");

/// What an outbox holds.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(index_only)]
enum Kind {
    #[n(1)]
    Bundle,
    #[n(2)]
    Transfer,
}

/// One queued item and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
struct Item {
    #[n(1)]
    kind: Kind,
    /// The request's deterministic encoding.
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    body: Vec<u8>,
    /// The bundle id or transfer id.
    #[n(3)]
    id: Hash,
    /// The answer's event sequence number, once answered.
    #[n(4)]
    seq: Option<u64>,
    /// A refusal that retrying cannot change (INVALID, CONFLICT, ...).
    #[n(5)]
    refused: Option<String>,
    /// A bundle's final state, once known.
    #[n(6)]
    state: Option<BundleState>,
}

impl Item {
    /// Not answered and not refused: still to send.
    fn is_open(&self) -> bool {
        self.seq.is_none() && self.refused.is_none()
    }
}

/// Why the outbox refused or failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum OutboxError {
    /// The outbox holds its maximum of unanswered items.
    Full {
        /// That maximum.
        max: usize,
    },
    /// The file failed.
    Store(String),
    /// Asking the server failed (reconciling).
    Client(ClientError),
}

impl std::fmt::Display for OutboxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutboxError::Full { max } => write!(f, "the outbox holds {max} unanswered items (its maximum)"),
            OutboxError::Store(e) => write!(f, "outbox file: {e}"),
            OutboxError::Client(e) => write!(f, "outbox: {e}"),
        }
    }
}

impl std::error::Error for OutboxError {}

fn store<E: std::fmt::Display>(e: E) -> OutboxError {
    OutboxError::Store(e.to_string())
}

/// The outbox's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Items not answered yet (the depth).
    pub pending: u64,
    /// Items answered.
    pub answered: u64,
    /// Items refused for good.
    pub refused: u64,
    /// Sends that failed and were tried again (since it opened).
    pub retries: u64,
}

/// A durable queue of bundles and transfers (module docs).
pub struct Outbox {
    db: Database,
    client: BpciClient,
    rt: Arc<dyn Runtime>,
    max: usize,
    backoff: Backoff,
    added: Notify,
    retries: AtomicU64,
    /// Items not answered yet (counted at open, then kept).
    pending: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("stats", &self.stats().ok()).finish()
    }
}

impl Outbox {
    /// Opens (or creates) the outbox file at `path`, sending through
    /// `client`, holding at most `max` unanswered items.
    pub fn open(
        path: impl AsRef<Path>,
        client: BpciClient,
        rt: Arc<dyn Runtime>,
        max: usize,
    ) -> Result<Outbox, OutboxError> {
        let db = Database::create(path).map_err(store)?;
        let txn = db.begin_write().map_err(store)?;
        txn.open_table(ITEMS).map_err(store)?;
        txn.commit().map_err(store)?;
        let outbox = Outbox {
            db,
            client,
            rt,
            max: max.max(1),
            backoff: Backoff::default(),
            added: Notify::new(),
            retries: AtomicU64::new(0),
            pending: Default::default(),
        };
        let pending = outbox.items()?.iter().filter(|(_, i)| i.is_open()).count();
        outbox.pending.store(pending, Ordering::Release);
        Ok(outbox)
    }

    fn items(&self) -> Result<Vec<(u64, Item)>, OutboxError> {
        let txn = self.db.begin_read().map_err(store)?;
        let table = txn.open_table(ITEMS).map_err(store)?;
        let mut out = Vec::new();
        for e in table.iter().map_err(store)? {
            let (k, v) = e.map_err(store)?;
            let item: Item = schema::from_cbor("outbox item", v.value()).map_err(store)?;
            out.push((k.value(), item));
        }
        Ok(out)
    }

    fn put(&self, key: Option<u64>, item: &Item) -> Result<u64, OutboxError> {
        let txn = self.db.begin_write().map_err(store)?;
        let key = {
            let mut table = txn.open_table(ITEMS).map_err(store)?;
            let key = match key {
                Some(k) => k,
                None => {
                    if self.pending.load(Ordering::Acquire) >= self.max {
                        return Err(OutboxError::Full { max: self.max });
                    }
                    table.last().map_err(store)?.map_or(1, |(k, _)| k.value() + 1)
                }
            };
            table.insert(key, schema::to_canonical(item).as_slice()).map_err(store)?;
            key
        };
        txn.commit().map_err(store)?;
        Ok(key)
    }

    /// The first unanswered item after key `after`, in order.
    fn next_open(&self, after: u64) -> Result<Option<(u64, Item)>, OutboxError> {
        let txn = self.db.begin_read().map_err(store)?;
        let table = txn.open_table(ITEMS).map_err(store)?;
        for e in table.range(after.saturating_add(1)..).map_err(store)? {
            let (k, v) = e.map_err(store)?;
            let item: Item = schema::from_cbor("outbox item", v.value()).map_err(store)?;
            if item.is_open() {
                return Ok(Some((k.value(), item)));
            }
        }
        Ok(None)
    }

    /// Queues a bundle; returns its id once the outbox file holds it.
    pub fn submit(&self, req: &SubmitRequest) -> Result<Hash, OutboxError> {
        let id = req.bundle.id();
        let item =
            Item { kind: Kind::Bundle, body: schema::to_canonical(req), id, seq: None, refused: None, state: None };
        self.put(None, &item)?;
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.added.notify(usize::MAX);
        Ok(id)
    }

    /// Queues a signed transfer; returns its id once on disk.
    pub fn transfer(&self, req: &TransferRequest) -> Result<Hash, OutboxError> {
        let id = Hash::of(&schema::to_canonical(&req.transfer));
        let item =
            Item { kind: Kind::Transfer, body: schema::to_canonical(req), id, seq: None, refused: None, state: None };
        self.put(None, &item)?;
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.added.notify(usize::MAX);
        Ok(id)
    }

    /// The counters; `pending` is the depth.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let mut s = OutboxStats { retries: self.retries.load(Ordering::Relaxed), ..OutboxStats::default() };
        for (_, i) in self.items()? {
            match (&i.seq, &i.refused) {
                (_, Some(_)) => s.refused += 1,
                (Some(_), None) => s.answered += 1,
                (None, None) => s.pending += 1,
            }
        }
        Ok(s)
    }

    /// Every bundle queued, with its final state where known.
    pub fn bundles(&self) -> Result<Vec<(Hash, Option<BundleState>)>, OutboxError> {
        Ok(self.items()?.into_iter().filter(|(_, i)| i.kind == Kind::Bundle).map(|(_, i)| (i.id, i.state)).collect())
    }

    /// Sends every unanswered item, in order, until none is left:
    /// a refusal that cannot change (INVALID, CONFLICT, NOT_FOUND, ...) is
    /// recorded and not retried; anything else (the session failed,
    /// RATE_LIMITED) is tried again after a backoff (or the server's
    /// retry-after). Returns when the outbox is empty of unanswered items.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        self.flush_with(|_, _| {}).await
    }

    /// [`Outbox::flush`], calling `answered(id, seq)` as each answer is
    /// recorded.
    pub async fn flush_with(&self, mut answered: impl FnMut(Hash, u64)) -> Result<(), OutboxError> {
        let mut attempt = 0u32;
        // Items are sent in key order; the cursor makes a flush read each once.
        let mut cursor = 0;
        loop {
            let Some((key, mut item)) = self.next_open(cursor)? else {
                return Ok(());
            };
            let answer = match item.kind {
                Kind::Bundle => match schema::from_cbor::<SubmitRequest>("outbox bundle", &item.body) {
                    Ok(req) => self.client.submit(&req).await.map(|s| s.seq),
                    Err(e) => Err(ClientError::Malformed(e)),
                },
                Kind::Transfer => match schema::from_cbor::<TransferRequest>("outbox transfer", &item.body) {
                    Ok(req) => self.client.send_transfer(&req).await.map(|r| r.seq),
                    Err(e) => Err(ClientError::Malformed(e)),
                },
            };
            let wait = match answer {
                Ok(seq) => {
                    item.seq = Some(seq);
                    self.put(Some(key), &item)?;
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    answered(item.id, seq);
                    attempt = 0;
                    cursor = key;
                    continue;
                }
                Err(ClientError::Bpci(BpciError::RateLimited { retry_after_ms, .. })) => {
                    Duration::from_millis(retry_after_ms)
                }
                Err(ClientError::Bpci(BpciError::Internal { .. }) | ClientError::Transport(_)) => {
                    self.backoff.delay(attempt, attempt.wrapping_mul(2_654_435_761)).unwrap_or(Duration::from_secs(1))
                }
                Err(e) => {
                    item.refused = Some(e.to_string());
                    self.put(Some(key), &item)?;
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    cursor = key;
                    continue;
                }
            };
            attempt += 1;
            self.retries.fetch_add(1, Ordering::Relaxed);
            let mut timer = self.rt.timer();
            timer.reset(std::time::Instant::now() + wait);
            std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
        }
    }

    /// Sends items as they are queued, for ever (a node runs this in a
    /// task of its own).
    pub async fn run(&self) -> Result<(), OutboxError> {
        loop {
            let listener = self.added.listen();
            self.flush().await?;
            if self.pending.load(Ordering::Acquire) == 0 {
                listener.await;
            }
        }
    }

    /// Learns the final state of every answered bundle not known to be
    /// final, through BundleSync (from the oldest answer's sequence number,
    /// filtered to those bundles), and records it. Returns how many are
    /// still not final.
    pub async fn reconcile(&self) -> Result<usize, OutboxError> {
        let open: Vec<(u64, Item)> = self
            .items()?
            .into_iter()
            .filter(|(_, i)| i.kind == Kind::Bundle && i.seq.is_some() && i.state.is_none_or(|s| !s.is_final()))
            .collect();
        let Some(from) = open.iter().filter_map(|(_, i)| i.seq).min() else { return Ok(0) };
        let ids: Vec<Hash> = open.iter().map(|(_, i)| i.id).collect();
        let mut last = std::collections::HashMap::new();
        let mut after = from - 1;
        loop {
            let filter = Filter { bundles: Some(ids.clone()), ..Filter::default() };
            let page = self.client.sync(after, 1000, Some(filter)).await.map_err(OutboxError::Client)?;
            for e in &page.events {
                if let (Some(id), Some(s)) = (e.bundle_id, e.state) {
                    last.insert(id, s);
                }
            }
            after = page.next;
            if after >= page.head {
                break;
            }
        }
        let mut left = 0;
        for (key, mut item) in open {
            item.state = last.get(&item.id).copied();
            if !item.state.is_some_and(BundleState::is_final) {
                left += 1;
            }
            self.put(Some(key), &item)?;
        }
        Ok(left)
    }
}
