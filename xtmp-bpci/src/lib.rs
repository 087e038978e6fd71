//! # xtmp-bpci
//!
//! The application XTMP exists for: a BPI Core node talking to a BPCI
//! server. Wallets register with their own hybrid keys (ML-DSA-87 +
//! Ed25519) and authenticate by challenge and response bound to the
//! session; nodes submit proof bundles approved by registered notaries and
//! follow them to confirmation in a signed chain of blocks; a registry maps
//! names to servers and notaries; every state change is an event with a
//! sequence number that streams resume from. SPEC.md section 5 is the
//! byte-exact contract.
//!
//! - [`schema`]: the CBOR bodies, hashes, Merkle trees and signed
//!   statements, and [`Bundle::builder`] for a node's bundles.
//! - [`service`]: the rules, plain code over a store transaction with the
//!   time passed in, and the [`Engine`] that runs them with group commit.
//! - [`store`]: the [`Store`] trait, [`RedbStore`] (the default, one file)
//!   and [`MemoryStore`] (tests, the simulator).
//! - [`server`]: the handlers on an XTMP router, on any runtime.
//! - [`client`]: [`BpciClient`], typed methods for a BPI node, with
//!   per-call timeouts ([`BpciClient::with_timeout`]), a list of endpoints
//!   ([`BpciClient::connect_any`]), `BPCI_XTMP_ENDPOINT`
//!   ([`BpciClient::from_env`]) or a registry name, `bpci://NAME`
//!   ([`BpciClient::connect_named`]).
//! - [`resolver`]: [`RegistryResolver`], names resolved through the
//!   registry with the record's signature checked.
//! - [`outbox`]: [`Outbox`], the node's durable queue of bundles and
//!   transfers, sent until answered, once in effect across crashes.
//! - [`watch`]: [`Watch`], bundle and event watches that resume after
//!   reconnections from the last event they yielded.
//!
//! ```no_run
//! # async fn demo(server_identity: xtmp_core::handshake::PublicIdentity,
//! #               node: std::sync::Arc<xtmp_core::handshake::IdentityKeypair>) -> Result<(), xtmp_bpci::ClientError> {
//! use xtmp_bpci::{BpciClient, Wallet};
//!
//! let rt = xtmp_tokio::Tokio::shared();
//! let endpoint = "xtmp://127.0.0.1:7778".parse().unwrap();
//! let bpci = BpciClient::connect(rt, &endpoint, node, server_identity).await?;
//! let wallet = Wallet::generate();
//! let registration = bpci.register_wallet(&wallet).await?;
//! println!("registered {} with {}", registration.wallet, registration.initial_balance);
//! # Ok(()) }
//! ```

pub mod client;
pub mod error;

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub mod outbox;
pub mod resolver;
pub mod schema;
pub mod server;
pub mod service;
pub mod store;
pub mod watch;

pub use client::{BpciClient, ClientError, EventStream, Notary, Wallet};
pub use error::BpciError;
pub use outbox::{Outbox, OutboxError, OutboxStats};
pub use resolver::{RegistryResolver, ServerRecord};
pub use schema::{Bundle, BundleState, Event, Hash, Receipt, WalletId};
pub use server::{Admission, BpciServer};
pub use service::{Config, Engine, Rules};
pub use store::{MemoryStore, RedbStore, Store};
pub use watch::{Watch, WatchItem};

/// A CSPRNG seeded from the operating system, for signing.
pub(crate) fn rng() -> rand_chacha::ChaCha20Rng {
    use rand_core::SeedableRng;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the operating system's random source");
    rand_chacha::ChaCha20Rng::from_seed(seed)
}
