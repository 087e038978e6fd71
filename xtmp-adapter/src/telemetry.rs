//! What the client and the server report: `tracing` spans and events, and
//! counters through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! ## Spans
//!
//! | span | level | fields |
//! | --- | --- | --- |
//! | `xtmp_client` | info | `remote` (address), `transport` (its scheme), `session` and `server_session` (the session ids of this side and of the server, 16 hex digits, recorded once connected and again after a reconnection made a new session; the server logs its own as `session`) |
//! | `xtmp_request` (client) | debug | `message_type`, `session`, `request_id` (the message id, recorded when the session takes it) |
//! | `xtmp_server` | info | `listeners` |
//! | `xtmp_session` (server) | info | `session`, `peer` (address), `identity` (the client's fingerprint, when it shows one) |
//! | `xtmp_request` (server) | debug | `message_type`, `request_id`; its parent is the session's span |
//! | `xtmp_subscription` (server) | debug | `message_type`, `subscription`; its parent is the session's span |
//!
//! Session lifecycle events (established, reconnecting, closed) are at
//! `info`; a peer that broke the protocol, failed its handshake or was
//! dropped for a malformed stream is a `warn` with the reason; each
//! request's outcome is a `debug` event in its span. A client whose
//! verifier does not authenticate the server
//! ([`danger::NoServerVerification`](xtmp_core::handshake::danger::NoServerVerification))
//! logs a `warn` at every connection.
//!
//! ## Metrics (feature `metrics`)
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `xtmp_client_sessions_total` | counter | sessions a client established (reconnections that needed a new handshake included) |
//! | `xtmp_client_reconnections_total` | counter | `how`: `path` (a new connection for the live session) or `session` (a new session) |
//! | `xtmp_client_requests_total` | counter | `outcome`: `ok`, `error` (an Error response or a failure) or `timeout` |
//! | `xtmp_client_request_seconds` | histogram | round-trip time of each answered request |
//! | `xtmp_server_sessions_total` | counter | sessions a server established |
//! | `xtmp_server_sessions` | gauge | sessions the server holds now (handshakes included) |
//! | `xtmp_server_sessions_closed_total` | counter | `reason`: `closed` (either side closed it normally), `idle`, `handshake` (failed or timed out), `violation` (protocol violation or integrity limit), `lost`, `internal`, `other` |
//! | `xtmp_server_requests_total` | counter | requests and messages handed to a handler |
//! | `xtmp_server_requests_refused_total` | counter | `reason`: `unknown_type`, `in_flight`, `shutdown` |
//! | `xtmp_server_connections_dropped_total` | counter | stream connections dropped, by `reason` (`malformed stream`, `no handshake in time`, `path given up by its session`, `over the connection limit`); the warnings about them are at most one line a second per address prefix (/24, /64) |
//!
//! Without the feature these calls compile to nothing.

use xtmp_core::session::CloseReason;

/// A session id as logs show it: 16 hex digits.
pub(crate) struct Hex(pub(crate) u64);

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The `reason` label of a closed session, and whether the peer is to
/// blame (logged as a warning).
pub(crate) fn close_class(reason: &CloseReason) -> (&'static str, bool) {
    match reason {
        CloseReason::Local { .. } | CloseReason::Peer { .. } => ("closed", false),
        CloseReason::IdleTimeout => ("idle", false),
        CloseReason::HandshakeFailed(_) | CloseReason::HandshakeTimeout => ("handshake", true),
        CloseReason::ProtocolViolation(_) | CloseReason::IntegrityLimit => ("violation", true),
        CloseReason::PathsLost => ("lost", false),
        CloseReason::StatelessReset => ("reset", false),
        CloseReason::Busy { .. } => ("busy", false),
        CloseReason::Internal(_) => ("internal", true),
        _ => ("other", false),
    }
}

/// Adds `n` to a counter.
#[inline]
pub(crate) fn count(name: &'static str, labels: &[(&'static str, &'static str)], n: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(name, labels).increment(n);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, labels, n);
}

/// Sets a gauge.
#[inline]
pub(crate) fn gauge(name: &'static str, value: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(name).set(value);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, value);
}

/// Records one sample of a histogram.
#[inline]
pub(crate) fn sample(name: &'static str, value: f64) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(name).record(value);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, value);
}
