//! `xtmp serve`: a server with echo, stream publishers and the registry
//! resolver. Its router is also the demo's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Args;
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::IdentityKeypair;
use xtmp_core::session::ErrorCode;
use xtmp_core::wire::{MessageType, TypeClass};
use xtmp_tokio::{Endpoint, Registry, Rejection, Reply, Router, Server, ServerSetup, Transport};

use crate::ECHO;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// The server's identity file (from `xtmp keygen`).
    #[arg(long, short, required_unless_present = "ephemeral")]
    identity: Option<PathBuf>,
    /// Use a new throwaway identity instead of a file.
    #[arg(long, conflicts_with = "identity")]
    ephemeral: bool,
    /// Where to listen (repeatable): `xtmp://127.0.0.1:7778` (TCP),
    /// `xtmp+udp://`, `xtmp+ws://`, `xtmp+hybrid://` (TCP and UDP on one
    /// port). Port 0 picks a free port. Default `xtmp://127.0.0.1:7778`.
    #[arg(long, short, value_parser = parse_listen)]
    listen: Vec<Listen>,
    /// The registry file RegistryQuery answers from (read at each query).
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Items per second each stream subscription publishes.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long a graceful shutdown (Ctrl-C) waits for requests in flight,
    /// in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    grace_ms: u64,
    /// Shards the sessions are spread over, each on its own task; 0 means
    /// one per core.
    #[arg(long, default_value_t = 0)]
    shards: usize,
}

/// The streams a server publishes.
pub(crate) const STREAMS: [MessageType; 3] =
    [MessageType::LIVE_UPDATES, MessageType::EVENT_STREAM, MessageType::METRICS_STREAM];

/// The router of `xtmp serve`:
/// - `0x50` (echo) and every other request type of the application range
///   (except RegistryQuery and the streams): the body comes back;
/// - RegistryQuery: the body names a server; the answer is its registry
///   line (`name address key`), `REFUSED` if the file does not name it;
/// - LiveUpdates, EventStream, MetricsStream: a subscription gets an item
///   every `1/rate` s (`<type> #<n> <unix ms>`), until it leaves or,
///   with the filter `count=N`, after `N` items. LiveUpdates items are
///   reliable; the other two are best effort.
pub(crate) fn router(registry: Option<PathBuf>, rate: f64) -> Router {
    let mut router = Router::new();
    let echoed = MessageType::KNOWN
        .iter()
        .copied()
        .filter(|t| t.class() == TypeClass::Application)
        .filter(|t| *t != MessageType::REGISTRY_QUERY && !STREAMS.contains(t))
        .chain([ECHO]);
    for t in echoed {
        router = router.route(t, move |req| async move { Ok(Reply::new(t, req.message.body)) });
    }
    let registry = Arc::new(registry);
    router = router.route(MessageType::REGISTRY_QUERY, move |req| {
        let registry = registry.clone();
        async move { registry_answer(registry.as_ref().as_ref(), &req.message.body) }
    });
    let period = Duration::from_secs_f64(1.0 / rate.clamp(0.01, 100_000.0));
    for t in STREAMS {
        router = router.subscription(t, move |req, publisher| async move {
            let limit = std::str::from_utf8(&req.message.body)
                .ok()
                .and_then(|f| f.strip_prefix("count="))
                .and_then(|n| n.trim().parse::<u64>().ok());
            let mut tick = tokio::time::interval(period);
            // After a wait for the subscriber, carry on at the rate: no burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 1.. {
                if limit.is_some_and(|l| n > l) {
                    break;
                }
                tick.tick().await;
                // Nothing is built while the last item waits for the
                // subscriber's window: an unread subscription costs nothing.
                if publisher.writable().await.is_err() {
                    break;
                }
                let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
                let item = Bytes::from(format!("{} #{n} {ms}", t.name().unwrap_or("stream")));
                let pushed = if t == MessageType::LIVE_UPDATES {
                    publisher.push(item).await
                } else {
                    publisher.push_best_effort(item)
                };
                if pushed.is_err() {
                    break; // the subscriber left or the session closed
                }
            }
            Ok(())
        });
    }
    router
}

fn registry_answer(path: Option<&PathBuf>, name: &[u8]) -> Result<Reply, Rejection> {
    let path = path.ok_or_else(|| Rejection::refused("this server has no registry file"))?;
    let name = std::str::from_utf8(name).map_err(|_| Rejection::refused("a name is UTF-8 text"))?;
    let host = xtmp_tokio::xtmp_adapter::Host::parse(name.trim())
        .map_err(|e| Rejection { code: ErrorCode::REFUSED, reason: e.to_string() })?;
    let registry = Registry::load(path).map_err(|e| {
        tracing::warn!(error = %e, "the registry file cannot be read");
        Rejection { code: ErrorCode::INTERNAL, reason: "the registry is unavailable".into() }
    })?;
    let entry = registry.get(&host).ok_or_else(|| Rejection::refused(format!("no entry for {host}")))?;
    let mut one = Registry::new();
    one.insert(host, entry.clone());
    let line = one.to_text().lines().find(|l| !l.starts_with('#')).unwrap_or_default().to_string();
    Ok(Reply::new(MessageType::REGISTRY_QUERY, line))
}

/// Where to listen: an endpoint string whose port may be 0.
#[derive(Clone, Debug)]
pub(crate) struct Listen {
    transport: Transport,
    host: String,
    port: u16,
}

/// `scheme://host:port`, as an endpoint string but with port 0 allowed
/// (any free port).
fn parse_listen(text: &str) -> Result<Listen, String> {
    let expected = || format!("expected scheme://host:port (port 0: any free port), not {text:?}");
    let (head, port) = text.rsplit_once(':').filter(|(_, p)| !p.contains('/')).ok_or_else(expected)?;
    let port: u16 = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
    // The scheme and host are checked as an endpoint's.
    let endpoint: Endpoint =
        format!("{head}:1").parse().map_err(|e: xtmp_tokio::xtmp_adapter::EndpointError| e.to_string())?;
    let host = endpoint.host.to_string();
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok(Listen { transport: endpoint.transport, host, port })
}

/// The listeners' socket addresses (names resolved).
async fn listen_addrs(listen: &[Listen]) -> Result<Vec<(Transport, SocketAddr)>, String> {
    let mut out = Vec::new();
    for l in listen {
        let addr = tokio::net::lookup_host((l.host.as_str(), l.port))
            .await
            .map_err(|err| format!("cannot resolve {}: {err}", l.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", l.host))?;
        out.push((l.transport, addr));
    }
    Ok(out)
}

pub(crate) async fn run(a: ServeArgs) -> Result<(), String> {
    let identity = match &a.identity {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            IdentityKeypair::from_pem(&RustCrypto, &text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => {
            let mut rng = xtmp_tokio::xtmp_adapter::clock::rng().map_err(|e| format!("no OS randomness: {e}"))?;
            IdentityKeypair::generate(&RustCrypto, &mut rng).map_err(|e| e.to_string())?
        }
    };
    let identity = Arc::new(identity);
    let listen = if a.listen.is_empty() { vec![parse_listen("xtmp://127.0.0.1:7778")?] } else { a.listen.clone() };
    let addrs = listen_addrs(&listen).await?;
    let mut setup = ServerSetup::new(identity.clone());
    setup.limits.shards = a.shards;
    let server = Server::start(setup, &addrs, router(a.registry.clone(), a.rate)).await.map_err(|e| e.to_string())?;
    // What a client needs, on stdout: each endpoint with the key pinned.
    for (t, addr) in server.listeners() {
        println!("{}://{addr}?key={}", t.scheme(), identity.key_id());
    }
    tracing::info!(fingerprint = %identity.key_id(), "serving; Ctrl-C stops gracefully");
    tokio::signal::ctrl_c().await.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    tracing::info!("Ctrl-C: shutting down");
    server.shutdown(Duration::from_millis(a.grace_ms)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_strings_take_port_zero_and_check_the_rest() {
        let l = parse_listen("xtmp+udp://127.0.0.1:0").unwrap();
        assert_eq!((l.transport, l.host.as_str(), l.port), (Transport::Udp, "127.0.0.1", 0));
        let l = parse_listen("xtmp+hybrid://[::1]:7778").unwrap();
        assert_eq!((l.transport, l.host.as_str(), l.port), (Transport::Hybrid, "::1", 7778));
        assert!(parse_listen("http://127.0.0.1:80").unwrap_err().contains("scheme"));
        assert!(parse_listen("xtmp://127.0.0.1:99999").unwrap_err().contains("invalid port"));
        assert!(parse_listen("xtmp://127.0.0.1").unwrap_err().contains("expected scheme://host:port"));
    }

    #[test]
    fn the_registry_answers_a_named_servers_line() {
        let dir = std::env::temp_dir().join(format!("xtmp-cli-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("registry");
        std::fs::write(&file, "bpci 10.0.0.1:7778\nother 10.0.0.2\n").unwrap();
        let answer = registry_answer(Some(&file), b"bpci").unwrap();
        assert_eq!(
            String::from_utf8_lossy(&answer.body).split_whitespace().collect::<Vec<_>>(),
            ["bpci", "10.0.0.1:7778"]
        );
        assert!(registry_answer(Some(&file), b"nobody").unwrap_err().reason.contains("no entry for nobody"));
        assert!(registry_answer(None, b"bpci").unwrap_err().reason.contains("no registry file"));
        assert!(registry_answer(Some(&file), &[0xff]).unwrap_err().reason.contains("UTF-8"));
    }
}
