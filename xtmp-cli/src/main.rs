//! `xtmp`: the XTMP command.
//!
//! - `xtmp keygen` writes an identity file and prints its fingerprint.
//! - `xtmp serve` runs a server: echo, stream publishers and the registry
//!   resolver.
//! - `xtmp request`, `xtmp send`, `xtmp subscribe` and `xtmp ping` talk to
//!   a server (`--endpoint`, or `BPCI_XTMP_ENDPOINT`, default
//!   `xtmp://localhost:7778`).
//! - `xtmp demo` starts a server and a client in one process and shows the
//!   post-quantum handshake, request latency, a live stream, a key rotation
//!   and a reconnection.
//!
//! Results go to stdout; logs (`--log`, or `XTMP_LOG`, with `tracing`
//! filter syntax) go to stderr.

mod client;
mod demo;
mod relay;
mod serve;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use xtmp_core::wire::{MessageType, TypeClass};
use xtmp_tokio::Endpoint;
use xtmp_tokio::xtmp_adapter::DEFAULT_ENDPOINT;

/// The message type `serve` echoes and `ping` and `request` use by default
/// (the first code of the extension range, `0x50`).
pub(crate) const ECHO: MessageType = MessageType(0x50);

#[derive(Parser, Debug)]
#[command(name = "xtmp", version, about = "XTMP: post-quantum secure messaging between BPI Core and BPCI")]
struct Cli {
    /// Log filter for stderr, in `tracing` syntax (`warn`, `info`,
    /// `xtmp_adapter=debug`...). Default: `info` for serve, `warn` otherwise.
    #[arg(long, global = true, env = "XTMP_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a new identity (ML-DSA-87 + Ed25519) and print its fingerprint.
    Keygen(KeygenArgs),
    /// Run a server: echo on `0x50` and every request type, streams on
    /// LiveUpdates, EventStream and MetricsStream, RegistryQuery from a file.
    Serve(serve::ServeArgs),
    /// Send a request and print the response body.
    Request(client::RequestArgs),
    /// Send a message and wait until the server acknowledged it.
    Send(client::SendArgs),
    /// Subscribe to a stream and print its items, one per line.
    Subscribe(client::SubscribeArgs),
    /// Measure request round trips and print their distribution.
    Ping(client::PingArgs),
    /// Start a server and a client on loopback and show what XTMP does.
    Demo(demo::DemoArgs),
}

#[derive(Args, Debug)]
struct KeygenArgs {
    /// Where to write the identity (secret keys, PEM, mode 0600 on Unix).
    #[arg(long, short, default_value = "xtmp-identity.pem")]
    out: PathBuf,
    /// Also write the public identity (PEM) here, for clients to pin.
    #[arg(long)]
    public: Option<PathBuf>,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

/// How a client reaches and trusts its server.
#[derive(Args, Debug, Clone)]
pub(crate) struct Connect {
    /// The server: `xtmp://host:port` (TCP), `xtmp+udp://`, `xtmp+ws://`,
    /// `xtmp+hybrid://`; `?key=FINGERPRINT` pins its identity.
    #[arg(long, short, env = "BPCI_XTMP_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub(crate) endpoint: Endpoint,
    /// The registry file: server names to addresses and pinned identities.
    #[arg(long)]
    pub(crate) registry: Option<PathBuf>,
    /// Trust a server that neither the endpoint nor the registry pins the
    /// first time, recording its identity into the registry file.
    #[arg(long, requires = "registry")]
    pub(crate) trust_on_first_use: bool,
    /// How long to wait for each answer, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) timeout_ms: u64,
}

/// A message type: a name (`RegistryQuery`, `registry-query`), or a code
/// (`0x30`, `48`) of the application or extension range.
pub(crate) fn parse_type(text: &str) -> Result<MessageType, String> {
    let squash = |s: &str| s.chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_ascii_lowercase();
    let code = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u8::from_str_radix(hex, 16).ok()
    } else {
        text.parse::<u8>().ok()
    };
    let t = match code {
        Some(c) => MessageType(c),
        None if squash(text) == "echo" => ECHO,
        None => *MessageType::KNOWN
            .iter()
            .find(|t| t.name().is_some_and(|n| squash(n) == squash(text)))
            .ok_or_else(|| format!("unknown message type {text:?} (a name such as registry-query, or a code)"))?,
    };
    match t.class() {
        TypeClass::Application | TypeClass::Extension => Ok(t),
        _ => Err(format!("{t} is not an application message type (0x10..=0xBF)")),
    }
}

fn keygen(args: &KeygenArgs) -> Result<(), String> {
    use xtmp_core::crypto::RustCrypto;
    use xtmp_core::handshake::IdentityKeypair;

    if args.out.exists() && !args.force {
        return Err(format!("{} exists (use --force to replace it)", args.out.display()));
    }
    let mut rng = xtmp_tokio::xtmp_adapter::clock::rng().map_err(|e| format!("no OS randomness: {e}"))?;
    let identity = IdentityKeypair::generate(&RustCrypto, &mut rng).map_err(|e| e.to_string())?;
    show::write_secret(&args.out, identity.to_pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    if let Some(p) = &args.public {
        std::fs::write(p, identity.public().to_pem()).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    eprintln!("wrote {}", args.out.display());
    println!("{}", identity.key_id());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default_log));
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("xtmp: bad --log filter: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xtmp: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Keygen(a) => keygen(&a),
            Command::Serve(a) => serve::run(a).await,
            Command::Request(a) => client::request(a).await,
            Command::Send(a) => client::send(a).await,
            Command::Subscribe(a) => client::subscribe(a).await,
            Command::Ping(a) => client::ping(a).await,
            Command::Demo(a) => demo::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtmp: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_parse_by_name_and_code() {
        assert_eq!(parse_type("registry-query"), Ok(MessageType::REGISTRY_QUERY));
        assert_eq!(parse_type("RegistryQuery"), Ok(MessageType::REGISTRY_QUERY));
        assert_eq!(parse_type("live_updates"), Ok(MessageType::LIVE_UPDATES));
        assert_eq!(parse_type("0x30"), Ok(MessageType::REGISTRY_QUERY));
        assert_eq!(parse_type("48"), Ok(MessageType::REGISTRY_QUERY));
        assert_eq!(parse_type("echo"), Ok(ECHO));
        assert!(parse_type("heartbeat").unwrap_err().contains("not an application message type"));
        assert!(parse_type("0xC0").unwrap_err().contains("not an application"));
        assert!(parse_type("wallet-teleport").unwrap_err().contains("unknown message type"));
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
