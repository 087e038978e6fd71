//! The durable store: a [`Store`] is a set of ordered tables with
//! serializable read-write transactions (redb on disk, or memory for tests
//! and the simulator), and [`ledger`] holds the application's domain
//! operations over one transaction: wallets, transfers, bundles, blocks,
//! registry records and the event log.
//!
//! The service runs each batch of domain operations in one
//! [`Store::write`] transaction and answers nobody before it committed:
//! with redb that is a durable commit (fsync), so one commit covers every
//! operation of the batch (group commit). Sequence numbers come from a
//! counter in the same transaction as the change they number, so a reader
//! resuming from a cursor never skips an event.

pub mod conformance;
pub mod ledger;
mod memory;
mod redb;

use std::fmt;

pub use memory::MemoryStore;
pub use redb::RedbStore;

/// The tables of the store (SPEC.md 5.10 gives their keys and values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Table {
    /// Counters: the event head, the oldest event kept, the chain tip.
    Meta,
    /// Wallet id -> wallet.
    Wallets,
    /// Sender ‖ nonce -> applied transfer.
    Transfers,
    /// Bundle id -> its state.
    Bundles,
    /// Bundle id -> the bundle and its approvals, as submitted.
    Bodies,
    /// State ‖ sequence ‖ bundle id -> (): bundles not yet final.
    Pending,
    /// Height -> block.
    Blocks,
    /// Name -> signed record.
    Registry,
    /// Sequence number -> event.
    Events,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 9] = [
        Table::Meta,
        Table::Wallets,
        Table::Transfers,
        Table::Bundles,
        Table::Bodies,
        Table::Pending,
        Table::Blocks,
        Table::Registry,
        Table::Events,
    ];

    /// The table's name in a database.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Wallets => "wallets",
            Table::Transfers => "transfers",
            Table::Bundles => "bundles",
            Table::Bodies => "bodies",
            Table::Pending => "pending",
            Table::Blocks => "blocks",
            Table::Registry => "registry",
            Table::Events => "events",
        }
    }

    pub(crate) fn index(self) -> usize {
        Table::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// Why the store failed. Nothing of the transaction was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed (I/O, a full disk, a lock held by another
    /// process).
    Engine(String),
    /// A stored value did not decode: the file is damaged or was written
    /// by an incompatible version.
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Engine(e) => write!(f, "store: {e}"),
            StoreError::Corrupt(e) => write!(f, "store: corrupt value: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Reads within a transaction.
pub trait ReadTxn {
    /// The value under `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// At most `limit` entries whose keys are at least `from`, ascending.
    fn scan(&self, table: Table, from: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError>;
}

/// Reads and writes within a read-write transaction.
pub trait Txn: ReadTxn {
    /// Sets `key` to `value`.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key` (nothing if absent).
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), StoreError>;
}

/// A transactional store of ordered tables.
///
/// Every transaction sees a consistent snapshot; read-write transactions
/// are serializable (one at a time), and a committed one survives a crash
/// of the process (of the machine, for redb).
pub trait Store: Send + Sync + 'static {
    /// Runs `f` in one read-write transaction and commits it if `f`
    /// returns `Ok` (durably, before this returns); on `Err` nothing is
    /// applied.
    fn write(&self, f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>) -> Result<(), StoreError>;
    /// Runs `f` on a read-only snapshot.
    fn read(&self, f: &mut dyn FnMut(&dyn ReadTxn) -> Result<(), StoreError>) -> Result<(), StoreError>;
    /// The engine's name, for logs ("redb", "memory").
    fn engine(&self) -> &'static str;
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn write(&self, f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>) -> Result<(), StoreError> {
        (**self).write(f)
    }

    fn read(&self, f: &mut dyn FnMut(&dyn ReadTxn) -> Result<(), StoreError>) -> Result<(), StoreError> {
        (**self).read(f)
    }

    fn engine(&self) -> &'static str {
        (**self).engine()
    }
}
