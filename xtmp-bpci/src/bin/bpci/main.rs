//! The `bpci` command: `bpci serve` runs a BPCI server on a redb store;
//! `bpci keygen` writes an identity (a server's, a node's, a wallet's or a
//! notary's); `wallet`, `notary`, `bundle`, `registry` and `events` are the
//! BPI node's side.

mod client;
mod demo;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xtmp_adapter::Endpoint;
use xtmp_bpci::server::{self, Admission};
use xtmp_bpci::{BpciServer, Config, Engine, RedbStore, Rules, Store};
use xtmp_core::crypto::{CryptoProvider, RustCrypto};
use xtmp_core::handshake::{IdentityKeypair, KeyId, PublicIdentity};

#[derive(Parser)]
#[command(
    name = "bpci",
    version,
    about = "BPCI over XTMP: the server, and a BPI node's wallets, notaries, bundles and registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: client::Common,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a BPCI server.
    Serve(Serve),
    /// Writes a new identity to FILE (owner-only permissions) and its
    /// public half to FILE.pub.
    Keygen {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Wallets: new, register, balance, transfer.
    #[command(subcommand)]
    Wallet(client::WalletCmd),
    /// Notaries: new, sign (a bundle file).
    #[command(subcommand)]
    Notary(client::NotaryCmd),
    /// Bundles: submit, status, watch, receipt.
    #[command(subcommand)]
    Bundle(client::BundleCmd),
    /// The registry: query, update, stamp.
    #[command(subcommand)]
    Registry(client::RegistryCmd),
    /// The whole application in one process: a server, a notary, two
    /// wallets and a node submitting bundles, with a server restart.
    Demo {
        /// Bundles the node submits.
        #[arg(long, default_value_t = 40)]
        bundles: usize,
        /// Milliseconds between two submissions.
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
    },
    /// A BPI node on a durable outbox: queue generated bundles, send
    /// everything queued (again after a crash), follow them to a final state.
    Node {
        /// The outbox file (created if missing).
        #[arg(long)]
        outbox: PathBuf,
        /// New bundles to queue (0: only send what the outbox holds).
        #[arg(long, default_value_t = 0)]
        bundles: usize,
        /// The notary identity that approves new bundles.
        #[arg(long)]
        notary: Option<PathBuf>,
        /// The notary's registry name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Events after a cursor (and, with --follow, as they happen).
    Events {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Parser)]
struct Serve {
    /// The redb file holding the ledger (created if missing).
    #[arg(long)]
    store: PathBuf,
    /// The server's identity file (created if missing, with FILE.pub).
    #[arg(long)]
    identity: PathBuf,
    /// Endpoints to listen on (`xtmp://127.0.0.1:7778`, `xtmp+udp://...`,
    /// `xtmp+hybrid://...`, `xtmp+ws://...`).
    #[arg(long, required = true, num_args = 1..)]
    listen: Vec<String>,
    /// Admit any node that authenticates (otherwise --allow is needed).
    #[arg(long, conflicts_with = "allow")]
    open: bool,
    /// A file of node key ids (`xtmp1:` and 32 hex digits), one per line.
    #[arg(long)]
    allow: Option<PathBuf>,
    /// Notary approvals a bundle needs.
    #[arg(long, default_value_t = 1)]
    notary_threshold: usize,
    /// The balance of a new wallet, in minor units.
    #[arg(long, default_value_t = 1_000_000)]
    initial_balance: u64,
    /// Events kept for cursors.
    #[arg(long, default_value_t = 1_000_000)]
    event_retention: u64,
    /// Writes waiting for the store, server-wide.
    #[arg(long, default_value_t = 8192)]
    write_queue: usize,
    /// Writes per second one node may make.
    #[arg(long, default_value_t = 2000)]
    node_rate: u32,
    /// Threads checking notary signatures (0: one per core).
    #[arg(long, default_value_t = 0)]
    verifiers: usize,
    /// The domain wallets sign when they authenticate.
    #[arg(long, default_value = "bpci")]
    domain: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".parse().expect("a filter")),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let _entered = rt.enter();
    let c = &cli.common;
    let result = match cli.command {
        Command::Keygen { out } => keygen(&out).map(|id| println!("{}", id.key_id())),
        Command::Serve(s) => rt.block_on(serve(s)),
        Command::Wallet(w) => rt.block_on(client::wallet(c, w)),
        Command::Notary(n) => rt.block_on(client::notary(c, n)),
        Command::Bundle(b) => rt.block_on(client::bundle(c, b)),
        Command::Registry(r) => rt.block_on(client::registry(c, r)),
        Command::Events { after, follow } => rt.block_on(client::events(c, after, follow)),
        Command::Node { outbox, bundles, notary, name } => {
            let notary = notary.as_deref().zip(name.as_deref());
            rt.block_on(client::node(c, &outbox, notary, bundles))
        }
        Command::Demo { bundles, interval_ms } => {
            rt.block_on(demo::run(bundles.max(2), std::time::Duration::from_millis(interval_ms)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bpci: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)?.write_all(text.as_bytes())
}

fn pub_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn keygen(out: &Path) -> Result<PublicIdentity, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed);
    let id = IdentityKeypair::generate(&RustCrypto, &mut rng).map_err(|e| e.to_string())?;
    write_private(out, &id.to_pem()).map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(pub_path(out), id.public().to_pem()).map_err(|e| format!("{}.pub: {e}", out.display()))?;
    Ok(id.public().clone())
}

fn load_identity(path: &Path) -> Result<IdentityKeypair, String> {
    if !path.exists() {
        keygen(path)?;
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    IdentityKeypair::from_pem(&RustCrypto, &text).map_err(|e| format!("{}: {e}", path.display()))
}

fn allow_list(path: &Path) -> Result<Vec<KeyId>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| KeyId::parse(l).ok_or_else(|| format!("{} line {}: not a key id: {l}", path.display(), i + 1)))
        .collect()
}

async fn serve(s: Serve) -> Result<(), String> {
    let identity = Arc::new(load_identity(&s.identity)?);
    let provider: Arc<dyn CryptoProvider> = Arc::new(RustCrypto);
    let admission = match (&s.allow, s.open) {
        (Some(f), _) => Admission::AllowList(allow_list(f)?),
        (None, true) => Admission::Open,
        (None, false) => return Err(String::from("say which nodes to admit: --allow FILE or --open")),
    };
    let mut listeners = Vec::new();
    for l in &s.listen {
        // Port 0 (any free port) is fine to listen on, not to dial: parse
        // it as a dialable endpoint, then ask for port 0.
        let any = l.strip_suffix(":0");
        let text = any.map_or_else(|| l.clone(), |head| format!("{head}:1"));
        let e: Endpoint = text.parse().map_err(|e| format!("--listen {l}: {e}"))?;
        let port = if any.is_some() { 0 } else { e.port() };
        let addr = tokio::net::lookup_host((e.host.to_string(), port))
            .await
            .map_err(|err| format!("--listen {l}: {err}"))?
            .next()
            .ok_or_else(|| format!("--listen {l}: no address"))?;
        listeners.push((e.transport, addr));
    }
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&s.store).map_err(|e| format!("{}: {e}", s.store.display()))?);
    let config = Config {
        domain: s.domain,
        notary_threshold: s.notary_threshold,
        initial_balance: s.initial_balance,
        event_retention: s.event_retention,
        write_queue: s.write_queue,
        node_rate: s.node_rate,
        node_burst: s.node_rate.saturating_mul(2),
        ..Config::default()
    };
    let rules = Rules::new(config, provider.clone(), identity.clone());
    let engine = Engine::start(store, rules, s.verifiers).map_err(|e| e.to_string())?;
    let setup = server::setup(identity.clone(), provider, admission);
    let rt = xtmp_tokio::Tokio::shared();
    let server = BpciServer::start(rt, setup, &listeners, engine).await.map_err(|e| e.to_string())?;
    for (t, a) in server.listeners() {
        println!("listening {}://{a} key {}", t.scheme(), identity.key_id());
    }
    tracing::info!(store = %s.store.display(), key = %identity.key_id(), "serving");
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    tracing::info!("shutting down");
    server.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
