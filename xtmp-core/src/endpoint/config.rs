//! How an endpoint admits sessions: its configuration, the Retry policy,
//! and the address prefixes its per-prefix limits count by.

use alloc::sync::Arc;
use core::net::IpAddr;
use core::time::Duration;

use crate::handshake::ServerConfig;
use crate::session::{ConfigError, SessionConfig};

/// When the endpoint answers a ClientHello with a Retry (a stateless
/// cookie) instead of keeping any state for it (SPEC.md 3.2). The decision
/// is made on the hello's first frame, over either transport: over UDP a
/// token proves the address, over TCP it proves that the peer reads what
/// it is sent; either way a flood of hellos costs the server nothing until
/// the peer answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Never.
    Never,
    /// When at least this many handshakes are half open (proven or not).
    UnderLoad(usize),
    /// For every ClientHello without a valid token.
    Always,
}

/// How an endpoint admits sessions. Shared through `Arc`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Configuration of every session.
    pub session: Arc<SessionConfig>,
    /// The handshake configuration (identity, ciphers, client auth).
    pub server: Arc<ServerConfig>,
    /// Sessions held at once (established or not). Default 10,000.
    pub max_sessions: usize,
    /// Proven ClientHellos being reassembled (with a valid Retry token, or
    /// over a stream) plus handshakes running (a session closing or
    /// draining after its handshake does not count). A hello beyond it is
    /// answered with Busy. Unproven state never counts here, so it cannot
    /// fill these slots. Default 1,024.
    pub max_half_open: usize,
    /// Of those, how many may come from one address prefix (see
    /// [`EndpointConfig::prefix_len_v4`]), so that a few peers flooding
    /// hellos shed their own handshakes and not everyone's. Default 64.
    pub max_half_open_per_prefix: usize,
    /// Unproven ClientHellos (over UDP, without a token) held in
    /// reassembly; when full, the oldest is forgotten to make room (the
    /// client repeats it, and is asked for a Retry under load). Default 256.
    pub max_unproven_hellos: usize,
    /// The length of the IPv4 prefix the per-prefix limits count by.
    /// Default 24.
    pub prefix_len_v4: u8,
    /// The length of the IPv6 prefix the per-prefix limits count by.
    /// Default 64.
    pub prefix_len_v6: u8,
    /// How long a client told Busy is asked to wait (it adds jitter and
    /// backs off further on each Busy in a row). Default 100 ms.
    pub busy_retry_after: Duration,
    /// Busy frames sent a second over UDP, at most (only in answer to a
    /// datagram at least as long as the Busy frame). Default 1,000.
    pub max_busy_per_second: u32,
    /// Default: Retry once 64 handshakes are half open.
    pub retry: RetryPolicy,
    /// How long a Retry token stays valid. Default 10 s.
    pub token_lifetime: Duration,
    /// How often the token key is replaced (the previous key is still
    /// accepted for one more period). Default 120 s.
    pub token_key_lifetime: Duration,
    /// A ClientHello not complete after this long is forgotten. Default 5 s.
    pub hello_timeout: Duration,
    /// Bytes all sessions together hold for reassembly and reordering
    /// (each also within its own
    /// [`SessionConfig::max_reassembly_bytes`]). A session may take what
    /// the others left; beyond it, frames are dropped unacknowledged and
    /// their senders repeat them. The next message in line of each
    /// priority class of a session is still taken (so no session stalls
    /// behind the others), which makes the bound this plus three messages
    /// per session being reassembled. Default 256 MiB.
    pub max_reassembly_bytes: usize,
    /// Reset frames sent a second, at most (SPEC.md 3.7.1), when the
    /// server has a [`ServerConfig::reset_key`]. Default 100.
    pub max_resets_per_second: u32,
}

impl EndpointConfig {
    /// Defaults around the given session and server configurations.
    pub fn new(session: Arc<SessionConfig>, server: Arc<ServerConfig>) -> Self {
        EndpointConfig {
            session,
            server,
            max_sessions: 10_000,
            max_half_open: 1024,
            max_half_open_per_prefix: 64,
            max_unproven_hellos: 256,
            prefix_len_v4: 24,
            prefix_len_v6: 64,
            busy_retry_after: Duration::from_millis(100),
            max_busy_per_second: 1000,
            retry: RetryPolicy::UnderLoad(64),
            token_lifetime: Duration::from_secs(10),
            token_key_lifetime: Duration::from_secs(120),
            hello_timeout: Duration::from_secs(5),
            max_reassembly_bytes: 256 << 20,
            max_resets_per_second: 100,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.session.validate()?;
        let bad = |field, reason| Err(ConfigError::Invalid { field, reason });
        if self.max_sessions == 0
            || self.max_half_open == 0
            || self.max_half_open_per_prefix == 0
            || self.max_unproven_hellos == 0
        {
            return bad("max_sessions", "limits must be positive");
        }
        if self.prefix_len_v4 > 32 || self.prefix_len_v6 > 128 {
            return bad("prefix_len_v4", "a prefix is at most the address's length");
        }
        if self.busy_retry_after.as_millis() > u128::from(u32::MAX) {
            return bad("busy_retry_after", "must fit in 32 bits of milliseconds");
        }
        if self.token_lifetime.is_zero() || self.token_key_lifetime < self.token_lifetime {
            return bad("token_key_lifetime", "must be positive and at least token_lifetime");
        }
        if self.hello_timeout.is_zero() {
            return bad("hello_timeout", "must be positive");
        }
        if self.max_reassembly_bytes < 64 * 1024 {
            return bad("max_reassembly_bytes", "must be at least 64 KiB");
        }
        Ok(())
    }
}

/// `ip` with all but its first `v4` (IPv4) or `v6` (IPv6) bits cleared: the
/// prefix the endpoint's per-prefix limits count it under. An IPv4-mapped
/// IPv6 address counts as its IPv4 address.
pub fn prefix_of(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    fn mask<const N: usize>(mut b: [u8; N], keep: u8) -> [u8; N] {
        let keep = usize::from(keep).min(N * 8);
        for (i, byte) in b.iter_mut().enumerate() {
            let bits = keep.saturating_sub(i * 8).min(8);
            *byte &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        }
        b
    }
    match ip {
        IpAddr::V4(a) => IpAddr::from(mask(a.octets(), v4)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a4) => IpAddr::from(mask(a4.octets(), v4)),
            None => IpAddr::from(mask(a.octets(), v6)),
        },
    }
}
