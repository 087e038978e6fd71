//! The store conformance suite: what every [`Store`] must do, written
//! once and run on each engine (memory and redb here; PostgreSQL later).
//! Each check panics with what went wrong.

use super::{Store, StoreError, Table, Txn};

fn get(s: &dyn Store, t: Table, k: &[u8]) -> Option<Vec<u8>> {
    let mut out = None;
    s.read(&mut |tx| {
        out = tx.get(t, k)?;
        Ok(())
    })
    .expect("read");
    out
}

fn scan(s: &dyn Store, t: Table, from: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    s.read(&mut |tx| {
        out = tx.scan(t, from, limit)?;
        Ok(())
    })
    .expect("read");
    out
}

/// Writes are visible after commit, tables are separate, scans are
/// ordered and bounded.
pub fn basics(s: &dyn Store) {
    s.write(&mut |tx| {
        for i in [5u8, 1, 3, 2, 4] {
            tx.put(Table::Events, &[i], &[i * 10])?;
        }
        tx.put(Table::Meta, b"k", b"meta")?;
        Ok(())
    })
    .expect("write");
    assert_eq!(get(s, Table::Events, &[3]), Some(vec![30]));
    assert_eq!(get(s, Table::Meta, &[3]), None, "tables are separate");
    assert_eq!(get(s, Table::Meta, b"k"), Some(b"meta".to_vec()));
    let keys: Vec<u8> = scan(s, Table::Events, &[2], 3).into_iter().map(|(k, _)| k[0]).collect();
    assert_eq!(keys, vec![2, 3, 4], "ascending from the start key, at most the limit");
    assert!(scan(s, Table::Events, &[9], 10).is_empty());
}

/// A transaction that fails leaves nothing behind; inside a transaction,
/// its own writes and deletes are visible to its reads and scans.
pub fn atomicity(s: &dyn Store) {
    s.write(&mut |tx| {
        tx.put(Table::Wallets, b"a", b"1")?;
        tx.put(Table::Wallets, b"c", b"3")?;
        Ok(())
    })
    .expect("write");
    let r = s.write(&mut |tx| {
        tx.put(Table::Wallets, b"a", b"changed")?;
        tx.put(Table::Wallets, b"b", b"2")?;
        tx.delete(Table::Wallets, b"c")?;
        assert_eq!(tx.get(Table::Wallets, b"a")?, Some(b"changed".to_vec()), "a transaction reads its writes");
        let keys: Vec<Vec<u8>> = tx.scan(Table::Wallets, b"", 10)?.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()], "a transaction's scan sees its writes and deletes");
        Err(StoreError::Engine(String::from("abort")))
    });
    assert_eq!(r, Err(StoreError::Engine(String::from("abort"))));
    assert_eq!(get(s, Table::Wallets, b"a"), Some(b"1".to_vec()), "an aborted write is gone");
    assert_eq!(get(s, Table::Wallets, b"b"), None, "an aborted insert is gone");
    assert_eq!(get(s, Table::Wallets, b"c"), Some(b"3".to_vec()), "an aborted delete is undone");
}

/// A counter incremented by many transactions from several threads ends
/// at their number: read-write transactions are serializable.
pub fn serializable(s: &(dyn Store + 'static)) {
    fn bump(tx: &mut dyn Txn) -> Result<(), StoreError> {
        let n = tx.get(Table::Meta, b"n")?.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap_or_default()));
        tx.put(Table::Meta, b"n", &(n + 1).to_be_bytes())
    }
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..50 {
                    s.write(&mut bump).expect("write");
                }
            });
        }
    });
    assert_eq!(get(s, Table::Meta, b"n"), Some(200u64.to_be_bytes().to_vec()), "no increment lost");
}

/// What was committed is there after the store is opened again
/// (`reopen` drops the store and opens the same one).
pub fn durability(open: &dyn Fn() -> Box<dyn Store>) {
    {
        let s = open();
        s.write(&mut |tx| tx.put(Table::Blocks, b"kept", b"yes")).expect("write");
        let _ = s.write(&mut |tx| {
            tx.put(Table::Blocks, b"lost", b"no")?;
            Err(StoreError::Engine(String::from("abort")))
        });
    }
    let s = open();
    assert_eq!(get(&*s, Table::Blocks, b"kept"), Some(b"yes".to_vec()));
    assert_eq!(get(&*s, Table::Blocks, b"lost"), None);
}

/// Every check on `s` (fresh and empty), then durability with `open`.
pub fn all(s: &(dyn Store + 'static), open: &dyn Fn() -> Box<dyn Store>) {
    basics(s);
    atomicity(s);
    serializable(s);
    durability(open);
}
