//! # xtmp-tokio
//!
//! The tokio adapter of XTMP: a [`Client`] and a [`Server`] over TCP,
//! UDP and WebSocket. It holds no protocol logic and almost no logic at all: the client
//! and server drivers are [`xtmp_adapter`]'s, written once for every
//! runtime, and this crate gives them the tokio runtime ([`Tokio`]: tasks,
//! timers, sockets, name lookup). The session itself (handshake,
//! encryption, replay protection, acknowledgements, retransmission, key
//! rotation, paths, subscriptions) is the core's
//! [`Session`](xtmp_core::session::Session) on the client and the core's
//! [`Endpoint`](xtmp_core::endpoint::Endpoint) on the server.
//!
//! ```no_run
//! # async fn demo(identity: std::sync::Arc<xtmp_core::handshake::IdentityKeypair>) -> Result<(), xtmp_tokio::Error> {
//! use bytes::Bytes;
//! use xtmp_core::wire::MessageType;
//! use xtmp_tokio::{Client, ClientSetup, Reply, Router, Server, ServerSetup, Transport};
//!
//! let router = Router::new().route(MessageType::REGISTRY_QUERY, |req| async move {
//!     Ok(Reply::new(MessageType::REGISTRY_QUERY, req.message.body))
//! });
//! let setup = ServerSetup::new(identity.clone());
//! let server = Server::bind(setup, Transport::Tcp, "127.0.0.1:0".parse().unwrap(), router).await?;
//! let client =
//!     Client::connect(server.local_addr(), Transport::Tcp, ClientSetup::pinned(identity.public().clone())).await?;
//! let answer = client.request(MessageType::REGISTRY_QUERY, Bytes::from_static(b"wallet 7")).await?;
//! assert_eq!(&answer.body[..], b"wallet 7");
//! # Ok(()) }
//! ```
//!
//! ## Endpoints and trust
//!
//! [`Client::connect_to`] takes an endpoint string's typed form
//! ([`Endpoint`]: `xtmp://host:port`, `xtmp+udp://`...), applies the
//! registry file if the setup names one, resolves host names with tokio's
//! resolver ([`TokioResolver`]) and trusts the server as the setup's
//! [`Trust`] says: a pinned identity, the endpoint's `?key=` or the
//! registry's pin, or trust on first use recorded into the registry.
//! [`Client::from_env`] connects to `BPCI_XTMP_ENDPOINT` (default
//! `xtmp://localhost:7778`). The runtime-neutral parts live in
//! [`xtmp_adapter`], shared with the async-std adapter.
//!
//! ## Server push
//!
//! [`Router::subscription`] runs a handler per subscription with a
//! [`Publisher`]; [`Client::subscribe`](xtmp_adapter::Client::subscribe)
//! returns a [`Subscription`], a `futures::Stream` of the items.
//!
//! ## Reconnection
//!
//! A client whose connection breaks reconnects as
//! [`ClientSetup::reconnect`] says (exponential backoff with jitter,
//! [`Backoff`]); [`ConnectionState`] shows where it stands.
//!
//! ## Observability
//!
//! Clients and servers report through `tracing`: a span per client
//! session (`xtmp_client`), per server session (`xtmp_session`) and per
//! request (`xtmp_request`), with session ids, peers, message types and
//! request ids; warnings for peers that misbehave and for a client that
//! does not verify its server. With the feature `metrics`, counters of
//! sessions, requests, refusals and dropped connections go through the
//! `metrics` facade. The names and fields: [`xtmp_adapter::telemetry`].
//!
//! ## The `xtmp` command
//!
//! The `xtmp-cli` crate builds the `xtmp` command on this adapter
//! (`keygen`, `serve`, `request`, `send`, `subscribe`, `ping`, `demo`):
//! `cargo run --release -p xtmp-cli -- demo`.
//!
//! Still to come (issue 7): `SO_REUSEPORT` sharding.

mod resolve;
mod runtime;

pub use resolve::TokioResolver;
pub use runtime::Tokio;

xtmp_adapter::bind_runtime!(runtime = crate::Tokio::shared(), name = "tokio");
pub use xtmp_adapter::{
    self, Backoff, ClientSetup, ClientStats, ConnectionState, Endpoint, Error, Peer, Publisher, PublisherClosed,
    Registry, Rejection, Reply, Request, Router, ServerLimits, ServerSetup, ServerStats, Subscription, SubscriptionEnd,
    Transport, Trust,
};
pub use xtmp_core;
