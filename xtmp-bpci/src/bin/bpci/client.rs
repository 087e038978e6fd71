//! The client commands: wallets, notaries, bundles, the registry, events.
//! Each connects as the node (`--identity`), pins the server
//! (`--server-key`), prints text or (`--json`) one JSON object per line,
//! and on a refusal prints the server's code and reason and exits non-zero.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};
use xtmp_adapter::Endpoint;
use xtmp_bpci::schema::{
    self, Approval, Bundle, Capability, Filter, Hash, NodeMetadata, Record, Role, Signature, SubmitRequest, WalletId,
    merkle,
};
use xtmp_bpci::{BpciClient, ClientError, Notary, Wallet, WatchItem};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::{IdentityKeypair, PublicIdentity};

/// Options every client command takes.
#[derive(Args, Clone)]
pub(crate) struct Common {
    /// The server's endpoint.
    #[arg(long, env = "BPCI_XTMP_ENDPOINT", default_value = "xtmp://localhost:7778", global = true)]
    endpoint: String,
    /// The node's identity file (created if missing).
    #[arg(long, env = "BPCI_NODE_IDENTITY", default_value = "node.key", global = true)]
    identity: PathBuf,
    /// The server's public identity file (`bpci serve` writes it next to
    /// its identity, as IDENTITY.pub).
    #[arg(long, env = "BPCI_SERVER_KEY", default_value = "server.key.pub", global = true)]
    server_key: PathBuf,
    /// One JSON object per line on stdout.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub(crate) enum WalletCmd {
    /// Writes a new wallet to FILE (and FILE.pub); prints its id.
    New {
        #[arg(long)]
        out: PathBuf,
    },
    /// Registers the wallet FILE.
    Register { wallet: PathBuf },
    /// The wallet's balance (authenticates it in the session first).
    Balance { wallet: PathBuf },
    /// Transfers from the wallet FILE.
    Transfer {
        wallet: PathBuf,
        /// The receiving wallet's id (`w:` and 64 hex digits).
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: u64,
        /// The sender's nonce (default: its next one, asked of the server).
        #[arg(long)]
        nonce: Option<u64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum NotaryCmd {
    /// Writes a new notary identity to FILE (and FILE.pub).
    New {
        #[arg(long)]
        out: PathBuf,
    },
    /// Adds the notary NAME's approval to the bundle file (in place).
    Sign {
        bundle: PathBuf,
        #[arg(long)]
        notary: PathBuf,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum BundleCmd {
    /// Submits a JSON bundle file (converted to the canonical form).
    Submit { file: PathBuf },
    /// A bundle's state.
    Status { id: String },
    /// Prints each transition until a final state; exits 0 on Confirmed.
    Watch { id: String },
    /// Prints the bundle's receipt, verified against the server's identity.
    Receipt { id: String },
}

#[derive(Subcommand)]
pub(crate) enum RegistryCmd {
    /// A record, its server signature checked.
    Query { name: String },
    /// Creates or replaces a record owned by a wallet.
    Update {
        #[arg(long)]
        name: String,
        /// `server` or `notary`.
        #[arg(long)]
        role: String,
        /// The public identity file the record names.
        #[arg(long)]
        key: PathBuf,
        /// The owner wallet's file.
        #[arg(long)]
        owner: PathBuf,
        /// Endpoints (for a server).
        #[arg(long)]
        endpoint: Vec<String>,
    },
    /// The server's signed timestamp of a 32-byte hash (64 hex digits).
    Stamp { hash: String },
}

fn io(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

pub(crate) fn load_keys(path: &Path) -> Result<IdentityKeypair, String> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    IdentityKeypair::from_pem(&RustCrypto, &text).map_err(|e| io(path, e))
}

fn load_public(path: &Path) -> Result<PublicIdentity, String> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    PublicIdentity::from_pem(&RustCrypto, &text).map_err(|e| io(path, e))
}

fn refused(e: ClientError) -> String {
    match e {
        ClientError::Bpci(b) => format!("the server refused (code 0x{:04x}): {}", b.code().0, b.reason()),
        other => other.to_string(),
    }
}

fn hash_arg(text: &str) -> Result<Hash, String> {
    Hash::from_hex(text).ok_or_else(|| format!("{text:?}: a hash is 64 hexadecimal digits"))
}

async fn connect(c: &Common) -> Result<BpciClient, String> {
    let endpoint: Endpoint = c.endpoint.parse().map_err(|e| format!("--endpoint {}: {e}", c.endpoint))?;
    if !c.identity.exists() {
        crate::keygen(&c.identity)?;
    }
    let node = Arc::new(load_keys(&c.identity)?);
    let server = load_public(&c.server_key)?;
    BpciClient::connect(xtmp_tokio::Tokio::shared(), &endpoint, node, server).await.map_err(refused)
}

fn print(json: bool, value: Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

pub(crate) async fn wallet(c: &Common, cmd: WalletCmd) -> Result<(), String> {
    if let WalletCmd::New { out } = &cmd {
        let id = crate::keygen(out)?;
        let wallet = WalletId::of(&id);
        print(c.json, json!({ "wallet": wallet.to_string() }), wallet.to_string());
        return Ok(());
    }
    let bpci = connect(c).await?;
    match cmd {
        WalletCmd::New { .. } => unreachable!("handled above"),
        WalletCmd::Register { wallet } => {
            let w = Wallet::from_keys(Arc::new(load_keys(&wallet)?));
            let r = bpci.register_wallet(&w).await.map_err(refused)?;
            print(
                c.json,
                json!({ "wallet": r.wallet.to_string(), "registration": r.registration, "initial_balance": r.initial_balance }),
                format!("registered {} (registration {}), balance {}", r.wallet, r.registration, r.initial_balance),
            );
        }
        WalletCmd::Balance { wallet } => {
            let w = Wallet::from_keys(Arc::new(load_keys(&wallet)?));
            bpci.authenticate(&w, &[Capability::ReadBalance]).await.map_err(refused)?;
            let b = bpci.balance(w.id()).await.map_err(refused)?;
            print(
                c.json,
                json!({ "wallet": b.wallet.to_string(), "balance": b.balance, "next_nonce": b.next_nonce, "as_of": b.as_of }),
                format!("{}: balance {}, next nonce {}", b.wallet, b.balance, b.next_nonce),
            );
        }
        WalletCmd::Transfer { wallet, to, amount, nonce } => {
            let w = Wallet::from_keys(Arc::new(load_keys(&wallet)?));
            let to: WalletId = to.parse().map_err(|e| format!("--to: {e}"))?;
            let nonce = match nonce {
                Some(n) => n,
                None => {
                    bpci.authenticate(&w, &[Capability::ReadBalance]).await.map_err(refused)?;
                    bpci.balance(w.id()).await.map_err(refused)?.next_nonce
                }
            };
            let r = bpci.transfer(&w, to, amount, nonce).await.map_err(refused)?;
            print(
                c.json,
                json!({ "transfer_id": r.transfer_id.to_hex(), "seq": r.seq, "balance": r.balance, "nonce": nonce }),
                format!("transferred {amount} to {to} (nonce {nonce}): balance {}, event {}", r.balance, r.seq),
            );
        }
    }
    Ok(())
}

fn sig_json(s: &Signature) -> Value {
    json!({ "mldsa": hex::encode(&s.mldsa[..]), "ed25519": hex::encode(s.ed25519) })
}

fn sig_from(v: &Value, field: &str) -> Result<Signature, String> {
    let part = |k: &str| -> Result<Vec<u8>, String> {
        hex::decode(v[k].as_str().ok_or_else(|| format!("{field}.{k}: a hex string"))?)
            .map_err(|e| format!("{field}.{k}: {e}"))
    };
    let mldsa: [u8; xtmp_core::crypto::MLDSA_SIG_LEN] =
        part("mldsa")?.try_into().map_err(|_| format!("{field}.mldsa: 4627 bytes"))?;
    let ed25519 = part("ed25519")?.try_into().map_err(|_| format!("{field}.ed25519: 64 bytes"))?;
    Ok(Signature { mldsa: Box::new(mldsa), ed25519 })
}

/// Reads a human-readable bundle file: `transactions` (hex ids),
/// `total_value`, `valid_for_secs` or `valid_until` (ms), optional
/// `created_at` (ms, default now), `node` metadata, `endorsement` (hex),
/// `wallet`, `merkle_root` and `transaction_count` (computed when absent),
/// `approvals` (`notary`, `signature`).
fn read_bundle(path: &Path) -> Result<(Value, SubmitRequest), String> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| io(path, format!("not JSON: {e}")))?;
    let err = |field: &str, rule: &str| io(path, format!("{field}: {rule}"));
    let txs = v["transactions"].as_array().ok_or_else(|| err("transactions", "an array of hex ids"))?;
    let transactions = txs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_str().and_then(Hash::from_hex).ok_or_else(|| err(&format!("transactions[{i}]"), "64 hex digits"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = crate::now_ms();
    let created_at = v["created_at"].as_u64().unwrap_or(now);
    let valid_until = match (v["valid_until"].as_u64(), v["valid_for_secs"].as_u64()) {
        (Some(t), _) => t,
        (None, Some(s)) => created_at + s * 1000,
        (None, None) => return Err(err("valid_until", "give valid_until (ms) or valid_for_secs")),
    };
    let s = |k: &str| v["node"][k].as_str().unwrap_or_default().to_string();
    let bundle = Bundle {
        merkle_root: match v["merkle_root"].as_str() {
            Some(h) => Hash::from_hex(h).ok_or_else(|| err("merkle_root", "64 hex digits"))?,
            None => merkle::root(&transactions),
        },
        transaction_count: v["transaction_count"].as_u64().unwrap_or(transactions.len() as u64),
        transactions,
        total_value: v["total_value"].as_u64().ok_or_else(|| err("total_value", "an integer (minor units)"))?,
        created_at,
        valid_until,
        node: NodeMetadata {
            node_id: s("node_id"),
            ledger_version: s("ledger_version"),
            consensus: s("consensus"),
            network: s("network"),
        },
        endorsement: match v["endorsement"].as_str() {
            Some(h) => hex::decode(h).map_err(|e| err("endorsement", &e.to_string()))?,
            None => Vec::new(),
        },
        wallet: match v["wallet"].as_str() {
            Some(w) => Some(w.parse().map_err(|e: &str| err("wallet", e))?),
            None => None,
        },
    };
    let mut approvals = Vec::new();
    for (i, a) in v["approvals"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        let field = format!("approvals[{i}]");
        let notary = a["notary"].as_str().ok_or_else(|| err(&field, "notary: a registry name"))?.to_string();
        approvals.push(Approval { notary, signature: sig_from(&a["signature"], &field).map_err(|e| io(path, e))? });
    }
    Ok((v, SubmitRequest { bundle, approvals }))
}

pub(crate) async fn notary(c: &Common, cmd: NotaryCmd) -> Result<(), String> {
    match cmd {
        NotaryCmd::New { out } => {
            let id = crate::keygen(&out)?;
            print(c.json, json!({ "key_id": id.key_id().to_string() }), id.key_id().to_string());
        }
        NotaryCmd::Sign { bundle, notary, name } => {
            let (mut v, req) = read_bundle(&bundle)?;
            // Freeze what was computed, so the file's bundle id stays.
            v["created_at"] = json!(req.bundle.created_at);
            v["valid_until"] = json!(req.bundle.valid_until);
            let n = Notary::new(name.clone(), Arc::new(load_keys(&notary)?));
            let a = n.approve(&req.bundle);
            let approvals = v["approvals"].as_array().cloned().unwrap_or_default();
            let mut approvals: Vec<Value> = approvals.into_iter().filter(|x| x["notary"] != json!(name)).collect();
            approvals.push(json!({ "notary": name, "signature": sig_json(&a.signature) }));
            v["approvals"] = Value::Array(approvals);
            let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
            std::fs::write(&bundle, text + "\n").map_err(|e| io(&bundle, e))?;
            let id = req.bundle.id();
            print(c.json, json!({ "bundle_id": id.to_hex(), "notary": name }), format!("approved {id} as {name}"));
        }
    }
    Ok(())
}

pub(crate) async fn bundle(c: &Common, cmd: BundleCmd) -> Result<(), String> {
    let bpci = connect(c).await?;
    match cmd {
        BundleCmd::Submit { file } => {
            let (_, req) = read_bundle(&file)?;
            let s = bpci.submit(&req).await.map_err(refused)?;
            print(
                c.json,
                json!({ "bundle_id": s.bundle_id.to_hex(), "state": s.state.name(), "seq": s.seq }),
                format!("{} {} (event {})", s.bundle_id, s.state, s.seq),
            );
        }
        BundleCmd::Status { id } => {
            let s = bpci.status(hash_arg(&id)?).await.map_err(refused)?;
            print(
                c.json,
                json!({ "bundle_id": s.bundle_id.to_hex(), "state": s.state.name(), "seq": s.seq, "reason": s.reason, "height": s.height }),
                format!(
                    "{} {}{}",
                    s.bundle_id,
                    s.state,
                    s.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
                ),
            );
        }
        BundleCmd::Watch { id } => {
            let id = hash_arg(&id)?;
            let mut w = bpci.watch_bundle(id, 0);
            let mut last = None;
            while let Some(item) = w.next().await {
                match item.map_err(refused)? {
                    WatchItem::Event(e) => {
                        let state = e.state.map(|s| s.name()).unwrap_or("?");
                        print(
                            c.json,
                            json!({ "bundle_id": id.to_hex(), "state": state, "seq": e.seq, "at": e.at, "reason": e.reason }),
                            format!(
                                "{id} {state} (event {}){}",
                                e.seq,
                                e.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
                            ),
                        );
                        last = e.state;
                    }
                    WatchItem::Resynced { statuses, .. } => {
                        for s in statuses {
                            print(
                                c.json,
                                json!({ "bundle_id": id.to_hex(), "state": s.state.name(), "seq": s.seq, "resynced": true }),
                                format!("{id} {} (resynced: earlier events are gone)", s.state),
                            );
                            last = Some(s.state);
                        }
                    }
                }
            }
            if last != Some(schema::BundleState::Confirmed) {
                return Err(format!("bundle {id} ended {}", last.map_or("without a final state", |s| s.name())));
            }
        }
        BundleCmd::Receipt { id } => {
            let r = bpci.receipt(hash_arg(&id)?).await.map_err(refused)?;
            print(
                c.json,
                json!({
                    "bundle_id": r.bundle_id.to_hex(), "height": r.header.height, "block": r.header.hash().to_hex(),
                    "bundles_root": r.header.bundles_root.to_hex(), "index": r.index,
                    "path": r.path.iter().map(Hash::to_hex).collect::<Vec<_>>(), "verified": true,
                }),
                format!(
                    "{} confirmed in block {} ({}), index {} of {}: receipt verified against the server's identity",
                    r.bundle_id,
                    r.header.height,
                    r.header.hash(),
                    r.index,
                    r.header.bundle_count
                ),
            );
        }
    }
    Ok(())
}

pub(crate) async fn registry(c: &Common, cmd: RegistryCmd) -> Result<(), String> {
    let bpci = connect(c).await?;
    let show = |r: &schema::SignedRecord| {
        let role = match r.record.role {
            Role::Server => "server",
            Role::Notary => "notary",
        };
        (
            json!({
                "name": r.record.name, "version": r.record.version, "role": role, "endpoints": r.record.endpoints,
                "key_id": r.record.identity.0.key_id().to_string(), "owner": r.record.owner.to_string(), "seq": r.seq,
            }),
            format!(
                "{} v{} {role} {} owner {} {:?} (signed by the server, event {})",
                r.record.name,
                r.record.version,
                r.record.identity.0.key_id(),
                r.record.owner,
                r.record.endpoints,
                r.seq
            ),
        )
    };
    match cmd {
        RegistryCmd::Query { name } => {
            let r = bpci.registry_query(&name).await.map_err(refused)?;
            let (j, t) = show(&r);
            print(c.json, j, t);
        }
        RegistryCmd::Update { name, role, key, owner, endpoint } => {
            let role = match role.as_str() {
                "server" => Role::Server,
                "notary" => Role::Notary,
                other => return Err(format!("--role {other}: server or notary")),
            };
            let owner = Wallet::from_keys(Arc::new(load_keys(&owner)?));
            let current = match bpci.registry_query(&name).await {
                Ok(r) => r.record.version,
                Err(ClientError::Bpci(xtmp_bpci::BpciError::NotFound { .. })) => 0,
                Err(e) => return Err(refused(e)),
            };
            let record = Record {
                name,
                version: current + 1,
                role,
                endpoints: endpoint,
                identity: schema::IdentityBytes(load_public(&key)?),
                owner: owner.id(),
            };
            let r = bpci.registry_update(&owner, record, current).await.map_err(refused)?;
            let (j, t) = show(&r);
            print(c.json, j, t);
        }
        RegistryCmd::Stamp { hash } => {
            let s = bpci.stamp(hash_arg(&hash)?).await.map_err(refused)?;
            print(
                c.json,
                json!({ "hash": s.hash.to_hex(), "at": s.at, "seq": s.seq, "verified": true }),
                format!("{} stamped at {} ms (event {}): signature verified", s.hash, s.at, s.seq),
            );
        }
    }
    Ok(())
}

pub(crate) async fn events(c: &Common, after: u64, follow: bool) -> Result<(), String> {
    let bpci = connect(c).await?;
    let show = |e: &schema::Event| {
        let v = json!({
            "seq": e.seq, "at": e.at, "kind": format!("{:?}", e.kind),
            "bundle_id": e.bundle_id.map(|h| h.to_hex()), "state": e.state.map(|s| s.name()),
            "reason": e.reason, "height": e.height, "wallet": e.wallet.map(|w| w.to_string()),
            "to": e.to.map(|w| w.to_string()), "amount": e.amount, "name": e.name,
        });
        let text = format!("{} {:?} {}", e.seq, e.kind, serde_json::to_string(&v).unwrap_or_default());
        print(c.json, v, text);
    };
    if follow {
        let mut w = bpci.watch_events(Filter::default(), after);
        while let Some(item) = w.next().await {
            match item.map_err(refused)? {
                WatchItem::Event(e) => show(&e),
                WatchItem::Resynced { after, resumed_after, .. } => {
                    eprintln!("bpci: events {after}..{resumed_after} are gone (retention); carrying on");
                }
            }
        }
        return Ok(());
    }
    let mut cursor = after;
    loop {
        let page = bpci.sync(cursor, 1000, None).await.map_err(refused)?;
        page.events.iter().for_each(show);
        cursor = page.next;
        if cursor >= page.head {
            return Ok(());
        }
    }
}

/// `bpci node`: a BPI node's loop over a durable outbox: queue `bundles`
/// generated bundles (approved by the notary), send everything the outbox
/// holds, then follow every bundle it sent to a final state.
pub(crate) async fn node(
    c: &Common,
    outbox: &Path,
    notary: Option<(&Path, &str)>,
    bundles: usize,
) -> Result<(), String> {
    let bpci = connect(c).await?;
    let ob = xtmp_bpci::Outbox::open(outbox, bpci.clone(), xtmp_tokio::Tokio::shared(), 100_000)
        .map_err(|e| e.to_string())?;
    if bundles > 0 {
        let (key, name) = notary.ok_or("--notary and --name are needed to approve new bundles")?;
        let n = Notary::new(name, Arc::new(load_keys(key)?));
        let now = crate::now_ms();
        for i in 0..bundles {
            let txs = (0..4).map(|t| Hash::of(format!("{} {now} {i} {t}", outbox.display()).as_bytes())).collect();
            let bundle = xtmp_bpci::service::bundle_of(txs, 10 + i as u64, now, now + 3_600_000);
            let req = SubmitRequest { approvals: vec![n.approve(&bundle)], bundle };
            ob.submit(&req).map_err(|e| e.to_string())?;
        }
    }
    let s = ob.stats().map_err(|e| e.to_string())?;
    print(
        c.json,
        json!({ "queued": s.pending, "answered": s.answered }),
        format!("outbox: {} to send, {} answered", s.pending, s.answered),
    );
    let json_out = c.json;
    ob.flush_with(|id, seq| {
        print(json_out, json!({ "answered": id.to_hex(), "seq": seq }), format!("answered {id} (event {seq})"))
    })
    .await
    .map_err(|e| e.to_string())?;
    let s = ob.stats().map_err(|e| e.to_string())?;
    print(
        c.json,
        json!({ "sent": s.answered, "refused": s.refused, "retries": s.retries }),
        format!("outbox: {} answered, {} refused, {} retries", s.answered, s.refused, s.retries),
    );
    loop {
        let head = bpci.sync(0, 1, None).await.map_err(refused)?.head;
        let left = ob.reconcile().await.map_err(|e| e.to_string())?;
        if left == 0 {
            break;
        }
        // Wait for the next event rather than poll on a timer.
        let mut w = bpci.watch_events(Filter::default(), head);
        w.next().await;
    }
    let all = ob.bundles().map_err(|e| e.to_string())?;
    let confirmed = all.iter().filter(|(_, s)| *s == Some(schema::BundleState::Confirmed)).count();
    print(
        c.json,
        json!({ "bundles": all.len(), "confirmed": confirmed }),
        format!("outbox: {} bundles, {confirmed} confirmed", all.len()),
    );
    Ok(())
}
