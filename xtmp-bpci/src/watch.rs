//! Watches that survive reconnection: [`BpciClient::watch_bundle`] and
//! [`BpciClient::watch_events`] return a [`Watch`], a stream of events in
//! order that resumes after the last one it yielded, whatever happens to
//! the session underneath.
//!
//! The subscription is renewed by the XTMP client on every new session
//! with a filter made afresh (`after` = the last sequence number yielded),
//! so a watcher sees every event once and in order across reconnections
//! and server restarts. If the server no longer keeps the events after
//! that cursor (CURSOR_EXPIRED), the watch reads the watched bundles'
//! current states, yields them as [`WatchItem::Resynced`] (it says so:
//! some transitions were not seen one by one), and carries on from the
//! oldest event the server keeps. A server that shuts down ends its
//! streams (code 0): the watch subscribes again, and the subscription goes
//! to the client's next session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use xtmp_adapter::{Subscription, SubscriptionEnd};
use xtmp_core::wire::MessageType;

use crate::client::{BpciClient, ClientError};
use crate::error::BpciError;
use crate::schema::{self, Event, EventKind, Filter, Hash, Status, StreamRequest};

/// What a [`Watch`] yields.
// The large variant is the common one: boxing it would allocate per event.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// The next event.
    Event(Event),
    /// The server had discarded the events after `after`: the watched
    /// bundles' states were read instead (`statuses`), and the watch
    /// continues after `resumed_after` (the oldest event kept, minus one).
    Resynced {
        /// The cursor that had expired.
        after: u64,
        /// Where the watch continues.
        resumed_after: u64,
        /// The watched bundles' current states (empty for a watch of all
        /// events).
        statuses: Vec<Status>,
    },
}

type Opening = Pin<Box<dyn Future<Output = Result<Subscription, ClientError>> + Send>>;
type Resyncing = Pin<Box<dyn Future<Output = Result<Vec<Status>, ClientError>> + Send>>;

/// A stream of events that resumes after reconnections (module docs).
/// Items are `Ok` until the watch ends; an `Err` is the last item.
pub struct Watch {
    client: BpciClient,
    message_type: MessageType,
    filter: Filter,
    /// The last sequence number yielded (shared with the renewal filter).
    last: Arc<AtomicU64>,
    /// A bundle watch ends after its bundle's final state.
    until_final: Option<Hash>,
    sub: Option<Subscription>,
    opening: Option<Opening>,
    resyncing: Option<(u64, u64, Resyncing)>,
    done: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("last", &self.last()).field("done", &self.done).finish()
    }
}

impl Watch {
    pub(crate) fn new(
        client: BpciClient,
        message_type: MessageType,
        filter: Filter,
        after: u64,
        until_final: Option<Hash>,
    ) -> Watch {
        let mut w = Watch {
            client,
            message_type,
            filter,
            last: Arc::new(AtomicU64::new(after)),
            until_final,
            sub: None,
            opening: None,
            resyncing: None,
            done: false,
        };
        w.open();
        w
    }

    /// The sequence number of the last event yielded (or the cursor the
    /// watch started after).
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    fn open(&mut self) {
        let (client, t, filter, last) =
            (self.client.clone(), self.message_type, self.filter.clone(), self.last.clone());
        self.opening = Some(Box::pin(async move {
            loop {
                let (filter, last) = (filter.clone(), last.clone());
                let body = move || {
                    let req = StreamRequest { filter: Some(filter.clone()), after: Some(last.load(Ordering::Acquire)) };
                    Bytes::from(schema::to_canonical(&req))
                };
                match client.transport().subscribe_renewing(t, body).await {
                    // The session failed under the subscription: once the
                    // client has a session again, subscribe again.
                    Err(e @ (xtmp_adapter::Error::Closed(_) | xtmp_adapter::Error::Send(_)))
                        if !matches!(client.transport().state(), xtmp_adapter::ConnectionState::Closed(_)) =>
                    {
                        tracing::debug!(error = %e, "watch: subscribing again on the next session");
                        loop {
                            match client.transport().state_changed().await {
                                xtmp_adapter::ConnectionState::Connected => break,
                                xtmp_adapter::ConnectionState::Closed(r) => {
                                    return Err(ClientError::Transport(xtmp_adapter::Error::Closed(r)));
                                }
                                _ => {}
                            }
                        }
                    }
                    r => return r.map_err(ClientError::from),
                }
            }
        }));
    }

    fn resync(&mut self, first: u64) {
        let after = self.last();
        let resumed_after = first.saturating_sub(1).max(after);
        let client = self.client.clone();
        let bundles = self.filter.bundles.clone().unwrap_or_default();
        self.resyncing = Some((
            after,
            resumed_after,
            Box::pin(async move {
                let mut statuses = Vec::with_capacity(bundles.len());
                for id in bundles {
                    match client.status(id).await {
                        Ok(s) => statuses.push(s),
                        Err(ClientError::Bpci(BpciError::NotFound { .. })) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(statuses)
            }),
        ));
    }
}

impl Stream for Watch {
    type Item = Result<WatchItem, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some((after, resumed_after, fut)) = &mut this.resyncing {
                let (after, resumed_after) = (*after, *resumed_after);
                let Poll::Ready(r) = fut.as_mut().poll(cx) else { return Poll::Pending };
                this.resyncing = None;
                return match r {
                    Ok(statuses) => {
                        this.last.store(resumed_after, Ordering::Release);
                        if let (Some(id), true) = (this.until_final, statuses.iter().any(|s| s.state.is_final())) {
                            debug_assert!(statuses.iter().all(|s| s.bundle_id == id));
                            this.done = true;
                        } else {
                            this.open();
                        }
                        Poll::Ready(Some(Ok(WatchItem::Resynced { after, resumed_after, statuses })))
                    }
                    Err(e) => {
                        this.done = true;
                        Poll::Ready(Some(Err(e)))
                    }
                };
            }
            if let Some(fut) = &mut this.opening {
                let Poll::Ready(r) = fut.as_mut().poll(cx) else { return Poll::Pending };
                this.opening = None;
                match r {
                    Ok(sub) => this.sub = Some(sub),
                    Err(ClientError::Bpci(BpciError::CursorExpired { first })) => {
                        this.resync(first);
                        continue;
                    }
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            let Some(sub) = &mut this.sub else {
                this.done = true;
                return Poll::Ready(None);
            };
            match Pin::new(&mut *sub).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(m)) => match schema::from_cbor::<Event>("Event", &m.body) {
                    // Already yielded (a renewal overlapped): skip it.
                    Ok(e) if e.seq <= this.last() => {}
                    Ok(e) => {
                        this.last.store(e.seq, Ordering::Release);
                        if this.until_final.is_some()
                            && e.kind == EventKind::Bundle
                            && e.state.is_some_and(|s| s.is_final())
                        {
                            this.done = true;
                        }
                        return Poll::Ready(Some(Ok(WatchItem::Event(e))));
                    }
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(ClientError::Malformed(e))));
                    }
                },
                Poll::Ready(None) => {
                    let end = sub.end().cloned();
                    this.sub = None;
                    match end {
                        Some(SubscriptionEnd::Ended { code, reason } | SubscriptionEnd::Refused { code, reason })
                            if code == crate::error::code::CURSOR_EXPIRED =>
                        {
                            match BpciError::from_wire(code, &reason) {
                                BpciError::CursorExpired { first } => this.resync(first),
                                other => {
                                    this.done = true;
                                    return Poll::Ready(Some(Err(ClientError::Bpci(other))));
                                }
                            }
                        }
                        // A BPCI stream never completes: an end with code 0
                        // is a server shutting down. Subscribe again; the
                        // subscription goes to the next session.
                        Some(SubscriptionEnd::Ended { code, .. }) if code.0 == 0 => this.open(),
                        Some(SubscriptionEnd::Ended { code, reason } | SubscriptionEnd::Refused { code, reason }) => {
                            this.done = true;
                            return Poll::Ready(Some(Err(ClientError::Bpci(BpciError::from_wire(code, &reason)))));
                        }
                        Some(SubscriptionEnd::Closed(r)) => {
                            this.done = true;
                            return Poll::Ready(Some(Err(ClientError::Transport(xtmp_adapter::Error::Closed(r)))));
                        }
                        None | Some(_) => {
                            this.done = true;
                            return Poll::Ready(None);
                        }
                    }
                }
            }
        }
    }
}

impl BpciClient {
    /// Watches one bundle's transitions (after `after`, 0 for all of them),
    /// until it reaches a final state: the stream then ends. Survives
    /// reconnections (module docs).
    pub fn watch_bundle(&self, bundle_id: Hash, after: u64) -> Watch {
        let filter = Filter { bundles: Some(vec![bundle_id]), ..Filter::default() };
        Watch::new(self.clone(), MessageType::LIVE_UPDATES, filter, after, Some(bundle_id))
    }

    /// Watches every event passing `filter`, after `after`. Survives
    /// reconnections (module docs).
    pub fn watch_events(&self, filter: Filter, after: u64) -> Watch {
        Watch::new(self.clone(), MessageType::EVENT_STREAM, filter, after, None)
    }
}
