//! What the driver tells every handle: the connection state and the
//! latest statistics, with a notification on each change.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use event_listener::Event;
use xtmp_core::session::{CloseReason, Stats};

/// Where a client's connection stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// The first handshake is under way.
    Connecting,
    /// The session is up and has a path to the server.
    Connected,
    /// The connection was lost: the client is reconnecting (a new path
    /// for the same session if the server still holds it, a new session
    /// otherwise). `attempt` counts the failed attempts so far.
    Reconnecting {
        /// Failed attempts since the connection was lost.
        attempt: u32,
    },
    /// The client has stopped: closed by the application, refused by the
    /// server, or out of reconnection attempts.
    Closed(CloseReason),
}

/// A client's counters.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ClientStats {
    /// The current session's counters (RTT, frames, bytes, losses,
    /// retransmissions, key generations).
    pub session: Stats,
    /// Sessions established so far (1 until a reconnection needed a new
    /// handshake).
    pub sessions: u64,
    /// Transport connections re-established for a live session.
    pub paths_redialed: u64,
    /// The session's open paths the session has validated: 1, or 2 in a
    /// hybrid session with its stream and its datagram path both up.
    pub paths: usize,
    /// Messages sent again in a new session because the old one closed
    /// before the server acknowledged them.
    pub resent: u64,
    /// Best-effort subscription items dropped because their subscriber
    /// was not reading (reliable items are never dropped: they wait).
    pub items_dropped: u64,
    /// Subscription items handed to their streams and not read yet, over
    /// every subscription. Bounded: reliable ones by each subscription's
    /// window (the session's `subscription_window`), best-effort ones by
    /// the session's `subscription_queue` per subscription.
    pub items_unread: u64,
    /// Their body bytes (each small item holds only its own bytes).
    pub item_bytes_unread: u64,
}

#[derive(Debug)]
struct Inner {
    state: ConnectionState,
    stats: ClientStats,
    version: u64,
    /// The current session's channel binding, once it is established.
    binding: Option<[u8; xtmp_core::session::CHANNEL_BINDING_LEN]>,
}

/// The state cell the driver writes and handles read.
#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    changed: Event,
    /// Commands the handles queued for the driver task that it has not
    /// taken yet: a send in a handle's own task must not pass them.
    pub(crate) queued: AtomicUsize,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        let inner =
            Inner { state: ConnectionState::Connecting, stats: ClientStats::default(), version: 0, binding: None };
        Shared { inner: Mutex::new(inner), changed: Event::new(), queued: AtomicUsize::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock left plain data behind: use it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn state(&self) -> ConnectionState {
        self.lock().state.clone()
    }

    pub(crate) fn stats(&self) -> ClientStats {
        self.lock().stats.clone()
    }

    pub(crate) fn set_state(&self, state: ConnectionState) {
        let mut i = self.lock();
        if i.state == state || matches!(i.state, ConnectionState::Closed(_)) {
            return;
        }
        i.state = state;
        i.version += 1;
        drop(i);
        self.changed.notify(usize::MAX);
    }

    pub(crate) fn channel_binding(&self) -> Option<[u8; xtmp_core::session::CHANNEL_BINDING_LEN]> {
        self.lock().binding
    }

    pub(crate) fn set_channel_binding(&self, b: Option<[u8; xtmp_core::session::CHANNEL_BINDING_LEN]>) {
        self.lock().binding = b;
    }

    pub(crate) fn update_stats(&self, f: impl FnOnce(&mut ClientStats)) {
        f(&mut self.lock().stats);
    }

    /// Waits until the state differs from the one seen at version `seen`;
    /// returns the new state and its version.
    pub(crate) async fn changed(&self, seen: u64) -> (ConnectionState, u64) {
        loop {
            let listener = self.changed.listen();
            {
                let i = self.lock();
                if i.version != seen {
                    return (i.state.clone(), i.version);
                }
            }
            listener.await;
        }
    }

    pub(crate) fn version(&self) -> u64 {
        self.lock().version
    }
}
