//! The in-memory store: tests and the simulator. Shared through an `Arc`,
//! it outlives a simulated server's crash the way a redb file outlives a
//! killed process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Entry, ReadTxn, Store, StoreError, Table, Txn};

type Tables = Vec<BTreeMap<Vec<u8>, Vec<u8>>>;

/// Tables in memory with serializable transactions (one writer at a time;
/// a failed transaction leaves nothing behind).
#[derive(Debug)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore { tables: Mutex::new(vec![BTreeMap::new(); Table::ALL.len()]) }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A transaction's writes, applied only at commit.
struct Overlay<'a> {
    base: &'a Tables,
    writes: Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl ReadTxn for Overlay<'_> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes[t.index()].get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.base[t.index()].get(key).cloned()),
        }
    }

    fn scan(&self, t: Table, from: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut base = self.base[t.index()].range(from.to_vec()..).peekable();
        let mut over = self.writes[t.index()].range(from.to_vec()..).peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let (take_over, shadowed) = match (base.peek(), over.peek()) {
                (None, None) => break,
                (Some(_), None) => (false, false),
                (None, Some(_)) => (true, false),
                (Some((b, _)), Some((o, _))) => (o <= b, b == o),
            };
            if shadowed {
                base.next();
            }
            if take_over {
                let (k, v) = over.next().expect("peeked");
                if let Some(v) = v {
                    out.push((k.clone(), v.clone()));
                }
            } else {
                let (k, v) = base.next().expect("peeked");
                out.push((k.clone(), v.clone()));
            }
        }
        Ok(out)
    }
}

impl Txn for Overlay<'_> {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.writes[t.index()].insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, t: Table, key: &[u8]) -> Result<(), StoreError> {
        self.writes[t.index()].insert(key.to_vec(), None);
        Ok(())
    }
}

impl Store for MemoryStore {
    fn write(&self, f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut tables = self.lock();
        let writes = {
            let mut o = Overlay { base: &tables, writes: vec![BTreeMap::new(); Table::ALL.len()] };
            f(&mut o)?;
            o.writes
        };
        for (table, w) in tables.iter_mut().zip(writes) {
            for (k, v) in w {
                match v {
                    Some(v) => table.insert(k, v),
                    None => table.remove(&k),
                };
            }
        }
        Ok(())
    }

    fn read(&self, f: &mut dyn FnMut(&dyn ReadTxn) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let tables = self.lock();
        f(&Overlay { base: &tables, writes: vec![BTreeMap::new(); Table::ALL.len()] })
    }

    fn engine(&self) -> &'static str {
        "memory"
    }
}
