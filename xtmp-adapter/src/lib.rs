//! # xtmp-adapter
//!
//! The runtime-neutral half of XTMP's runtime adapters (`xtmp-tokio`,
//! `xtmp-async-std`): what a client or server needs around the sans-IO
//! core that does not depend on a runtime, written once.
//!
//! - [`Client`] and [`Server`]: the client and server drivers around the
//!   core's session and endpoint, with the router, publishers,
//!   subscriptions, reconnection, limits and graceful shutdown. They run
//!   on any executor through [`Runtime`] (tasks, timers, sockets, name
//!   lookup), which each runtime adapter implements once.
//! - [`Endpoint`]: endpoint strings (`xtmp://`, `xtmp+udp://`,
//!   `xtmp+ws://`, `xtmp+hybrid://`) parsed into a typed value, with
//!   [`ENDPOINT_VAR`] (`BPCI_XTMP_ENDPOINT`) and its default.
//! - [`Registry`]: the file that maps server names to addresses and pinned
//!   identities (the design's "Shadow Registry").
//! - [`Resolver`] and [`resolve`]: the registry first, then the runtime's
//!   name lookup.
//! - [`Trust`] and [`Connector`]: pinned identities, registry pins, and
//!   trust on first use recorded into the registry file.
//! - [`Backoff`]: the reconnection policy.
//!
//! ```
//! use xtmp_adapter::{Endpoint, Transport};
//!
//! let e: Endpoint = "xtmp+hybrid://bpci.example:7778".parse()?;
//! assert_eq!(e.transport, Transport::Hybrid);
//! assert_eq!(e.port(), 7778);
//! assert!("xtmp://bpci:0".parse::<Endpoint>().unwrap_err().to_string().contains("invalid port"));
//! # Ok::<(), xtmp_adapter::EndpointError>(())
//! ```

pub mod backoff;
mod bind;
pub mod client;
pub mod clock;
pub mod endpoint;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod registry;
pub mod resolve;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod trust;
pub mod websocket;

pub use backoff::Backoff;
pub use client::{Client, ClientSetup, ClientStats, ConnectionState, Subscription, SubscriptionEnd};
pub use endpoint::{DEFAULT_ENDPOINT, DEFAULT_PORT, ENDPOINT_VAR, Endpoint, EndpointError, Host, Transport};
pub use error::Error;
pub use registry::{Entry, Registry, RegistryError};
pub use resolve::{BoxFuture, ResolveError, Resolver, StaticResolver, Target, resolve};
pub use runtime::{DatagramSocket, Link, Listener, Runtime, Timer};
pub use server::{
    Peer, Publisher, PublisherClosed, Rejection, Reply, Request, Router, Server, ServerLimits, ServerSetup, ServerStats,
};
pub use trust::{ConnectError, Connector, Prepared, Trust};
