//! # xtmp-tokio
//!
//! The tokio adapter of XTMP. It will hold the client (`Client`, one
//! multiplexed session per endpoint, request/response, acknowledged sends,
//! subscriptions, reconnection) and the server (`Server::builder()`, router,
//! publishers, limits, graceful shutdown) over TCP, UDP, WebSocket and the
//! hybrid of a stream and a datagram path, plus the `xtmp` command.
//!
//! It moves bytes and time between tokio sockets and [`xtmp_core`] and holds
//! no protocol logic of its own. Not yet implemented: see issue 7.

pub use xtmp_core;
