//! The invariant checker: what each side sent, what the other side's
//! application got, and the promises between them (SPEC.md section 4):
//! reliable messages exactly once, unmodified and in send order within
//! their priority class; unreliable ones at most once and unmodified;
//! responses answer the request they name; nothing after a close;
//! subscription messages carry the kind and subscription they were sent
//! with, and no item reaches a subscriber after its subscription ended or
//! it unsubscribed.
//!
//! Sessions are keyed by the server's session id, which the client learns
//! in the handshake ([`xtmp_core::session::Session::peer_session_id`]) and
//! the endpoint uses as the handle.

use std::collections::{BTreeMap, BTreeSet};

use xtmp_core::session::{Message, MessageKind};
use xtmp_core::wire::Priority;

use crate::trace::digest;

/// A broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Simulator time, ns.
    pub at: u64,
    /// What was wrong.
    pub what: String,
}

/// What a message was sent as (the sender's call), by message id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentKind {
    /// `send`.
    Message,
    /// `send` as a request.
    Request,
    /// `respond` to this request (or subscribe).
    Response(u64),
    /// `subscribe` (answered like a request).
    Subscribe,
    /// `push` to this subscription.
    Item(u64),
    /// `unsubscribe` of this subscription.
    Unsubscribe(u64),
    /// `end_subscription` of this subscription.
    End(u64),
}

impl SentKind {
    /// Whether the receiver answers it with a response.
    fn is_request(self) -> bool {
        matches!(self, SentKind::Request | SentKind::Subscribe)
    }

    /// Whether a delivered message's kind is this one.
    fn matches(self, kind: MessageKind) -> bool {
        match (self, kind) {
            (SentKind::Message, MessageKind::Message)
            | (SentKind::Request, MessageKind::Request)
            | (SentKind::Subscribe, MessageKind::Subscribe) => true,
            (SentKind::Response(a), MessageKind::Response(b)) => a == b.0,
            (SentKind::Item(a), MessageKind::Item(b))
            | (SentKind::Unsubscribe(a), MessageKind::Unsubscribe(b))
            | (SentKind::End(a), MessageKind::End(b)) => a == b.0,
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sent {
    hash: u64,
    len: usize,
    class: u8,
    /// 1-based position in its sequence; 0 for unreliable.
    index: u64,
    kind: SentKind,
}

impl Sent {
    /// What its delivery is ordered within: a reliable item or end, its
    /// subscription (an item waiting for its subscription's credit takes
    /// its place in its class only when it starts: SPEC.md 4.9); any other
    /// reliable message, its priority class.
    fn sequence(kind: SentKind, class: u8) -> (bool, u64) {
        match kind {
            SentKind::Item(sub) | SentKind::End(sub) => (true, sub),
            _ => (false, u64::from(class)),
        }
    }
}

/// One direction of one session.
#[derive(Debug, Default)]
struct Flow {
    sent: BTreeMap<u64, Sent>,
    /// Reliable messages sent, by sequence (see [`Sent::sequence`]).
    next_index: BTreeMap<(bool, u64), u64>,
    acked: BTreeSet<u64>,
    failed: BTreeSet<u64>,
    /// Items that failed because their subscriber unsubscribed.
    withdrawn: BTreeSet<u64>,
    delivered: BTreeSet<u64>,
    /// The last reliable message delivered, by sequence.
    last_index: BTreeMap<(bool, u64), u64>,
}

/// The priority class index of a delivered message (0 normal, 1 high, 2 emergency).
pub fn class_of(p: Priority) -> u8 {
    match p {
        Priority::Normal => 0,
        Priority::High => 1,
        Priority::Emergency => 2,
    }
}

impl Flow {
    fn on_send(&mut self, id: u64, body: &[u8], class: u8, reliable: bool, kind: SentKind) {
        let index = if reliable {
            let n = self.next_index.entry(Sent::sequence(kind, class)).or_default();
            *n += 1;
            *n
        } else {
            0
        };
        let sent = Sent { hash: digest(body), len: body.len(), class, index, kind };
        self.sent.insert(id, sent);
    }

    fn on_deliver(&mut self, m: &Message) -> Result<Sent, String> {
        let id = m.id.0;
        let Some(sent) = self.sent.get(&id).copied() else {
            return Err(format!("message {id} delivered but never sent (forged or misrouted)"));
        };
        // An end's body (code and reason) is the session's encoding.
        let end = matches!(sent.kind, SentKind::End(_));
        if !end && (sent.len != m.body.len() || sent.hash != digest(&m.body)) {
            return Err(format!(
                "message {id} delivered modified ({} bytes sent, {} delivered)",
                sent.len,
                m.body.len()
            ));
        }
        if !self.delivered.insert(id) {
            return Err(format!("message {id} delivered twice"));
        }
        let class = class_of(m.priority);
        if class != sent.class {
            return Err(format!("message {id} sent in class {} but delivered in class {class}", sent.class));
        }
        if sent.index > 0 {
            let sequence = Sent::sequence(sent.kind, class);
            let last = self.last_index.entry(sequence).or_default();
            if sent.index <= *last {
                let within = if sequence.0 { "subscription" } else { "class" };
                return Err(format!(
                    "reliable message {id} (number {} of {within} {}) delivered after number {last}",
                    sent.index, sequence.1
                ));
            }
            *last = sent.index;
        }
        Ok(sent)
    }

    fn on_acked(&mut self, id: u64) -> Result<(), String> {
        match self.sent.get(&id) {
            None => return Err(format!("Acked({id}) for a message never sent")),
            Some(s) if s.index == 0 => return Err(format!("Acked({id}) for an unreliable message")),
            Some(_) => {}
        }
        if self.failed.contains(&id) || self.withdrawn.contains(&id) || !self.acked.insert(id) {
            return Err(format!("message {id} reported twice (Acked after Acked or Failed)"));
        }
        Ok(())
    }

    /// `withdrawn`: the message failed because its subscriber
    /// unsubscribed, these being the subscriptions it left.
    fn on_failed(&mut self, id: u64, withdrawn: Option<&BTreeSet<u64>>) -> Result<(), String> {
        let sent = match self.sent.get(&id) {
            None => return Err(format!("Failed({id}) for a message never sent")),
            Some(s) if s.index == 0 => return Err(format!("Failed({id}) for an unreliable message")),
            Some(s) => *s,
        };
        if self.acked.contains(&id) || self.failed.contains(&id) || self.withdrawn.contains(&id) {
            return Err(format!("message {id} reported twice (Failed after Acked or Failed)"));
        }
        match (withdrawn, sent.kind) {
            (None, _) => self.failed.insert(id),
            (Some(left), SentKind::Item(sub)) if left.contains(&sub) => self.withdrawn.insert(id),
            (Some(_), kind) => {
                return Err(format!("message {id} ({kind:?}) failed as Unsubscribed, but its subscriber never left"));
            }
        };
        Ok(())
    }

    /// Reliable messages neither acknowledged nor failed.
    fn unresolved(&self) -> usize {
        let resolved = |id| self.acked.contains(id) || self.failed.contains(id) || self.withdrawn.contains(id);
        self.sent.iter().filter(|(id, s)| s.index > 0 && !resolved(id)).count()
    }

    /// Acknowledged messages the receiver never delivered, but for items
    /// of the subscriptions in `unsubscribed` and answers to them (dropped
    /// on arrival).
    fn acked_undelivered(&self, unsubscribed: &BTreeSet<u64>) -> Vec<u64> {
        let dropped = |id: &u64| {
            matches!(self.sent.get(id).map(|s| s.kind),
                Some(SentKind::Item(sub) | SentKind::Response(sub)) if unsubscribed.contains(&sub))
        };
        self.acked.iter().filter(|id| !self.delivered.contains(id) && !dropped(id)).copied().collect()
    }
}

/// One session as both sides saw it.
#[derive(Debug, Default)]
struct Log {
    client: Option<usize>,
    up: Flow,
    down: Flow,
    client_closed: bool,
    server_closed: bool,
    /// The server's incarnation (a restart loses its sessions).
    server_lost: bool,
    /// The client crashed with the session open (its state is gone).
    client_lost: bool,
    /// Requests the server got, and responses the client got.
    requests_delivered: BTreeSet<u64>,
    responses_delivered: BTreeSet<u64>,
    /// Subscriptions the client unsubscribed from, and those whose end it got.
    unsubscribed: BTreeSet<u64>,
    ended: BTreeSet<u64>,
}

/// Run totals, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Messages the clients sent.
    pub sent: u64,
    /// Client messages the server's application got.
    pub delivered: u64,
    /// Reliable client messages acknowledged.
    pub acked: u64,
    /// Reliable messages (either side) failed.
    pub failed: u64,
    /// Reliable client messages left unresolved by a client's crash.
    pub abandoned: u64,
    /// Messages (responses, pushes) the server sent.
    pub server_sent: u64,
    /// Server messages the clients got.
    pub server_delivered: u64,
    /// Body bytes of the client messages the server's application got.
    pub delivered_bytes: u64,
    /// Virtual time (ns) of the first client message handed to a session.
    pub first_sent_at: Option<u64>,
    /// Virtual time (ns) of the last client message the server's
    /// application got: with `first_sent_at` and `delivered_bytes`, the
    /// goodput of a bulk transfer.
    pub last_delivered_at: Option<u64>,
}

/// The checker.
#[derive(Debug, Default)]
pub struct Checker {
    sessions: BTreeMap<u64, Log>,
    /// Every broken promise so far.
    pub violations: Vec<Violation>,
    /// Totals.
    pub totals: Totals,
}

/// Which side of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client.
    Client,
    /// The server.
    Server,
}

impl Checker {
    fn fail(&mut self, at: u64, what: String) {
        self.violations.push(Violation { at, what });
    }

    fn log(&mut self, sid: u64) -> &mut Log {
        self.sessions.entry(sid).or_default()
    }

    /// The client learnt that its session is the server's `sid`.
    pub fn bind(&mut self, sid: u64, client: usize) {
        self.log(sid).client = Some(client);
    }

    /// A side sent a message.
    #[allow(clippy::too_many_arguments)]
    pub fn sent(&mut self, side: Side, sid: u64, id: u64, body: &[u8], class: u8, reliable: bool, kind: SentKind) {
        let log = self.log(sid);
        if let (Side::Client, SentKind::Unsubscribe(sub)) = (side, kind) {
            log.unsubscribed.insert(sub);
        }
        let flow = if side == Side::Client { &mut log.up } else { &mut log.down };
        flow.on_send(id, body, class, reliable, kind);
        match side {
            Side::Client => self.totals.sent += 1,
            Side::Server => self.totals.server_sent += 1,
        }
    }

    /// A side's application got a message. Returns whether it is a request
    /// (so the application answers it).
    pub fn delivered(&mut self, at: u64, side: Side, sid: u64, m: &Message) -> bool {
        let log = self.log(sid);
        let closed = if side == Side::Client { log.client_closed } else { log.server_closed };
        let (flow, back) = match side {
            Side::Server => (&mut log.up, &log.down),
            Side::Client => (&mut log.down, &log.up),
        };
        let result = flow.on_deliver(m);
        let mut problems = Vec::new();
        if closed {
            problems.push(format!("{side:?} of session {sid:016x} got message {} after its close", m.id.0));
        }
        let mut request = false;
        match result {
            Err(e) => problems.push(format!("{side:?} of session {sid:016x}: {e}")),
            Ok(sent) => {
                request = sent.kind.is_request();
                match side {
                    Side::Server if request => {
                        log.requests_delivered.insert(m.id.0);
                    }
                    Side::Client => {
                        if let SentKind::Response(to) = sent.kind {
                            log.responses_delivered.insert(to);
                        }
                    }
                    Side::Server => {}
                }
                let answers_a_request = match sent.kind {
                    SentKind::Response(r) => back.sent.get(&r).is_some_and(|s| s.kind.is_request()),
                    _ => true,
                };
                if !sent.kind.matches(m.kind) || !answers_a_request {
                    problems.push(format!(
                        "{side:?} of session {sid:016x}: message {} sent as {:?} has kind {:?}",
                        m.id.0, sent.kind, m.kind
                    ));
                }
                match m.kind {
                    MessageKind::Item(sub) if log.unsubscribed.contains(&sub.0) || log.ended.contains(&sub.0) => {
                        problems.push(format!(
                            "{side:?} of session {sid:016x}: item {} of subscription {} after it ended or was left",
                            m.id.0, sub.0
                        ));
                    }
                    MessageKind::End(sub) if side == Side::Client => {
                        log.ended.insert(sub.0);
                    }
                    _ => {}
                }
            }
        }
        match side {
            Side::Server => {
                self.totals.delivered += 1;
                self.totals.delivered_bytes += m.body.len() as u64;
                self.totals.last_delivered_at = Some(at);
            }
            Side::Client => self.totals.server_delivered += 1,
        }
        for p in problems {
            self.fail(at, p);
        }
        request
    }

    /// A side's reliable message was acknowledged.
    pub fn acked(&mut self, at: u64, side: Side, sid: u64, id: u64) {
        let log = self.log(sid);
        let flow = if side == Side::Client { &mut log.up } else { &mut log.down };
        match flow.on_acked(id) {
            Ok(()) => self.totals.acked += u64::from(side == Side::Client),
            Err(e) => self.fail(at, format!("{side:?} of session {sid:016x}: {e}")),
        }
    }

    /// A side's reliable message failed; `unsubscribed`: as
    /// [`xtmp_core::session::FailReason::Unsubscribed`].
    pub fn failed(&mut self, at: u64, side: Side, sid: u64, id: u64, unsubscribed: bool) {
        let log = self.log(sid);
        let result = match side {
            Side::Client => log.up.on_failed(id, unsubscribed.then_some(&BTreeSet::new())),
            Side::Server => log.down.on_failed(id, unsubscribed.then_some(&log.unsubscribed)),
        };
        match result {
            Ok(()) => self.totals.failed += u64::from(!unsubscribed),
            Err(e) => self.fail(at, format!("{side:?} of session {sid:016x}: {e}")),
        }
    }

    /// A side's session ended.
    pub fn closed(&mut self, at: u64, side: Side, sid: u64) {
        let log = self.log(sid);
        let was = match side {
            Side::Client => core::mem::replace(&mut log.client_closed, true),
            Side::Server => core::mem::replace(&mut log.server_closed, true),
        };
        if was {
            self.fail(at, format!("{side:?} of session {sid:016x} closed twice"));
        }
    }

    /// Any event of a side's session: none may follow its close.
    pub fn event(&mut self, at: u64, side: Side, sid: u64, what: &str) {
        let log = self.log(sid);
        let closed = if side == Side::Client { log.client_closed } else { log.server_closed };
        if closed {
            self.fail(at, format!("{side:?} of session {sid:016x} reported {what} after its close"));
        }
    }

    /// The server crashed: its side of every open session is gone.
    pub fn server_lost(&mut self) {
        for log in self.sessions.values_mut() {
            if !log.server_closed {
                log.server_closed = true;
                log.server_lost = true;
            }
        }
    }

    /// Client `sid`'s node crashed: its side of the session is gone, with
    /// whatever it had not resolved or taken. Returns how many of its
    /// reliable messages were left unresolved.
    pub fn client_lost(&mut self, sid: u64) -> u64 {
        let log = self.log(sid);
        log.client_closed = true;
        log.client_lost = true;
        let n = log.up.unresolved() as u64;
        self.totals.abandoned += n;
        n
    }

    /// Whether the client of session `sid` crashed with it open.
    pub fn was_client_lost(&self, sid: u64) -> bool {
        self.sessions.get(&sid).is_some_and(|l| l.client_lost)
    }

    /// The final checks, once every session has been closed.
    pub fn finish(&mut self, at: u64, lossless: bool) {
        let mut problems = Vec::new();
        for (sid, log) in &self.sessions {
            for (side, flow) in [(Side::Client, &log.up), (Side::Server, &log.down)] {
                if log.client.is_none() {
                    // The client never learnt this session (a half-open
                    // handshake, or one an attacker started).
                    continue;
                }
                let n = flow.unresolved();
                let side_lost = if side == Side::Server { log.server_lost } else { log.client_lost };
                if n > 0 && !side_lost {
                    problems.push(format!(
                        "{side:?} of session {sid:016x}: {n} reliable messages neither Acked nor Failed"
                    ));
                }
                let none = BTreeSet::new();
                let left = if side == Side::Server { &log.unsubscribed } else { &none };
                let undelivered = flow.acked_undelivered(left);
                // What the lost side had been told of but not yet taken
                // went with it.
                let receiver_lost = if side == Side::Server { log.client_lost } else { log.server_lost };
                if !undelivered.is_empty() && (lossless || !receiver_lost) {
                    problems.push(format!(
                        "{side:?} of session {sid:016x}: {} messages Acked but never delivered (first {})",
                        undelivered.len(),
                        undelivered[0]
                    ));
                }
                if lossless && !flow.failed.is_empty() {
                    problems.push(format!(
                        "{side:?} of session {sid:016x}: {} reliable messages failed in a lossless scenario",
                        flow.failed.len()
                    ));
                }
            }
            if log.client.is_some() && !(log.client_closed && log.server_closed) {
                problems.push(format!(
                    "session {sid:016x} still open at the end (client closed: {}, server closed: {})",
                    log.client_closed, log.server_closed
                ));
            }
        }
        for p in problems {
            self.fail(at, p);
        }
    }

    /// Requests of session `sid` the server got and whose response the
    /// client has not got yet.
    pub fn awaiting_responses(&self, sid: u64) -> u64 {
        // The answer to a subscription the client left first is dropped.
        let waiting = |l: &&Log| {
            l.requests_delivered
                .iter()
                .filter(|r| !l.responses_delivered.contains(r) && !l.unsubscribed.contains(r))
                .count()
        };
        self.sessions.get(&sid).as_ref().map_or(0, waiting) as u64
    }

    /// Number of sessions seen.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}
