//! What a client and a server report through `tracing` and `metrics`:
//! spans per session and request that name the same session on both
//! sides, counters of sessions and requests, a warning for a bad peer and
//! for a client that does not verify its server.
//!
//! One test: the recorder and the subscriber are process-wide.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::{ClientConfig, IdentityKeypair, danger};
use xtmp_core::wire::MessageType;
use xtmp_tokio::{Client, ClientSetup, Error, Reply, Router, Server, ServerSetup, Transport};

/// Field names and their values, as text.
#[derive(Clone, Debug, Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

/// One event, with the spans it happened in (outermost first).
#[derive(Clone, Debug)]
struct Seen {
    level: Level,
    fields: Fields,
    spans: Vec<(&'static str, Fields)>,
}

impl Seen {
    fn message(&self) -> &str {
        self.fields.0.get("message").map(String::as_str).unwrap_or("")
    }

    /// The field `name` of the innermost span called `span`.
    fn span_field(&self, span: &str, name: &str) -> Option<&str> {
        self.spans.iter().rev().find(|(n, _)| *n == span).and_then(|(_, f)| f.0.get(name)).map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Seen>>>);

impl Collect {
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Collect {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        ctx.span(id).expect("a new span").extensions_mut().insert(f);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a live span");
        if let Some(f) = span.extensions_mut().get_mut::<Fields>() {
            values.record(f);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|s| (s.name(), s.extensions().get::<Fields>().cloned().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Seen { level: *event.metadata().level(), fields, spans });
    }
}

/// The metrics recorded so far. (A snapshot drains what it reads, so
/// the test reads one snapshot per moment it checks.)
struct Metrics(Vec<Metric>);

/// A metric's name, labels and value.
type Metric = (String, Vec<(String, String)>, DebugValue);

impl Metrics {
    fn take(snap: &Snapshotter) -> Metrics {
        let all = snap.snapshot().into_vec().into_iter().map(|(k, _, _, v)| {
            let key = k.key();
            let labels = key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
            (key.name().to_string(), labels, v)
        });
        Metrics(all.collect())
    }

    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a DebugValue> {
        self.0
            .iter()
            .filter(move |(n, l, _)| n == name && labels.iter().all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v)))
            .map(|(.., v)| v)
    }

    /// A counter's value (0 if it was never touched).
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .map(|v| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    fn samples(&self, name: &str) -> usize {
        self.matching(name, &[])
            .map(|v| match v {
                DebugValue::Histogram(samples) => samples.len(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_requests_are_traced_and_counted_and_bad_peers_are_warned_about() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    recorder.install().expect("the only recorder of this test binary");
    let collect = Collect::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(collect.clone()))
        .expect("the only subscriber of this test binary");

    let identity = Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([9; 32])).unwrap());
    let router = Router::new().route(MessageType::REGISTRY_QUERY, |req| async move {
        Ok(Reply::new(MessageType::REGISTRY_QUERY, req.message.body))
    });
    let server =
        Server::bind(ServerSetup::new(identity.clone()), Transport::Tcp, "127.0.0.1:0".parse().unwrap(), router)
            .await
            .unwrap();
    let client = Client::connect(server.local_addr(), Transport::Tcp, ClientSetup::pinned(identity.public().clone()))
        .await
        .unwrap();
    for body in [&b"one"[..], b"two"] {
        let answer = client.request(MessageType::REGISTRY_QUERY, Bytes::copy_from_slice(body)).await.unwrap();
        assert_eq!(&answer.body[..], body);
    }
    match client.request(MessageType::WALLET_BALANCE, Bytes::new()).await {
        Err(Error::Remote { .. }) => {}
        other => panic!("a type without a handler: {other:?}"),
    }

    // Counters: the client's are recorded before its calls return, the
    // server's before the answers that the client has received left.
    let m = Metrics::take(&snap);
    assert_eq!(m.counter("xtmp_client_requests_total", &[("outcome", "ok")]), 2);
    assert_eq!(m.counter("xtmp_client_requests_total", &[("outcome", "error")]), 1);
    assert_eq!(m.samples("xtmp_client_request_seconds"), 2);
    assert_eq!(m.counter("xtmp_client_sessions_total", &[]), 1);
    assert_eq!(m.counter("xtmp_server_sessions_total", &[]), 1);
    assert_eq!(m.counter("xtmp_server_requests_total", &[]), 2);
    assert_eq!(m.counter("xtmp_server_requests_refused_total", &[("reason", "unknown_type")]), 1);

    // Both sides name the same session: the client's `server_session` is
    // the server's `session`.
    let seen = collect.seen();
    let connected = seen.iter().find(|e| e.message() == "connected").expect("the client logs its connection");
    assert_eq!(connected.level, Level::INFO);
    let client_session = connected.span_field("xtmp_client", "session").expect("the session id").to_string();
    let server_session = connected.span_field("xtmp_client", "server_session").expect("the server's id").to_string();
    assert_eq!(client_session.len(), 16, "{connected:?}");
    assert_eq!(connected.span_field("xtmp_client", "transport"), Some("xtmp"));
    let established = seen.iter().find(|e| e.message() == "session established").expect("the server logs the session");
    assert_eq!(established.span_field("xtmp_session", "session"), Some(server_session.as_str()));
    assert!(established.span_field("xtmp_server", "listeners").is_some_and(|l| l.starts_with("xtmp://127.0.0.1:")));

    // Each request has its span on both sides, with its id and type.
    let answered: Vec<&Seen> = seen.iter().filter(|e| e.message() == "answered").collect();
    assert_eq!(answered.len(), 2, "{answered:#?}");
    let mut ids = Vec::new();
    for e in &answered {
        assert_eq!(e.span_field("xtmp_request", "session"), Some(client_session.as_str()), "{e:?}");
        assert!(e.span_field("xtmp_request", "message_type").is_some_and(|t| t.contains("RegistryQuery")), "{e:?}");
        ids.push(e.span_field("xtmp_request", "request_id").expect("the request id").to_string());
    }
    let handled: Vec<&Seen> = seen.iter().filter(|e| e.message() == "handled").collect();
    assert_eq!(handled.len(), 2, "{handled:#?}");
    for e in &handled {
        assert_eq!(e.span_field("xtmp_session", "session"), Some(server_session.as_str()), "{e:?}");
        let id = e.span_field("xtmp_request", "request_id").expect("the request id");
        assert!(ids.iter().any(|i| i == id), "server request {id} is not one of the client's {ids:?}");
    }
    assert!(seen.iter().all(|e| e.level > Level::WARN), "nothing went wrong yet: {seen:#?}");

    // A peer that sends garbage loses its connection, with a warning that
    // names it.
    let mut bad = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    let bad_addr = bad.local_addr().unwrap().ip().to_string();
    bad.write_all(&[0x5a; 300]).await.unwrap();
    let mut rest = Vec::new();
    let _ = bad.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "the server answered garbage");
    let warned = collect.seen().into_iter().find(|e| e.level == Level::WARN).expect("a warning about the bad peer");
    assert_eq!(warned.fields.0.get("peer"), Some(&bad_addr), "{warned:?}");
    assert_eq!(warned.fields.0.get("reason").map(String::as_str), Some("malformed stream"), "{warned:?}");
    assert!(warned.message().contains("connection dropped"), "{warned:?}");
    let dropped =
        Metrics::take(&snap).counter("xtmp_server_connections_dropped_total", &[("reason", "malformed stream")]);
    assert_eq!(dropped, 1);
    client.request(MessageType::REGISTRY_QUERY, Bytes::from_static(b"still")).await.unwrap();

    // A client that does not verify the server is warned at connection.
    let blind = ClientConfig::new(Arc::new(RustCrypto), Arc::new(danger::NoServerVerification));
    let reckless =
        Client::connect(server.local_addr(), Transport::Tcp, ClientSetup::new(Arc::new(blind))).await.unwrap();
    let warnings: Vec<Seen> = collect.seen().into_iter().filter(|e| e.level == Level::WARN).collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings[1].message().contains("not verified"), "{:?}", warnings[1]);
    reckless.close().await;
    client.close().await;
    server.shutdown(std::time::Duration::from_secs(1)).await;
}
