//! Session configuration: plain data with documented defaults, checked by
//! [`SessionConfig::validate`] when a session is created.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::reliability::congestion::{ControllerFactory, NewRenoFactory};
use crate::reliability::mtu::MtuDiscoveryConfig;
use crate::session::PathKind;
use crate::wire::MessageType;

/// How a session behaves once it exists. Shared through `Arc`.
///
/// The idle timeout and the frame and message limits a side announces to
/// its peer live in the handshake configuration
/// ([`crate::handshake::SessionParams`]), so both are negotiated in the
/// signed transcript.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionConfig {
    /// A handshake that has not completed after this long fails with
    /// [`crate::session::CloseReason::HandshakeTimeout`]. Default 10 s.
    pub handshake_timeout: Duration,
    /// First retransmission timeout of a handshake flight on a datagram
    /// path; doubled on each retransmission up to 8 times this. Default 500 ms.
    pub handshake_rto: Duration,
    /// Heartbeat interval when nothing else is sent; `None` for a third of
    /// the negotiated idle timeout. Default `None`.
    pub heartbeat_interval: Option<Duration>,
    /// The sending key is ratcheted after this long. Default 10 minutes.
    pub key_update_interval: Duration,
    /// The sending key is ratcheted after this many frames, or before the
    /// cipher's confidentiality limit if that is lower (2^23 for AES-GCM).
    /// Default `u64::MAX` (the cipher's limit governs).
    pub key_update_frames: u64,
    /// A client starts a hybrid re-key (a fresh X25519 + ML-KEM-1024
    /// exchange mixed into both directions' keys) this long after the last
    /// one. Default 1 hour; at least 1 minute.
    pub rekey_interval: Duration,
    /// Either side closes the session with `KEY_UPDATE_OVERDUE` when no
    /// re-key has completed for this long. Must exceed `rekey_interval`
    /// (and the peer's). Default 3 hours.
    pub rekey_overdue: Duration,
    /// Paths a session holds at once (the handshake's, reconnections,
    /// rebinding); a new path beyond this is refused. Default 4.
    pub max_paths: usize,
    /// Which kind of path each message type goes on while the session has
    /// a validated stream path and a validated datagram path at once
    /// (hybrid). Default: [`PathPolicy::default`].
    pub path_policy: PathPolicy,
    /// How long a receiver keeps the previous key after the peer's first
    /// frame under the next one. Default 3 s.
    pub key_grace: Duration,
    /// Frames the datagram anti-replay window spans. Default 4096.
    pub replay_window: u32,
    /// Failed decryptions on validated paths tolerated before the session
    /// closes; the cipher's integrity limit (RFC 9001 section 6.6: 2^52
    /// for AES-256-GCM, 2^36 for ChaCha20-Poly1305) applies whatever this
    /// says. Failures from an address not validated as the peer's never
    /// count. Default `u64::MAX`: the cipher's limit.
    pub max_decrypt_failures: u64,
    /// How long a closing session ignores stray frames before reporting
    /// `Closed`. Default 1 s.
    pub drain_period: Duration,
    /// Largest datagram sent on a datagram path (bytes, headers included).
    /// Default 1,200 (safe on any IPv6 path).
    pub max_datagram: usize,
    /// The ClientHello is padded to this many bytes on a datagram path so
    /// the server's flight (up to about 9.5 KB) fits in three times what it
    /// received. Default 3,300.
    pub datagram_hello_padding: usize,
    /// Messages queued for sending before [`crate::session::SendError::WouldBlock`].
    /// Default 4,096.
    pub max_queued_messages: usize,
    /// Bytes queued for sending before `WouldBlock`. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// The Unix time in seconds at [`crate::time::Instant::ZERO`], if the
    /// caller knows it. Needed only to check root-signed credentials'
    /// validity; without it, credentials with time bounds are refused.
    pub unix_time_origin: Option<u64>,
    /// How long a receiver may hold an acknowledgement back so it can go
    /// with other frames (one ack-eliciting frame in order; a second one,
    /// or one out of order, is acknowledged at once). Default 25 ms.
    pub max_ack_delay: Duration,
    /// The round-trip time assumed before the first measurement. Default 333 ms.
    pub initial_rtt: Duration,
    /// How long a reliable message waits for its acknowledgement before
    /// [`crate::session::Event::Failed`], unless its send options say
    /// otherwise. Default 30 s.
    pub delivery_timeout: Duration,
    /// Bytes a receiver holds for reassembly and for reliable messages
    /// waiting for earlier ones. Beyond it, frames are dropped without an
    /// acknowledgement (the sender repeats them), except those of the next
    /// message in line of each priority class, so the bound is this plus
    /// three messages. Default 16 MiB. A server's endpoint also shares
    /// one budget among its sessions
    /// ([`crate::endpoint::EndpointConfig::max_reassembly_bytes`]).
    pub max_reassembly_bytes: usize,
    /// An unreliable message whose fragments stop arriving is dropped after
    /// this. Default 10 s.
    pub reassembly_timeout: Duration,
    /// Subscriptions the peer may hold open on this side at once; a
    /// subscribe beyond it is refused with Error `REFUSED`. Default 256.
    pub max_subscriptions: usize,
    /// Best-effort items of one subscription waiting to be sent; pushing
    /// another drops the oldest of them (the newest are kept). Default 64.
    pub subscription_queue: usize,
    /// Whether the application counts the reliable items of its
    /// subscriptions as read itself, with
    /// [`crate::session::Session::release_item`], rather than by taking
    /// them from `poll_event`: an adapter that hands each subscription's
    /// items to its own consumer sets it, so a consumer that falls behind
    /// holds back only its own subscription (SPEC.md 4.9). Default `false`.
    pub explicit_item_release: bool,
    /// The congestion controller for datagram paths. Default NewReno.
    pub congestion: Arc<dyn ControllerFactory>,
    /// Whether datagrams are paced: spread over the round trip at 5/4 of
    /// the congestion window per RTT, in bursts of at most 2 ms of the
    /// window (10 to 256 datagrams) (SPEC.md 4.6). Default `true`.
    pub pacing: bool,
    /// Path MTU discovery on datagram paths: probe above `max_datagram`
    /// up to the configured bound, fall back on a black hole (SPEC.md
    /// 4.10). `None` keeps every datagram path at `max_datagram`. Default on.
    pub mtu_discovery: Option<MtuDiscoveryConfig>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            handshake_timeout: Duration::from_secs(10),
            handshake_rto: Duration::from_millis(500),
            heartbeat_interval: None,
            key_update_interval: Duration::from_secs(600),
            key_update_frames: u64::MAX,
            rekey_interval: Duration::from_secs(3600),
            rekey_overdue: Duration::from_secs(3 * 3600),
            max_paths: 4,
            path_policy: PathPolicy::default(),
            key_grace: Duration::from_secs(3),
            replay_window: 4096,
            max_decrypt_failures: u64::MAX,
            drain_period: Duration::from_secs(1),
            max_datagram: 1200,
            datagram_hello_padding: 3300,
            max_queued_messages: 4096,
            max_queued_bytes: 16 << 20,
            unix_time_origin: None,
            max_ack_delay: Duration::from_millis(25),
            initial_rtt: Duration::from_millis(333),
            delivery_timeout: Duration::from_secs(30),
            max_reassembly_bytes: 16 << 20,
            reassembly_timeout: Duration::from_secs(10),
            max_subscriptions: 256,
            subscription_queue: 64,
            explicit_item_release: false,
            congestion: Arc::new(NewRenoFactory),
            pacing: true,
            mtu_discovery: Some(MtuDiscoveryConfig::default()),
        }
    }
}

/// A configuration value that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field is out of range; says which and why.
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid { field, reason } => write!(f, "invalid session configuration: {field} {reason}"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// Smallest datagram a path may be configured with: a full header, a
/// Handshake frame header and room for progress.
pub const MIN_DATAGRAM: usize = 512;

impl SessionConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason| Err(ConfigError::Invalid { field, reason });
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout", "must be positive");
        }
        if self.handshake_rto.is_zero() || self.handshake_rto > self.handshake_timeout {
            return bad("handshake_rto", "must be positive and below handshake_timeout");
        }
        if self.heartbeat_interval.is_some_and(|d| d.is_zero()) {
            return bad("heartbeat_interval", "must be positive");
        }
        if self.key_update_interval < Duration::from_secs(1) {
            return bad("key_update_interval", "must be at least 1 s");
        }
        if self.rekey_interval < Duration::from_secs(60) {
            return bad("rekey_interval", "must be at least 1 minute");
        }
        if self.rekey_overdue <= self.rekey_interval {
            return bad("rekey_overdue", "must exceed rekey_interval");
        }
        if self.max_paths == 0 || self.max_paths > 64 {
            return bad("max_paths", "must be between 1 and 64");
        }
        if self.key_update_frames < 16 {
            return bad("key_update_frames", "must be at least 16");
        }
        if self.replay_window < 64 || self.replay_window > 1 << 20 {
            return bad("replay_window", "must be between 64 and 2^20 frames");
        }
        if self.max_datagram < MIN_DATAGRAM || self.max_datagram > 65_507 {
            return bad("max_datagram", "must be between 512 and 65,507 bytes");
        }
        if let Some(m) = &self.mtu_discovery {
            if m.upper_bound > 65_507 {
                return bad("mtu_discovery", "upper_bound must be at most 65,507 bytes");
            }
            if m.interval < Duration::from_secs(1) {
                return bad("mtu_discovery", "interval must be at least 1 s");
            }
            if m.black_hole_threshold == 0 {
                return bad("mtu_discovery", "black_hole_threshold must be at least 1");
            }
        }
        if self.datagram_hello_padding > 16 * 1024 {
            return bad("datagram_hello_padding", "must be at most 16 KiB");
        }
        if self.max_ack_delay > Duration::from_secs(1) {
            return bad("max_ack_delay", "must be at most 1 s");
        }
        if self.initial_rtt < Duration::from_millis(1) || self.initial_rtt > Duration::from_secs(10) {
            return bad("initial_rtt", "must be between 1 ms and 10 s");
        }
        if self.delivery_timeout.is_zero() || self.reassembly_timeout.is_zero() {
            return bad("delivery_timeout", "timeouts must be positive");
        }
        if self.max_reassembly_bytes < 64 * 1024 {
            return bad("max_reassembly_bytes", "must be at least 64 KiB");
        }
        if self.max_queued_messages == 0 || self.max_queued_bytes == 0 {
            return bad("max_queued_messages", "queue limits must be positive");
        }
        Ok(())
    }
}

/// Where messages go in a hybrid session, one with a validated stream path
/// and a validated datagram path at once (SPEC.md 3.8): each message
/// prefers one kind (its type's, or [`SendOptions::path`](super::SendOptions::path)),
/// and goes on the other only while no path of its kind is up. Control
/// frames (acknowledgements, heartbeats, key updates) go on either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPolicy {
    /// Types that prefer the datagram path: real-time streams, where a late
    /// item is worth less than a fresh one. Every other type prefers the
    /// stream path. Default `LIVE_UPDATES`, `EVENT_STREAM`,
    /// `METRICS_STREAM`.
    pub datagram_types: Vec<MessageType>,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            datagram_types: alloc::vec![
                MessageType::LIVE_UPDATES,
                MessageType::EVENT_STREAM,
                MessageType::METRICS_STREAM
            ],
        }
    }
}

impl PathPolicy {
    /// The kind of path messages of type `ty` prefer.
    pub fn preferred(&self, ty: MessageType) -> PathKind {
        if self.datagram_types.contains(&ty) { PathKind::Datagram } else { PathKind::Stream }
    }
}
