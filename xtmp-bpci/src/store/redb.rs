//! The default store: one redb file (crash-safe, copy-on-write B-trees;
//! every commit durable before it returns).

use std::cell::RefCell;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Entry, ReadTxn, Store, StoreError, Table, Txn};

fn def(t: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(t.name())
}

fn engine<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// A store in one redb file.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

impl RedbStore {
    /// Opens the file at `path`, creating it (and its tables) if missing.
    /// Fails if another process has it open.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        let db = Database::create(path).map_err(engine)?;
        let txn = db.begin_write().map_err(engine)?;
        for t in Table::ALL {
            txn.open_table(def(t)).map_err(engine)?;
        }
        txn.commit().map_err(engine)?;
        Ok(RedbStore { db })
    }
}

/// An open table of raw keys and values.
type RawTable<'a> = redb::Table<'a, &'static [u8], &'static [u8]>;

/// A write transaction with its tables opened once each, on first use
/// (opening a redb table walks the table tree; a batch touches each table
/// hundreds of times).
struct WriteTxn<'a> {
    txn: &'a redb::WriteTransaction,
    tables: RefCell<[Option<RawTable<'a>>; Table::ALL.len()]>,
}

impl<'a> WriteTxn<'a> {
    fn new(txn: &'a redb::WriteTransaction) -> WriteTxn<'a> {
        WriteTxn { txn, tables: RefCell::new(Default::default()) }
    }

    fn with<R>(
        &self,
        t: Table,
        f: impl FnOnce(&mut RawTable<'a>) -> Result<R, redb::StorageError>,
    ) -> Result<R, StoreError> {
        let mut tables = self.tables.borrow_mut();
        let slot = &mut tables[t.index()];
        let table = match slot {
            Some(table) => table,
            None => slot.insert(self.txn.open_table(def(t)).map_err(engine)?),
        };
        f(table).map_err(engine)
    }
}

fn collect<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    from: &[u8],
    limit: usize,
) -> Result<Vec<Entry>, redb::StorageError> {
    let mut out = Vec::new();
    for entry in table.range(from..)? {
        if out.len() >= limit {
            break;
        }
        let (k, v) = entry?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

impl ReadTxn for WriteTxn<'_> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(t, |table| Ok(table.get(key)?.map(|v| v.value().to_vec())))
    }

    fn scan(&self, t: Table, from: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.with(t, |table| collect(table, from, limit))
    }
}

impl Txn for WriteTxn<'_> {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.with(t, |table| table.insert(key, value).map(drop))
    }

    fn delete(&mut self, t: Table, key: &[u8]) -> Result<(), StoreError> {
        self.with(t, |table| table.remove(key).map(drop))
    }
}

struct ReadOnly(redb::ReadTransaction);

impl ReadTxn for ReadOnly {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.0.open_table(def(t)).map_err(engine)?;
        Ok(table.get(key).map_err(engine)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, t: Table, from: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        collect(&self.0.open_table(def(t)).map_err(engine)?, from, limit).map_err(engine)
    }
}

impl Store for RedbStore {
    fn write(&self, f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(engine)?;
        // The tables close (drop) before the commit.
        let result = f(&mut WriteTxn::new(&txn));
        match result {
            Ok(()) => txn.commit().map_err(engine),
            Err(e) => {
                txn.abort().map_err(engine)?;
                Err(e)
            }
        }
    }

    fn read(&self, f: &mut dyn FnMut(&dyn ReadTxn) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        f(&ReadOnly(txn))
    }

    fn engine(&self) -> &'static str {
        "redb"
    }
}
