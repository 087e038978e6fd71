//! The domain operations over one store transaction: typed records in,
//! typed records out, keys as SPEC.md 5.10 lays them out. The service's
//! rules (`crate::service`) decide what to write; these functions only
//! read and write it.

use minicbor::{Decode, Encode};

use super::{ReadTxn, StoreError, Table, Txn};
use crate::schema::{
    BlockHeader, BundleState, Event, Hash, IdentityBytes, Registration, Signature, SignedRecord, SubmitRequest,
    Submitted, Transfer, TransferReceipt, WalletId,
};

/// A registered wallet.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct WalletRecord {
    /// Its public identity.
    #[n(1)]
    pub identity: IdentityBytes,
    /// Its balance in minor units.
    #[n(2)]
    pub balance: u64,
    /// The nonce its next transfer carries.
    #[n(3)]
    pub next_nonce: u64,
    /// The registration answer, as first given.
    #[n(4)]
    pub registration: Registration,
}

/// An applied transfer and the answer it got.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct TransferRecord {
    /// The transfer.
    #[n(1)]
    pub transfer: Transfer,
    /// Its receipt.
    #[n(2)]
    pub receipt: TransferReceipt,
}

/// Where a bundle stands. The bundle itself (with its approvals, most of
/// the bytes) is kept apart ([`bundle_body`]), written once: a transition
/// rewrites only this small record.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct BundleRecord {
    /// The bundle's deadline.
    #[n(1)]
    pub valid_until: u64,
    /// The answer the submission got.
    #[n(2)]
    pub submitted: Submitted,
    /// The current state.
    #[n(3)]
    pub state: BundleState,
    /// The sequence number of the event that entered it.
    #[n(4)]
    pub state_seq: u64,
    /// Why it was rejected or expired.
    #[n(5)]
    pub reason: Option<String>,
    /// The confirming block.
    #[n(6)]
    pub height: Option<u64>,
    /// Its index in that block.
    #[n(7)]
    pub index: Option<u64>,
    /// The key id of the node that submitted it.
    #[n(8)]
    #[cbor(with = "minicbor::bytes")]
    pub node: Vec<u8>,
    /// The wallet it was submitted for.
    #[n(9)]
    pub wallet: Option<WalletId>,
}

/// A block: its signed header and its bundles, in order.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct BlockRecord {
    /// The header.
    #[n(1)]
    pub header: BlockHeader,
    /// The server's signature over `statement::block(header)`.
    #[n(2)]
    pub signature: Signature,
    /// The bundle ids.
    #[n(3)]
    pub bundles: Vec<Hash>,
}

fn decode<T: for<'b> Decode<'b, ()>>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    crate::schema::from_cbor(what, bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: Encode<()>>(v: &T) -> Vec<u8> {
    crate::schema::to_canonical(v)
}

const HEAD: &[u8] = b"head";
const FIRST: &[u8] = b"first";
const HEIGHT: &[u8] = b"height";
const TIP: &[u8] = b"tip";

fn meta_u64(tx: &dyn ReadTxn, key: &[u8]) -> Result<u64, StoreError> {
    match tx.get(Table::Meta, key)? {
        None => Ok(0),
        Some(v) => Ok(u64::from_be_bytes(v.try_into().map_err(|_| StoreError::Corrupt(String::from("meta counter")))?)),
    }
}

/// The sequence number of the latest event (0: none yet).
pub fn head(tx: &dyn ReadTxn) -> Result<u64, StoreError> {
    meta_u64(tx, HEAD)
}

/// The oldest sequence number still kept (1 until events are trimmed).
pub fn first_kept(tx: &dyn ReadTxn) -> Result<u64, StoreError> {
    Ok(meta_u64(tx, FIRST)?.max(1))
}

/// Appends `event` with the next sequence number (the counter moves in
/// this transaction) and returns that number.
pub fn append_event(tx: &mut dyn Txn, mut event: Event) -> Result<u64, StoreError> {
    let seq = head(tx)? + 1;
    event.seq = seq;
    tx.put(Table::Events, &seq.to_be_bytes(), &encode(&event))?;
    tx.put(Table::Meta, HEAD, &seq.to_be_bytes())?;
    Ok(seq)
}

/// Events with sequence numbers above `after`, at most `limit`.
pub fn events_after(tx: &dyn ReadTxn, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
    let from = after.saturating_add(1).to_be_bytes();
    tx.scan(Table::Events, &from, limit)?.iter().map(|(_, v)| decode("event", v)).collect()
}

/// Removes events so that at most `keep` remain; at most `max` removed per
/// call (a long backlog is trimmed over several transactions).
pub fn trim_events(tx: &mut dyn Txn, keep: u64, max: usize) -> Result<usize, StoreError> {
    let head = head(tx)?;
    let first = first_kept(tx)?;
    let target = head.saturating_sub(keep).saturating_add(1).max(first);
    let end = target.min(first + max as u64);
    for seq in first..end {
        tx.delete(Table::Events, &seq.to_be_bytes())?;
    }
    if end > first {
        tx.put(Table::Meta, FIRST, &end.to_be_bytes())?;
    }
    Ok((end - first) as usize)
}

/// A wallet.
pub fn wallet(tx: &dyn ReadTxn, id: &WalletId) -> Result<Option<WalletRecord>, StoreError> {
    tx.get(Table::Wallets, &id.0.0)?.map(|v| decode("wallet", &v)).transpose()
}

/// Writes a wallet.
pub fn put_wallet(tx: &mut dyn Txn, id: &WalletId, w: &WalletRecord) -> Result<(), StoreError> {
    tx.put(Table::Wallets, &id.0.0, &encode(w))
}

/// Every wallet (for audits and tests), at most `limit`.
pub fn wallets(tx: &dyn ReadTxn, limit: usize) -> Result<Vec<(WalletId, WalletRecord)>, StoreError> {
    tx.scan(Table::Wallets, &[], limit)?
        .iter()
        .map(|(k, v)| {
            let id: [u8; 32] = k.as_slice().try_into().map_err(|_| StoreError::Corrupt(String::from("wallet key")))?;
            Ok((WalletId(Hash(id)), decode("wallet", v)?))
        })
        .collect()
}

fn transfer_key(from: &WalletId, nonce: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&from.0.0);
    k[32..].copy_from_slice(&nonce.to_be_bytes());
    k
}

/// The transfer `from` made with `nonce`.
pub fn transfer(tx: &dyn ReadTxn, from: &WalletId, nonce: u64) -> Result<Option<TransferRecord>, StoreError> {
    tx.get(Table::Transfers, &transfer_key(from, nonce))?.map(|v| decode("transfer", &v)).transpose()
}

/// Records an applied transfer.
pub fn put_transfer(tx: &mut dyn Txn, t: &TransferRecord) -> Result<(), StoreError> {
    tx.put(Table::Transfers, &transfer_key(&t.transfer.from, t.transfer.nonce), &encode(t))
}

/// A bundle.
pub fn bundle(tx: &dyn ReadTxn, id: &Hash) -> Result<Option<BundleRecord>, StoreError> {
    tx.get(Table::Bundles, &id.0)?.map(|v| decode("bundle", &v)).transpose()
}

/// The bundle and its approvals, as submitted.
pub fn bundle_body(tx: &dyn ReadTxn, id: &Hash) -> Result<Option<SubmitRequest>, StoreError> {
    tx.get(Table::Bodies, &id.0)?.map(|v| decode("bundle body", &v)).transpose()
}

/// Stores a bundle as submitted (once).
pub fn put_bundle_body(tx: &mut dyn Txn, id: &Hash, req: &SubmitRequest) -> Result<(), StoreError> {
    tx.put(Table::Bodies, &id.0, &encode(req))
}

fn pending_key(state: BundleState, seq: u64, id: &Hash) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[0] = state.code();
    k[1..9].copy_from_slice(&seq.to_be_bytes());
    k[9..].copy_from_slice(&id.0);
    k
}

/// Writes a bundle, keeping the index of bundles not yet final: `before`
/// is its record before this write (`None`: new).
pub fn put_bundle(
    tx: &mut dyn Txn,
    id: &Hash,
    b: &BundleRecord,
    before: Option<(BundleState, u64)>,
) -> Result<(), StoreError> {
    if let Some((state, seq)) = before {
        tx.delete(Table::Pending, &pending_key(state, seq, id))?;
    }
    if !b.state.is_final() {
        tx.put(Table::Pending, &pending_key(b.state, b.state_seq, id), &[])?;
    }
    tx.put(Table::Bundles, &id.0, &encode(b))
}

/// Up to `limit` bundles in `state` (Received or Validated), oldest first.
pub fn pending(tx: &dyn ReadTxn, state: BundleState, limit: usize) -> Result<Vec<Hash>, StoreError> {
    let rows = tx.scan(Table::Pending, &[state.code()], limit)?;
    Ok(rows
        .into_iter()
        .take_while(|(k, _)| k.first() == Some(&state.code()))
        .filter_map(|(k, _)| k.get(9..41).and_then(|b| b.try_into().ok()).map(Hash))
        .collect())
}

/// The chain's height (0: no block yet) and its tip's hash.
pub fn tip(tx: &dyn ReadTxn) -> Result<(u64, Hash), StoreError> {
    let height = meta_u64(tx, HEIGHT)?;
    let hash = match tx.get(Table::Meta, TIP)? {
        None => Hash::default(),
        Some(v) => Hash(v.try_into().map_err(|_| StoreError::Corrupt(String::from("tip")))?),
    };
    Ok((height, hash))
}

/// Appends a block (its height must be the tip's plus one).
pub fn put_block(tx: &mut dyn Txn, b: &BlockRecord) -> Result<(), StoreError> {
    tx.put(Table::Blocks, &b.header.height.to_be_bytes(), &encode(b))?;
    tx.put(Table::Meta, HEIGHT, &b.header.height.to_be_bytes())?;
    tx.put(Table::Meta, TIP, &b.header.hash().0)
}

/// The block at `height`.
pub fn block(tx: &dyn ReadTxn, height: u64) -> Result<Option<BlockRecord>, StoreError> {
    tx.get(Table::Blocks, &height.to_be_bytes())?.map(|v| decode("block", &v)).transpose()
}

/// The registry record named `name`.
pub fn record(tx: &dyn ReadTxn, name: &str) -> Result<Option<SignedRecord>, StoreError> {
    tx.get(Table::Registry, name.as_bytes())?.map(|v| decode("record", &v)).transpose()
}

/// Writes a registry record.
pub fn put_record(tx: &mut dyn Txn, r: &SignedRecord) -> Result<(), StoreError> {
    tx.put(Table::Registry, r.record.name.as_bytes(), &encode(r))
}
