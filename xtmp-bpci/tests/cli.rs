//! The `bpci` command end to end: a real `bpci serve` and every client
//! command against it: wallets, a notary and its registry record, a bundle
//! file submitted, watched to Confirmed and its receipt verified, the same
//! after a `kill -9` and a restart on the same store, and bad input refused
//! with an error that names what was wrong while nothing changes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

struct Bpci {
    dir: tempfile::TempDir,
    endpoint: String,
}

impl Bpci {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn serve(&mut self, listen: &str) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bpci"))
            .args(["serve", "--open", "--listen", listen, "--initial-balance", "500"])
            .arg("--store")
            .arg(self.path("bpci.redb"))
            .arg("--identity")
            .arg(self.path("server.key"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        self.endpoint = line.split_whitespace().nth(1).unwrap().to_string();
        child
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bpci"))
            .args(args)
            .arg("--json")
            .env("BPCI_XTMP_ENDPOINT", &self.endpoint)
            .env("BPCI_NODE_IDENTITY", self.path("node.key"))
            .env("BPCI_SERVER_KEY", self.path("server.key.pub"))
            .env("RUST_LOG", "warn")
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; its last JSON line.
    fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "bpci {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        serde_json::from_str(text.lines().last().expect("a line of output")).unwrap()
    }

    /// Makes the notary `notary.key` and registers it as `notary-1`, owned
    /// by the wallet file `owner`; the record as printed.
    fn notary(&self, owner: &str) -> Value {
        self.ok(&["notary", "new", "--out", "notary.key"]);
        let args = ["registry", "update", "--name", "notary-1", "--role", "notary", "--key", "notary.key.pub"];
        self.ok(&[&args[..], &["--owner", owner]].concat())
    }

    /// Runs a command that must fail; its error text.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "bpci {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }
}

fn write_bundle(path: &Path, tag: &str, extra: &[(&str, Value)]) {
    let txs: Vec<String> = (0..4).map(|i| format!("{:0>64}", format!("{tag}{i}"))).collect();
    let mut v = serde_json::json!({
        "transactions": txs,
        "total_value": 1234,
        "valid_for_secs": 600,
        "node": { "node_id": "bpi-core-node", "ledger_version": "1.0.0", "consensus": "BPI-IBFT", "network": "bpi-testnet" },
        "endorsement": "00ff",
    });
    for (k, x) in extra {
        v[*k] = x.clone();
    }
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn the_whole_flow_through_the_command_and_after_a_kill() {
    let mut b = Bpci { dir: tempfile::tempdir().unwrap(), endpoint: String::new() };
    let mut server = b.serve("xtmp://127.0.0.1:0");
    let alice = b.ok(&["wallet", "new", "--out", "alice.key"])["wallet"].as_str().unwrap().to_string();
    let bob = b.ok(&["wallet", "new", "--out", "bob.key"])["wallet"].as_str().unwrap().to_string();
    assert_eq!(b.ok(&["wallet", "register", "alice.key"])["initial_balance"], 500);
    b.ok(&["wallet", "register", "bob.key"]);
    let t = b.ok(&["wallet", "transfer", "alice.key", "--to", &bob, "--amount", "120"]);
    assert_eq!((t["balance"].as_u64(), t["nonce"].as_u64()), (Some(380), Some(0)));
    assert_eq!(b.ok(&["wallet", "balance", "bob.key"])["balance"], 620);

    // A notary, its record (owned by alice), a bundle file it approves.
    let rec = b.notary("alice.key");
    assert_eq!((rec["version"].as_u64(), rec["owner"].as_str()), (Some(1), Some(alice.as_str())));
    assert_eq!(b.ok(&["registry", "query", "notary-1"])["role"], "notary");
    write_bundle(&b.path("bundle.json"), "a", &[]);
    let signed = b.ok(&["notary", "sign", "bundle.json", "--notary", "notary.key", "--name", "notary-1"]);
    let id = signed["bundle_id"].as_str().unwrap().to_string();
    let sub = b.ok(&["bundle", "submit", "bundle.json"]);
    assert_eq!((sub["bundle_id"].as_str(), sub["state"].as_str()), (Some(id.as_str()), Some("Received")));
    let watch = b.run(&["bundle", "watch", &id]);
    assert!(watch.status.success(), "watch exits 0 on Confirmed: {}", String::from_utf8_lossy(&watch.stderr));
    let states: Vec<String> = String::from_utf8(watch.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["Received", "Validated", "Confirmed"]);
    let receipt = b.ok(&["bundle", "receipt", &id]);
    assert_eq!((receipt["verified"].as_bool(), receipt["height"].as_u64()), (Some(true), Some(1)));
    let stamp = b.ok(&["registry", "stamp", &"ab".repeat(32)]);
    assert_eq!(stamp["verified"], true);
    let events = b.run(&["events", "--after", "0"]);
    assert!(String::from_utf8(events.stdout).unwrap().lines().count() >= 8);

    // Bad input: each refused with what was wrong, and nothing changes.
    let before = b.ok(&["events", "--after", "0"])["seq"].as_u64().unwrap();
    std::fs::write(b.path("broken.json"), "{ not json").unwrap();
    assert!(b.fails(&["bundle", "submit", "broken.json"]).contains("not JSON"));
    write_bundle(&b.path("badroot.json"), "b", &[("merkle_root", Value::from("11".repeat(32)))]);
    b.ok(&["notary", "sign", "badroot.json", "--notary", "notary.key", "--name", "notary-1"]);
    let e = b.fails(&["bundle", "submit", "badroot.json"]);
    assert!(e.contains("0x0100") && e.contains("bundle.merkle_root"), "{e}");
    write_bundle(&b.path("unsigned.json"), "c", &[]);
    let e = b.fails(&["bundle", "submit", "unsigned.json"]);
    assert!(e.contains("approvals: 0 notaries approve, at least 1 must"), "{e}");
    write_bundle(
        &b.path("late.json"),
        "d",
        &[("valid_until", Value::from(1000u64)), ("created_at", Value::from(1u64))],
    );
    let e = b.fails(&["bundle", "submit", "late.json"]);
    assert!(e.contains("bundle.valid_until: has passed"), "{e}");
    let nobody = format!("w:{}", "0".repeat(64));
    let e = b.fails(&["wallet", "transfer", "alice.key", "--to", &nobody, "--amount", "1", "--nonce", "1"]);
    assert!(e.contains("0x0101") && e.contains("not found"), "{e}");
    let e = b.fails(&["wallet", "transfer", "alice.key", "--to", &bob, "--amount", "100000", "--nonce", "1"]);
    assert!(e.contains("0x0108") && e.contains("balance 380 is below 100000"), "{e}");
    assert_eq!(b.ok(&["events", "--after", "0"])["seq"].as_u64().unwrap(), before, "no refusal wrote an event");

    // kill -9, restart on the same store: everything is still there.
    let port = b.endpoint.rsplit(':').next().unwrap().to_string();
    server.kill().unwrap();
    server.wait().unwrap();
    let mut server = b.serve(&format!("xtmp://127.0.0.1:{port}"));
    assert_eq!(b.ok(&["bundle", "status", &id])["state"], "Confirmed");
    assert_eq!(b.ok(&["bundle", "receipt", &id])["verified"], true);
    assert_eq!(b.ok(&["wallet", "balance", "alice.key"])["balance"], 380);
    // A second bundle after the restart goes all the way too.
    write_bundle(&b.path("second.json"), "e", &[]);
    let id2 = b.ok(&["notary", "sign", "second.json", "--notary", "notary.key", "--name", "notary-1"])["bundle_id"]
        .as_str()
        .unwrap()
        .to_string();
    b.ok(&["bundle", "submit", "second.json"]);
    assert!(b.run(&["bundle", "watch", &id2]).status.success());
    assert_eq!(b.ok(&["bundle", "receipt", &id2])["height"], 2);
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn the_demo_runs_and_confirms_every_bundle_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_bpci"))
        .args(["demo", "--bundles", "8", "--interval-ms", "5"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("8 submitted, 8 confirmed exactly once, 8 receipts verified offline"), "{text}");
    assert!(text.contains("= 2000 (supply conserved)"), "{text}");
    assert!(text.contains("the server stops abruptly"), "{text}");
}

/// Issue 39's outbox test: a node process killed between queueing its
/// bundles and their answers, restarted on the same outbox file, ends with
/// every bundle confirmed exactly once.
#[test]
fn a_node_killed_before_its_answers_ends_with_every_bundle_confirmed_once() {
    let mut b = Bpci { dir: tempfile::tempdir().unwrap(), endpoint: String::new() };
    let mut server = b.serve("xtmp://127.0.0.1:0");
    b.ok(&["wallet", "new", "--out", "owner.key"]);
    b.ok(&["wallet", "register", "owner.key"]);
    b.notary("owner.key");
    let node = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bpci"));
        cmd.args(["node", "--outbox", "node.outbox", "--json"])
            .args(extra)
            .env("BPCI_XTMP_ENDPOINT", &b.endpoint)
            .env("BPCI_NODE_IDENTITY", b.path("node.key"))
            .env("BPCI_SERVER_KEY", b.path("server.key.pub"))
            .env("RUST_LOG", "warn")
            .current_dir(b.dir.path());
        cmd
    };
    let mut first = node(&["--bundles", "40", "--notary", "notary.key", "--name", "notary-1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let queued: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(queued["queued"], 40, "every bundle is on disk before anything is answered");
    // Let it get some answers, then kill it while it sends the rest.
    for _ in 0..5 {
        let l: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert!(l["answered"].is_string(), "{l}");
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let out = node(&[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last: Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!((last["bundles"].as_u64(), last["confirmed"].as_u64()), (Some(40), Some(40)));
    // The server's log: each bundle received once, confirmed once.
    let log = b.run(&["events", "--after", "0"]);
    let mut received = std::collections::HashMap::<String, (u32, u32)>::new();
    for l in String::from_utf8(log.stdout).unwrap().lines() {
        let e: Value = serde_json::from_str(l).unwrap();
        if let Some(id) = e["bundle_id"].as_str() {
            let c = received.entry(id.to_string()).or_default();
            match e["state"].as_str() {
                Some("Received") => c.0 += 1,
                Some("Confirmed") => c.1 += 1,
                _ => {}
            }
        }
    }
    assert_eq!(received.len(), 40);
    assert!(received.values().all(|c| *c == (1, 1)), "{received:?}");
    server.kill().unwrap();
    server.wait().unwrap();
}
