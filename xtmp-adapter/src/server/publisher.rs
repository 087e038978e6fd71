//! A subscription's publisher: a bounded queue from the application's
//! handler to the session, with an explicit overflow policy.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use event_listener::Event;
use futures_channel::mpsc;
use xtmp_core::endpoint::SessionHandle;
use xtmp_core::session::{ErrorCode, SubscriptionId};
use xtmp_core::wire::MessageType;

/// Why a publisher can push no more.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublisherClosed {
    /// The subscriber unsubscribed.
    Unsubscribed,
    /// The session ended.
    SessionClosed,
    /// The server is shutting down.
    Shutdown,
    /// The subscription was ended (its handler returned).
    Ended,
}

impl fmt::Display for PublisherClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublisherClosed::Unsubscribed => "the subscriber unsubscribed",
            PublisherClosed::SessionClosed => "the session closed",
            PublisherClosed::Shutdown => "the server is shutting down",
            PublisherClosed::Ended => "the subscription ended",
        })
    }
}

impl std::error::Error for PublisherClosed {}

/// What the driver takes from a publisher's queue, in order.
#[derive(Debug)]
pub(crate) enum Out {
    Accept,
    Item { body: Bytes, reliable: bool },
    Refuse(ErrorCode, String),
    End(ErrorCode, String),
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) queue: VecDeque<Out>,
    pub(crate) closed: Option<PublisherClosed>,
    accepted: bool,
    /// The driver was told the queue is not empty and has not drained it.
    notified: bool,
    /// Best-effort items dropped by the overflow policy.
    pub(crate) dropped: u64,
}

/// Shared between a [`Publisher`] and the server's driver.
#[derive(Debug)]
pub(crate) struct PubShared {
    /// The subscription's message type (its acceptance carries it).
    pub(crate) message_type: MessageType,
    state: Mutex<State>,
    room: Event,
    depth: usize,
    /// The subscription's place in the server's budget, given back when
    /// the last handle (the driver's, the handler's) is dropped.
    _slot: SubscriptionSlot,
}

/// One subscription counted in the server's budget
/// ([`crate::ServerLimits::max_subscriptions`]) while it lives.
#[derive(Debug)]
pub(crate) struct SubscriptionSlot(pub(crate) Arc<std::sync::atomic::AtomicUsize>);

impl SubscriptionSlot {
    /// A slot, unless `max` subscriptions are live.
    pub(crate) fn take(count: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<SubscriptionSlot> {
        use std::sync::atomic::Ordering;
        count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(SubscriptionSlot(count.clone()))
    }
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl PubShared {
    pub(crate) fn new(message_type: MessageType, depth: usize, slot: SubscriptionSlot) -> Arc<PubShared> {
        let state = State { queue: VecDeque::new(), closed: None, accepted: false, notified: false, dropped: 0 };
        Arc::new(PubShared {
            message_type,
            state: Mutex::new(state),
            room: Event::new(),
            depth: depth.max(1),
            _slot: slot,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The driver took what it could from the queue (`took`: something):
    /// the publisher may push again. Called with the lock the driver
    /// drained under, so that a push between the drain and this call
    /// cannot find the queue marked as notified while no notification is
    /// pending (the publisher would fill the queue and wait for ever).
    pub(crate) fn drained(&self, mut s: MutexGuard<'_, State>, took: bool) {
        let empty = s.queue.is_empty();
        if empty {
            s.notified = false;
        }
        drop(s);
        if took || empty {
            self.room.notify(usize::MAX);
        }
    }

    /// No more pushes: tell every waiter.
    pub(crate) fn close(&self, why: PublisherClosed) {
        let mut s = self.lock();
        if s.closed.is_none() {
            s.closed = Some(why);
        }
        s.queue.retain(|o| matches!(o, Out::End(..) | Out::Refuse(..)));
        drop(s);
        self.room.notify(usize::MAX);
    }
}

/// The sending side of one subscription, handed to its handler (clones
/// push into the same queue).
///
/// Items are queued (at most the server's `publisher_depth`) and moved
/// into the session as its send queue and the subscriber's flow-control
/// window allow. The overflow policy is explicit per kind of item:
/// [`Publisher::push`] (reliable) waits for room, so a slow subscriber
/// slows its own publisher and nothing else; [`Publisher::push_best_effort`]
/// never waits and drops the oldest best-effort item queued when the
/// queue is full (the session's own queue of best-effort items does the
/// same, SPEC.md 4.9).
#[derive(Clone)]
pub struct Publisher {
    pub(crate) shared: Arc<PubShared>,
    pub(crate) notify: mpsc::UnboundedSender<(SessionHandle, SubscriptionId)>,
    pub(crate) session: SessionHandle,
    pub(crate) id: SubscriptionId,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher").field("session", &self.session).field("id", &self.id).finish()
    }
}

impl Publisher {
    /// The subscription's id (in the subscriber's id space).
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// Accepts the subscription without pushing yet (the first push
    /// accepts it too).
    pub fn accept(&self) -> Result<(), PublisherClosed> {
        let mut s = self.shared.lock();
        if let Some(c) = &s.closed {
            return Err(c.clone());
        }
        self.accept_locked(&mut s);
        self.wake(&mut s);
        Ok(())
    }

    fn accept_locked(&self, s: &mut State) {
        if !s.accepted {
            s.accepted = true;
            s.queue.push_back(Out::Accept);
        }
    }

    fn wake(&self, s: &mut State) {
        if !s.notified {
            s.notified = true;
            let _ = self.notify.unbounded_send((self.session, self.id));
        }
    }

    /// Pushes a reliable item (delivered exactly once and in order, or the
    /// subscription ends), waiting while the queue is full.
    pub async fn push(&self, body: impl Into<Bytes>) -> Result<(), PublisherClosed> {
        let body = body.into();
        loop {
            let listener = self.shared.room.listen();
            {
                let mut s = self.shared.lock();
                if let Some(c) = &s.closed {
                    return Err(c.clone());
                }
                if s.queue.len() < self.shared.depth {
                    self.accept_locked(&mut s);
                    s.queue.push_back(Out::Item { body, reliable: true });
                    self.wake(&mut s);
                    return Ok(());
                }
            }
            listener.await;
        }
    }

    /// Pushes a best-effort item (sent once, may be lost): never waits;
    /// with the queue full, the oldest best-effort item queued is dropped
    /// (or this one, if none is). The queue drains as the subscriber's
    /// window allows, so the items that go are the newest.
    pub fn push_best_effort(&self, body: impl Into<Bytes>) -> Result<(), PublisherClosed> {
        let mut s = self.shared.lock();
        if let Some(c) = &s.closed {
            return Err(c.clone());
        }
        self.accept_locked(&mut s);
        if s.queue.len() >= self.shared.depth {
            match s.queue.iter().position(|o| matches!(o, Out::Item { reliable: false, .. })) {
                Some(i) => drop(s.queue.remove(i)),
                None => {
                    s.dropped += 1;
                    return Ok(());
                }
            }
            s.dropped += 1;
        }
        s.queue.push_back(Out::Item { body: body.into(), reliable: false });
        self.wake(&mut s);
        Ok(())
    }

    /// Waits until every item pushed so far has gone into the session (or
    /// the subscription closed, which is the error). An item leaves only
    /// as the subscriber's window allows (a reliable one always, a
    /// best-effort one when the subscriber announced a window, as XTMP
    /// clients do by default), so a handler that
    /// produces live data (the latest state, a tick) calls this before
    /// building each item: a subscription nobody reads then costs it
    /// nothing, instead of a queue of stale items to build and drop.
    pub async fn writable(&self) -> Result<(), PublisherClosed> {
        loop {
            let listener = self.shared.room.listen();
            {
                let s = self.shared.lock();
                if let Some(c) = &s.closed {
                    return Err(c.clone());
                }
                if !s.queue.iter().any(|o| matches!(o, Out::Item { .. })) {
                    return Ok(());
                }
            }
            listener.await;
        }
    }

    /// Best-effort items dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }

    /// Waits until no more can be pushed, and says why.
    pub async fn closed(&self) -> PublisherClosed {
        loop {
            let listener = self.shared.room.listen();
            if let Some(c) = &self.shared.lock().closed {
                return c.clone();
            }
            listener.await;
        }
    }

    /// The handler returned: the subscription ends (or is refused).
    pub(crate) fn finish(&self, result: Result<(), super::Rejection>) {
        let mut s = self.shared.lock();
        if s.closed.is_some() {
            return;
        }
        let out = match result {
            Err(r) if !s.accepted => Out::Refuse(r.code, r.reason),
            Err(r) => Out::End(r.code, r.reason),
            Ok(()) => {
                self.accept_locked(&mut s);
                Out::End(ErrorCode(0), String::from("end of stream"))
            }
        };
        s.queue.push_back(out);
        s.closed = Some(PublisherClosed::Ended);
        self.wake(&mut s);
        drop(s);
        self.shared.room.notify(usize::MAX);
    }
}
