//! Every rule and every error path of the services, on the rules directly
//! (deterministic time, no threads), run once on the in-memory store and
//! once on redb; and the store conformance suite on both.

use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_bpci::error::BpciError;
use xtmp_bpci::schema::{
    self, Approval, BundleState, Event, EventKind, Filter, Hash, Record, RegisterRequest, Role, SubmitRequest,
    Transfer, WalletId, statement,
};
use xtmp_bpci::service::{self, NodeId, Rules};
use xtmp_bpci::store::{ReadTxn, Txn, conformance, ledger};
use xtmp_bpci::{Config, MemoryStore, Notary, RedbStore, Store, Wallet};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::IdentityKeypair;

fn keys(seed: u8) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([seed; 32])).unwrap())
}

const T0: u64 = 1_800_000_000_000;
const NODE: NodeId = NodeId([7; 16]);

struct World {
    store: Box<dyn Store>,
    rules: Rules,
    server: Arc<IdentityKeypair>,
    owner: Wallet,
    notary: Notary,
    _dir: Option<tempfile::TempDir>,
}

impl World {
    fn new(store: Box<dyn Store>, dir: Option<tempfile::TempDir>) -> World {
        let server = keys(1);
        let config = Config { initial_balance: 1000, ..Config::default() };
        let rules = Rules::new(config, Arc::new(RustCrypto), server.clone());
        let owner = Wallet::from_keys(keys(2));
        let notary = Notary::new("notary-1", keys(3));
        let w = World { store, rules, server, owner, notary, _dir: dir };
        w.write(|r, tx| r.register(tx, T0, w.owner.keys().public())).unwrap();
        let record = Record::notary("notary-1", w.notary.public().clone(), w.owner.id());
        let u = w.owner.sign_update(record, 0);
        w.read(|r, tx| r.check_registry_update(tx, &u)).unwrap();
        w.write(|r, tx| r.registry_update(tx, T0, &u)).unwrap();
        w
    }

    fn memory() -> World {
        World::new(Box::new(MemoryStore::new()), None)
    }

    fn redb() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("bpci.redb")).unwrap();
        World::new(Box::new(store), Some(dir))
    }

    /// Runs one rule in one transaction; an error leaves the transaction
    /// to commit only what the rule wrote before failing (which the test
    /// then checks is nothing).
    fn write<T>(&self, f: impl Fn(&Rules, &mut dyn Txn) -> Result<T, BpciError>) -> Result<T, BpciError> {
        let mut out = None;
        self.store
            .write(&mut |tx| {
                out = Some(f(&self.rules, tx));
                Ok(())
            })
            .unwrap();
        out.unwrap()
    }

    fn read<T>(&self, f: impl Fn(&Rules, &dyn ReadTxn) -> Result<T, BpciError>) -> Result<T, BpciError> {
        let mut out = None;
        self.store
            .read(&mut |tx| {
                out = Some(f(&self.rules, tx));
                Ok(())
            })
            .unwrap();
        out.unwrap()
    }

    fn head(&self) -> u64 {
        let mut h = 0;
        self.store
            .read(&mut |tx| {
                h = ledger::head(tx)?;
                Ok(())
            })
            .unwrap();
        h
    }

    /// Every table's content, to check that a refusal changed nothing.
    fn snapshot(&self) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.store
            .read(&mut |tx| {
                out = xtmp_bpci::store::Table::ALL
                    .iter()
                    .map(|t| tx.scan(*t, &[], usize::MAX))
                    .collect::<Result<_, _>>()?;
                Ok(())
            })
            .unwrap();
        out
    }

    fn wallet(&self, seed: u8) -> Wallet {
        let w = Wallet::from_keys(keys(seed));
        self.write(|r, tx| r.register(tx, T0, w.keys().public())).unwrap();
        w
    }

    fn bundle(&self, n: u8, valid_for: u64) -> SubmitRequest {
        let txs: Vec<Hash> = (0..n).map(|i| Hash::of(&[i, n, valid_for as u8])).collect();
        let bundle = service::bundle_of(txs, 100 * n as u64, T0, T0 + valid_for);
        let approvals = vec![self.notary.approve(&bundle)];
        SubmitRequest { bundle, approvals }
    }

    fn submit(&self, req: &SubmitRequest) -> schema::Submitted {
        self.read(|r, tx| r.check_bundle(tx, T0, req)).unwrap();
        self.write(|r, tx| r.submit(tx, T0, &NODE, req)).unwrap().0
    }

    fn verify(&self, req: &SubmitRequest) -> Result<(), String> {
        let mut v = None;
        self.store
            .read(&mut |tx| {
                v = Some(self.rules.verify_approvals(tx, req)?);
                Ok(())
            })
            .unwrap();
        v.unwrap()
    }

    fn events(&self) -> Vec<Event> {
        self.read(|r, tx| r.sync(tx, 0, 1000, &Filter::default())).unwrap().events
    }
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[test] fn $name() { super::$name(super::World::memory()) } )*
        }
        mod redb {
            $( #[test] fn $name() { super::$name(super::World::redb()) } )*
        }
    };
}

on_both_stores!(
    registration_is_idempotent_and_its_proof_is_bound_to_the_session,
    transfers_conserve_supply_refuse_overdrafts_and_repeat_their_answer,
    a_bad_transfer_changes_nothing,
    bundles_go_received_validated_confirmed_with_a_verifiable_receipt,
    malformed_bundles_are_refused_naming_the_field_and_change_nothing,
    bad_approvals_reject_and_late_bundles_expire,
    a_resubmission_after_the_deadline_gets_the_original_answer,
    sync_pages_filters_and_expired_cursors,
    registry_updates_compare_and_set_and_stamps_verify,
);

fn registration_is_idempotent_and_its_proof_is_bound_to_the_session(w: World) {
    let wallet = Wallet::from_keys(keys(9));
    let binding = [5u8; 32];
    let proof = schema::sign(wallet.keys(), &statement::wallet_register(&binding, wallet.keys().public()));
    let req = RegisterRequest { identity: schema::IdentityBytes(wallet.keys().public().clone()), proof };
    w.rules.check_registration(&req, &binding).unwrap();
    match w.rules.check_registration(&req, &[6u8; 32]) {
        Err(BpciError::Unauthorized { .. }) => {}
        other => panic!("a proof replayed into another session: {other:?}"),
    }
    let first = w.write(|r, tx| r.register(tx, T0, wallet.keys().public())).unwrap();
    let head = w.head();
    let again = w.write(|r, tx| r.register(tx, T0 + 5, wallet.keys().public())).unwrap();
    assert_eq!(first, again, "the original answer");
    assert_eq!(w.head(), head, "no second event");
    assert_eq!(first.wallet, WalletId::of(wallet.keys().public()));
    assert_eq!(first.initial_balance, 1000);
    let b = w.read(|r, tx| r.balance(tx, &wallet.id())).unwrap();
    assert_eq!((b.balance, b.next_nonce), (1000, 0));
    let e = w.events().into_iter().find(|e| e.seq == first.registration).unwrap();
    assert_eq!((e.kind, e.wallet, e.amount), (EventKind::WalletRegistered, Some(wallet.id()), Some(1000)));
    match w.read(|r, tx| r.balance(tx, &WalletId(Hash([0; 32])))) {
        Err(BpciError::NotFound { what }) => assert!(what.starts_with("wallet w:"), "{what}"),
        other => panic!("{other:?}"),
    }
}

fn total(w: &World) -> u64 {
    let mut sum = 0;
    w.store
        .read(&mut |tx| {
            sum = ledger::wallets(tx, usize::MAX)?.iter().map(|(_, r)| r.balance).sum();
            Ok(())
        })
        .unwrap();
    sum
}

fn transfers_conserve_supply_refuse_overdrafts_and_repeat_their_answer(w: World) {
    let (a, b) = (w.wallet(10), w.wallet(11));
    let supply = total(&w);
    let t = Transfer { from: a.id(), to: b.id(), amount: 300, nonce: 0, memo: Some("rent".into()) };
    let req = a.sign_transfer(t.clone());
    w.read(|r, tx| r.check_transfer(tx, &req)).unwrap();
    let receipt = w.write(|r, tx| r.transfer(tx, T0, &t)).unwrap();
    assert_eq!(receipt.balance, 700);
    assert_eq!(receipt.transfer_id, Hash::of(&schema::to_canonical(&t)));
    let head = w.head();
    assert_eq!(w.write(|r, tx| r.transfer(tx, T0 + 9, &t)).unwrap(), receipt, "re-sent: the original answer");
    assert_eq!(w.head(), head, "applied once");
    assert_eq!(total(&w), supply, "supply conserved");
    assert_eq!(w.read(|r, tx| r.balance(tx, &b.id())).unwrap().balance, 1300);
    let other = Transfer { amount: 1, ..t.clone() };
    assert!(matches!(w.write(|r, tx| r.transfer(tx, T0, &other)), Err(BpciError::Conflict { .. })));
    let gap = Transfer { nonce: 5, ..t.clone() };
    match w.write(|r, tx| r.transfer(tx, T0, &gap)) {
        Err(BpciError::Invalid { field, rule }) => {
            assert_eq!(field, "transfer.nonce");
            assert!(rule.contains("expected 1"), "{rule}");
        }
        e => panic!("{e:?}"),
    }
    let over = Transfer { amount: 701, nonce: 1, ..t.clone() };
    assert_eq!(
        w.write(|r, tx| r.transfer(tx, T0, &over)),
        Err(BpciError::InsufficientFunds { balance: 700, amount: 701 })
    );
    let all = Transfer { amount: 700, nonce: 1, ..t };
    assert_eq!(w.write(|r, tx| r.transfer(tx, T0, &all)).unwrap().balance, 0, "down to zero, not below");
    assert_eq!(total(&w), supply);
}

fn a_bad_transfer_changes_nothing(w: World) {
    let (a, b) = (w.wallet(10), w.wallet(11));
    let before = w.snapshot();
    let good = Transfer { from: a.id(), to: b.id(), amount: 5, nonce: 0, memo: None };
    let cases: Vec<(&str, schema::TransferRequest)> = vec![
        ("signed by another wallet", b.sign_transfer(good.clone())),
        ("zero amount", a.sign_transfer(Transfer { amount: 0, ..good.clone() })),
        ("to itself", a.sign_transfer(Transfer { to: a.id(), ..good.clone() })),
        ("unknown receiver", a.sign_transfer(Transfer { to: WalletId(Hash([3; 32])), ..good.clone() })),
        ("long memo", a.sign_transfer(Transfer { memo: Some("x".repeat(257)), ..good.clone() })),
    ];
    for (what, req) in cases {
        let e = w.read(|r, tx| r.check_transfer(tx, &req)).unwrap_err();
        match (what, &e) {
            ("signed by another wallet", BpciError::Unauthorized { .. })
            | ("zero amount", BpciError::Invalid { .. })
            | ("to itself", BpciError::Invalid { .. })
            | ("unknown receiver", BpciError::NotFound { .. })
            | ("long memo", BpciError::Invalid { .. }) => {}
            _ => panic!("{what}: {e:?}"),
        }
    }
    let over = Transfer { amount: 5000, ..good };
    assert!(w.write(|r, tx| r.transfer(tx, T0, &over)).is_err());
    assert_eq!(w.snapshot(), before, "refusals change nothing");
}

fn bundles_go_received_validated_confirmed_with_a_verifiable_receipt(w: World) {
    let reqs: Vec<SubmitRequest> = (1..=3).map(|n| w.bundle(n, 60_000)).collect();
    let mut ids = Vec::new();
    for req in &reqs {
        let s = w.submit(req);
        assert_eq!(s.state, BundleState::Received);
        assert_eq!(s.bundle_id, req.bundle.id());
        let head = w.head();
        assert_eq!(w.write(|r, tx| r.submit(tx, T0 + 1, &NODE, req)).unwrap(), (s.clone(), false), "original answer");
        assert_eq!(w.head(), head);
        match w.read(|r, tx| r.receipt(tx, &s.bundle_id)) {
            Err(BpciError::NotFinal { state: BundleState::Received }) => {}
            e => panic!("{e:?}"),
        }
        ids.push(s.bundle_id);
    }
    for req in &reqs {
        let v = w.verify(req);
        assert_eq!(v, Ok(()));
        assert_eq!(
            w.write(|r, tx| r.settle(tx, T0 + 2, &req.bundle.id(), v.clone())).unwrap(),
            Some(BundleState::Validated)
        );
        assert_eq!(
            w.write(|r, tx| r.settle(tx, T0 + 2, &req.bundle.id(), v.clone())).unwrap(),
            None,
            "a second verdict"
        );
    }
    let header = w.write(|r, tx| r.build_block(tx, T0 + 3)).unwrap().expect("a block");
    assert_eq!((header.height, header.bundle_count), (1, 3));
    assert_eq!(w.write(|r, tx| r.build_block(tx, T0 + 4)).unwrap(), None, "nothing left to confirm");
    for (i, id) in ids.iter().enumerate() {
        let s = w.read(|r, tx| r.status(tx, id)).unwrap();
        assert_eq!((s.state, s.height), (BundleState::Confirmed, Some(1)));
        let receipt = w.read(|r, tx| r.receipt(tx, id)).unwrap();
        assert_eq!(receipt.index, i as u64);
        service::verify_receipt(&RustCrypto, w.server.public(), &receipt).unwrap();
        let mut forged = receipt.clone();
        forged.bundle_id = ids[(i + 1) % ids.len()];
        assert!(service::verify_receipt(&RustCrypto, w.server.public(), &forged).is_err(), "another bundle's id");
        assert!(service::verify_receipt(&RustCrypto, keys(99).public(), &receipt).is_err(), "another server");
        let mut header = receipt.clone();
        header.header.time += 1;
        assert!(service::verify_receipt(&RustCrypto, w.server.public(), &header).is_err(), "a changed header");
    }
    // Every transition is one event, in order.
    let states: Vec<(Hash, BundleState)> = w
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Bundle)
        .map(|e| (e.bundle_id.unwrap(), e.state.unwrap()))
        .collect();
    for id in &ids {
        let mine: Vec<BundleState> = states.iter().filter(|(b, _)| b == id).map(|(_, s)| *s).collect();
        assert_eq!(mine, vec![BundleState::Received, BundleState::Validated, BundleState::Confirmed]);
    }
    // A second block chains to the first.
    let req = w.bundle(4, 60_000);
    w.submit(&req);
    w.write(|r, tx| r.settle(tx, T0 + 5, &req.bundle.id(), Ok(()))).unwrap();
    let second = w.write(|r, tx| r.build_block(tx, T0 + 6)).unwrap().unwrap();
    assert_eq!((second.height, second.previous), (2, header.hash()));
    assert!(matches!(w.read(|r, tx| r.status(tx, &Hash([1; 32]))), Err(BpciError::NotFound { .. })));
}

fn malformed_bundles_are_refused_naming_the_field_and_change_nothing(w: World) {
    let before = w.snapshot();
    let good = w.bundle(4, 60_000);
    type Change = Box<dyn Fn(&mut SubmitRequest)>;
    let cases: Vec<(&str, Change)> = vec![
        ("bundle.merkle_root", Box::new(|r| r.bundle.merkle_root.0[0] ^= 1)),
        ("bundle.transaction_count", Box::new(|r| r.bundle.transaction_count = 5)),
        ("bundle.transactions", Box::new(|r| r.bundle.transactions.clear())),
        (
            "bundle.transactions",
            Box::new(|r| {
                let t = r.bundle.transactions[0];
                r.bundle.transactions[1] = t;
                r.bundle.merkle_root = schema::merkle::root(&r.bundle.transactions);
            }),
        ),
        ("bundle.valid_until", Box::new(|r| r.bundle.valid_until = T0 - 1)),
        ("bundle.valid_until", Box::new(|r| r.bundle.valid_until = T0 + 48 * 3600 * 1000)),
        ("bundle.created_at", Box::new(|r| r.bundle.created_at = T0 + 3600 * 1000)),
        ("approvals", Box::new(|r| r.approvals.clear())),
        ("approvals[0].notary", Box::new(|r| r.approvals[0].notary = "nobody".into())),
        (
            "approvals[1].notary",
            Box::new(|r| {
                let a = r.approvals[0].clone();
                r.approvals.push(a);
            }),
        ),
        ("bundle.wallet", Box::new(|r| r.bundle.wallet = Some(WalletId(Hash([4; 32]))))),
    ];
    for (field, change) in cases {
        let mut req = good.clone();
        change(&mut req);
        match w.read(|r, tx| r.check_bundle(tx, T0, &req)) {
            Err(BpciError::Invalid { field: f, .. }) if f == field => {}
            Err(BpciError::NotFound { what }) if field == "bundle.wallet" && what.starts_with("wallet") => {}
            other => panic!("{field}: {other:?}"),
        }
    }
    // A record that is not a notary's cannot approve.
    let server_record = Record {
        name: "server-1".into(),
        version: 1,
        role: Role::Server,
        endpoints: vec!["xtmp://127.0.0.1:7778".into()],
        identity: schema::IdentityBytes(w.server.public().clone()),
        owner: w.owner.id(),
    };
    let u = w.owner.sign_update(server_record, 0);
    w.write(|r, tx| r.registry_update(tx, T0, &u)).unwrap();
    let mut req = good.clone();
    req.approvals[0].notary = "server-1".into();
    match w.read(|r, tx| r.check_bundle(tx, T0, &req)) {
        Err(BpciError::Invalid { rule, .. }) => assert!(rule.contains("not a notary"), "{rule}"),
        other => panic!("{other:?}"),
    }
    let strict = Config { notary_threshold: 2, ..Config::default() };
    let rules = Rules::new(strict, Arc::new(RustCrypto), w.server.clone());
    let mut out = None;
    w.store
        .read(&mut |tx| {
            out = Some(rules.check_bundle(tx, T0, &good));
            Ok(())
        })
        .unwrap();
    match out.unwrap() {
        Err(BpciError::Invalid { field, rule }) => {
            assert_eq!(field, "approvals");
            assert_eq!(rule, "1 notaries approve, at least 2 must");
        }
        other => panic!("{other:?}"),
    }
    let after = w.snapshot();
    assert_eq!(before[2..5], after[2..5], "no transfer, bundle or bundle body was stored");
}

fn bad_approvals_reject_and_late_bundles_expire(w: World) {
    let mut forged = w.bundle(2, 60_000);
    let other = w.bundle(3, 60_000);
    forged.approvals = vec![Approval { notary: "notary-1".into(), signature: other.approvals[0].signature.clone() }];
    w.submit(&forged);
    let v = w.verify(&forged);
    assert_eq!(v, Err(String::from("approvals[0]: the signature of notary \"notary-1\" does not verify")));
    w.write(|r, tx| r.settle(tx, T0 + 1, &forged.bundle.id(), v.clone())).unwrap();
    let s = w.read(|r, tx| r.status(tx, &forged.bundle.id())).unwrap();
    assert_eq!((s.state, s.reason.as_deref()), (BundleState::Rejected, v.err().as_deref()));
    assert_eq!(
        w.read(|r, tx| r.receipt(tx, &forged.bundle.id())),
        Err(BpciError::NoReceipt { state: BundleState::Rejected })
    );

    // Checked after its deadline: Expired, whatever the verdict.
    let late = w.bundle(5, 1000);
    w.submit(&late);
    w.write(|r, tx| r.settle(tx, T0 + 1000, &late.bundle.id(), Ok(()))).unwrap();
    assert_eq!(w.read(|r, tx| r.status(tx, &late.bundle.id())).unwrap().state, BundleState::Expired);
    // Validated, then its deadline passes before a block: Expired, not confirmed.
    let waiting = w.bundle(6, 1000);
    w.submit(&waiting);
    w.write(|r, tx| r.settle(tx, T0 + 10, &waiting.bundle.id(), Ok(()))).unwrap();
    assert_eq!(w.write(|r, tx| r.build_block(tx, T0 + 2000)).unwrap(), None);
    assert_eq!(w.read(|r, tx| r.status(tx, &waiting.bundle.id())).unwrap().state, BundleState::Expired);
    // Received and never checked (the server was down): the sweep expires it.
    let lost = w.bundle(7, 1000);
    w.submit(&lost);
    assert_eq!(w.write(|r, tx| r.expire(tx, T0 + 999, 100)).unwrap(), 0);
    assert_eq!(w.write(|r, tx| r.expire(tx, T0 + 1000, 100)).unwrap(), 1);
    let s = w.read(|r, tx| r.status(tx, &lost.bundle.id())).unwrap();
    assert_eq!((s.state, s.reason.as_deref()), (BundleState::Expired, Some("deadline passed")));
    assert_eq!(w.write(|r, tx| r.expire(tx, T0 + 5000, 100)).unwrap(), 0, "final states stay");
}

fn a_resubmission_after_the_deadline_gets_the_original_answer(w: World) {
    // The answer to the first submission was lost; the node sends the
    // bundle again after its deadline passed: the original answer, not
    // INVALID, and nothing changes.
    let req = w.bundle(4, 1000);
    let first = w.submit(&req);
    let late = T0 + 5000;
    assert_eq!(w.read(|r, tx| r.check_bundle(tx, late, &req)), Ok(req.bundle.id()));
    let before = w.snapshot();
    let again = w.write(|r, tx| r.submit(tx, late, &NODE, &req)).unwrap();
    assert_eq!(again, (first, false));
    assert_eq!(before, w.snapshot());
    // A new bundle with a passed deadline is refused.
    let new = w.bundle(5, 1000);
    assert!(matches!(
        w.read(|r, tx| r.check_bundle(tx, late, &new)),
        Err(BpciError::Invalid { ref field, .. }) if field == "bundle.valid_until"
    ));
}

fn sync_pages_filters_and_expired_cursors(w: World) {
    let reqs: Vec<SubmitRequest> = (1..=5).map(|n| w.bundle(n, 60_000)).collect();
    for r in &reqs {
        w.submit(r);
    }
    let head = w.head();
    let all = w.read(|r, tx| r.sync(tx, 0, 1000, &Filter::default())).unwrap();
    assert_eq!(all.events.len() as u64, head);
    assert!(all.events.windows(2).all(|p| p[1].seq == p[0].seq + 1), "gap-free, in order");
    let p1 = w.read(|r, tx| r.sync(tx, 0, 2, &Filter::default())).unwrap();
    let p2 = w.read(|r, tx| r.sync(tx, p1.next, 2, &Filter::default())).unwrap();
    assert_eq!(p1.events.len(), 2);
    assert_eq!(p2.events[0].seq, p1.next + 1, "pages continue at the cursor");
    assert_eq!(p2.head, head);
    let one = Filter { bundles: Some(vec![reqs[2].bundle.id()]), ..Filter::default() };
    let only = w.read(|r, tx| r.sync(tx, 0, 1000, &one)).unwrap();
    assert_eq!(only.events.len(), 1);
    assert_eq!(only.events[0].bundle_id, Some(reqs[2].bundle.id()));
    let kinds = Filter { kinds: Some(vec![EventKind::Registry]), ..Filter::default() };
    assert_eq!(w.read(|r, tx| r.sync(tx, 0, 1000, &kinds)).unwrap().events.len(), 1);
    // Keep 3 events: older cursors are refused with the oldest kept.
    w.store.write(&mut |tx| ledger::trim_events(tx, 3, 1000).map(drop)).unwrap();
    let first = head - 2;
    assert_eq!(w.read(|r, tx| r.sync(tx, 0, 10, &Filter::default())), Err(BpciError::CursorExpired { first }));
    assert_eq!(w.read(|r, tx| r.sync(tx, first - 1, 10, &Filter::default())).unwrap().events.len(), 3);
}

fn registry_updates_compare_and_set_and_stamps_verify(w: World) {
    let q = w.read(|r, tx| r.query(tx, "notary-1")).unwrap();
    assert!(service::verify_record(&RustCrypto, w.server.public(), &q));
    let mut next = q.record.clone();
    next.version = 2;
    next.endpoints = vec!["xtmp://notary.example:7778".into()];
    let stale = w.owner.sign_update(next.clone(), 0);
    assert!(matches!(w.read(|r, tx| r.check_registry_update(tx, &stale)), Err(BpciError::Invalid { .. })));
    let u = w.owner.sign_update(next.clone(), 1);
    w.read(|r, tx| r.check_registry_update(tx, &u)).unwrap();
    let signed = w.write(|r, tx| r.registry_update(tx, T0, &u)).unwrap();
    assert_eq!(signed.record.version, 2);
    assert!(service::verify_record(&RustCrypto, w.server.public(), &signed));
    assert_eq!(w.write(|r, tx| r.registry_update(tx, T0 + 1, &u)).unwrap(), signed, "the same update again");
    // A concurrent writer that read version 1 loses.
    let mut racing = q.record.clone();
    racing.version = 2;
    racing.endpoints = vec!["xtmp://other:1".into()];
    let lost = w.owner.sign_update(racing, 1);
    assert!(matches!(w.write(|r, tx| r.registry_update(tx, T0, &lost)), Err(BpciError::Conflict { .. })));
    // Only the owner.
    let thief = w.wallet(20);
    let mut taken = next.clone();
    taken.version = 3;
    taken.owner = thief.id();
    let t = thief.sign_update(taken, 2);
    assert!(matches!(w.read(|r, tx| r.check_registry_update(tx, &t)), Err(BpciError::Forbidden { .. })));
    let mut forged = w.owner.sign_update(next.clone(), 1);
    forged.signature = thief.sign_update(next, 1).signature;
    assert!(matches!(w.read(|r, tx| r.check_registry_update(tx, &forged)), Err(BpciError::Unauthorized { .. })));
    // Stamps.
    let h = Hash::of(b"document");
    let s = w.write(|r, tx| r.stamp(tx, T0 + 7, Some(h), None)).unwrap();
    assert!(service::verify_stamp(&RustCrypto, w.server.public(), &s));
    let mut moved = s.clone();
    moved.at += 1;
    assert!(!service::verify_stamp(&RustCrypto, w.server.public(), &moved));
    let by_name = w.write(|r, tx| r.stamp(tx, T0, None, Some("notary-1"))).unwrap();
    assert_eq!(by_name.hash, service::record_hash(&signed.record));
    assert!(matches!(w.write(|r, tx| r.stamp(tx, T0, None, Some("missing"))), Err(BpciError::NotFound { .. })));
}

#[test]
fn store_conformance_memory() {
    let shared = Arc::new(MemoryStore::new());
    let s = shared.clone();
    conformance::all(&*Arc::new(MemoryStore::new()), &move || Box::new(s.clone()));
}

#[test]
fn store_conformance_redb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conformance.redb");
    let store = RedbStore::open(dir.path().join("fresh.redb")).unwrap();
    conformance::all(&store, &move || Box::new(RedbStore::open(&path).unwrap()));
}
