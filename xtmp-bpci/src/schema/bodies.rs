//! Every request, response, item and record body (SPEC.md 5.3-5.8). Keys
//! are declared in ascending order: the derived encoding is the
//! deterministic one.

use minicbor::{Decode, Encode};

use super::{Hash, IdentityBytes, Signature, WalletId};

/// Milliseconds since the Unix epoch (UTC), the one time representation of
/// the application.
pub type Millis = u64;

// ---------------------------------------------------------------- wallets

/// WalletRegister (`0x10`) request: a wallet's public keys and its proof of
/// possession, a signature over
/// [`statement::wallet_register`](super::statement::wallet_register).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RegisterRequest {
    /// The wallet's public identity.
    #[n(1)]
    pub identity: IdentityBytes,
    /// The proof of possession, bound to this session.
    #[n(2)]
    pub proof: Signature,
}

/// WalletRegister (`0x10`) response. The same for every registration of
/// the same keys.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Registration {
    /// The wallet's id.
    #[n(1)]
    pub wallet: WalletId,
    /// The registration id: the sequence number of the registration event.
    #[n(2)]
    pub registration: u64,
    /// The balance the wallet was given (the server's configuration).
    #[n(3)]
    pub initial_balance: u64,
    /// When it was registered.
    #[n(4)]
    pub registered_at: Millis,
}

/// What an authenticated session may do for a wallet (WalletAuth).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum Capability {
    /// Read the wallet's balance (WalletBalance).
    #[n(1)]
    ReadBalance,
    /// Submit bundles in the wallet's name (BundleSubmit with `wallet`).
    #[n(2)]
    SubmitBundles,
    /// Watch the wallet's bundles (LiveUpdates with `wallet`).
    #[n(3)]
    WatchBundles,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 3] = [Capability::ReadBalance, Capability::SubmitBundles, Capability::WatchBundles];
}

/// WalletAuth (`0x11`) request. Without `signature` it asks for a
/// challenge; with it, it answers one.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AuthRequest {
    /// The wallet.
    #[n(1)]
    pub wallet: WalletId,
    /// The challenge's nonce (answer only).
    #[n(2)]
    pub nonce: Option<Hash>,
    /// The capabilities asked for (answer only).
    #[n(3)]
    pub capabilities: Option<Vec<Capability>>,
    /// The wallet's signature over
    /// [`statement::wallet_auth`](super::statement::wallet_auth) (answer only).
    #[n(4)]
    pub signature: Option<Signature>,
}

/// WalletAuth (`0x11`) response to a request for a challenge.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Challenge {
    /// The server's domain, signed back.
    #[n(1)]
    pub domain: String,
    /// A fresh random nonce, good once.
    #[n(2)]
    pub nonce: Hash,
    /// When the challenge expires.
    #[n(3)]
    pub expires_at: Millis,
}

/// WalletAuth (`0x11`) response to an answered challenge: what this
/// session may now do for the wallet.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Grant {
    /// The wallet.
    #[n(1)]
    pub wallet: WalletId,
    /// The capabilities granted (those asked for).
    #[n(2)]
    pub capabilities: Vec<Capability>,
    /// When the grant ends (it also ends with the session).
    #[n(3)]
    pub expires_at: Millis,
}

/// WalletBalance (`0x12`) request.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct BalanceRequest {
    /// The wallet.
    #[n(1)]
    pub wallet: WalletId,
}

/// WalletBalance (`0x12`) response.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Balance {
    /// The wallet.
    #[n(1)]
    pub wallet: WalletId,
    /// Its balance in minor units.
    #[n(2)]
    pub balance: u64,
    /// The nonce its next transfer must carry.
    #[n(3)]
    pub next_nonce: u64,
    /// The event sequence number the balance is as of.
    #[n(4)]
    pub as_of: u64,
}

/// A transfer between wallets, signed by the sender.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Transfer {
    /// The sending wallet.
    #[n(1)]
    pub from: WalletId,
    /// The receiving wallet.
    #[n(2)]
    pub to: WalletId,
    /// The amount in minor units (at least 1).
    #[n(3)]
    pub amount: u64,
    /// The sender's nonce: its transfers carry 0, 1, 2, ... in order.
    #[n(4)]
    pub nonce: u64,
    /// Free text for people, at most 256 bytes.
    #[n(5)]
    pub memo: Option<String>,
}

/// WalletTransaction (`0x13`) request.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct TransferRequest {
    /// The transfer.
    #[n(1)]
    pub transfer: Transfer,
    /// The sender's signature over
    /// [`statement::transfer`](super::statement::transfer).
    #[n(2)]
    pub signature: Signature,
}

/// WalletTransaction (`0x13`) response: the same for every re-sending of
/// the same transfer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct TransferReceipt {
    /// `SHA-256` of the transfer's deterministic encoding.
    #[n(1)]
    pub transfer_id: Hash,
    /// The sequence number of the transfer's event.
    #[n(2)]
    pub seq: u64,
    /// The sender's balance after it.
    #[n(3)]
    pub balance: u64,
    /// When it was applied.
    #[n(4)]
    pub at: Millis,
}

// ---------------------------------------------------------------- bundles

/// What the BPI node says about itself in a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Default, Encode, Decode)]
#[cbor(map)]
pub struct NodeMetadata {
    /// The node's name.
    #[n(1)]
    pub node_id: String,
    /// Its ledger's version.
    #[n(2)]
    pub ledger_version: String,
    /// Its consensus algorithm.
    #[n(3)]
    pub consensus: String,
    /// Its network ("bpi-mainnet", "bpi-testnet", ...).
    #[n(4)]
    pub network: String,
}

/// A proof bundle in canonical form. Its id is `SHA-256` of its
/// deterministic encoding ([`Bundle::id`]).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Bundle {
    /// The transactions' ids, in order (1 to the server's maximum).
    #[n(1)]
    pub transactions: Vec<Hash>,
    /// Their Merkle root (RFC 6962, the ids as leaves).
    #[n(2)]
    pub merkle_root: Hash,
    /// How many transactions (equals `transactions`' length).
    #[n(3)]
    pub transaction_count: u64,
    /// Their total value in minor units.
    #[n(4)]
    pub total_value: u64,
    /// When the node built it.
    #[n(5)]
    pub created_at: Millis,
    /// The deadline: a bundle not confirmed by then expires.
    #[n(6)]
    pub valid_until: Millis,
    /// The node's metadata.
    #[n(7)]
    pub node: NodeMetadata,
    /// The endorsement proof (for example a Hyperledger Fabric
    /// endorsement): kept and hashed, not verified by the server.
    #[n(8)]
    #[cbor(with = "minicbor::bytes")]
    pub endorsement: Vec<u8>,
    /// The wallet it is submitted for, if any (the session needs the
    /// wallet's `SubmitBundles` capability).
    #[n(9)]
    pub wallet: Option<WalletId>,
}

impl Bundle {
    /// The bundle id: `SHA-256` of the deterministic encoding.
    pub fn id(&self) -> Hash {
        Hash::of(&super::to_canonical(self))
    }
}

/// A notary's approval: its signature over
/// [`statement::notary_approval`](super::statement::notary_approval).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Approval {
    /// The registry name of the notary's record (role notary).
    #[n(1)]
    pub notary: String,
    /// Its signature.
    #[n(2)]
    pub signature: Signature,
}

/// BundleSubmit (`0x20`) request.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SubmitRequest {
    /// The bundle.
    #[n(1)]
    pub bundle: Bundle,
    /// The notaries' approvals (at least the server's threshold, from
    /// distinct notaries).
    #[n(2)]
    pub approvals: Vec<Approval>,
}

/// A bundle's state (SPEC.md 5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum BundleState {
    /// Stored, not yet checked.
    #[n(1)]
    Received,
    /// Its approvals verified; waiting for a block.
    #[n(2)]
    Validated,
    /// In a block (final).
    #[n(3)]
    Confirmed,
    /// Refused, with a reason (final).
    #[n(4)]
    Rejected,
    /// Its deadline passed before it was confirmed (final).
    #[n(5)]
    Expired,
}

impl BundleState {
    /// Whether no transition leaves this state.
    pub fn is_final(self) -> bool {
        matches!(self, BundleState::Confirmed | BundleState::Rejected | BundleState::Expired)
    }

    /// The state's name.
    pub fn name(self) -> &'static str {
        match self {
            BundleState::Received => "Received",
            BundleState::Validated => "Validated",
            BundleState::Confirmed => "Confirmed",
            BundleState::Rejected => "Rejected",
            BundleState::Expired => "Expired",
        }
    }

    /// Its code on the wire.
    pub fn code(self) -> u8 {
        self as u8 + 1
    }

    /// The state of a code.
    pub fn from_code(c: u8) -> Option<BundleState> {
        Some(match c {
            1 => BundleState::Received,
            2 => BundleState::Validated,
            3 => BundleState::Confirmed,
            4 => BundleState::Rejected,
            5 => BundleState::Expired,
            _ => return None,
        })
    }
}

impl std::fmt::Display for BundleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// BundleSubmit (`0x20`) response, sent before processing: `Received` and
/// its event's sequence number. A bundle already known gets its original
/// answer again.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Submitted {
    /// The bundle id.
    #[n(1)]
    pub bundle_id: Hash,
    /// `Received`.
    #[n(2)]
    pub state: BundleState,
    /// The sequence number of the `Received` event: watch from before it.
    #[n(3)]
    pub seq: u64,
}

/// BundleStatus (`0x21`) and BundleConfirm (`0x22`) request.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct BundleQuery {
    /// The bundle id.
    #[n(1)]
    pub bundle_id: Hash,
}

/// BundleStatus (`0x21`) response.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Status {
    /// The bundle id.
    #[n(1)]
    pub bundle_id: Hash,
    /// The current state.
    #[n(2)]
    pub state: BundleState,
    /// The sequence number of the event that entered it.
    #[n(3)]
    pub seq: u64,
    /// Why it was rejected or expired.
    #[n(4)]
    pub reason: Option<String>,
    /// The block that confirmed it.
    #[n(5)]
    pub height: Option<u64>,
}

/// A block's header: what the server signs once per block.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct BlockHeader {
    /// The height (the first block is 1).
    #[n(1)]
    pub height: u64,
    /// The previous block's hash (zero for the first).
    #[n(2)]
    pub previous: Hash,
    /// The Merkle root (RFC 6962) of the block's bundle ids, in order.
    #[n(3)]
    pub bundles_root: Hash,
    /// How many bundles.
    #[n(4)]
    pub bundle_count: u64,
    /// When it was built.
    #[n(5)]
    pub time: Millis,
}

impl BlockHeader {
    /// The block hash: `SHA-256` of the header's deterministic encoding.
    pub fn hash(&self) -> Hash {
        Hash::of(&super::to_canonical(self))
    }
}

/// BundleConfirm (`0x22`) response: a confirmed bundle's receipt, which
/// verifies offline against the server's identity
/// ([`verify_receipt`](crate::service::verify_receipt)).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Receipt {
    /// The bundle id.
    #[n(1)]
    pub bundle_id: Hash,
    /// The block's header.
    #[n(2)]
    pub header: BlockHeader,
    /// The server's signature over
    /// [`statement::block`](super::statement::block).
    #[n(3)]
    pub signature: Signature,
    /// The bundle's index in the block.
    #[n(4)]
    pub index: u64,
    /// The RFC 6962 audit path from the bundle id to `bundles_root`.
    #[n(5)]
    pub path: Vec<Hash>,
}

// ----------------------------------------------------------------- events

/// What an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum EventKind {
    /// A bundle entered a state (`bundle_id`, `state`, `reason`, `height`,
    /// `wallet`).
    #[n(1)]
    Bundle,
    /// A wallet was registered (`wallet`, `amount`: its initial balance).
    #[n(2)]
    WalletRegistered,
    /// A transfer was applied (`wallet`: the sender, `to`, `amount`, `nonce`).
    #[n(3)]
    Transfer,
    /// A registry record was written (`name`, `version`).
    #[n(4)]
    Registry,
    /// A stamp was issued (`hash`).
    #[n(5)]
    Stamp,
    /// A block was built (`height`, `hash`: the block hash).
    #[n(6)]
    Block,
}

/// One domain event: every state change is one, numbered by `seq` in
/// commit order without gaps. The sequence number is the cursor of
/// BundleSync, LiveUpdates and EventStream.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Event {
    /// The sequence number (the first event is 1).
    #[n(1)]
    pub seq: u64,
    /// When it happened.
    #[n(2)]
    pub at: Millis,
    /// What it records.
    #[n(3)]
    pub kind: EventKind,
    /// The bundle (kind Bundle).
    #[n(4)]
    pub bundle_id: Option<Hash>,
    /// The bundle's new state (kind Bundle).
    #[n(5)]
    pub state: Option<BundleState>,
    /// Why (Rejected, Expired).
    #[n(6)]
    pub reason: Option<String>,
    /// The block height (Bundle when Confirmed, Block).
    #[n(7)]
    pub height: Option<u64>,
    /// The wallet concerned.
    #[n(8)]
    pub wallet: Option<WalletId>,
    /// The receiving wallet (Transfer).
    #[n(9)]
    pub to: Option<WalletId>,
    /// An amount (Transfer, WalletRegistered).
    #[n(10)]
    pub amount: Option<u64>,
    /// A transfer's nonce.
    #[n(11)]
    pub nonce: Option<u64>,
    /// A registry name (Registry).
    #[n(12)]
    pub name: Option<String>,
    /// A registry record's version (Registry).
    #[n(13)]
    pub version: Option<u64>,
    /// A hash (Stamp: the stamped hash; Block: the block hash).
    #[n(14)]
    pub hash: Option<Hash>,
}

impl Event {
    /// An event of `kind` with no fields set.
    pub fn new(kind: EventKind) -> Event {
        Event {
            seq: 0,
            at: 0,
            kind,
            bundle_id: None,
            state: None,
            reason: None,
            height: None,
            wallet: None,
            to: None,
            amount: None,
            nonce: None,
            name: None,
            version: None,
            hash: None,
        }
    }
}

/// Which events a BundleSync, LiveUpdates or EventStream wants. Every set
/// field must match; none set matches every event.
#[derive(Clone, Debug, PartialEq, Eq, Default, Encode, Decode)]
#[cbor(map)]
pub struct Filter {
    /// Only these bundles' transitions.
    #[n(1)]
    pub bundles: Option<Vec<Hash>>,
    /// Only events about this wallet (its bundles, its transfers both
    /// ways, its registration).
    #[n(2)]
    pub wallet: Option<WalletId>,
    /// Only these kinds.
    #[n(3)]
    pub kinds: Option<Vec<EventKind>>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &Event) -> bool {
        if let Some(b) = &self.bundles
            && !e.bundle_id.is_some_and(|id| b.contains(&id))
        {
            return false;
        }
        if let Some(w) = &self.wallet
            && e.wallet.as_ref() != Some(w)
            && e.to.as_ref() != Some(w)
        {
            return false;
        }
        if let Some(k) = &self.kinds
            && !k.contains(&e.kind)
        {
            return false;
        }
        true
    }
}

/// BundleSync (`0x23`) request: the events after a cursor, a page at a time.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SyncRequest {
    /// The cursor: events with a greater sequence number are returned.
    #[n(1)]
    pub after: u64,
    /// At most this many events (the server caps it).
    #[n(2)]
    pub limit: u64,
    /// Which events.
    #[n(3)]
    pub filter: Option<Filter>,
}

/// BundleSync (`0x23`) response.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SyncPage {
    /// The matching events, in order.
    #[n(1)]
    pub events: Vec<Event>,
    /// The cursor to ask from next: the last sequence number examined.
    #[n(2)]
    pub next: u64,
    /// The latest sequence number now.
    #[n(3)]
    pub head: u64,
}

/// LiveUpdates (`0x40`) and EventStream (`0x41`) subscription filter.
#[derive(Clone, Debug, PartialEq, Eq, Default, Encode, Decode)]
#[cbor(map)]
pub struct StreamRequest {
    /// Which events (LiveUpdates: bundle transitions only, whatever this
    /// says about kinds).
    #[n(1)]
    pub filter: Option<Filter>,
    /// Start after this sequence number; absent: from now.
    #[n(2)]
    pub after: Option<u64>,
}

/// MetricsStream (`0x42`) item: the server's counters, each second.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct MetricsItem {
    /// When they were read.
    #[n(1)]
    pub at: Millis,
    /// The latest event sequence number.
    #[n(2)]
    pub head: u64,
    /// The block height.
    #[n(3)]
    pub height: u64,
    /// Bundles submitted since the server started.
    #[n(4)]
    pub bundles_submitted: u64,
    /// Bundles confirmed since the server started.
    #[n(5)]
    pub bundles_confirmed: u64,
    /// Bundles rejected or expired since the server started.
    #[n(6)]
    pub bundles_failed: u64,
    /// Write operations waiting for the store.
    #[n(7)]
    pub write_queue: u64,
}

// --------------------------------------------------------------- registry

/// What a registry record names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum Role {
    /// A BPCI server: `endpoints` and `identity` are how to reach and trust it.
    #[n(1)]
    Server,
    /// A notary: `identity` signs bundle approvals.
    #[n(2)]
    Notary,
}

/// A Shadow Registry record.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Record {
    /// The name (1 to 128 bytes of `a-z 0-9 . - _`).
    #[n(1)]
    pub name: String,
    /// The version: 1 when created, one more with each update.
    #[n(2)]
    pub version: u64,
    /// What the name is.
    #[n(3)]
    pub role: Role,
    /// Endpoint strings (`xtmp://host:port`, ...), for servers.
    #[n(4)]
    pub endpoints: Vec<String>,
    /// The server's or notary's public identity.
    #[n(5)]
    pub identity: IdentityBytes,
    /// The wallet that owns the name and signs its updates.
    #[n(6)]
    pub owner: WalletId,
}

impl Record {
    /// Version 1 of the record of the notary `name`, whose approvals
    /// `identity` signs, owned by `owner`.
    pub fn notary(name: impl Into<String>, identity: xtmp_core::handshake::PublicIdentity, owner: WalletId) -> Record {
        Record {
            name: name.into(),
            version: 1,
            role: Role::Notary,
            endpoints: Vec::new(),
            identity: IdentityBytes(identity),
            owner,
        }
    }

    /// Version 1 of the record of the server `name`, reached at
    /// `endpoints` and trusted as `identity`, owned by `owner`.
    pub fn server(
        name: impl Into<String>,
        endpoints: Vec<String>,
        identity: xtmp_core::handshake::PublicIdentity,
        owner: WalletId,
    ) -> Record {
        Record {
            name: name.into(),
            version: 1,
            role: Role::Server,
            endpoints,
            identity: IdentityBytes(identity),
            owner,
        }
    }
}

/// RegistryQuery (`0x30`) request.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RegistryQuery {
    /// The name.
    #[n(1)]
    pub name: String,
}

/// RegistryUpdate (`0x31`) request: create (`expected_version` 0) or
/// replace the record, signed by its owner.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RegistryUpdate {
    /// The new record (`version` = `expected_version` + 1).
    #[n(1)]
    pub record: Record,
    /// The version it replaces (0: the name must be free).
    #[n(2)]
    pub expected_version: u64,
    /// The owner's signature over
    /// [`statement::registry_update`](super::statement::registry_update).
    #[n(3)]
    pub signature: Signature,
}

/// RegistryQuery (`0x30`) and RegistryUpdate (`0x31`) response: the record
/// as the server holds it, signed by the server.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SignedRecord {
    /// The record.
    #[n(1)]
    pub record: Record,
    /// The sequence number of the event that wrote this version.
    #[n(2)]
    pub seq: u64,
    /// The server's signature over
    /// [`statement::registry_record`](super::statement::registry_record).
    #[n(3)]
    pub signature: Signature,
}

/// RegistryStamp (`0x32`) request: a 32-byte hash, or the name of a record
/// whose current version's hash (`SHA-256` of its deterministic encoding)
/// is stamped.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StampRequest {
    /// The hash to stamp.
    #[n(1)]
    pub hash: Option<Hash>,
    /// Or the record to stamp.
    #[n(2)]
    pub name: Option<String>,
}

/// RegistryStamp (`0x32`) response: the server's signed timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Stamp {
    /// What was stamped.
    #[n(1)]
    pub hash: Hash,
    /// When.
    #[n(2)]
    pub at: Millis,
    /// The sequence number of the stamp's event.
    #[n(3)]
    pub seq: u64,
    /// The server's signature over
    /// [`statement::stamp`](super::statement::stamp).
    #[n(4)]
    pub signature: Signature,
}
