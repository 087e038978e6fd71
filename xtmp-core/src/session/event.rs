//! What a session tells its caller: events, close reasons, errors, stats.

use alloc::string::String;
use core::fmt;
use core::time::Duration;

use bytes::Bytes;

use crate::crypto::AeadAlgorithm;
use crate::handshake::{HandshakeError, PublicIdentity};
use crate::wire::{MessageType, Priority, WireError};

/// A message id, unique per session and direction; `0` is never used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u64);

/// Identifies one of a session's paths (a TCP or WebSocket connection, or
/// a UDP flow). Chosen by the session; the adapter maps it to a socket.
/// Once a path is gone (closed by the adapter with
/// [`crate::session::Session::path_closed`], or failed and its
/// [`Event::PathFailed`] taken), the session may give its id to a new
/// path: an adapter forgets the old path's socket, and anything it had
/// half written to it, when the path goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId(pub u32);

/// The transport under a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// An ordered, reliable byte stream (TCP, WebSocket).
    Stream,
    /// Unreliable datagrams (UDP).
    Datagram,
}

/// Where to send the bytes [`crate::session::Session::poll_transmit`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The path to send on.
    pub path: PathId,
    /// How many bytes of the caller's buffer to send.
    pub len: usize,
}

/// A subscription (SPEC.md 4.9): the message id of the subscribe request
/// that opened it, in the subscriber's id space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(pub u64);

/// How a received data message relates to others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// A one-way message.
    Message,
    /// A request: the peer expects a response naming this message's id.
    Request,
    /// The response to this side's request (or subscription) with the
    /// given id. An Error response to a subscription refuses it.
    Response(MessageId),
    /// The peer subscribes to a stream of this message's type; the body is
    /// its filter. A request: accept it with
    /// [`crate::session::Session::respond`] (then
    /// [`crate::session::Session::push`] items), or refuse it with
    /// [`crate::session::Session::respond_error`]. Its subscription id is
    /// `SubscriptionId(message.id.0)`.
    Subscribe,
    /// An item of this side's subscription.
    Item(SubscriptionId),
    /// The peer ended its subscription to this side: push no more.
    Unsubscribe(SubscriptionId),
    /// The peer ended this side's subscription; [`Message::end_reason`]
    /// says why. No more items follow.
    End(SubscriptionId),
}

/// A message from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The peer's id for it (answer a request with this id).
    pub id: MessageId,
    /// The message type (application, extension or Error).
    pub message_type: MessageType,
    /// Request, response or one-way.
    pub kind: MessageKind,
    /// Its priority class.
    pub priority: Priority,
    /// Whether it is an item of a live stream.
    pub stream_data: bool,
    /// Whether it was sent reliably (acknowledged, delivered exactly
    /// once and in order). For a subscription's item under
    /// [`crate::session::SessionConfig::explicit_item_release`], whether
    /// it must be released with [`crate::session::Session::release_item`].
    pub reliable: bool,
    /// The body.
    pub body: Bytes,
}

impl Message {
    /// For the end of a subscription ([`MessageKind::End`]): its code and reason.
    pub fn end_reason(&self) -> Option<(ErrorCode, String)> {
        if !matches!(self.kind, MessageKind::End(_)) {
            return None;
        }
        super::codec::parse_code_reason(&self.body).map(|(c, r)| (ErrorCode(c), r))
    }

    /// For an Error (`FE`) message: its code and reason.
    pub fn error(&self) -> Option<(ErrorCode, String)> {
        if self.message_type != MessageType::ERROR {
            return None;
        }
        super::codec::parse_code_reason(&self.body).map(|(c, r)| (ErrorCode(c), r))
    }
}

/// Codes of Error (`FE`) responses. Codes from `0x100` up are the application's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The receiver handles no messages of the request's type.
    pub const UNKNOWN_TYPE: ErrorCode = ErrorCode(0x0001);
    /// The receiver refused the request.
    pub const REFUSED: ErrorCode = ErrorCode(0x0002);
    /// The receiver failed while handling it.
    pub const INTERNAL: ErrorCode = ErrorCode(0x0003);
}

/// Codes carried by Disconnect. Codes from `0x1000` up are the application's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// A normal close.
    pub const NO_ERROR: CloseCode = CloseCode(0x0000);
    /// The peer broke a protocol rule.
    pub const PROTOCOL_VIOLATION: CloseCode = CloseCode(0x0001);
    /// Too many frames failed to decrypt (the AEAD's integrity limit).
    pub const INTEGRITY_LIMIT: CloseCode = CloseCode(0x0002);
    /// The peer did not update its keys in time.
    pub const KEY_UPDATE_OVERDUE: CloseCode = CloseCode(0x0003);
    /// An internal failure (for example a cryptographic provider error).
    pub const INTERNAL: CloseCode = CloseCode(0x0004);
    /// The handshake failed. The peer learns nothing more.
    pub const HANDSHAKE_FAILED: CloseCode = CloseCode(0x0100);
}

/// Why a session ended, reported once in [`Event::Closed`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side called `close` or `abort`.
    Local {
        /// The code sent to the peer.
        code: CloseCode,
        /// The reason sent to the peer.
        reason: String,
    },
    /// The peer sent Disconnect.
    Peer {
        /// The peer's code.
        code: CloseCode,
        /// The peer's reason.
        reason: String,
    },
    /// The local handshake failed; this is what failed. The peer was told
    /// only [`CloseCode::HANDSHAKE_FAILED`].
    HandshakeFailed(HandshakeError),
    /// The handshake did not complete within the configured timeout.
    HandshakeTimeout,
    /// The server did not take the hello now (its handshake slots, or its
    /// address prefix's share of them, were full, or it is shutting down)
    /// and asked the client to try again after `retry_after` (SPEC.md
    /// 3.2). Nothing was established; a new handshake may be started.
    Busy {
        /// How long the server asked the client to wait.
        retry_after: core::time::Duration,
    },
    /// Nothing authenticated arrived from the peer within the negotiated idle timeout.
    IdleTimeout,
    /// This side closed the session because the peer broke a rule; says which.
    ProtocolViolation(&'static str),
    /// Too many frames failed authentication.
    IntegrityLimit,
    /// Every path failed and none remained.
    PathsLost,
    /// The server no longer holds the session (it restarted): it said so
    /// with a Reset frame carrying the session's token (SPEC.md 3.7.1).
    StatelessReset,
    /// A cryptographic provider failed.
    Internal(&'static str),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local { code, reason } => write!(f, "closed locally (code 0x{:04x}): {reason}", code.0),
            CloseReason::Peer { code, reason } => write!(f, "closed by the peer (code 0x{:04x}): {reason}", code.0),
            CloseReason::HandshakeFailed(e) => write!(f, "handshake failed: {e}"),
            CloseReason::HandshakeTimeout => f.write_str("handshake timed out"),
            CloseReason::Busy { retry_after } => {
                write!(f, "the server is busy: try again in {} ms", retry_after.as_millis())
            }
            CloseReason::IdleTimeout => f.write_str("idle timeout: nothing heard from the peer"),
            CloseReason::ProtocolViolation(what) => write!(f, "peer violated the protocol: {what}"),
            CloseReason::StatelessReset => f.write_str("the server no longer holds the session (stateless reset)"),
            CloseReason::IntegrityLimit => f.write_str("too many frames failed authentication"),
            CloseReason::PathsLost => f.write_str("every path failed"),
            CloseReason::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

/// Something the application should know. Drain with
/// [`crate::session::Session::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed and is confirmed (SPEC.md 3.1): on a
    /// client, the server has proven that it holds the session keys, so
    /// messages sent from now on reach a session that exists. (A client
    /// may already send once [`Session::is_established`] holds, one round
    /// trip earlier, at the risk of a `HandshakeTimeout`.)
    ///
    /// [`Session::is_established`]: crate::session::Session::is_established
    Connected {
        /// The peer's identity (the server's, on a client; the client's on a
        /// server that asked for one).
        peer: Option<PublicIdentity>,
        /// The record cipher.
        cipher: AeadAlgorithm,
    },
    /// A message arrived.
    Message(Message),
    /// A key generation changed.
    KeyUpdated {
        /// `true` for this side's sending key, `false` for the peer's.
        sending: bool,
        /// The new generation number (0 is the handshake's).
        generation: u32,
    },
    /// A path broke (a stream path delivered a malformed frame, the
    /// adapter reported it closed, or its challenge went unanswered) or was
    /// retired (another datagram path took over from it: `error` is
    /// `None`). The session continues on other paths. Its id may name a
    /// new path once this event has been taken.
    PathFailed {
        /// The path.
        path: PathId,
        /// What was wrong, if it was the data.
        error: Option<WireError>,
    },
    /// The peer answered a challenge on `path`: it may carry application
    /// data now. A validated path whose peer moved to it (a NAT
    /// rebinding, a reconnection) becomes the primary path.
    PathValidated {
        /// The path.
        path: PathId,
        /// Whether it is now the primary path.
        primary: bool,
    },
    /// The peer acknowledged every byte of this side's reliable message:
    /// it holds the message and will deliver it exactly once.
    Acked(MessageId),
    /// This side gave up on a reliable message. The peer may or may not
    /// have it (an acknowledgement may have been lost); it will not get it
    /// twice.
    Failed(MessageId, FailReason),
    /// A [`crate::session::Session::send`] returned
    /// [`SendError::WouldBlock`], and the send queue has room again.
    /// Reported once per `WouldBlock`.
    Writable,
    /// A [`crate::session::Session::push`] to this subscription returned
    /// [`SendError::SubscriptionFull`], and it takes another item now.
    /// Reported once per refusal.
    SubscriptionWritable(SubscriptionId),
    /// The session ended. Reported exactly once; nothing follows.
    Closed(CloseReason),
}

impl Event {
    /// The path this event names, if any.
    pub(crate) fn path(&self) -> Option<PathId> {
        match self {
            Event::PathFailed { path, .. } | Event::PathValidated { path, .. } => Some(*path),
            _ => None,
        }
    }
}

/// Why a reliable message failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailReason {
    /// Not acknowledged by its deadline.
    Timeout,
    /// The session closed (or was aborted) first.
    Closed,
    /// An item that waited for its subscription's flow-control credit:
    /// the subscription ended first (the subscriber unsubscribed, or the
    /// subscription was refused).
    Unsubscribed,
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Timeout => f.write_str("not acknowledged before its deadline"),
            FailReason::Closed => f.write_str("the session closed before it was acknowledged"),
            FailReason::Unsubscribed => f.write_str("the subscription ended before the item could be sent"),
        }
    }
}

/// Why `send` refused a message. The session is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The handshake has not completed.
    NotConnected,
    /// The session is closing or closed.
    Closed,
    /// The send queue is at its configured limit; try again after
    /// `poll_transmit` has drained it.
    WouldBlock,
    /// The message is larger than the peer accepts (its announced maximum
    /// message length).
    TooLarge {
        /// The body's length.
        len: usize,
        /// The largest body that fits.
        max: usize,
    },
    /// The type cannot be sent as a message (connection or control class,
    /// reserved, or `00`/`FF`).
    InvalidType(MessageType),
    /// `respond` named a message id this side never received as a request.
    NoSuchRequest(MessageId),
    /// The subscription is not open (never was, was refused, or ended).
    NoSuchSubscription(SubscriptionId),
    /// A reliable item cannot be pushed now: the subscriber's window for
    /// this subscription is full and
    /// [`crate::session::SessionConfig::subscription_queue`] items already
    /// wait for it. [`Event::SubscriptionWritable`] follows when one more
    /// can wait. (The rest of the session is not held back.)
    SubscriptionFull(SubscriptionId),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotConnected => f.write_str("the session is not connected yet"),
            SendError::Closed => f.write_str("the session is closed"),
            SendError::WouldBlock => f.write_str("the send queue is full"),
            SendError::TooLarge { len, max } => write!(f, "message of {len} bytes exceeds the {max}-byte maximum"),
            SendError::InvalidType(t) => write!(f, "message type {t:?} cannot be sent by the application"),
            SendError::NoSuchRequest(id) => write!(f, "no pending request with id {}", id.0),
            SendError::NoSuchSubscription(id) => write!(f, "no open subscription with id {}", id.0),
            SendError::SubscriptionFull(id) => {
                write!(f, "subscription {} is full: its subscriber has not read enough yet", id.0)
            }
        }
    }
}

impl core::error::Error for SendError {}

/// `poll_transmit`'s buffer is too short for the next frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// Bytes needed.
    pub needed: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transmit buffer too small: {} bytes needed", self.needed)
    }
}

impl core::error::Error for BufferTooSmall {}

/// A session's counters. Cheap to copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Smoothed round-trip time (from acknowledgements and heartbeats).
    pub rtt: Option<Duration>,
    /// RTT variation.
    pub rtt_var: Duration,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received and accepted.
    pub frames_received: u64,
    /// Bytes sent (whole frames).
    pub bytes_sent: u64,
    /// Bytes received (whole frames accepted).
    pub bytes_received: u64,
    /// Frames dropped: malformed, for another session, or out of state.
    pub frames_dropped: u64,
    /// Genuine Reset frames received (SPEC.md 3.7.1).
    pub resets_received: u64,
    /// Frames on validated paths that failed authentication (they count
    /// toward the integrity limit).
    pub decrypt_failures: u64,
    /// Frames from an address not validated as the peer's that failed
    /// authentication (forgeries; they count toward nothing).
    pub forgeries_ignored: u64,
    /// Frames refused as replays or too old.
    pub replays_rejected: u64,
    /// Handshake bytes retransmitted.
    pub handshake_retransmits: u64,
    /// Hybrid re-keys completed.
    pub rekeys: u64,
    /// Frames declared lost (section 4).
    pub lost: u64,
    /// Frames declared lost that the peer had received after all
    /// (reordering); each widens the loss thresholds (SPEC.md 4.4).
    pub spurious_losses: u64,
    /// Frames that carried data again after a loss.
    pub retransmissions: u64,
    /// Acknowledgements sent: ACK frames, and ACKs carried inside data
    /// frames (SPEC.md 4.3).
    pub acks_sent: u64,
    /// Of `acks_sent`, those carried inside data frames.
    pub acks_attached: u64,
    /// Reliable messages acknowledged.
    pub messages_acked: u64,
    /// Reliable messages given up on.
    pub messages_failed: u64,
    /// Unreliable messages dropped incomplete (fragments missing).
    pub reassembly_expired: u64,
    /// Frames dropped unacknowledged because reassembly could not take
    /// them: the budget (the session's, or its share of its endpoint's)
    /// was spent, or a message arrived in too many separate pieces. Their
    /// senders repeat them. Also counted in `frames_dropped`.
    pub reassembly_refused: u64,
    /// Unreliable messages dropped unread: the application fell a receive
    /// window behind, and the oldest made room for the newest.
    pub messages_dropped: u64,
    /// Best-effort subscription items dropped before sending because newer
    /// ones of the same subscription were pushed (a congested path).
    pub items_superseded: u64,
    /// Bytes of messages handed to the event queue and not taken yet.
    pub unread_bytes: u64,
    /// Whether a reliable message waits for the peer's flow-control credit
    /// (its application is not reading fast enough): for its priority
    /// class, or for its subscription.
    pub flow_blocked: bool,
    /// Reliable items (and ends) of the peer's subscriptions waiting for
    /// the subscriber's credit for their subscription (SPEC.md 4.9).
    pub items_waiting: u64,
    /// Probe timeouts.
    pub probes: u64,
    /// Path MTU probes sent (padded datagrams larger than the path's
    /// current size).
    pub mtu_probes: u64,
    /// Datagram paths that fell back to the base size after large
    /// datagrams kept disappearing (SPEC.md 4.10).
    pub black_holes: u64,
    /// The datagram size in use on the primary path (its discovered path
    /// MTU); 0 on a stream path.
    pub max_datagram: u64,
    /// The congestion window (datagram paths), bytes.
    pub congestion_window: u64,
    /// Ack-eliciting bytes in flight on datagram paths.
    pub bytes_in_flight: u64,
    /// Reliable messages waiting for acknowledgement.
    pub unacked_messages: u64,
    /// Subscriptions open, both ways (this side's and the peer's).
    pub subscriptions: u64,
    /// Bytes held for reassembly and reordering.
    pub reassembly_bytes: u64,
    /// The current sending key generation.
    pub send_generation: u32,
    /// The current receiving key generation.
    pub recv_generation: u32,
    /// Whether the previous receiving key generation is still held: only
    /// during its grace period ([`crate::session::SessionConfig::key_grace`])
    /// after the peer's key changed; it is erased when the period ends.
    pub previous_recv_key: bool,
}
