//! Sending: handshake chunks, sealed frames, batching and amplification.

use rand_core::Rng as _;

use super::*;

impl Session {
    // ---------------------------------------------------------------- output

    /// Bytes the server may still send on `path` before the peer proves
    /// its address (three times what it received), or `None` if unlimited.
    pub(super) fn amplification_budget(&self, path: PathId) -> Option<u64> {
        let p = &self.paths[path.0 as usize];
        (self.role == Role::Server && !p.validated).then(|| (3 * p.received).saturating_sub(p.sent))
    }

    pub(super) fn has_output(&self) -> bool {
        let min = (HEADER_LEN + codec::HANDSHAKE_HEADER_LEN + 1) as u64;
        if self.amplification_budget(self.primary).is_some_and(|b| b < min) {
            return false;
        }
        // Nothing goes out while the primary path is down (path-bound
        // frames aside): waiting output would make `poll_timeout` answer
        // "now" until a new path appears.
        let alive = self.paths[self.primary.0 as usize].alive;
        let hs = alive
            && (self.hs_send.as_ref().is_some_and(FlightSend::wants_send) || self.hs_ack_pending || self.hs_probe);
        let data = alive && !self.data_held() && (self.has_sendable() || self.ack_due() || self.probe_due());
        match self.state {
            State::Closed | State::Draining { .. } => false,
            State::Established => hs || data || !self.path_queue.is_empty(),
            State::Closing => hs || data || !self.path_queue.is_empty() || (alive && self.disconnect_ready()),
            _ => hs,
        }
    }

    /// On a datagram path the client holds encrypted frames until the server
    /// has its flight, so nothing is sent that the server cannot decrypt
    /// yet. (Held output is not "waiting output": `poll_timeout` must not
    /// answer "now" for it, or a caller spins until the flight's ack.)
    fn data_held(&self) -> bool {
        self.role == Role::Client
            && self.path_kind() == PathKind::Datagram
            && self.hs_send.as_ref().is_some_and(|s| !s.done)
    }

    /// Whether the Disconnect of a graceful close may go: everything queued
    /// went out and every reliable message was acknowledged or failed.
    pub(super) fn disconnect_ready(&self) -> bool {
        self.disconnect.is_some() && !self.has_queued() && (self.outbound.len() == 0 || self.recv_keys.is_none())
    }

    /// Writes the next datagram (or stream chunk) into `buf` and says which
    /// path it goes on. Call until it returns `Ok(None)`. Several frames
    /// are batched into one transmit up to the path's maximum datagram
    /// size (stream paths: up to `buf.len()`).
    ///
    /// A `buf` shorter than [`Session::max_transmit_len`] may get
    /// `Err(BufferTooSmall)` when the next frame does not fit; nothing is
    /// lost, and a call with a longer buffer writes it.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
        self.now = self.now.max(now);
        while let Some(&(path, _)) = self.path_queue.front() {
            if path == self.primary && self.hs_send.as_ref().is_some_and(FlightSend::wants_send) {
                // A client's resent flight goes first on its new path.
                break;
            }
            if let Some(t) = self.transmit_path_queue(path, buf)? {
                return Ok(Some(t));
            }
        }
        if !self.paths[self.primary.0 as usize].alive {
            return Ok(None);
        }
        if let Some(t) = self.transmit_probe(buf) {
            return Ok(Some(t));
        }
        for path in self.data_paths().into_iter().flatten() {
            if let Some(t) = self.transmit_data(path, buf)? {
                self.tx_turn = !self.tx_turn;
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// Batches frames for `path` into one transmit.
    fn transmit_data(&mut self, path: PathId, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
        let limit = self.transmit_limit(path, buf);
        self.tx_path = path;
        let in_flight = self.recovery.in_flight();
        let mut len = 0;
        let mut needed = 0;
        loop {
            self.tx_offset = len;
            match self.write_frame(&mut buf[len..limit]) {
                Ok(Some(n)) => len += n,
                Ok(None) => break,
                Err(n) => {
                    needed = n;
                    break;
                }
            }
        }
        if len == 0 {
            // A frame that fits `buf` but not the path's or the
            // amplification limit is not an error: it waits.
            if needed > buf.len() {
                return Err(BufferTooSmall { needed });
            }
            return Ok(None);
        }
        let p = &mut self.paths[path.0 as usize];
        p.sent += len as u64;
        self.last_send = self.now;
        self.stats.bytes_sent += len as u64;
        self.on_datagram_sent(path, len, in_flight);
        if let State::Closing = self.state
            && self.disconnect.is_none()
        {
            self.after_disconnect_sent();
        }
        Ok(Some(Transmit { path, len }))
    }

    /// How many bytes one transmit on `path` may hold.
    fn transmit_limit(&self, path: PathId, buf: &[u8]) -> usize {
        let mut limit = match self.paths[path.0 as usize].kind {
            PathKind::Datagram => buf.len().min(self.paths[path.0 as usize].mtu.current()),
            PathKind::Stream => buf.len(),
        };
        if let Some(budget) = self.amplification_budget(path) {
            limit = limit.min(usize::try_from(budget).unwrap_or(usize::MAX));
        }
        limit
    }

    /// Frames bound to `path` (challenges, responses), batched into one
    /// transmit. A frame the path cannot carry (dead, over the
    /// amplification budget, or no keys yet) is dropped: a challenge is
    /// repeated on its own timer.
    fn transmit_path_queue(&mut self, path: PathId, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
        let usable = self.paths.get(path.0 as usize).is_some_and(|p| p.alive) && self.send_keys.is_some();
        if !usable {
            self.path_queue.pop_front();
            return Ok(None);
        }
        let limit = self.transmit_limit(path, buf);
        let mut len = 0;
        while let Some((p, item)) = self.path_queue.pop_front() {
            if p != path {
                self.path_queue.push_front((p, item));
                break;
            }
            // Path-bound frames are challenges and responses: the body is the payload.
            let needed = HEADER_LEN + item.body.len();
            if len == 0 && needed > buf.len() {
                self.path_queue.push_front((p, item));
                return Err(BufferTooSmall { needed });
            }
            if len + needed > limit {
                if len > 0 {
                    self.path_queue.push_front((p, item));
                } else {
                    self.stats.frames_dropped += 1;
                }
                break;
            }
            self.tx_path = path;
            self.tx_offset = len;
            match self.write_sealed(&item, None, &mut buf[len..limit]) {
                Ok(n) => len += n,
                Err(_) => break,
            }
        }
        if len == 0 {
            return Ok(None);
        }
        self.paths[path.0 as usize].sent += len as u64;
        self.last_send = self.now;
        self.stats.bytes_sent += len as u64;
        Ok(Some(Transmit { path, len }))
    }

    pub(super) fn has_queued(&self) -> bool {
        self.queues.iter().any(|q| !q.is_empty())
    }

    pub(super) fn after_disconnect_sent(&mut self) {
        if self.recv_keys.is_some() {
            self.release_inbound();
            self.state = State::Draining { until: self.now + self.config.drain_period };
        } else {
            let reason = self.close_reason.clone().unwrap_or(CloseReason::HandshakeTimeout);
            self.finish(reason);
        }
    }

    /// Writes one frame into `out`: `Ok(Some(len))`, `Ok(None)` if nothing
    /// is waiting, `Err(needed)` if the next frame needs more room.
    pub(super) fn write_frame(&mut self, out: &mut [u8]) -> Result<Option<usize>, usize> {
        if let Some(n) = self.write_handshake(out)? {
            return Ok(Some(n));
        }
        let established = matches!(self.state, State::Established | State::Closing);
        if !established {
            if let (State::Closing, Some(_)) = (&self.state, &self.disconnect) {
                return self.write_cleartext_disconnect(out);
            }
            return Ok(None);
        }
        if self.hs_probe {
            // Sealed, so it opens a path at a server that has our flight;
            // cleartext frames from a new address never do (SPEC.md 3.8).
            let ping = super::timers::ping(self.rng.next_u64(), Flags::empty());
            let n = self.write_sealed(&ping, None, out)?;
            self.hs_probe = false;
            return Ok(Some(n));
        }
        if self.data_held() {
            return Ok(None);
        }
        // An ACK goes when due, or along with anything else; one owed for
        // stream frames goes on the stream (SPEC.md 4.3). It rides inside
        // the next data frame when that frame has room for it, and goes
        // first as a frame of its own otherwise.
        let ack_route = self.acks.stream_owed().then_some(PathKind::Stream);
        let ack_wanted =
            self.acks.pending() && self.routes_to(ack_route, self.tx_path) && (self.ack_due() || self.has_sendable());
        let next = self.next_queue();
        if ack_wanted {
            if !next.is_some_and(|q| self.carries_ack(q, out.len())) {
                let ack = Outgoing::new(ACK, Flags::empty(), Head::Ack, Bytes::new());
                return self.write_sealed(&ack, None, out).map(Some);
            }
            self.tx_with_ack = true;
        }
        let Some(q) = next else {
            if matches!(self.state, State::Closing) && self.disconnect_ready() {
                if self.recv_keys.is_none() {
                    return self.write_cleartext_disconnect(out);
                }
                let d = self.disconnect.take().ok_or(0usize)?;
                return match self.write_sealed(&d, None, out) {
                    Ok(n) => Ok(Some(n)),
                    Err(needed) => {
                        self.disconnect = Some(d);
                        Err(needed)
                    }
                };
            }
            return Ok(None);
        };
        let written = self.write_queued(q, out);
        self.tx_with_ack = false;
        written.map(Some)
    }

    /// The queue whose front item goes next on the path being written
    /// (dropping reliable messages acknowledged or given up on meanwhile).
    fn next_queue(&mut self) -> Option<usize> {
        loop {
            let path = self.tx_path;
            let data_ok = self.can_send_data_on(path);
            let ready = |q: usize| match q {
                Q_CONTROL => self.queues[q].front().is_some_and(|item| self.routes_to(item.route, path)),
                _ => data_ok && self.queue_ready_on(q, path),
            };
            let q = (0..self.queues.len()).find(|&q| ready(q))?;
            let item = &self.queues[q][0];
            if let Head::Data(d) = item.head
                && d.order != 0
                && self.outbound.get(d.id).is_none()
            {
                self.queues[q].pop_front();
                continue;
            }
            return Some(q);
        }
    }

    /// Whether the front item of queue `q` is a data message that goes
    /// whole in one frame with the pending ACK after its data header,
    /// within the path's frame size and `room` bytes of output.
    fn carries_ack(&self, q: usize, room: usize) -> bool {
        let Some(item) = self.queues[q].front() else { return false };
        let whole = item.offset == 0 && item.body.len() as u64 == item.total;
        let payload = codec::DATA_HEADER_LEN + self.acks.encoded_len() + item.body.len();
        matches!(item.head, Head::Data(_))
            && whole
            && payload <= self.frame_room(self.tx_path)
            && HEADER_LEN + payload <= room
    }

    /// Writes the front item of queue `q`: whole, or its next fragment.
    fn write_queued(&mut self, q: usize, out: &mut [u8]) -> Result<usize, usize> {
        let room = self.frame_room(self.tx_path);
        let item = self.queues[q].pop_front().ok_or(0usize)?;
        let whole = item.offset == 0 && item.body.len() as u64 == item.total;
        let fragment = match item.head {
            Head::Data(_) if !(whole && codec::DATA_HEADER_LEN + item.body.len() <= room) => {
                let max = room - codec::DATA_HEADER_LEN - codec::FRAGMENT_HEADER_LEN;
                Some(item.body.len().min(max))
            }
            _ => None,
        };
        // The frame that completes a reliable message asks for an ACK at
        // once when nothing else waits to go: the sender may be waiting for
        // it (SPEC.md 4.3). Not for a request (its ACK comes with the
        // response) nor for a response (nobody waits for its ACK, which
        // comes with the peer's next frame).
        let completes = fragment.is_none_or(|chunk| chunk == item.body.len());
        let waited_for =
            matches!(item.head, Head::Data(d) if !matches!(d.kind, codec::KIND_REQUEST | codec::KIND_RESPONSE));
        self.tx_ack_now = waited_for && item.order() != 0 && completes && !self.data_ready();
        let result = self.write_sealed(&item, fragment, out);
        self.tx_ack_now = false;
        let counted = item.counted();
        match (result, fragment) {
            (Ok(n), Some(chunk)) if chunk < item.body.len() => {
                if counted {
                    self.queued_bytes -= chunk;
                }
                let mut rest = item;
                rest.body = rest.body.slice(chunk..);
                rest.offset += chunk as u64;
                self.queues[q].push_front(rest);
                Ok(n)
            }
            (Ok(n), _) => {
                if counted {
                    self.queued_bytes -= item.body.len();
                    self.queued_items -= 1;
                    if let Head::Data(d) = item.head
                        && d.kind == codec::KIND_ITEM
                        && d.order == 0
                    {
                        self.item_sent(d.correlation);
                    }
                }
                match item.head {
                    Head::Forward(class) => self.forward_queued[usize::from(class).min(2)] = false,
                    Head::MaxData(class) => self.max_data_queued[usize::from(class).min(2)] = false,
                    Head::SubCredit(id) => self.subs.credit_sent(id),
                    _ => {}
                }
                Ok(n)
            }
            (Err(needed), _) => {
                self.queues[q].push_front(item);
                Err(needed)
            }
        }
    }

    pub(super) fn write_cleartext_disconnect(&mut self, out: &mut [u8]) -> Result<Option<usize>, usize> {
        let (Some(d), Some(peer)) = (&self.disconnect, self.peer_sid) else {
            self.disconnect = None;
            return Ok(None);
        };
        let header = Header::new(MessageType::DISCONNECT, peer, 0);
        let n = Frame::encode(&header, &d.body, out).map_err(|_| HEADER_LEN + d.body.len())?;
        self.disconnect = None;
        self.stats.frames_sent += 1;
        Ok(Some(n))
    }

    /// Seals one frame for `item` into `out`: the whole item, or for data
    /// a fragment of `fragment` bytes from the item's start.
    pub(super) fn write_sealed(
        &mut self,
        item: &Outgoing,
        fragment: Option<usize>,
        out: &mut [u8],
    ) -> Result<usize, usize> {
        let data_len = fragment.unwrap_or(item.body.len());
        // `carries_ack` chose this frame for the ACK: a whole message only.
        let ack_len = if self.tx_with_ack && fragment.is_none() { self.acks.encoded_len() } else { 0 };
        let len = match item.head {
            Head::Data(_) if fragment.is_some() => codec::DATA_HEADER_LEN + codec::FRAGMENT_HEADER_LEN + data_len,
            Head::Data(_) => codec::DATA_HEADER_LEN + ack_len + data_len,
            Head::Heartbeat(..) => codec::HEARTBEAT_LEN + data_len,
            Head::Raw => data_len,
            Head::Ack => self.acks.encoded_len(),
            Head::Forward(_) => codec::FORWARD_LEN,
            Head::MaxData(_) => codec::MAX_DATA_LEN,
            Head::SubCredit(_) => codec::SUB_CREDIT_LEN,
            Head::Padding(n) => n as usize,
        };
        let total = HEADER_LEN + len;
        if out.len() < total {
            return Err(total);
        }
        let (Some(cipher), Some(peer)) = (self.cipher, self.peer_sid) else { return Err(usize::MAX) };
        // A margin below the cipher's limit leaves room for a re-key that
        // freezes the key while it waits for the peer.
        let hard = cipher.confidentiality_limit();
        let soft = self.config.key_update_frames.min(hard - hard / 16);
        let sealed = self.send_keys.as_ref().map_or(0, |k| k.sealed);
        if sealed >= soft && !self.rekey.freezes_sending() {
            self.update_send_key();
        } else if sealed >= hard {
            // A re-key froze the key and the answer never came: the key
            // must not be used further, not even for a Disconnect.
            self.finish(CloseReason::Internal("key usage limit reached while a re-key was open"));
            return Err(0);
        }
        let mut flags = item.flags;
        let datagram = self.paths[self.tx_path.0 as usize].kind == PathKind::Datagram;
        let payload = &mut out[HEADER_LEN..total];
        let mut ack_written = false;
        let body_at = match item.head {
            Head::Data(d) if ack_len > 0 => {
                DataHeader { ack_now: self.tx_ack_now, with_ack: true, ..d }.write(payload);
                if datagram || (d.kind == codec::KIND_ITEM && d.order == 0 && self.subs.item_in_flight(d.id)) {
                    flags |= Flags::REQUIRES_ACK;
                }
                let at = codec::DATA_HEADER_LEN;
                ack_written = self.acks.write(self.now, &mut payload[at..at + ack_len]).is_some();
                at + ack_len
            }
            Head::Data(d) => {
                DataHeader { ack_now: self.tx_ack_now, ..d }.write(payload);
                // On a datagram path every data frame is acknowledged, so
                // congestion control sees unreliable traffic too; so is a
                // best-effort item holding its subscription's credit on any
                // path, so that its loss gives the credit back.
                if datagram || (d.kind == codec::KIND_ITEM && d.order == 0 && self.subs.item_in_flight(d.id)) {
                    flags |= Flags::REQUIRES_ACK;
                }
                if fragment.is_some() {
                    flags |= Flags::FRAGMENTED;
                    if item.offset + data_len as u64 == item.total {
                        flags |= Flags::LAST_FRAGMENT;
                    }
                    let at = codec::DATA_HEADER_LEN;
                    codec::write_fragment(item.offset as u32, item.total as u32, &mut payload[at..]);
                    at + codec::FRAGMENT_HEADER_LEN
                } else {
                    codec::DATA_HEADER_LEN
                }
            }
            Head::Heartbeat(kind, id) => {
                codec::write_heartbeat(kind, id, payload);
                codec::HEARTBEAT_LEN
            }
            Head::Raw => 0,
            Head::Ack => {
                ack_written = self.acks.write(self.now, payload).is_some();
                len
            }
            Head::Forward(class) => {
                let (floor, credit) = self.outbound.floor(usize::from(class));
                codec::write_forward(class, floor, credit, payload);
                len
            }
            Head::MaxData(class) => {
                codec::write_max_data(class, self.recv_credit.advertise(usize::from(class)), payload);
                len
            }
            Head::SubCredit(id) => {
                codec::write_sub_credit(id, self.subs.advertise(id), payload);
                len
            }
            Head::Padding(_) => {
                payload.fill(0);
                len
            }
        };
        // The body (or this fragment of it) is sealed from where it is.
        let tail = if body_at < len { &item.body[..data_len] } else { &[][..] };
        let seq = self.next_seq;
        let mut header = Header::new(item.ty, peer, seq);
        header.flags = flags;
        let keys = self.send_keys.as_mut().ok_or(usize::MAX)?;
        let n = keys.seal(cipher, header, len, out, tail).map_err(|_| usize::MAX)?;
        self.next_seq += 1;
        self.stats.frames_sent += 1;
        if ack_written {
            self.stats.acks_sent += 1;
            self.stats.acks_attached += u64::from(ack_len > 0);
            self.on_ack_sent(seq);
        }
        self.on_frame_sent(seq, n, flags, item, data_len);
        Ok(n)
    }

    /// Handshake chunks and acknowledgements (cleartext).
    pub(super) fn write_handshake(&mut self, out: &mut [u8]) -> Result<Option<usize>, usize> {
        let ty = match self.role {
            Role::Client => MessageType::HANDSHAKE,
            Role::Server => MessageType::HANDSHAKE_ACK,
        };
        let ack = self.hs_recv.contiguous() as u32;
        let stage_now = self.hs_send.as_ref().map_or(codec::STAGE_CLIENT_HELLO, |s| s.stage);
        let min = HEADER_LEN + HandshakeChunk::header_len(stage_now, &self.retry_token);
        let wants = self.hs_send.as_ref().is_some_and(FlightSend::wants_send);
        if !wants && !self.hs_ack_pending {
            return Ok(None);
        }
        if out.len() < min + usize::from(wants) {
            return Err(min + 1);
        }
        // On a stream the peer's frame limit is not known yet: stay within
        // the smallest any peer may announce. (A datagram path is bounded
        // by its datagram size instead.)
        let room = match self.path_kind() {
            PathKind::Stream => out.len().min(HEADER_LEN + crate::wire::MIN_MAX_PAYLOAD as usize) - min,
            PathKind::Datagram => out.len() - min,
        };
        let (stage, offset, data_len, sid) = match self.hs_send.as_ref().filter(|s| s.wants_send()) {
            Some(s) => {
                let (offset, chunk) = s.chunk(room);
                let sid = if s.stage == codec::STAGE_CLIENT_HELLO { Some(self.local_sid) } else { self.peer_sid };
                (s.stage, offset, chunk.len(), sid)
            }
            None => {
                let stage = self.hs_send.as_ref().map_or(codec::STAGE_CLIENT_HELLO, |s| s.stage);
                (stage, 0, 0, self.peer_sid)
            }
        };
        let Some(sid) = sid else {
            // The client cannot acknowledge before it knows the server's id.
            self.hs_ack_pending = false;
            return Ok(None);
        };
        let mut payload = core::mem::take(&mut self.scratch);
        payload.clear();
        HandshakeChunk::write_header(stage, offset, ack, &self.retry_token, &mut payload);
        if let Some(s) = &self.hs_send {
            let start = offset as usize;
            payload.extend_from_slice(&s.data[start..start + data_len]);
        }
        let mut header = Header::new(ty, sid, self.hs_frames);
        header.flags = Flags::empty();
        let n = Frame::encode(&header, &payload, out).map_err(|_| HEADER_LEN + payload.len())?;
        self.scratch = payload;
        self.hs_frames += 1;
        self.stats.frames_sent += 1;
        self.hs_ack_pending = false;
        if data_len > 0
            && let Some(s) = &mut self.hs_send
        {
            s.advance(data_len, self.now);
        }
        Ok(Some(n))
    }
}
