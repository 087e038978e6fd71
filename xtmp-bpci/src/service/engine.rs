//! The engine: the rules run against a store by one writer thread with
//! group commit, approvals checked by a pool of threads, and a head
//! counter that wakes watchers.
//!
//! Handlers never block on the store's commit: a write is queued for the
//! writer (bounded: a full queue is RATE_LIMITED) and awaited; the writer
//! takes every write waiting, runs them in one transaction, commits once
//! (durably) and only then answers each. Verdicts of the approval checks
//! come back through the same queue and Validated bundles are put into a
//! block in the same transaction, so a commit (one fsync) covers as many
//! submissions, transitions and blocks as arrived meanwhile. The approval
//! checkers run at a lower thread priority (nice 5 on Linux), so that
//! under load they do not delay the threads that answer and push, yet
//! still get about a quarter of a contended core.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use event_listener::Event as Notify;
use futures_channel::oneshot;
use xtmp_core::handshake::PublicIdentity;

use super::{NodeId, Rules, Sessions};
use crate::error::BpciError;
use crate::schema::{
    BundleState, Hash, Millis, Registration, RegistryUpdate, SignedRecord, Stamp, SubmitRequest, Submitted, Transfer,
    TransferReceipt,
};
use crate::store::{ReadTxn, Store, StoreError, ledger};

/// A write the engine queues for its writer.
#[derive(Debug)]
enum WriteOp {
    Register(PublicIdentity),
    Transfer(Transfer),
    Submit(NodeId, Box<SubmitRequest>),
    Registry(Box<RegistryUpdate>),
    Stamp(Option<Hash>, Option<String>),
}

#[derive(Debug)]
enum Answer {
    Registration(Registration),
    Transfer(TransferReceipt),
    Submitted(Submitted),
    Record(SignedRecord),
    Stamp(Stamp),
}

/// An approval check's outcome for a bundle.
pub type Verdict = Result<(), String>;

enum Job {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<Answer, BpciError>>,
    },
    Verdict(Hash, Verdict),
    /// Expire and trim now (rather than at the next second), then answer.
    Maintain(oneshot::Sender<()>),
    Stop,
}

/// The engine's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// The latest event's sequence number.
    pub head: u64,
    /// The block height.
    pub height: u64,
    /// New bundles stored.
    pub bundles_submitted: u64,
    /// Bundles confirmed.
    pub bundles_confirmed: u64,
    /// Bundles rejected or expired.
    pub bundles_failed: u64,
    /// Blocks built.
    pub blocks: u64,
    /// Store transactions committed (each one durable commit).
    pub commits: u64,
    /// Writes waiting for the writer now.
    pub write_queue: u64,
    /// Store transactions that failed (every write in them got INTERNAL).
    pub store_failures: u64,
    /// Time spent in write transactions, commit (fsync) included, in
    /// microseconds.
    pub write_micros: u64,
}

#[derive(Default)]
struct Shared {
    head: AtomicU64,
    height: AtomicU64,
    changed: Notify,
    queued: AtomicUsize,
    submitted: AtomicU64,
    confirmed: AtomicU64,
    failed: AtomicU64,
    blocks: AtomicU64,
    commits: AtomicU64,
    failures: AtomicU64,
    write_micros: AtomicU64,
    stopped: AtomicBool,
}

/// A clock: milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

struct Inner {
    store: Arc<dyn Store>,
    rules: Rules,
    sessions: Sessions,
    clock: Clock,
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.jobs.send(Job::Stop);
    }
}

/// The services running on a store. Cheap to clone; the threads stop when
/// the last clone is dropped or at [`Engine::shutdown`].
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("store", &self.inner.store.engine()).field("stats", &self.stats()).finish()
    }
}

impl Engine {
    /// Starts the writer and `verifiers` approval-checking threads (0: one
    /// per core) on `store`, with the system clock. Bundles left Received
    /// by a previous run are checked again; Validated ones go into the
    /// next block.
    pub fn start(store: Arc<dyn Store>, rules: Rules, verifiers: usize) -> Result<Engine, StoreError> {
        Engine::with_clock(store, rules, verifiers, system_clock())
    }

    /// [`Engine::start`] with a clock of the caller's.
    pub fn with_clock(
        store: Arc<dyn Store>,
        rules: Rules,
        verifiers: usize,
        clock: Clock,
    ) -> Result<Engine, StoreError> {
        let shared = Arc::new(Shared::default());
        let mut received = Vec::new();
        store.read(&mut |tx| {
            shared.head.store(ledger::head(tx)?, Ordering::Release);
            shared.height.store(ledger::tip(tx)?.0, Ordering::Release);
            received.clear();
            let mut from = Vec::new();
            for id in ledger::pending(tx, BundleState::Received, usize::MAX)? {
                if let Some(b) = ledger::bundle_body(tx, &id)? {
                    from.push((id, b));
                }
            }
            received = from;
            Ok(())
        })?;
        let (jobs, rx) = mpsc::channel();
        let (verify_tx, verify_rx) = mpsc::channel::<(Hash, SubmitRequest)>();
        let verify_rx = Arc::new(Mutex::new(verify_rx));
        let n = match verifiers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        for i in 0..n {
            let (rx, jobs, store, rules) = (verify_rx.clone(), jobs.clone(), store.clone(), rules.clone());
            std::thread::Builder::new()
                .name(format!("bpci-verify-{i}"))
                .spawn(move || verifier(rx, jobs, store, rules))
                .map_err(|e| StoreError::Engine(e.to_string()))?;
        }
        for (id, req) in received {
            let _ = verify_tx.send((id, req));
        }
        let writer = {
            let (store, rules, shared, clock) = (store.clone(), rules.clone(), shared.clone(), clock.clone());
            std::thread::Builder::new()
                .name(String::from("bpci-writer"))
                .spawn(move || Writer { store, rules, shared, clock, verify: verify_tx }.run(rx))
                .map_err(|e| StoreError::Engine(e.to_string()))?
        };
        let inner = Inner {
            store,
            rules,
            sessions: Sessions::default(),
            clock,
            jobs,
            shared,
            writer: Mutex::new(Some(writer)),
        };
        Ok(Engine { inner: Arc::new(inner) })
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.inner.rules
    }

    /// Challenges, grants and node limits.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// The time now, by the engine's clock.
    pub fn now(&self) -> Millis {
        (self.inner.clock)()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Runs `f` on a snapshot of the store (a read: no queue, no commit).
    pub fn read<R>(&self, f: impl FnOnce(&dyn ReadTxn) -> Result<R, BpciError>) -> Result<R, BpciError> {
        let mut f = Some(f);
        let mut out = None;
        self.inner
            .store
            .read(&mut |tx| {
                if let Some(f) = f.take() {
                    out = Some(f(tx));
                }
                Ok(())
            })
            .map_err(|e| BpciError::Internal { reason: e.to_string() })?;
        out.unwrap_or_else(|| Err(BpciError::Internal { reason: String::from("store read did not run") }))
    }

    /// The counters.
    pub fn stats(&self) -> EngineStats {
        let s = &self.inner.shared;
        EngineStats {
            head: s.head.load(Ordering::Acquire),
            height: s.height.load(Ordering::Acquire),
            bundles_submitted: s.submitted.load(Ordering::Relaxed),
            bundles_confirmed: s.confirmed.load(Ordering::Relaxed),
            bundles_failed: s.failed.load(Ordering::Relaxed),
            blocks: s.blocks.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            write_queue: s.queued.load(Ordering::Relaxed) as u64,
            store_failures: s.failures.load(Ordering::Relaxed),
            write_micros: s.write_micros.load(Ordering::Relaxed),
        }
    }

    /// The latest event's sequence number.
    pub fn head(&self) -> u64 {
        self.inner.shared.head.load(Ordering::Acquire)
    }

    /// Resolves once the head is beyond `seq` (at once if it is): `true`;
    /// or once the engine stopped, when no event will come: `false` (a
    /// caller that loops on it must then stop, not spin).
    pub async fn wait_beyond(&self, seq: u64) -> bool {
        let s = &self.inner.shared;
        loop {
            if s.head.load(Ordering::Acquire) > seq {
                return true;
            }
            if s.stopped.load(Ordering::Acquire) {
                return false;
            }
            let listener = s.changed.listen();
            if s.head.load(Ordering::Acquire) > seq {
                return true;
            }
            if s.stopped.load(Ordering::Acquire) {
                return false;
            }
            listener.await;
        }
    }

    async fn write(&self, node: Option<NodeId>, op: WriteOp) -> Result<Answer, BpciError> {
        let i = &self.inner;
        if i.shared.stopped.load(Ordering::Acquire) {
            return Err(BpciError::Internal { reason: String::from("the server is stopping") });
        }
        let limit = i.rules.config.write_queue;
        if i.shared.queued.load(Ordering::Acquire) >= limit {
            return Err(BpciError::RateLimited {
                retry_after_ms: 20,
                reason: format!("the server's write queue is full ({limit})"),
            });
        }
        if let Some(n) = node {
            i.sessions.admit(&i.rules.config, self.now(), n)?;
        }
        // The node's queued write ends when this call does, answered or
        // abandoned.
        let _admitted = node.map(|n| Admitted(&i.sessions, n));
        let (tx, rx) = oneshot::channel();
        i.shared.queued.fetch_add(1, Ordering::AcqRel);
        if i.jobs.send(Job::Write { op, reply: tx }).is_err() {
            i.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(BpciError::Internal { reason: String::from("the server is stopping") });
        }
        rx.await.unwrap_or_else(|_| Err(BpciError::Internal { reason: String::from("the server is stopping") }))
    }

    /// Registers the wallet `identity` (its proof already checked).
    pub async fn register(&self, node: Option<NodeId>, identity: PublicIdentity) -> Result<Registration, BpciError> {
        match self.write(node, WriteOp::Register(identity)).await? {
            Answer::Registration(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Applies a transfer (its signature already checked).
    pub async fn transfer(&self, node: Option<NodeId>, t: Transfer) -> Result<TransferReceipt, BpciError> {
        match self.write(node, WriteOp::Transfer(t)).await? {
            Answer::Transfer(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Stores a checked bundle as Received; its approvals are then checked
    /// in the background.
    pub async fn submit(&self, node: NodeId, req: SubmitRequest) -> Result<Submitted, BpciError> {
        match self.write(Some(node), WriteOp::Submit(node, Box::new(req))).await? {
            Answer::Submitted(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Writes a checked registry update (compare and set).
    pub async fn registry_update(&self, node: Option<NodeId>, u: RegistryUpdate) -> Result<SignedRecord, BpciError> {
        match self.write(node, WriteOp::Registry(Box::new(u))).await? {
            Answer::Record(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Stamps a hash, or a record's current version.
    pub async fn stamp(
        &self,
        node: Option<NodeId>,
        hash: Option<Hash>,
        name: Option<String>,
    ) -> Result<Stamp, BpciError> {
        match self.write(node, WriteOp::Stamp(hash, name)).await? {
            Answer::Stamp(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Runs the periodic upkeep now (expire bundles past their deadline,
    /// discard events beyond the retention) and resolves once it is
    /// committed: for tests and operators; the writer does it each second
    /// anyway.
    pub async fn maintain(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.jobs.send(Job::Maintain(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the threads after the writes queued so far are stored, and
    /// waits for the writer.
    pub fn shutdown(&self) {
        let _ = self.inner.jobs.send(Job::Stop);
        let handle = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

struct Admitted<'a>(&'a Sessions, NodeId);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.done(self.1);
    }
}

/// A rule that failed on the store (INTERNAL) aborts the whole batch.
fn internal<T>(r: &Result<T, BpciError>) -> Result<(), StoreError> {
    match r {
        Err(BpciError::Internal { reason }) => Err(StoreError::Engine(reason.clone())),
        _ => Ok(()),
    }
}

fn unexpected(a: Answer) -> BpciError {
    BpciError::Internal { reason: format!("the writer answered {a:?}") }
}

fn verifier(
    rx: Arc<Mutex<mpsc::Receiver<(Hash, SubmitRequest)>>>,
    jobs: mpsc::Sender<Job>,
    store: Arc<dyn Store>,
    rules: Rules,
) {
    // Approval checks are the bulk of the CPU and nobody waits on one in
    // particular: below the threads that answer requests and push items
    // (nice 5 on Linux: about a quarter of a contended core's time, so a
    // server saturated by requests still checks what it accepted).
    let priority = thread_priority::ThreadPriorityValue::try_from(35u8)
        .map_or(thread_priority::ThreadPriority::Min, thread_priority::ThreadPriority::Crossplatform);
    if let Err(e) = thread_priority::set_current_thread_priority(priority) {
        tracing::debug!(error = ?e, "could not lower the approval checkers' priority");
    }
    loop {
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((id, req)) = next else { return };
        let mut delay = Duration::from_millis(10);
        let verdict = loop {
            let mut out = None;
            match store.read(&mut |tx| {
                out = Some(rules.verify_approvals(tx, &req)?);
                Ok(())
            }) {
                Ok(()) => break out.unwrap_or(Ok(())),
                Err(e) => {
                    // The store is failing: the bundle stays Received (and is
                    // checked again at the next start) rather than rejected.
                    tracing::warn!(bundle = %id, error = %e, "approval check could not read the store; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        };
        if jobs.send(Job::Verdict(id, verdict)).is_err() {
            return;
        }
    }
}

struct Writer {
    store: Arc<dyn Store>,
    rules: Rules,
    shared: Arc<Shared>,
    clock: Clock,
    verify: mpsc::Sender<(Hash, SubmitRequest)>,
}

/// How often expired bundles are looked for and old events trimmed.
const MAINTENANCE: u64 = 1000;
/// Jobs in one transaction, at most.
const MAX_BATCH: usize = 4096;
/// Blocks built in one transaction, at most.
const MAX_BLOCKS: usize = 8;

#[derive(Default)]
struct BatchOutcome {
    answers: Vec<Result<Answer, BpciError>>,
    verify: Vec<(Hash, SubmitRequest)>,
    submitted: u64,
    confirmed: u64,
    failed: u64,
    blocks: u64,
    head: u64,
    height: u64,
}

impl Writer {
    fn run(self, rx: mpsc::Receiver<Job>) {
        let mut next_maintenance = (self.clock)() + MAINTENANCE;
        let mut retry: Vec<Job> = Vec::new();
        let mut stopping = false;
        // A first turn at once: Validated bundles of a previous run go
        // into a block without waiting for new work.
        let mut first = true;
        while !stopping {
            let now = (self.clock)();
            let mut batch = std::mem::take(&mut retry);
            if batch.is_empty() && !first {
                let wait = Duration::from_millis(next_maintenance.saturating_sub(now).clamp(1, MAINTENANCE));
                match rx.recv_timeout(wait) {
                    Ok(j) => batch.push(j),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            first = false;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            if let Some(pos) = batch.iter().position(|j| matches!(j, Job::Stop)) {
                stopping = true;
                batch.truncate(pos);
            }
            let now = (self.clock)();
            let maintain = now >= next_maintenance || batch.iter().any(|j| matches!(j, Job::Maintain(_)));
            if maintain {
                next_maintenance = now + MAINTENANCE;
            }
            let started = std::time::Instant::now();
            let outcome = self.batch(&batch, now, maintain);
            self.shared.write_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            match outcome {
                Ok(out) => self.finish(batch, out),
                Err(e) => {
                    tracing::error!(error = %e, jobs = batch.len(), "store transaction failed; its writes are refused");
                    self.shared.failures.fetch_add(1, Ordering::Relaxed);
                    for job in batch {
                        match job {
                            Job::Write { reply, .. } => {
                                self.release();
                                let _ = reply.send(Err(BpciError::Internal { reason: e.to_string() }));
                            }
                            v @ (Job::Verdict(..) | Job::Maintain(_)) => retry.push(v),
                            Job::Stop => {}
                        }
                    }
                    if !stopping {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.changed.notify(usize::MAX);
    }

    fn release(&self) {
        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
    }

    fn batch(&self, batch: &[Job], now: Millis, maintain: bool) -> Result<BatchOutcome, StoreError> {
        let mut out = BatchOutcome::default();
        let rules = &self.rules;
        // A rule that failed on the store (INTERNAL) aborts the whole
        // transaction: nothing of the batch is applied.
        self.store.write(&mut |tx| {
            out = BatchOutcome::default();
            for job in batch {
                match job {
                    Job::Write { op, .. } => {
                        let answer = match op {
                            WriteOp::Register(id) => rules.register(tx, now, id).map(Answer::Registration),
                            WriteOp::Transfer(t) => rules.transfer(tx, now, t).map(Answer::Transfer),
                            WriteOp::Submit(node, req) => rules.submit(tx, now, node, req).map(|(s, new)| {
                                if new {
                                    out.submitted += 1;
                                    out.verify.push((s.bundle_id, (**req).clone()));
                                }
                                Answer::Submitted(s)
                            }),
                            WriteOp::Registry(u) => rules.registry_update(tx, now, u).map(Answer::Record),
                            WriteOp::Stamp(h, n) => rules.stamp(tx, now, *h, n.as_deref()).map(Answer::Stamp),
                        };
                        internal(&answer)?;
                        out.answers.push(answer);
                    }
                    Job::Verdict(id, v) => {
                        let r = rules.settle(tx, now, id, v.clone());
                        internal(&r)?;
                        if let Ok(Some(BundleState::Rejected | BundleState::Expired)) = r {
                            out.failed += 1;
                        }
                    }
                    Job::Maintain(_) | Job::Stop => {}
                }
            }
            if maintain {
                let expired = rules.expire(tx, now, 1024);
                internal(&expired)?;
                out.failed += expired.unwrap_or(0) as u64;
                ledger::trim_events(tx, rules.config.event_retention, 10_000)?;
            }
            for _ in 0..MAX_BLOCKS {
                let block = rules.build_block(tx, now);
                internal(&block)?;
                match block {
                    Ok(Some(h)) => {
                        out.blocks += 1;
                        out.confirmed += h.bundle_count;
                    }
                    _ => break,
                }
            }
            out.head = ledger::head(tx)?;
            out.height = ledger::tip(tx)?.0;
            Ok(())
        })?;
        Ok(out)
    }

    fn finish(&self, batch: Vec<Job>, out: BatchOutcome) {
        let s = &self.shared;
        s.commits.fetch_add(1, Ordering::Relaxed);
        s.submitted.fetch_add(out.submitted, Ordering::Relaxed);
        s.confirmed.fetch_add(out.confirmed, Ordering::Relaxed);
        s.failed.fetch_add(out.failed, Ordering::Relaxed);
        s.blocks.fetch_add(out.blocks, Ordering::Relaxed);
        s.height.store(out.height, Ordering::Release);
        let moved = s.head.swap(out.head, Ordering::AcqRel) != out.head;
        if moved {
            s.changed.notify(usize::MAX);
        }
        let mut answers = out.answers.into_iter();
        for job in batch {
            match job {
                Job::Write { reply, .. } => {
                    self.release();
                    let answer =
                        answers.next().unwrap_or_else(|| Err(BpciError::Internal { reason: String::from("lost") }));
                    let _ = reply.send(answer);
                }
                Job::Maintain(done) => drop(done.send(())),
                Job::Verdict(..) | Job::Stop => {}
            }
        }
        for v in out.verify {
            let _ = self.verify.send(v);
        }
    }
}
