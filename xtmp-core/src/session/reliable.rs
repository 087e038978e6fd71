//! Reliable delivery inside the session (SPEC.md section 4): what is
//! tracked when a frame is sealed, ACKs in and out, losses and
//! retransmission, deadlines and Forward, and the receive side's
//! reassembly and in-order delivery. The state machines themselves live in
//! [`crate::reliability`]; this file only connects them to the session.

use alloc::vec::Vec;

use bytes::{Bytes, BytesMut};

/// Bodies up to this long are copied out of the receive buffer (see
/// `receive_data`); longer ones are split off it.
pub(crate) const OWN_BODY_MAX: usize = 4 * 1024;

use super::*;
use crate::compression;
use crate::reliability::ack::AckFrame;
use crate::reliability::delivery::{Accepted, Limits, Refused, WithBody};
use crate::reliability::flow::credit_size;
use crate::reliability::recovery::Content;
use crate::wire::Priority;

/// The receive-side class index of a frame's priority.
pub(super) fn class_index(flags: Flags) -> usize {
    priority_index(flags.priority())
}

fn priority_index(p: Priority) -> usize {
    match p {
        Priority::Normal => 0,
        Priority::High => 1,
        Priority::Emergency => 2,
    }
}

/// The send queue of a priority class.
fn class_queue(class: usize) -> usize {
    [Q_NORMAL, Q_HIGH, Q_EMERGENCY][class.min(2)]
}

/// A received message on its way to the application: its body is still
/// compressed if `compressed` (every fragment must agree).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Incoming {
    message: Message,
    compressed: bool,
    reliable: bool,
}

/// What reading an event releases (SPEC.md 4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Credit {
    None,
    /// A reliable message: the application has read its class up to `end`
    /// and, for an item, this much of its subscription's credit.
    Reliable {
        class: usize,
        end: u64,
        item: Option<(u64, u64)>,
    },
    /// An unreliable message of this many bytes.
    Unreliable(usize),
    /// A best-effort item that counts against its subscription's window
    /// (`release`: taking the event counts it as read, unless the
    /// application releases items itself).
    Item {
        subscription: u64,
        credit: u64,
        release: bool,
    },
}

impl WithBody for Incoming {
    fn with_body(self, body: Bytes) -> Self {
        Incoming { message: Message { body, ..self.message }, ..self }
    }
}

impl Session {
    fn limits(&self) -> Limits {
        Limits {
            max_message: self.local_max_message,
            max_held: self.config.max_reassembly_bytes.min(self.reassembly_budget),
        }
    }

    /// The largest frame payload on `path`.
    pub(super) fn frame_room(&self, path: PathId) -> usize {
        let peer = self.peer_max_frame as usize;
        match self.paths[path.0 as usize].kind {
            PathKind::Datagram => (self.paths[path.0 as usize].mtu.current() - HEADER_LEN).min(peer),
            PathKind::Stream => peer,
        }
    }

    /// Whether an ACK must go out now.
    pub(super) fn ack_due(&self) -> bool {
        self.acks.deadline().is_some_and(|d| d <= self.now)
    }

    /// Whether the congestion window and the pacer let data go out on the
    /// primary path.
    pub(super) fn can_send_data(&self) -> bool {
        self.can_send_data_on(self.primary)
    }

    /// Whether the congestion window and the pacer let data go out on
    /// `path` (a stream path has its own).
    pub(super) fn can_send_data_on(&self, path: PathId) -> bool {
        self.paths[path.0 as usize].kind == PathKind::Stream
            || (self.recovery.in_flight() < self.congestion.window() && self.pacing_release().is_none())
    }

    /// Whether data queue `q`'s front item may be written on `path` now.
    pub(super) fn queue_ready_on(&self, q: usize, path: PathId) -> bool {
        self.queue_ready(q) && self.queues[q].front().is_some_and(|item| self.routes_to(item.route, path))
    }

    /// What the pacer is computed from now.
    pub(super) fn pacing_rate(&self) -> Rate {
        let datagram = self.frame_room(self.primary) + HEADER_LEN;
        Rate { window: self.congestion.window(), rtt: self.rtt.get(), datagram: datagram as u64 }
    }

    /// When the pacer lets the next datagram go on a datagram path:
    /// `None` for now (or pacing is off).
    fn pacing_release(&self) -> Option<Instant> {
        if !self.config.pacing {
            return None;
        }
        self.pacer.release(self.now, self.pacing_rate())
    }

    /// When data held back only by the pacer may go.
    fn pacing_deadline(&self) -> Option<Instant> {
        let datagram = self.data_paths().into_iter().flatten().find(|p| {
            let p = &self.paths[p.0 as usize];
            p.alive && p.kind == PathKind::Datagram
        });
        let waiting = datagram.is_some_and(|d| {
            self.recovery.in_flight() < self.congestion.window()
                && (Q_EMERGENCY..self.queues.len()).any(|q| self.queue_ready_on(q, d))
        });
        waiting.then(|| self.pacing_release()).flatten()
    }

    /// A datagram of `len` bytes went out; `in_flight_before` is what was
    /// in flight before it was written. Only datagrams that count against
    /// the window take the pacer's tokens (an ACK alone does not).
    pub(super) fn on_datagram_sent(&mut self, path: PathId, len: usize, in_flight_before: u64) {
        let datagram = self.paths[path.0 as usize].kind == PathKind::Datagram;
        if datagram && self.config.pacing && self.recovery.in_flight() > in_flight_before {
            let rate = self.pacing_rate();
            self.pacer.on_sent(self.now, len as u64, rate);
        }
    }

    /// Whether a queue holds something that may be sent now.
    pub(super) fn has_sendable(&self) -> bool {
        !self.queues[Q_CONTROL].is_empty()
            || self.data_paths().into_iter().flatten().any(|p| {
                self.can_send_data_on(p) && (Q_EMERGENCY..self.queues.len()).any(|q| self.queue_ready_on(q, p))
            })
    }

    /// Whether a data queue's front item may be written now.
    pub(super) fn data_ready(&self) -> bool {
        (Q_EMERGENCY..self.queues.len()).any(|q| self.queue_ready(q))
    }

    /// Whether the front item of data queue `q` may be written, as far as
    /// flow control goes: a reliable message starts only below the peer's
    /// limit for its class (a message already started always continues),
    /// and one acknowledged or given up on meanwhile is ready to be
    /// skipped.
    pub(super) fn queue_ready(&self, q: usize) -> bool {
        let Some(item) = self.queues[q].front() else { return false };
        match item.head {
            Head::Data(d) if d.order != 0 && self.outbound.get(d.id).is_some() => {
                self.send_credit.allows(class_index(item.flags), item.credit)
            }
            _ => true,
        }
    }

    /// Records a sealed frame for acknowledgement and loss detection.
    pub(super) fn on_frame_sent(&mut self, seq: u64, size: usize, flags: Flags, item: &Outgoing, data_len: usize) {
        if let Head::Ack = item.head {
            return;
        }
        if !flags.contains(Flags::REQUIRES_ACK) {
            return;
        }
        let content = match item.head {
            Head::Data(d) if d.order != 0 => {
                Content::Data { id: d.id, start: item.offset, end: item.offset + data_len as u64 }
            }
            Head::Forward(class) => Content::Forward(class),
            Head::MaxData(class) => Content::MaxData(class),
            Head::SubCredit(id) => Content::SubCredit(id),
            Head::Data(d) if d.kind == codec::KIND_ITEM && self.subs.item_in_flight(d.id) => {
                Content::Item { id: d.id, len: data_len as u64 }
            }
            Head::Padding(_) => Content::MtuProbe(size as u32),
            _ => Content::Nothing,
        };
        let path = self.tx_path;
        let p = &self.paths[path.0 as usize];
        let datagram = p.kind == PathKind::Datagram;
        let large = datagram && self.tx_offset + size > p.mtu.base();
        let time = self.now;
        let frame = SentFrame { seq, path: path.0, time, size: size as u32, eliciting: true, datagram, large, content };
        if frame.in_flight() {
            self.congestion.on_sent(self.now, size as u64);
        }
        self.recovery.on_sent(frame);
    }

    /// Notes an ACK frame just sealed, to stop repeating its ranges once
    /// the peer has seen it.
    pub(super) fn on_ack_sent(&mut self, seq: u64) {
        self.acks.on_sent(seq);
    }

    /// An ACK (`C0`) arrived.
    pub(super) fn on_ack_frame(&mut self, plain: &[u8]) {
        let Some(ack) = AckFrame::parse(plain) else { return self.protocol_violation("malformed ACK") };
        if ack.largest >= self.next_seq {
            return self.protocol_violation("ACK of a frame never sent");
        }
        let now = self.now;
        let mut resolved = core::mem::take(&mut self.resolved);
        resolved.clear();
        let outcome = self.recovery.on_ack(&ack, now, |f| resolved.push(f));
        self.stats.spurious_losses += u64::from(outcome.spurious);
        if let Some(sample) = outcome.rtt_sample {
            self.rtt.update(sample, ack.delay, self.config.max_ack_delay);
        }
        for f in resolved.drain(..) {
            if f.in_flight() {
                self.congestion.on_ack(now, f.time, u64::from(f.size), &self.rtt);
            }
            self.on_mtu_acked(&f);
            match f.content {
                Content::Data { id, start, end } if self.outbound.on_acked(id, start..end).is_some() => {
                    self.stats.messages_acked += 1;
                    self.push_event(Event::Acked(MessageId(id)));
                }
                Content::Item { id, len } => self.item_frame_acked(id, len),
                _ => {}
            }
        }
        let mut acked = core::mem::take(&mut self.acked_ranges);
        acked.clear();
        acked.extend(ack.ranges());
        self.acks.on_peer_ack(&acked);
        self.acked_ranges = acked;
        self.resolved = resolved;
        self.detect_losses();
    }

    /// Runs loss detection and repeats what was lost.
    fn detect_losses(&mut self) {
        let mut lost = core::mem::take(&mut self.resolved);
        lost.clear();
        let persistent = self.recovery.detect_lost(self.now, &self.rtt, self.config.max_ack_delay, |f| lost.push(f));
        let newest = lost.iter().filter(|f| f.congestion_signal()).map(|f| f.time).max();
        if let Some(sent) = newest {
            self.congestion.on_congestion_event(self.now, sent, persistent);
        }
        self.on_large_lost(&lost);
        // Newest first: each repeat goes to the front of its queue, so the
        // oldest ends up first.
        for f in lost.drain(..).rev() {
            self.on_lost(f);
        }
        self.resolved = lost;
    }

    fn on_lost(&mut self, f: SentFrame) {
        self.stats.lost += 1;
        match f.content {
            Content::Data { id, start, end } => self.requeue(id, start, end),
            Content::Forward(class) => self.queue_forward(class as usize),
            // Sent again with the limit as it is then.
            Content::MaxData(class) => self.queue_max_data(class as usize),
            Content::SubCredit(id) => self.queue_sub_credit(id),
            Content::Item { id, .. } => self.item_frame_lost(id),
            Content::MtuProbe(size) => {
                if let Some(p) = self.paths.get_mut(f.path as usize) {
                    p.mtu.on_probe_lost(size as usize, self.now);
                }
            }
            Content::Nothing => {}
        }
    }

    /// Queues the unacknowledged parts of bytes `start..end` of reliable
    /// message `id` again, ahead of its class's new messages and behind
    /// the repeats of earlier bytes of the class: the receiver delivers in
    /// order, so the oldest missing bytes go first. (Always at the front,
    /// a message's repeat could starve behind those of later messages that
    /// a receiver out of reassembly budget keeps refusing, which return to
    /// the front each time they are declared lost.)
    fn requeue(&mut self, id: u64, start: u64, end: u64) {
        let Some(p) = self.outbound.get(id) else { return };
        let gaps: Vec<_> = p.acked_gaps(start..end).collect();
        let template = p.message.clone();
        let order = template.order();
        let q = &mut self.queues[class_queue(p.class)];
        for gap in gaps {
            let mut item = template.clone();
            item.body = template.body.slice(gap.start as usize..gap.end as usize);
            item.offset = gap.start;
            self.stats.retransmissions += 1;
            let at = q.iter().position(|o| o.order() == 0 || (o.order(), o.offset) > (order, gap.start));
            q.insert(at.unwrap_or(q.len()), item);
        }
    }

    /// Every frame sent on `path` is lost with it: repeat their data elsewhere.
    pub(super) fn lose_path_frames(&mut self, path: PathId) {
        let mut lost = core::mem::take(&mut self.resolved);
        lost.clear();
        self.recovery.lose_path(path.0, |f| lost.push(f));
        for f in lost.drain(..).rev() {
            self.on_lost(f);
        }
        self.resolved = lost;
    }

    /// Queues a Forward for `class` unless one is queued already: it is
    /// written with the floor as it is when it goes.
    pub(super) fn queue_forward(&mut self, class: usize) {
        if !core::mem::replace(&mut self.forward_queued[class], true) {
            self.queue_control(FORWARD, Head::Forward(class as u8));
        }
    }

    /// Queues a MaxData for `class` unless one is queued already: it is
    /// written with the limit as it is when it goes.
    pub(super) fn queue_max_data(&mut self, class: usize) {
        if !core::mem::replace(&mut self.max_data_queued[class], true) {
            self.queue_control(MAX_DATA, Head::MaxData(class as u8));
        }
    }

    fn queue_control(&mut self, ty: MessageType, head: Head) {
        self.queue(Q_CONTROL, Outgoing::new(ty, Flags::REQUIRES_ACK, head, Bytes::new()));
    }

    /// A Forward (`C5`) arrived.
    pub(super) fn on_forward_frame(&mut self, plain: &[u8]) {
        let Some((class, floor, credit)) = codec::parse_forward(plain) else {
            return self.protocol_violation("malformed Forward");
        };
        let mut inbound = core::mem::replace(&mut self.inbound, Inbound::new());
        if inbound.forward_release(class, floor, |m| self.deliver(m)) {
            // What was complete below the floor is delivered; the rest of
            // the credit below it will never come.
            self.skip_credit(class, credit);
            inbound.forward_advance(class, floor, |m| self.deliver(m));
        }
        self.inbound = inbound;
    }

    /// Credit below offset `credit` of `class` was skipped by a Forward:
    /// it is released when the application has read what came before it.
    fn skip_credit(&mut self, class: usize, credit: u64) {
        if !self.recv_credit.skip_to(class, credit) {
            return;
        }
        let last = self.events.iter_mut().rev().find_map(|(_, c)| match c {
            Credit::Reliable { class: k, end, .. } if *k == class => Some(end),
            _ => None,
        });
        match last {
            Some(end) => *end = (*end).max(credit),
            None => self.release_credit(Credit::Reliable { class, end: credit, item: None }),
        }
    }

    /// The application took an event: release its credit, and advertise a
    /// larger limit once it has grown by half a window.
    pub(super) fn release_credit(&mut self, credit: Credit) {
        match credit {
            Credit::None => {}
            Credit::Unreliable(n) => self.unread_unreliable -= n,
            Credit::Item { subscription, credit, release } => {
                self.unread_best_effort -= credit;
                if release {
                    self.item_read(subscription, credit);
                }
            }
            Credit::Reliable { class, end, item } => {
                if self.recv_credit.on_read(class, end) && matches!(self.state, State::Established) {
                    self.queue_max_data(class);
                }
                if let Some((id, credit)) = item {
                    self.item_read(id, credit);
                }
            }
        }
    }

    /// A MaxData (`C6`) arrived.
    pub(super) fn on_max_data_frame(&mut self, plain: &[u8]) {
        let Some((class, limit)) = codec::parse_max_data(plain) else {
            return self.protocol_violation("malformed MaxData");
        };
        self.send_credit.on_max_data(class, limit);
    }

    /// A data frame (application, extension or Error) opened. Returns
    /// whether to acknowledge it.
    pub(super) fn receive_data(&mut self, ty: MessageType, flags: Flags, plain: &mut BytesMut) -> bool {
        let Some(head) = DataHeader::parse(plain) else {
            self.protocol_violation("malformed data record header");
            return false;
        };
        if head.order != 0 && !flags.contains(Flags::REQUIRES_ACK) {
            self.protocol_violation("reliable message without REQUIRES_ACK");
            return false;
        }
        // Where the data starts: after the attached ACK, if any (SPEC.md 4.3).
        let mut at = codec::DATA_HEADER_LEN;
        if head.with_ack {
            let Some(len) = plain.get(at..).and_then(AckFrame::peek_len) else {
                self.protocol_violation("malformed ACK in a data frame");
                return false;
            };
            self.on_ack_frame(&plain[at..at + len]);
            if self.close_reason.is_some() {
                return false;
            }
            at += len;
        }
        if head.kind == codec::KIND_ITEM && !self.subs.admits(head.correlation, self.local_max_message) {
            // Beyond the subscription's window (SPEC.md 4.9). A reliable
            // item's frame is taken once the application reads: the
            // publisher repeats it meanwhile. A best-effort one is never
            // repeated: acknowledged and not counted, it stays spent in the
            // publisher's credit, which brings an overrunning publisher
            // back within the window.
            self.stats.frames_dropped += 1;
            return head.order == 0;
        }
        self.rx_ack_now = head.ack_now;
        let kind = match head.kind {
            codec::KIND_REQUEST => MessageKind::Request,
            codec::KIND_RESPONSE => MessageKind::Response(MessageId(head.correlation)),
            codec::KIND_SUBSCRIBE => MessageKind::Subscribe,
            codec::KIND_ITEM => MessageKind::Item(SubscriptionId(head.correlation)),
            codec::KIND_UNSUBSCRIBE => MessageKind::Unsubscribe(SubscriptionId(head.correlation)),
            codec::KIND_END => MessageKind::End(SubscriptionId(head.correlation)),
            _ => MessageKind::Message,
        };
        let message = Message {
            id: MessageId(head.id),
            message_type: ty,
            kind,
            priority: flags.priority(),
            stream_data: flags.contains(Flags::STREAM_DATA),
            reliable: head.order != 0,
            body: Bytes::new(),
        };
        let template = Incoming { message, compressed: flags.contains(Flags::COMPRESSED), reliable: head.order != 0 };
        let class = class_index(flags);
        let limits = self.limits();
        let now = self.now;
        let mut inbound = core::mem::replace(&mut self.inbound, Inbound::new());
        let result = if flags.contains(Flags::FRAGMENTED) {
            let rest = &plain[at..];
            match codec::parse_fragment(rest) {
                Some((offset, total)) => {
                    let data = &rest[codec::FRAGMENT_HEADER_LEN..];
                    let last = u64::from(offset) + data.len() as u64 == u64::from(total);
                    if last != flags.contains(Flags::LAST_FRAGMENT) {
                        Err(Refused::Violation("LAST_FRAGMENT does not match the fragment's position"))
                    } else if let (true, 0, Some(Err(e))) = (
                        template.compressed,
                        offset,
                        data.get(..compression::PREFIX_LEN)
                            .map(|p| compression::declared_len(p, limits.max_message as usize)),
                    ) {
                        // The first fragment declares the size: a bomb is refused there.
                        Err(Refused::Violation(e.reason()))
                    } else {
                        let key = (class, head.order, head.id);
                        inbound.on_fragment(key, template, (offset, total), data, now, &limits, |m| self.deliver(m))
                    }
                }
                None => Err(Refused::Violation("truncated fragment header")),
            }
        } else if template.compressed
            && let Err(e) = compression::declared_len(&plain[at..], limits.max_message as usize)
        {
            // Refused before it is stored or acknowledged.
            Err(Refused::Violation(e.reason()))
        } else {
            // A small subscription item gets an allocation of its own: an
            // application may hold items unread for long (it reads another
            // stream), and each would otherwise pin the whole receive
            // buffer it was decrypted into. A large one is split off without
            // a copy (it pins at most RX_BUFFER_MIN / OWN_BODY_MAX times its
            // size), as is every other message, which its caller takes at
            // once (so the receive path of requests and responses allocates
            // nothing).
            let item = matches!(template.message.kind, MessageKind::Item(_));
            let body = if item && plain.len() - at <= OWN_BODY_MAX {
                Bytes::copy_from_slice(&plain[at..])
            } else {
                plain.split().freeze().slice(at..)
            };
            let size = body.len();
            inbound.on_message(class, head.order, template.with_body(body), size, &limits, |m| self.deliver(m))
        };
        self.inbound = inbound;
        match result {
            Ok(Accepted::New | Accepted::Duplicate) => true,
            Err(Refused::Busy) => {
                self.stats.frames_dropped += 1;
                self.stats.reassembly_refused += 1;
                false
            }
            Err(Refused::Violation(what)) => {
                self.protocol_violation(what);
                false
            }
        }
    }

    /// Hands a whole message to the application, in its turn, decompressed.
    pub(super) fn deliver(&mut self, incoming: Incoming) {
        if matches!(self.state, State::Closed | State::Draining { .. }) {
            return;
        }
        let Incoming { mut message, compressed, reliable } = incoming;
        let class = priority_index(message.priority);
        let mut credit = Credit::None;
        // Counted as sent: compressed bytes for a compressed message.
        let sent_len = message.body.len();
        if reliable {
            match self.recv_credit.on_delivered(class, sent_len, self.local_max_message) {
                Ok(end) => credit = Credit::Reliable { class, end, item: None },
                Err(what) if matches!(self.state, State::Established) => return self.protocol_violation(what),
                Err(_) => {}
            }
        }
        if compressed {
            match compression::decompress(&message.body, self.local_max_message as usize) {
                Ok(body) => message.body = body,
                Err(e) => return self.protocol_violation(e.reason()),
            }
        }
        let m = message;
        let deliverable = match m.message_type.class() {
            TypeClass::Application => m.message_type.name().is_some(),
            TypeClass::Extension => true,
            TypeClass::Error => m.message_type == MessageType::ERROR,
            _ => false,
        };
        let request = matches!(m.kind, MessageKind::Request | MessageKind::Subscribe);
        if !deliverable {
            self.stats.frames_dropped += 1;
            self.release_credit(credit);
            if request {
                self.queue_error(m.id.0, ErrorCode::UNKNOWN_TYPE, "unknown message type");
            }
            return;
        }
        if request && self.requests_in.len() >= self.config.max_queued_messages {
            self.release_credit(credit);
            return self.queue_error(m.id.0, ErrorCode::REFUSED, "too many pending requests");
        }
        let accepted = match m.kind {
            MessageKind::Request => true,
            MessageKind::Response(to) => {
                let known = self.requests_out.remove(&to.0);
                if known {
                    self.on_response(to.0, m.message_type == MessageType::ERROR);
                }
                known
            }
            MessageKind::Message => true,
            _ => self.on_subscription_message(&m),
        };
        if !accepted {
            // An answer to nothing outstanding, an item of a subscription
            // already ended, a refused subscription: drop it.
            self.stats.frames_dropped += 1;
            self.release_credit(credit);
            return;
        }
        if request {
            self.requests_in.insert(m.id.0);
        }
        if let (MessageKind::Item(sub), Credit::Reliable { item, .. }) = (m.kind, &mut credit) {
            *item = self.item_delivered(sub.0, credit_size(sent_len));
        }
        if !reliable {
            match m.kind {
                // Counted against its subscription's window, like a
                // reliable item, and never dropped unread: the publisher
                // sends no more than the window ahead of the reads.
                MessageKind::Item(sub) if self.subs.counts_best_effort(sub.0) => {
                    let size = credit_size(sent_len);
                    let release = self.item_delivered(sub.0, size).is_some();
                    self.unread_best_effort += size;
                    credit = Credit::Item { subscription: sub.0, credit: size, release };
                }
                _ => {
                    let size = credit_size(m.body.len()) as usize;
                    credit = Credit::Unreliable(size);
                    self.make_room_unreliable(size);
                }
            }
        }
        self.events.push_back((Some(Event::Message(m)), credit));
    }

    /// Unread unreliable messages are bounded by the receive window: the
    /// oldest go first, so the newest are kept (SPEC.md 4.6). `len` is the
    /// new message's credit size.
    fn make_room_unreliable(&mut self, len: usize) {
        // The window this side announced bounds unread unreliable bytes too.
        let window = self.recv_credit.window() as usize;
        while self.unread_unreliable + len > window {
            let Some(i) = self.events.iter().position(|(_, c)| matches!(c, Credit::Unreliable(_))) else { break };
            let Some((event, Credit::Unreliable(n))) = self.events.remove(i) else { break };
            self.unread_unreliable -= n;
            self.stats.messages_dropped += 1;
            if let Some(Event::Message(m)) = event
                && m.kind == MessageKind::Request
            {
                self.requests_in.remove(&m.id.0);
            }
        }
        self.unread_unreliable += len;
    }

    /// The earliest reliability deadline: an ACK to send, a loss to
    /// declare, a probe, a message's deadline, a reassembly to expire.
    pub(super) fn reliability_deadline(&self) -> Option<Instant> {
        let alive = self.paths[self.primary.0 as usize].alive;
        [
            self.acks.deadline().filter(|_| alive),
            self.pacing_deadline(),
            self.mtu_deadline(),
            self.recovery.loss_time(),
            self.recovery.pto_deadline(&self.rtt, self.config.max_ack_delay),
            self.recovery.stall_deadline(&self.rtt, self.config.max_ack_delay),
            self.outbound.next_deadline(),
            self.subs.waiting_deadline(),
            self.inbound.next_expiry(self.config.reassembly_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(super) fn on_reliability_timer(&mut self) {
        let now = self.now;
        if self.recovery.loss_time().is_some_and(|t| t <= now) {
            self.detect_losses();
        }
        if self.recovery.pto_deadline(&self.rtt, self.config.max_ack_delay).is_some_and(|t| t <= now) {
            self.recovery.pto_count += 1;
            self.stats.probes += 1;
            // Probe timeouts are for datagram frames: the probe goes where
            // they went (in a hybrid session, not the stream path).
            self.queue_ping(Flags::REQUIRES_ACK);
            if let Some(ping) = self.queues[Q_CONTROL].back_mut() {
                ping.route = Some(PathKind::Datagram);
            }
            // In a hybrid session a datagram path that stopped answering is
            // given up while the stream works: its traffic goes there.
            if self.path_for(PathKind::Stream).is_some()
                && let Some(path) = self.recovery.stalled_datagram_path(now)
            {
                self.fail_path(PathId(path), None);
            }
        }
        if self.recovery.stall_deadline(&self.rtt, self.config.max_ack_delay).is_some_and(|t| t <= now)
            && let Some(path) = self.recovery.stalled_path(now)
        {
            // Nothing acknowledged on a stream for this long: it is stalled
            // (a black hole, or a corrupted length its deframer waits on).
            // Its frames go again on the next path (SPEC.md 4.4).
            self.fail_path(PathId(path), None);
        }
        while let Some(p) = self.outbound.pop_expired(now) {
            self.stats.messages_failed += 1;
            self.push_event(Event::Failed(MessageId(p.id), FailReason::Timeout));
            self.queue_forward(p.class);
            if let Head::Data(d) = p.message.head
                && d.kind == codec::KIND_ITEM
            {
                self.item_abandoned(d.correlation, p.total);
            }
        }
        self.fail_waiting(None, Some(now), FailReason::Timeout);
        self.stats.reassembly_expired += self.inbound.expire(now, self.config.reassembly_timeout) as u64;
    }

    /// Reports every reliable message still waiting as failed.
    pub(super) fn fail_all(&mut self, reason: FailReason) {
        let ids: Vec<u64> = self.outbound.drain().map(|p| p.id).collect();
        for id in ids {
            self.stats.messages_failed += 1;
            self.push_event(Event::Failed(MessageId(id), reason));
        }
    }

    pub(super) fn clear_queues(&mut self) {
        // Items waiting for their subscription's credit fail with the rest.
        self.fail_waiting(None, None, FailReason::Closed);
        for q in &mut self.queues {
            q.clear();
        }
        self.queued_bytes = 0;
        self.queued_items = 0;
        self.subs.clear_queued();
        self.forward_queued = [false; 3];
    }
}
