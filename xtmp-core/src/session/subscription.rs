//! Subscriptions (SPEC.md 4.9): a subscriber asks for a stream of items of
//! one message type with a filter; the publisher accepts or refuses it,
//! pushes items (reliable or best-effort) and may end it; the subscriber
//! may unsubscribe. Either side of a session may be either role.

use alloc::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::reliability::flow::{ItemRecvCredit, ItemSendCredit, credit_size};

/// A subscription the peer holds on this side.
#[derive(Debug)]
pub(super) struct Publishing {
    message_type: MessageType,
    /// Best-effort items queued and not yet sent.
    queued: usize,
    /// The subscriber's limit on its items (SPEC.md 4.9): reliable ones,
    /// and best-effort ones too when it announced a window.
    credit: ItemSendCredit,
    /// Reliable items (and the end) waiting for credit, in push order.
    /// They are not in the session's send queue (a stalled subscriber
    /// must not hold back the rest of the session): at most
    /// [`SessionConfig::subscription_queue`] of them wait.
    waiting: VecDeque<Staged>,
    /// A push was refused as [`SendError::SubscriptionFull`] (a reliable
    /// one with too many waiting, a best-effort one without credit): report
    /// [`Event::SubscriptionWritable`] once there is room.
    blocked: bool,
    /// The end was sent or waits: nothing more can be pushed.
    ended: bool,
}

/// This side's subscription.
#[derive(Debug)]
struct Subscribed {
    message_type: MessageType,
    credit: ItemRecvCredit,
    /// With [`SessionConfig::explicit_item_release`]: the credit of each
    /// reliable item delivered and not yet released, oldest first.
    unreleased: VecDeque<u64>,
}

/// A best-effort item sent under its subscription's credit: it holds
/// that credit until every byte is acknowledged (the subscriber then
/// counts it as it reads it), and gives it back if any frame is lost
/// (the subscriber never sees it whole). SPEC.md 4.9.
#[derive(Debug)]
struct ItemFlight {
    subscription: u64,
    credit: u64,
    /// Body bytes (as sent) not acknowledged yet.
    unacked: u64,
}

/// Both directions' open subscriptions.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    /// This side's, by id.
    subscribed: BTreeMap<u64, Subscribed>,
    /// The peer's, by id.
    publishing: BTreeMap<u64, Publishing>,
    /// Staged messages waiting in `publishing`, all subscriptions together.
    waiting: usize,
    /// This side's subscription window (Parameters id 5), and the peer's.
    local_window: u32,
    peer_window: u32,
    /// Subscriptions with a SubscriptionCredit queued.
    credit_queued: BTreeSet<u64>,
    /// Best-effort items holding credit, by message id.
    items_in_flight: BTreeMap<u64, ItemFlight>,
}

impl Subscriptions {
    pub(super) fn new(local_window: u32) -> Subscriptions {
        Subscriptions { local_window, ..Subscriptions::default() }
    }

    /// The peer announced its subscription window.
    pub(super) fn set_peer_window(&mut self, window: u32) {
        self.peer_window = window;
    }

    /// Subscriptions open, both ways.
    pub(super) fn open_count(&self) -> usize {
        self.subscribed.len() + self.publishing.values().filter(|p| !p.ended).count()
    }

    /// Messages waiting for their subscription's credit.
    pub(super) fn waiting_count(&self) -> usize {
        self.waiting
    }

    /// The send queues were cleared.
    pub(super) fn clear_queued(&mut self) {
        for p in self.publishing.values_mut() {
            p.queued = 0;
        }
    }

    /// Whether a frame of an item of this side's subscription `id` may be
    /// taken: frames beyond the subscription's window and one message are
    /// dropped (SPEC.md 4.9).
    pub(super) fn admits(&self, id: u64, max_message: u32) -> bool {
        self.subscribed.get(&id).is_none_or(|s| s.credit.admits(max_message))
    }

    /// Whether best-effort items of this side's subscription `id` count
    /// against its window (it announced one).
    pub(super) fn counts_best_effort(&self, id: u64) -> bool {
        self.subscribed.get(&id).is_some_and(|s| s.credit.windowed())
    }

    /// Whether message `id` is a best-effort item holding its
    /// subscription's credit: its frames are then acknowledged on every
    /// path, so that its loss gives the credit back.
    pub(super) fn item_in_flight(&self, id: u64) -> bool {
        self.items_in_flight.contains_key(&id)
    }

    /// The limit to write in a SubscriptionCredit for `id` now (0, which
    /// the publisher ignores, if the subscription ended meanwhile).
    pub(super) fn advertise(&mut self, id: u64) -> u64 {
        self.subscribed.get_mut(&id).map_or(0, |s| s.credit.advertise())
    }

    /// A SubscriptionCredit for `id` left.
    pub(super) fn credit_sent(&mut self, id: u64) {
        self.credit_queued.remove(&id);
    }

    /// This side's subscription window for the subscriptions it opens
    /// from now on, for tests.
    #[cfg(test)]
    pub(super) fn set_local_window(&mut self, window: u32) {
        self.local_window = window;
    }

    /// Makes this side publish subscription `id` as if the subscriber had
    /// announced no window: a misbehaving publisher, for tests.
    #[cfg(test)]
    pub(super) fn ignore_peer_window(&mut self, id: u64) {
        if let Some(p) = self.publishing.get_mut(&id) {
            p.credit = ItemSendCredit::new(0);
        }
    }

    /// The earliest deadline of a reliable item waiting for credit.
    pub(super) fn waiting_deadline(&self) -> Option<Instant> {
        if self.waiting == 0 {
            return None;
        }
        self.publishing.values().flat_map(|p| p.waiting.iter()).filter_map(|w| w.deadline).min()
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
        let credit = ItemRecvCredit::new(self.subs.local_window);
        self.subs.subscribed.insert(id.0, Subscribed { message_type, credit, unreleased: VecDeque::new() });
        Ok(SubscriptionId(id.0))
    }

    /// Ends this side's subscription `id`: the peer stops pushing, items
    /// still on their way are dropped on arrival, and those delivered but
    /// not yet taken from [`Session::poll_event`] are withdrawn, so none
    /// reaches the application after this returns. Returns the id of
    /// the reliable message that carries the unsubscribe (its `Acked` or
    /// `Failed` event names it).
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> Result<MessageId, SendError> {
        let Some(ty) = self.subs.subscribed.get(&id.0).map(|s| s.message_type) else {
            return Err(SendError::NoSuchSubscription(id));
        };
        let m = self.send_data(ty, Bytes::new(), SendOptions::default(), codec::KIND_UNSUBSCRIBE, id.0)?;
        for (event, _) in self.events.iter_mut() {
            if matches!(event, Some(Event::Message(m)) if m.kind == MessageKind::Item(id)) {
                *event = None;
            }
        }
        self.subs.subscribed.remove(&id.0);
        self.requests_out.remove(&id.0);
        Ok(m)
    }

    /// Pushes an item to the peer's subscription `id` (its type, with
    /// STREAM_DATA). A reliable item is delivered exactly once and in
    /// order within its priority class, like any reliable message; while
    /// the subscriber's window for this subscription is full, it waits
    /// (and those pushed after it with it) and takes its place in its
    /// class when credit comes (SPEC.md 4.9). A best-effort one
    /// (`options.reliable == false`) may be lost. It takes the
    /// subscription's credit too when the subscriber announced a window,
    /// and never waits for it: without credit (or behind reliable items
    /// waiting for it) it is refused as [`SendError::SubscriptionFull`],
    /// and [`Event::SubscriptionWritable`] follows when credit comes, so a
    /// subscription nobody reads costs its publisher nothing. When
    /// [`SessionConfig::subscription_queue`] best-effort items of this
    /// subscription already wait to be sent (the path is congested), the
    /// oldest of them is dropped so the newest go out.
    pub fn push(&mut self, id: SubscriptionId, body: Bytes, options: SendOptions) -> Result<MessageId, SendError> {
        let Some(p) = self.subs.publishing.get(&id.0).filter(|p| !p.ended) else {
            return Err(SendError::NoSuchSubscription(id));
        };
        let (message_type, queued, windowed) = (p.message_type, p.queued, p.credit.windowed());
        let options = SendOptions { stream_data: true, request: false, ..options };
        self.check_send(body.len())?;
        if !options.reliable {
            if windowed
                && let Some(p) = self.subs.publishing.get_mut(&id.0)
                && (!p.waiting.is_empty() || !p.credit.allows())
            {
                p.blocked = true;
                return Err(SendError::SubscriptionFull(id));
            }
            if queued >= self.config.subscription_queue {
                self.drop_oldest_item(id.0);
            }
            let staged = self.stage_data(message_type, body, options, codec::KIND_ITEM, id.0);
            let len = staged.body.len() as u64;
            let m = self.commit_data(staged);
            if let Some(p) = self.subs.publishing.get_mut(&id.0) {
                p.queued += 1;
                if windowed {
                    let credit = credit_size(len as usize);
                    p.credit.on_started(credit);
                    self.subs.items_in_flight.insert(m.0, ItemFlight { subscription: id.0, credit, unacked: len });
                }
            }
            return Ok(m);
        }
        if let Some(p) = self.subs.publishing.get_mut(&id.0)
            && !p.waiting.is_empty()
            && p.waiting.len() >= self.config.subscription_queue
        {
            p.blocked = true;
            return Err(SendError::SubscriptionFull(id));
        }
        let staged = self.stage_data(message_type, body, options, codec::KIND_ITEM, id.0);
        Ok(self.send_item(id.0, staged))
    }

    /// Queues a reliable item or the end of publishing subscription `id`,
    /// or keeps it waiting behind those without credit.
    fn send_item(&mut self, id: u64, staged: Staged) -> MessageId {
        let message = MessageId(staged.head.id);
        let Some(p) = self.subs.publishing.get_mut(&id) else { return message };
        let item = staged.head.kind == codec::KIND_ITEM;
        if p.waiting.is_empty() && (!item || p.credit.allows()) {
            if item {
                p.credit.on_started(credit_size(staged.body.len()));
            }
            return self.commit_data(staged);
        }
        p.waiting.push_back(staged);
        self.subs.waiting += 1;
        message
    }

    /// Queues what waits for subscription `id`'s credit, as far as it goes.
    fn release_waiting(&mut self, id: u64) {
        loop {
            let Some(p) = self.subs.publishing.get_mut(&id) else { return };
            let Some(front) = p.waiting.front() else {
                if p.ended {
                    self.subs.publishing.remove(&id);
                } else if p.blocked && p.credit.allows() {
                    // A best-effort push was refused for want of credit.
                    p.blocked = false;
                    self.push_event(Event::SubscriptionWritable(SubscriptionId(id)));
                }
                return;
            };
            let item = front.head.kind == codec::KIND_ITEM;
            if item && !p.credit.allows() {
                return;
            }
            let Some(staged) = p.waiting.pop_front() else { return };
            if item {
                p.credit.on_started(credit_size(staged.body.len()));
            }
            if p.blocked && p.waiting.len() < self.config.subscription_queue {
                p.blocked = false;
                self.push_event(Event::SubscriptionWritable(SubscriptionId(id)));
            }
            self.subs.waiting -= 1;
            self.commit_data(staged);
        }
    }

    /// Reports reliable items still waiting for credit as failed: every
    /// one of subscription `id`, or only those past their deadline
    /// (`expired_at`) of every subscription.
    pub(super) fn fail_waiting(&mut self, only: Option<u64>, expired_at: Option<Instant>, reason: FailReason) {
        if self.subs.waiting == 0 {
            return;
        }
        let ids: Vec<u64> = match only {
            Some(id) => alloc::vec![id],
            None => self.subs.publishing.keys().copied().collect(),
        };
        for id in ids {
            let Some(p) = self.subs.publishing.get_mut(&id) else { continue };
            let mut kept = VecDeque::new();
            let mut failed = Vec::new();
            for w in p.waiting.drain(..) {
                let expired = expired_at.is_none_or(|now| w.deadline.is_some_and(|d| d <= now));
                if expired { failed.push(w) } else { kept.push_back(w) }
            }
            p.waiting = kept;
            if p.blocked && p.waiting.len() < self.config.subscription_queue && only.is_none() {
                p.blocked = false;
                self.push_event(Event::SubscriptionWritable(SubscriptionId(id)));
            }
            for w in failed {
                self.subs.waiting -= 1;
                if w.head.kind == codec::KIND_ITEM {
                    self.stats.messages_failed += 1;
                    self.push_event(Event::Failed(MessageId(w.head.id), reason));
                }
            }
            if only.is_none() {
                self.release_waiting(id);
            }
        }
    }

    /// Ends the peer's subscription `id` with `code` and `reason` (an end
    /// of stream): sent reliably after the items pushed before it (in the
    /// same priority class), and nothing can be pushed after it. Returns
    /// the id of the message that carries the end (its `Acked` or `Failed`
    /// event names it).
    pub fn end_subscription(
        &mut self,
        id: SubscriptionId,
        code: ErrorCode,
        reason: &str,
    ) -> Result<MessageId, SendError> {
        let Some(p) = self.subs.publishing.get(&id.0).filter(|p| !p.ended) else {
            return Err(SendError::NoSuchSubscription(id));
        };
        let message_type = p.message_type;
        let body = Bytes::from(codec::encode_code_reason(code.0, reason));
        self.check_send(body.len())?;
        let mut staged = self.stage_data(message_type, body, SendOptions::default(), codec::KIND_END, id.0);
        // The end fails only once it is on its way.
        staged.deadline = None;
        let m = self.send_item(id.0, staged);
        self.requests_in.remove(&id.0);
        if let Some(p) = self.subs.publishing.get_mut(&id.0) {
            p.ended = true;
        }
        self.release_waiting(id.0);
        Ok(m)
    }

    /// Whether this side's subscription `id` is under a subscription
    /// window (this side announced one, as it does by default): its
    /// best-effort items then count against the window as its reliable
    /// ones do, and with [`SessionConfig::explicit_item_release`] each
    /// must be released with [`Session::release_item`] like them.
    pub fn subscription_windowed(&self, id: SubscriptionId) -> bool {
        self.subs.counts_best_effort(id.0)
    }

    /// Counts items of this side's subscriptions as read by the
    /// application, one at a time, when
    /// [`SessionConfig::explicit_item_release`] is set: the items of
    /// subscription `id` that count against its window (reliable ones,
    /// and best-effort ones when it has a window) delivered and not yet
    /// released, oldest first.
    /// Their bytes then leave the subscription's flow-control window, so
    /// the publisher may send more (SPEC.md 4.9). Returns whether there
    /// was such an item. (Without that option, taking an item from
    /// [`Session::poll_event`] releases it.)
    pub fn release_item(&mut self, id: SubscriptionId) -> bool {
        let Some(credit) = self.subs.subscribed.get_mut(&id.0).and_then(|s| s.unreleased.pop_front()) else {
            return false;
        };
        self.item_read(id.0, credit);
        true
    }

    /// The application read a reliable item of subscription `id` worth
    /// `credit`: a SubscriptionCredit goes once the limit grew by half a
    /// window.
    pub(super) fn item_read(&mut self, id: u64, credit: u64) {
        let Some(s) = self.subs.subscribed.get_mut(&id) else { return };
        if s.credit.on_read(credit) && matches!(self.state, State::Established) {
            self.queue_sub_credit(id);
        }
    }

    /// Queues a SubscriptionCredit for `id` unless one is queued (it is
    /// written with the limit as it is when it goes).
    pub(super) fn queue_sub_credit(&mut self, id: u64) {
        if self.subs.subscribed.contains_key(&id) && self.subs.credit_queued.insert(id) {
            self.queue(
                Q_CONTROL,
                Outgoing::new(SUBSCRIPTION_CREDIT, Flags::REQUIRES_ACK, Head::SubCredit(id), Bytes::new()),
            );
        }
    }

    /// A SubscriptionCredit (`C8`) arrived.
    pub(super) fn on_sub_credit_frame(&mut self, plain: &[u8]) {
        let Some((id, limit)) = codec::parse_sub_credit(plain) else {
            return self.protocol_violation("malformed SubscriptionCredit");
        };
        // One for a subscription already over is ignored.
        if let Some(p) = self.subs.publishing.get_mut(&id)
            && p.credit.on_limit(limit)
        {
            self.release_waiting(id);
        }
    }

    /// A reliable item of publishing subscription `id`, `len` bytes as
    /// sent, was given up on: its credit comes back.
    pub(super) fn item_abandoned(&mut self, id: u64, len: u64) {
        if let Some(p) = self.subs.publishing.get_mut(&id) {
            p.credit.on_abandoned(credit_size(len as usize));
            self.release_waiting(id);
        }
    }

    /// Frames of best-effort item `id` carrying `len` of its bytes were
    /// acknowledged: once all are, its credit stays spent (the subscriber
    /// counts it when its application reads it).
    pub(super) fn item_frame_acked(&mut self, id: u64, len: u64) {
        if let Some(f) = self.subs.items_in_flight.get_mut(&id) {
            f.unacked = f.unacked.saturating_sub(len);
            if f.unacked == 0 {
                self.subs.items_in_flight.remove(&id);
            }
        }
    }

    /// A frame of best-effort item `id` was lost (or its queued frames
    /// dropped before they went): the subscriber will not have it whole,
    /// so its credit comes back, once.
    pub(super) fn item_frame_lost(&mut self, id: u64) {
        let Some(f) = self.subs.items_in_flight.remove(&id) else { return };
        if let Some(p) = self.subs.publishing.get_mut(&f.subscription) {
            p.credit.on_abandoned(f.credit);
            self.release_waiting(f.subscription);
        }
    }

    /// An item of this side's subscription `id` worth `credit` was
    /// delivered (a reliable one, or a best-effort one that counts against
    /// the window). Returns the credit that taking the event releases
    /// (none when the application releases items itself).
    pub(super) fn item_delivered(&mut self, id: u64, credit: u64) -> Option<(u64, u64)> {
        let explicit = self.config.explicit_item_release;
        let s = self.subs.subscribed.get_mut(&id)?;
        s.credit.on_delivered(credit);
        if explicit {
            s.unreleased.push_back(credit);
            return None;
        }
        Some((id, credit))
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
                if let Head::Data(d) = item.head {
                    self.item_frame_lost(d.id);
                }
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
                let credit = ItemSendCredit::new(self.subs.peer_window);
                let p = Publishing {
                    message_type: m.message_type,
                    queued: 0,
                    credit,
                    waiting: VecDeque::new(),
                    blocked: false,
                    ended: false,
                };
                self.subs.publishing.insert(m.id.0, p);
                true
            }
            // Items of a subscription this side ended are still on their way.
            MessageKind::Item(sub) => self.subs.subscribed.contains_key(&sub.0),
            MessageKind::Unsubscribe(sub) => {
                self.fail_waiting(Some(sub.0), None, FailReason::Unsubscribed);
                self.subs.publishing.remove(&sub.0).is_some_and(|p| !p.ended)
            }
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
            self.fail_waiting(Some(to), None, FailReason::Unsubscribed);
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
