//! The SPEC.md section 5 test vectors (`vectors/bpci.json`): regenerated
//! from fixed seeds and compared byte for byte, then every body decoded
//! and re-encoded, every hash recomputed and every signature verified
//! through the public API.
//!
//! Regenerate after an intended change with
//! `XTMP_REGEN_VECTORS=1 cargo test -p xtmp-bpci --test vectors`.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{Value, json};
use xtmp_bpci::error::{BpciError, code};
use xtmp_bpci::schema::{
    self, Approval, AuthRequest, BlockHeader, Bundle, BundleState, Capability, Challenge, Event, EventKind, Filter,
    Hash, IdentityBytes, NodeMetadata, Receipt, Record, RegisterRequest, RegistryUpdate, Role, Signature, SignedRecord,
    Stamp, SubmitRequest, Submitted, SyncPage, SyncRequest, Transfer, TransferRequest, WalletId, merkle, statement,
};
use xtmp_bpci::service;
use xtmp_core::crypto::{RustCrypto, Secret};
use xtmp_core::handshake::IdentityKeypair;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors/bpci.json");

fn identity(n: u8) -> IdentityKeypair {
    IdentityKeypair::from_seeds(&RustCrypto, Secret::new([n; 32]), Secret::new([n + 0x80; 32])).unwrap()
}

/// A signature with fixed randomness (the ML-DSA half is hedged).
fn sign(keys: &IdentityKeypair, st: &[u8], n: u8) -> Signature {
    let (mldsa, ed25519) = keys.sign(st, &mut ChaCha20Rng::from_seed([n; 32])).unwrap();
    Signature { mldsa, ed25519 }
}

fn h<T: minicbor::Encode<()>>(v: &T) -> String {
    hex::encode(schema::to_canonical(v))
}

const T0: u64 = 1_800_000_000_000;

fn generate() -> Value {
    let server = identity(1);
    let alice = identity(2);
    let bob = identity(3);
    let notary = identity(4);
    let (a, b) = (WalletId::of(alice.public()), WalletId::of(bob.public()));
    let ident = |name: &str, n: u8, k: &IdentityKeypair| {
        json!({
            "name": name,
            "mldsa_seed": hex::encode([n; 32]),
            "ed25519_seed": hex::encode([n + 0x80; 32]),
            "public": hex::encode(k.public().to_bytes()),
            "key_id": k.key_id().to_string(),
            "wallet_id": hex::encode(WalletId::of(k.public()).0.0),
        })
    };
    let binding = [0xcb; 32];

    let reg_st = statement::wallet_register(&binding, alice.public());
    let register =
        RegisterRequest { identity: IdentityBytes(alice.public().clone()), proof: sign(&alice, &reg_st, 10) };

    let challenge = Challenge { domain: "bpci".into(), nonce: Hash([0x4e; 32]), expires_at: T0 + 60_000 };
    let caps = vec![Capability::ReadBalance, Capability::SubmitBundles];
    let auth_st = statement::wallet_auth("bpci", &a, &challenge.nonce, challenge.expires_at, &binding, &caps);
    let auth = AuthRequest {
        wallet: a,
        nonce: Some(challenge.nonce),
        capabilities: Some(caps.clone()),
        signature: Some(sign(&alice, &auth_st, 11)),
    };

    let transfer = Transfer { from: a, to: b, amount: 250, nonce: 0, memo: Some("rent".into()) };
    let transfer_st = statement::transfer(&transfer);
    let transfer_req = TransferRequest { transfer: transfer.clone(), signature: sign(&alice, &transfer_st, 12) };

    let bundles: Vec<Bundle> = (0u8..3)
        .map(|n| {
            let txs: Vec<Hash> = (0..=n).map(|i| Hash::of(&[b'T', n, i])).collect();
            Bundle {
                merkle_root: merkle::root(&txs),
                transaction_count: txs.len() as u64,
                transactions: txs,
                total_value: 1000 * (n as u64 + 1),
                created_at: T0,
                valid_until: T0 + 300_000,
                node: NodeMetadata {
                    node_id: "bpi-core-node".into(),
                    ledger_version: "1.0.0".into(),
                    consensus: "BPI-IBFT".into(),
                    network: "bpi-mainnet".into(),
                },
                endorsement: b"fabric-endorsement".to_vec(),
                wallet: (n == 0).then_some(a),
            }
        })
        .collect();
    let ids: Vec<Hash> = bundles.iter().map(Bundle::id).collect();
    let approval_st = statement::notary_approval(&ids[0]);
    let submit = SubmitRequest {
        bundle: bundles[0].clone(),
        approvals: vec![Approval { notary: "notary-1".into(), signature: sign(&notary, &approval_st, 13) }],
    };
    let submitted = Submitted { bundle_id: ids[0], state: BundleState::Received, seq: 7 };

    let header = BlockHeader {
        height: 1,
        previous: Hash::default(),
        bundles_root: merkle::root(&ids),
        bundle_count: 3,
        time: T0 + 1000,
    };
    let block_st = statement::block(&header);
    let block_sig = sign(&server, &block_st, 14);
    let receipts: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let r = Receipt {
                bundle_id: *id,
                header: header.clone(),
                signature: block_sig.clone(),
                index: i as u64,
                path: merkle::path(&ids, i),
            };
            json!({ "bundle_id": id.to_hex(), "body": h(&r) })
        })
        .collect();

    let record = Record {
        name: "notary-1".into(),
        version: 1,
        role: Role::Notary,
        endpoints: vec!["xtmp://notary.example:7778".into()],
        identity: IdentityBytes(notary.public().clone()),
        owner: a,
    };
    let update_st = statement::registry_update(&record, 0);
    let update =
        RegistryUpdate { record: record.clone(), expected_version: 0, signature: sign(&alice, &update_st, 15) };
    let record_st = statement::registry_record(&record, 3);
    let signed = SignedRecord { record: record.clone(), seq: 3, signature: sign(&server, &record_st, 16) };

    let stamped = Hash::of(b"document");
    let stamp_st = statement::stamp(&stamped, T0 + 2000, 9);
    let stamp = Stamp { hash: stamped, at: T0 + 2000, seq: 9, signature: sign(&server, &stamp_st, 17) };

    let mut event = Event::new(EventKind::Bundle);
    event.seq = 8;
    event.at = T0 + 500;
    event.bundle_id = Some(ids[0]);
    event.state = Some(BundleState::Rejected);
    event.reason = Some("approvals[0]: the signature of notary \"notary-1\" does not verify".into());
    event.wallet = Some(a);
    let sync =
        SyncRequest { after: 7, limit: 100, filter: Some(Filter { bundles: Some(vec![ids[0]]), ..Filter::default() }) };
    let page = SyncPage { events: vec![event.clone()], next: 8, head: 12 };

    let errors: Vec<Value> = [
        BpciError::invalid("bundle.merkle_root", "does not match the transactions (RFC 6962)"),
        BpciError::not_found(format!("wallet {b}")),
        BpciError::Conflict { reason: "transfer nonce 0 was used by another transfer".into() },
        BpciError::NotFinal { state: BundleState::Validated },
        BpciError::CursorExpired { first: 1001 },
        BpciError::RateLimited { retry_after_ms: 50, reason: "this node has 1024 writes waiting (the limit)".into() },
        BpciError::Unauthorized { reason: "proof: the signature does not verify".into() },
        BpciError::Forbidden { reason: "no ReadBalance grant".into() },
        BpciError::InsufficientFunds { balance: 750, amount: 751 },
        BpciError::NoReceipt { state: BundleState::Expired },
    ]
    .iter()
    .map(|e| {
        let reason = e.reason();
        let mut body = e.code().0.to_be_bytes().to_vec();
        body.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        body.extend_from_slice(reason.as_bytes());
        json!({ "code": format!("{:04x}", e.code().0), "reason": reason, "body": hex::encode(body) })
    })
    .collect();

    let trees: Vec<Value> = (1u8..=8)
        .map(|n| {
            let leaves: Vec<Hash> = (0..n).map(|i| Hash([i; 32])).collect();
            let paths: Vec<Vec<String>> =
                (0..n as usize).map(|i| merkle::path(&leaves, i).iter().map(Hash::to_hex).collect()).collect();
            json!({ "leaves": n, "leaf_i": "32 bytes of the value i", "root": merkle::root(&leaves).to_hex(), "paths": paths })
        })
        .collect();

    json!({
        "description": "BPCI application test vectors (SPEC.md section 5). Bodies are CBOR in the deterministic encoding, as hex. Identities come from the seeds given (IdentityKeypair::from_seeds); the ML-DSA-87 halves of signatures are hedged with fixed randomness: verify them, do not expect to reproduce them.",
        "identities": [ident("server", 1, &server), ident("alice", 2, &alice), ident("bob", 3, &bob), ident("notary", 4, &notary)],
        "channel_binding": hex::encode(binding),
        "wallet_register": { "statement": hex::encode(&reg_st), "request": h(&register) },
        "wallet_auth": { "challenge": h(&challenge), "statement": hex::encode(&auth_st), "request": h(&auth) },
        "transfer": {
            "transfer": h(&transfer),
            "transfer_id": Hash::of(&schema::to_canonical(&transfer)).to_hex(),
            "statement": hex::encode(&transfer_st),
            "request": h(&transfer_req),
        },
        "bundles": bundles.iter().map(|b| json!({
            "bundle": h(b),
            "merkle_root": b.merkle_root.to_hex(),
            "bundle_id": b.id().to_hex(),
        })).collect::<Vec<_>>(),
        "approval": { "statement": hex::encode(&approval_st), "submit_request": h(&submit), "submitted": h(&submitted) },
        "block": {
            "header": h(&header),
            "hash": header.hash().to_hex(),
            "statement": hex::encode(&block_st),
            "receipts": receipts,
        },
        "registry": {
            "record": h(&record),
            "record_hash": service::record_hash(&record).to_hex(),
            "update_statement": hex::encode(&update_st),
            "update": h(&update),
            "record_statement": hex::encode(&record_st),
            "signed_record": h(&signed),
        },
        "stamp": { "statement": hex::encode(&stamp_st), "stamp": h(&stamp) },
        "events": { "event": h(&event), "sync_request": h(&sync), "sync_page": h(&page) },
        "errors": errors,
        "merkle": trees,
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).unwrap()
}

/// Decodes `v` as a `T` and checks it re-encodes to the same bytes.
fn body<T: for<'b> minicbor::Decode<'b, ()> + minicbor::Encode<()>>(v: &Value) -> T {
    let b = bytes(v);
    let t: T = schema::from_cbor("vector", &b).unwrap();
    assert_eq!(schema::to_canonical(&t), b, "re-encoding is byte-identical");
    t
}

#[test]
fn vectors_are_current_and_check() {
    let generated = generate();
    if std::env::var_os("XTMP_REGEN_VECTORS").is_some() {
        std::fs::write(PATH, serde_json::to_string_pretty(&generated).unwrap() + "\n").unwrap();
    }
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    assert_eq!(on_disk, generated, "vectors/bpci.json is stale: regenerate it (see module docs)");

    let v = &on_disk;
    let p = RustCrypto;
    let ids: Vec<xtmp_core::handshake::PublicIdentity> = v["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| xtmp_core::handshake::PublicIdentity::from_bytes(&p, &bytes(&i["public"])).unwrap())
        .collect();
    let (server, alice, notary) = (&ids[0], &ids[1], &ids[3]);
    let binding: [u8; 32] = bytes(&v["channel_binding"]).try_into().unwrap();

    let reg: RegisterRequest = body(&v["wallet_register"]["request"]);
    assert_eq!(statement::wallet_register(&binding, &reg.identity.0), bytes(&v["wallet_register"]["statement"]));
    assert!(schema::verify(&p, alice, &bytes(&v["wallet_register"]["statement"]), &reg.proof));
    assert!(
        !schema::verify(&p, alice, &statement::wallet_register(&[0; 32], alice), &reg.proof),
        "bound to the session"
    );

    let c: Challenge = body(&v["wallet_auth"]["challenge"]);
    let auth: AuthRequest = body(&v["wallet_auth"]["request"]);
    let st = statement::wallet_auth(
        &c.domain,
        &auth.wallet,
        &c.nonce,
        c.expires_at,
        &binding,
        auth.capabilities.as_ref().unwrap(),
    );
    assert_eq!(st, bytes(&v["wallet_auth"]["statement"]));
    assert!(schema::verify(&p, alice, &st, auth.signature.as_ref().unwrap()));

    let t: TransferRequest = body(&v["transfer"]["request"]);
    assert_eq!(Hash::of(&bytes(&v["transfer"]["transfer"])).to_hex(), v["transfer"]["transfer_id"]);
    assert!(schema::verify(&p, alice, &statement::transfer(&t.transfer), &t.signature));

    for b in v["bundles"].as_array().unwrap() {
        let bundle: Bundle = body(&b["bundle"]);
        assert_eq!(merkle::root(&bundle.transactions).to_hex(), b["merkle_root"]);
        assert_eq!(Hash::of(&bytes(&b["bundle"])).to_hex(), b["bundle_id"]);
    }
    let submit: SubmitRequest = body(&v["approval"]["submit_request"]);
    let _: Submitted = body(&v["approval"]["submitted"]);
    assert_eq!(statement::notary_approval(&submit.bundle.id()), bytes(&v["approval"]["statement"]));
    assert!(schema::verify(
        &p,
        notary,
        &statement::notary_approval(&submit.bundle.id()),
        &submit.approvals[0].signature
    ));

    let header: BlockHeader = body(&v["block"]["header"]);
    assert_eq!(header.hash().to_hex(), v["block"]["hash"]);
    for r in v["block"]["receipts"].as_array().unwrap() {
        let receipt: Receipt = body(&r["body"]);
        assert_eq!(receipt.header, header);
        service::verify_receipt(&p, server, &receipt).unwrap();
        assert!(service::verify_receipt(&p, alice, &receipt).is_err());
    }

    let u: RegistryUpdate = body(&v["registry"]["update"]);
    assert!(schema::verify(&p, alice, &statement::registry_update(&u.record, u.expected_version), &u.signature));
    let signed: SignedRecord = body(&v["registry"]["signed_record"]);
    assert!(service::verify_record(&p, server, &signed));
    assert_eq!(Hash::of(&bytes(&v["registry"]["record"])).to_hex(), v["registry"]["record_hash"]);
    let stamp: Stamp = body(&v["stamp"]["stamp"]);
    assert!(service::verify_stamp(&p, server, &stamp));
    let _: Event = body(&v["events"]["event"]);
    let _: SyncRequest = body(&v["events"]["sync_request"]);
    let _: SyncPage = body(&v["events"]["sync_page"]);

    for e in v["errors"].as_array().unwrap() {
        let b = bytes(&e["body"]);
        let c = u16::from_be_bytes([b[0], b[1]]);
        let reason = std::str::from_utf8(&b[4..]).unwrap();
        let typed = BpciError::from_wire(xtmp_core::session::ErrorCode(c), reason);
        assert_eq!(typed.code().0, c);
        assert_eq!(typed.reason(), reason, "the reason survives the round trip");
        assert!((code::INVALID.0..=code::NO_RECEIPT.0).contains(&c));
    }
    for t in v["merkle"].as_array().unwrap() {
        let n = t["leaves"].as_u64().unwrap();
        let leaves: Vec<Hash> = (0..n as u8).map(|i| Hash([i; 32])).collect();
        let root = Hash::from_hex(t["root"].as_str().unwrap()).unwrap();
        for (i, path) in t["paths"].as_array().unwrap().iter().enumerate() {
            let path: Vec<Hash> =
                path.as_array().unwrap().iter().map(|h| Hash::from_hex(h.as_str().unwrap()).unwrap()).collect();
            assert!(merkle::verify(&leaves[i], i as u64, n, &path, &root));
        }
    }
}
