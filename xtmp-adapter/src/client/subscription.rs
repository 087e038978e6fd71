//! A client's subscription: a stream of the server's items.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_channel::mpsc;
use futures_core::Stream;
use xtmp_core::session::{CloseReason, ErrorCode, Message};

use super::Command;

/// What the driver hands a subscription.
#[derive(Debug)]
pub(crate) enum SubEvent {
    /// An item, and whether it counts against the subscription's window
    /// (reliable items, and best-effort ones under a window): reading it
    /// gives the publisher credit.
    Item(Message, bool),
    End(SubscriptionEnd),
}

/// Why a subscription's stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionEnd {
    /// The server ended it with this code and reason (`0`: the stream is
    /// complete).
    Ended {
        /// The server's code.
        code: ErrorCode,
        /// The server's reason.
        reason: String,
    },
    /// A new session after a reconnection could not resume it: the server
    /// refused it this time.
    Refused {
        /// The server's code.
        code: ErrorCode,
        /// The server's reason.
        reason: String,
    },
    /// The client closed (or gave up reconnecting).
    Closed(CloseReason),
}

impl std::fmt::Display for SubscriptionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubscriptionEnd::Ended { code, reason } if code.0 == 0 && reason.is_empty() => {
                f.write_str("the server completed the stream")
            }
            SubscriptionEnd::Ended { code, reason } => {
                write!(f, "the server ended the stream (code 0x{:04x}): {reason}", code.0)
            }
            SubscriptionEnd::Refused { code, reason } => {
                write!(f, "the server refused to renew the subscription (code 0x{:04x}): {reason}", code.0)
            }
            SubscriptionEnd::Closed(r) => write!(f, "the client stopped: {r}"),
        }
    }
}

/// The items of a subscription, as a [`Stream`] of [`Message`]s.
///
/// Reliable items arrive exactly once and in order, and are counted as
/// read when the stream yields them: a subscriber that stops reading holds
/// back only this subscription, by the window the server may send ahead
/// (SPEC.md 4.9), never the rest of the session. So are best-effort items
/// when the session announces a subscription window (the default, 64
/// KiB): the server then publishes no further ahead of what this stream
/// has yielded, and an unread subscription costs it nothing. With no
/// window (`subscription_window` 0), best-effort items beyond the
/// session's `subscription_queue` unread ones are dropped (counted in
/// [`crate::ClientStats::items_dropped`]). After a reconnection that
/// needed a new session the subscription is renewed with the same filter;
/// items the server published meanwhile are not replayed.
///
/// Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    key: u64,
    items: mpsc::UnboundedReceiver<SubEvent>,
    commands: mpsc::UnboundedSender<Command>,
    end: Option<SubscriptionEnd>,
}

impl Subscription {
    pub(crate) fn new(
        key: u64,
        items: mpsc::UnboundedReceiver<SubEvent>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Subscription {
        Subscription { key, items, commands, end: None }
    }

    /// Why the stream ended, once it has (`None` while it runs).
    pub fn end(&self) -> Option<&SubscriptionEnd> {
        self.end.as_ref()
    }

    /// Ends the subscription now (as dropping it does).
    pub fn unsubscribe(mut self) {
        self.leave();
    }

    fn leave(&mut self) {
        if self.end.is_none() {
            let _ = self.commands.unbounded_send(Command::Unsubscribe(self.key));
            self.end = Some(SubscriptionEnd::Closed(CloseReason::Local {
                code: xtmp_core::session::CloseCode::NO_ERROR,
                reason: String::from("unsubscribed"),
            }));
        }
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if self.end.is_some() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.items).poll_next(cx) {
            Poll::Ready(Some(SubEvent::Item(m, credited))) => {
                let read = Command::ItemRead { key: self.key, credited, len: m.body.len() };
                let _ = self.commands.unbounded_send(read);
                Poll::Ready(Some(m))
            }
            Poll::Ready(Some(SubEvent::End(e))) => {
                self.end = Some(e);
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                // The driver is gone without saying why: it stopped.
                self.end = Some(SubscriptionEnd::Closed(CloseReason::PathsLost));
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.leave();
    }
}
