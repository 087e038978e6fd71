//! The application's sends (SPEC.md 3.4, 4.1): a message, a response, an
//! Error response, each checked against the peer's limits and the flow
//! control, then staged into frames and queued by priority class.

use super::*;

impl Session {
    /// Queues a message. Returns its id (a response to it names this id).
    pub fn send(
        &mut self,
        message_type: MessageType,
        body: Bytes,
        options: SendOptions,
    ) -> Result<MessageId, SendError> {
        subscription::check_app_type(message_type)?;
        let kind = if options.request { codec::KIND_REQUEST } else { codec::KIND_MESSAGE };
        let id = self.send_data(message_type, body, options, kind, 0)?;
        if options.request {
            self.requests_out.insert(id.0);
        }
        Ok(id)
    }

    /// Answers the peer's request `to`.
    pub fn respond(
        &mut self,
        to: MessageId,
        message_type: MessageType,
        body: Bytes,
        options: SendOptions,
    ) -> Result<MessageId, SendError> {
        let class = message_type.class();
        let allowed = (class == TypeClass::Application && message_type.name().is_some())
            || class == TypeClass::Extension
            || message_type == MessageType::ERROR;
        if !allowed || options.request {
            return Err(SendError::InvalidType(message_type));
        }
        if !self.requests_in.contains(&to.0) {
            return Err(SendError::NoSuchRequest(to));
        }
        let id = self.send_data(message_type, body, options, codec::KIND_RESPONSE, to.0)?;
        self.requests_in.remove(&to.0);
        self.on_answered(to.0, message_type == MessageType::ERROR);
        Ok(id)
    }

    /// Answers the peer's request `to` with an Error (`FE`) response.
    pub fn respond_error(&mut self, to: MessageId, code: ErrorCode, reason: &str) -> Result<MessageId, SendError> {
        let body = Bytes::from(codec::encode_code_reason(code.0, reason));
        self.respond(to, MessageType::ERROR, body, SendOptions::default())
    }

    /// Answers a request with an Error the session chose (unknown type,
    /// too many pending): reliable, like any response.
    pub(super) fn queue_error(&mut self, to: u64, code: ErrorCode, reason: &str) {
        let body = Bytes::from(codec::encode_code_reason(code.0, reason));
        self.enqueue_data(MessageType::ERROR, body, SendOptions::default(), codec::KIND_RESPONSE, to);
    }

    pub(super) fn send_data(
        &mut self,
        ty: MessageType,
        body: Bytes,
        options: SendOptions,
        kind: u8,
        correlation: u64,
    ) -> Result<MessageId, SendError> {
        self.check_send(body.len())?;
        Ok(self.enqueue_data(ty, body, options, kind, correlation))
    }

    /// Whether a message of `len` bytes may be sent now: the session is
    /// established, the message within the peer's limit, and the send
    /// queues below their limits (else `WouldBlock`, and `Writable` later).
    pub(super) fn check_send(&mut self, len: usize) -> Result<(), SendError> {
        match self.state {
            State::Established => {}
            State::ClientHello(_) | State::ClientFlight(_) | State::ServerFlight(_) => {
                return Err(SendError::NotConnected);
            }
            _ => return Err(SendError::Closed),
        }
        let max = self.max_message_len();
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        let items = self.queued_items + self.outbound.len();
        let bytes = self.queued_bytes as u64 + self.outbound.bytes() + len as u64;
        if items >= self.config.max_queued_messages || bytes > self.config.max_queued_bytes as u64 {
            self.send_blocked = true;
            return Err(SendError::WouldBlock);
        }
        Ok(())
    }

    /// Queues a data message (reliable ones are registered for
    /// acknowledgement and get their order number).
    pub(super) fn enqueue_data(
        &mut self,
        ty: MessageType,
        body: Bytes,
        options: SendOptions,
        kind: u8,
        correlation: u64,
    ) -> MessageId {
        let staged = self.stage_data(ty, body, options, kind, correlation);
        self.commit_data(staged)
    }

    /// A data message with its message id, flags and (compressed) body,
    /// not yet in a queue: reliable ones have no order number yet.
    pub(super) fn stage_data(
        &mut self,
        ty: MessageType,
        mut body: Bytes,
        options: SendOptions,
        kind: u8,
        correlation: u64,
    ) -> Staged {
        let id = self.next_message_id;
        self.next_message_id += 1;
        let (q, mut flags) = match options.priority {
            PriorityClass::Normal => (Q_NORMAL, Flags::empty()),
            PriorityClass::High => (Q_HIGH, Flags::PRIORITY_HIGH),
            PriorityClass::Emergency => (Q_EMERGENCY, Flags::EMERGENCY),
        };
        if options.stream_data {
            flags |= Flags::STREAM_DATA;
        }
        if options.compress
            && let Some(packed) = crate::compression::compress(&body)
        {
            body = Bytes::from(packed);
            flags |= Flags::COMPRESSED;
        }
        let mut deadline = None;
        if options.reliable {
            flags |= Flags::REQUIRES_ACK;
            deadline = Some(self.now + options.deadline.unwrap_or(self.config.delivery_timeout));
        }
        let head = DataHeader { kind, id, correlation, order: 0, ack_now: false, with_ack: false };
        let route = options.path.unwrap_or_else(|| self.config.path_policy.preferred(ty));
        Staged { q, ty, flags, head, body, deadline, route }
    }

    /// Queues a staged message: a reliable one gets its order number and
    /// credit offset in its class now and is registered for
    /// acknowledgement (with its deadline, or the default from now).
    pub(super) fn commit_data(&mut self, staged: Staged) -> MessageId {
        let Staged { q, ty, flags, mut head, body, deadline, route } = staged;
        let reliable = flags.contains(Flags::REQUIRES_ACK);
        let class = reliable::class_index(flags);
        if reliable {
            head.order = self.outbound.next_order(class);
        }
        let mut item = Outgoing::new(ty, flags, Head::Data(head), body);
        item.route = Some(route);
        if reliable {
            item.credit = self.outbound.next_credit(class);
            let deadline = deadline.unwrap_or(self.now + self.config.delivery_timeout);
            self.outbound.register(head.id, class, item.total, deadline, item.clone());
        }
        self.queue(q, item);
        MessageId(head.id)
    }

    pub(super) fn queue(&mut self, q: usize, out: Outgoing) {
        if out.counted() {
            self.queued_bytes += out.body.len();
            self.queued_items += 1;
        }
        self.queues[q].push_back(out);
    }

    pub(super) fn queue_disconnect(&mut self, code: CloseCode, reason: &str) {
        let body = Bytes::from(codec::encode_code_reason(code.0, reason));
        self.disconnect = Some(Outgoing::new(MessageType::DISCONNECT, Flags::empty(), Head::Raw, body));
    }
}
