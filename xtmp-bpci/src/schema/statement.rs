//! The signed statements (SPEC.md 5.2): what each signature of the
//! application covers. A statement is the deterministic CBOR encoding of
//! an array whose first element is a context string (`"bpci1 ..."`), so a
//! signature made for one purpose never verifies for another, nor for the
//! handshake (whose signed content is not CBOR).

use minicbor::Encoder;

use super::{BlockHeader, Capability, Hash, Record, Transfer, WalletId};
use xtmp_core::handshake::PublicIdentity;

fn statement(len: u64, context: &str, body: impl FnOnce(&mut Encoder<&mut Vec<u8>>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut e = Encoder::new(&mut out);
    e.array(len).and_then(|e| e.str(context)).expect("encoding into a Vec");
    body(&mut e);
    out
}

/// `["bpci1 wallet register", channel_binding, identity]`: a wallet's proof
/// of possession, made in the session that registers it.
pub fn wallet_register(channel_binding: &[u8; 32], identity: &PublicIdentity) -> Vec<u8> {
    statement(3, "bpci1 wallet register", |e| {
        e.bytes(channel_binding).and_then(|e| e.bytes(&identity.to_bytes())).expect("encoding into a Vec");
    })
}

/// `["bpci1 wallet auth", domain, wallet, nonce, expires_at,
/// channel_binding, [capabilities]]`: a wallet's answer to a challenge.
pub fn wallet_auth(
    domain: &str,
    wallet: &WalletId,
    nonce: &Hash,
    expires_at: u64,
    channel_binding: &[u8; 32],
    capabilities: &[Capability],
) -> Vec<u8> {
    statement(7, "bpci1 wallet auth", |e| {
        e.str(domain)
            .and_then(|e| e.encode(wallet))
            .and_then(|e| e.encode(nonce))
            .and_then(|e| e.u64(expires_at))
            .and_then(|e| e.bytes(channel_binding))
            .and_then(|e| e.encode(capabilities))
            .expect("encoding into a Vec");
    })
}

/// `["bpci1 transfer", transfer]`: the sender's authorisation of a transfer.
pub fn transfer(t: &Transfer) -> Vec<u8> {
    statement(2, "bpci1 transfer", |e| {
        e.encode(t).expect("encoding into a Vec");
    })
}

/// `["bpci1 notary approval", bundle_id]`: a notary's approval of a bundle.
pub fn notary_approval(bundle_id: &Hash) -> Vec<u8> {
    statement(2, "bpci1 notary approval", |e| {
        e.encode(bundle_id).expect("encoding into a Vec");
    })
}

/// `["bpci1 block", header]`: the server's signature of a block.
pub fn block(header: &BlockHeader) -> Vec<u8> {
    statement(2, "bpci1 block", |e| {
        e.encode(header).expect("encoding into a Vec");
    })
}

/// `["bpci1 registry update", record, expected_version]`: an owner's
/// update of its record.
pub fn registry_update(record: &Record, expected_version: u64) -> Vec<u8> {
    statement(3, "bpci1 registry update", |e| {
        e.encode(record).and_then(|e| e.u64(expected_version)).expect("encoding into a Vec");
    })
}

/// `["bpci1 registry record", record, seq]`: the server's attestation of a
/// record version.
pub fn registry_record(record: &Record, seq: u64) -> Vec<u8> {
    statement(3, "bpci1 registry record", |e| {
        e.encode(record).and_then(|e| e.u64(seq)).expect("encoding into a Vec");
    })
}

/// `["bpci1 stamp", hash, at, seq]`: the server's timestamp of a hash.
pub fn stamp(hash: &Hash, at: u64, seq: u64) -> Vec<u8> {
    statement(4, "bpci1 stamp", |e| {
        e.encode(hash).and_then(|e| e.u64(at)).and_then(|e| e.u64(seq)).expect("encoding into a Vec");
    })
}
