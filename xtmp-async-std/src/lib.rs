//! # xtmp-async-std
//!
//! The XTMP adapter for applications on **smol** or **async-std**: a
//! [`Client`] and a [`Server`] with the same names and capabilities as
//! `xtmp-tokio`'s. It is built on the runtime-neutral crates that both
//! runtimes run on (`async-io` for the reactor, timers and sockets,
//! `async-net` for name lookup): async-std is discontinued upstream
//! (RUSTSEC-2025-0052) in favour of smol, and this crate does not depend
//! on it.
//!
//! Like `xtmp-tokio`, it holds no protocol logic and almost no logic at
//! all: the client and server drivers are [`xtmp_adapter`]'s, written once
//! for every runtime; this crate gives them the async-io runtime
//! ([`AsyncIo`]: tasks, timers, sockets, name lookup).
//!
//! ## On smol
//!
//! ```no_run
//! # fn demo(identity: std::sync::Arc<xtmp_core::handshake::IdentityKeypair>) -> Result<(), xtmp_async_std::Error> {
//! use bytes::Bytes;
//! use xtmp_async_std::{Client, ClientSetup, Reply, Router, Server, ServerSetup, Transport};
//! use xtmp_core::wire::MessageType;
//!
//! smol::block_on(async {
//!     let router = Router::new().route(MessageType::REGISTRY_QUERY, |req| async move {
//!         Ok(Reply::new(MessageType::REGISTRY_QUERY, req.message.body))
//!     });
//!     let setup = ServerSetup::new(identity.clone());
//!     let server = Server::bind(setup, Transport::Tcp, "127.0.0.1:0".parse().unwrap(), router).await?;
//!     let client =
//!         Client::connect(server.local_addr(), Transport::Tcp, ClientSetup::pinned(identity.public().clone()))
//!             .await?;
//!     let answer = client.request(MessageType::REGISTRY_QUERY, Bytes::from_static(b"wallet 7")).await?;
//!     assert_eq!(&answer.body[..], b"wallet 7");
//!     Ok(())
//! })
//! # }
//! ```
//!
//! The drivers' tasks run on smol's global executor (`smol::spawn`, as
//! many threads as `SMOL_THREADS` says, one by default).
//!
//! ## On async-std
//!
//! The same code runs under `async_std::task::block_on` or
//! `#[async_std::main]`. To run the drivers' tasks on async-std's own
//! executor instead of smol's, install the runtime once at start-up:
//!
//! ```no_run
//! use xtmp_async_std::AsyncIo;
//!
//! AsyncIo::with_spawner(|task| {
//!     async_std::task::spawn(task);
//! })
//! .install()
//! .expect("installed before the first client or server");
//! ```
//!
//! A runtime can also be passed explicitly, to the runtime-neutral
//! [`xtmp_adapter::Client::connect`] and [`xtmp_adapter::Server::start`].
//!
//! ## Interoperability
//!
//! A client on one runtime talks to a server on another like any two XTMP
//! peers: the workspace's conformance suite (`tests/`) runs every scenario
//! against tokio, smol and async-std, and across them.

mod resolve;
mod runtime;

pub use resolve::AsyncNetResolver;
pub use runtime::AsyncIo;
pub use xtmp_adapter::{
    self, Backoff, ClientSetup, ClientStats, ConnectionState, Endpoint, Error, Peer, Publisher, PublisherClosed,
    Registry, Rejection, Reply, Request, Router, ServerLimits, ServerSetup, ServerStats, Subscription, SubscriptionEnd,
    Transport, Trust,
};
pub use xtmp_core;

xtmp_adapter::bind_runtime!(runtime = crate::AsyncIo::shared(), name = "async-io (smol or async-std)");
