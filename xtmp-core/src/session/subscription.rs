//! Subscriptions (SPEC.md 4.9): a subscriber asks for a stream of items of
//! one message type with a filter; the publisher accepts or refuses it,
//! pushes items (reliable or best-effort) and may end it; the subscriber
//! may unsubscribe. Either side of a session may be either role.

use alloc::collections::BTreeMap;

use super::*;

/// A subscription the peer holds on this side.
#[derive(Clone, Copy, Debug)]
pub(super) struct Publishing {
    message_type: MessageType,
    /// Best-effort items queued and not yet sent.
    queued: usize,
}

/// Both directions' open subscriptions.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    /// This side's, by id: the stream's type.
    subscribed: BTreeMap<u64, MessageType>,
    /// The peer's, by id.
    publishing: BTreeMap<u64, Publishing>,
}

impl Subscriptions {
    /// Subscriptions open, both ways.
    pub(super) fn open_count(&self) -> usize {
        self.subscribed.len() + self.publishing.len()
    }

    /// The send queues were cleared.
    pub(super) fn clear_queued(&mut self) {
        for p in self.publishing.values_mut() {
            p.queued = 0;
        }
    }
}

impl Session {
    /// Subscribes to the peer's stream of `message_type` items (a live
    /// stream type such as [`MessageType::LIVE_UPDATES`], or an extension
    /// type), with a `filter` the peer's application interprets. The
    /// subscribe request is reliable whatever `options` say; the peer
    /// answers it with a response (accepted) or an Error response
    /// (refused), then sends [`MessageKind::Item`]s until either side ends
    /// it.
    pub fn subscribe(
        &mut self,
        message_type: MessageType,
        filter: Bytes,
        options: SendOptions,
    ) -> Result<SubscriptionId, SendError> {
        check_app_type(message_type)?;
        let options = SendOptions { reliable: true, request: false, ..options };
        let id = self.send_data(message_type, filter, options, codec::KIND_SUBSCRIBE, 0)?;
        self.requests_out.insert(id.0);
        self.subs.subscribed.insert(id.0, message_type);
        Ok(SubscriptionId(id.0))
    }

    /// Ends this side's subscription `id`: the peer stops pushing, and
    /// items still on their way are dropped on arrival.
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> Result<(), SendError> {
        let Some(&ty) = self.subs.subscribed.get(&id.0) else { return Err(SendError::NoSuchSubscription(id)) };
        self.send_data(ty, Bytes::new(), SendOptions::default(), codec::KIND_UNSUBSCRIBE, id.0)?;
        self.subs.subscribed.remove(&id.0);
        self.requests_out.remove(&id.0);
        Ok(())
    }

    /// Pushes an item to the peer's subscription `id` (its type, with
    /// STREAM_DATA). A reliable item is delivered exactly once and in
    /// order within its priority class, like any reliable message. A
    /// best-effort one (`options.reliable == false`) may be lost; when
    /// [`SessionConfig::subscription_queue`] best-effort items of this
    /// subscription already wait to be sent (the path is congested), the
    /// oldest of them is dropped so the newest go out.
    pub fn push(&mut self, id: SubscriptionId, body: Bytes, options: SendOptions) -> Result<MessageId, SendError> {
        let Some(p) = self.subs.publishing.get(&id.0).copied() else {
            return Err(SendError::NoSuchSubscription(id));
        };
        let options = SendOptions { stream_data: true, request: false, ..options };
        if !options.reliable && p.queued >= self.config.subscription_queue {
            self.drop_oldest_item(id.0);
        }
        let m = self.send_data(p.message_type, body, options, codec::KIND_ITEM, id.0)?;
        if !options.reliable
            && let Some(p) = self.subs.publishing.get_mut(&id.0)
        {
            p.queued += 1;
        }
        Ok(m)
    }

    /// Ends the peer's subscription `id` with `code` and `reason` (an end
    /// of stream): sent reliably after the items pushed before it (in the
    /// same priority class), and nothing can be pushed after it.
    pub fn end_subscription(&mut self, id: SubscriptionId, code: ErrorCode, reason: &str) -> Result<(), SendError> {
        let Some(p) = self.subs.publishing.get(&id.0).copied() else {
            return Err(SendError::NoSuchSubscription(id));
        };
        let body = Bytes::from(codec::encode_code_reason(code.0, reason));
        self.send_data(p.message_type, body, SendOptions::default(), codec::KIND_END, id.0)?;
        self.subs.publishing.remove(&id.0);
        self.requests_in.remove(&id.0);
        Ok(())
    }

    /// Drops the oldest best-effort item of subscription `id` that has not
    /// started to go out.
    fn drop_oldest_item(&mut self, id: u64) {
        for q in Q_EMERGENCY..self.queues.len() {
            let found = self.queues[q].iter().position(|o| {
                o.offset == 0 && matches!(o.head, Head::Data(d) if d.kind == codec::KIND_ITEM && d.correlation == id && d.order == 0)
            });
            if let Some(item) = found.and_then(|i| self.queues[q].remove(i)) {
                self.queued_bytes -= item.body.len();
                self.queued_items -= 1;
                self.stats.items_superseded += 1;
                self.item_sent(id);
                return;
            }
        }
    }

    /// A best-effort item of subscription `id` left the queue.
    pub(super) fn item_sent(&mut self, id: u64) {
        if let Some(p) = self.subs.publishing.get_mut(&id) {
            p.queued = p.queued.saturating_sub(1);
        }
    }

    /// A subscription message arrived (SPEC.md 4.9). Returns whether to
    /// deliver it (otherwise it is dropped, after any automatic answer).
    pub(super) fn on_subscription_message(&mut self, m: &Message) -> bool {
        match m.kind {
            MessageKind::Subscribe => {
                if self.subs.publishing.len() >= self.config.max_subscriptions {
                    self.queue_error(m.id.0, ErrorCode::REFUSED, "too many subscriptions");
                    return false;
                }
                self.subs.publishing.insert(m.id.0, Publishing { message_type: m.message_type, queued: 0 });
                true
            }
            // Items of a subscription this side ended are still on their way.
            MessageKind::Item(sub) => self.subs.subscribed.contains_key(&sub.0),
            MessageKind::Unsubscribe(sub) => self.subs.publishing.remove(&sub.0).is_some(),
            MessageKind::End(sub) => {
                self.requests_out.remove(&sub.0);
                self.subs.subscribed.remove(&sub.0).is_some()
            }
            _ => true,
        }
    }

    /// A response to this side's request `to` arrived: an Error response
    /// to a subscription refuses it.
    pub(super) fn on_response(&mut self, to: u64, error: bool) {
        if error {
            self.subs.subscribed.remove(&to);
        }
    }

    /// This side answered the peer's request `to`: an Error refuses a
    /// subscription.
    pub(super) fn on_answered(&mut self, to: u64, error: bool) {
        if error {
            self.subs.publishing.remove(&to);
        }
    }
}

/// The types an application may send as messages, subscribe to or push.
pub(super) fn check_app_type(message_type: MessageType) -> Result<(), SendError> {
    let class = message_type.class();
    let allowed = (class == TypeClass::Application && message_type.name().is_some()) || class == TypeClass::Extension;
    if allowed { Ok(()) } else { Err(SendError::InvalidType(message_type)) }
}
