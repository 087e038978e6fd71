use super::*;

fn bundle() -> Bundle {
    let txs: Vec<Hash> = (0u8..3).map(|i| Hash::of(&[i])).collect();
    Bundle {
        merkle_root: merkle::root(&txs),
        transaction_count: 3,
        transactions: txs,
        total_value: 1500,
        created_at: 1_700_000_000_000,
        valid_until: 1_700_000_300_000,
        node: NodeMetadata {
            node_id: "bpi-core-node".into(),
            ledger_version: "1.0.0".into(),
            consensus: "BPI-IBFT".into(),
            network: "bpi-mainnet".into(),
        },
        endorsement: vec![1, 2, 3],
        wallet: None,
    }
}

#[test]
fn the_derived_encoding_is_deterministic_and_round_trips() {
    let b = bundle();
    let bytes = to_canonical(&b);
    // A map of 8 entries (wallet absent), keys 1..8 in ascending order.
    assert_eq!(bytes[0], 0xa8);
    assert_eq!(bytes[1], 0x01);
    let back: Bundle = from_cbor("bundle", &bytes).unwrap();
    assert_eq!(back, b);
    assert_eq!(to_canonical(&back), bytes, "re-encoding gives the same bytes");
    assert_eq!(b.id(), Hash::of(&bytes));
}

#[test]
fn unknown_keys_are_skipped_and_trailing_bytes_refused() {
    let q = BundleQuery { bundle_id: Hash([7; 32]) };
    let mut bytes = to_canonical(&q);
    // {1: h'07..', 99: "later"}: a later version's field.
    bytes[0] = 0xa2;
    bytes.extend_from_slice(&[0x18, 99, 0x65]);
    bytes.extend_from_slice(b"later");
    assert_eq!(from_cbor::<BundleQuery>("q", &bytes).unwrap(), q);
    bytes.push(0);
    let e = from_cbor::<BundleQuery>("BundleStatus request", &bytes).unwrap_err();
    assert!(e.to_string().contains("1 bytes after the body"), "{e}");
}

#[test]
fn a_hash_of_the_wrong_length_is_refused() {
    // {1: h'0000'}
    let e = from_cbor::<BundleQuery>("BundleStatus request", &[0xa1, 0x01, 0x42, 0, 0]).unwrap_err();
    assert!(e.to_string().contains("malformed BundleStatus request"), "{e}");
    assert!(from_cbor::<BundleQuery>("q", &[0xa0]).is_err(), "a missing field");
}

#[test]
fn statements_differ_by_purpose() {
    let h = Hash([1; 32]);
    assert_ne!(statement::notary_approval(&h), statement::stamp(&h, 0, 0));
    let a = statement::notary_approval(&h);
    assert_eq!(a[0], 0x82, "an array of two");
    assert_eq!(&a[2..24], b"bpci1 notary approval\x58");
}
