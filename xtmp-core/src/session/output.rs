//! Sending: handshake chunks, sealed frames, batching and amplification.

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
        let hs = self.hs_send.as_ref().is_some_and(FlightSend::wants_send) || self.hs_ack_pending;
        match self.state {
            State::Closed | State::Draining { .. } => false,
            State::Established => hs || self.has_queued() || !self.path_queue.is_empty(),
            State::Closing => true,
            _ => hs,
        }
    }

    /// Writes the next datagram (or stream chunk) into `buf` and says which
    /// path it goes on. Call until it returns `Ok(None)`. Several frames
    /// are batched into one transmit up to the path's maximum datagram
    /// size (stream paths: up to `buf.len()`).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
        self.now = self.now.max(now);
        while let Some(&(path, _)) = self.path_queue.front() {
            if let Some(t) = self.transmit_path_queue(path, buf)? {
                return Ok(Some(t));
            }
        }
        let path = self.primary;
        let p = &self.paths[path.0 as usize];
        if !p.alive {
            return Ok(None);
        }
        let limit = self.transmit_limit(path, buf);
        let mut len = 0;
        let mut needed = 0;
        loop {
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
        if let State::Closing = self.state
            && self.disconnect.is_none()
            && !self.has_queued()
        {
            self.after_disconnect_sent();
        }
        Ok(Some(Transmit { path, len }))
    }

    /// How many bytes one transmit on `path` may hold.
    fn transmit_limit(&self, path: PathId, buf: &[u8]) -> usize {
        let mut limit = match self.paths[path.0 as usize].kind {
            PathKind::Datagram => buf.len().min(self.config.max_datagram),
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
            let needed = HEADER_LEN + item.payload_len();
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
            match self.write_sealed(&item, &mut buf[len..limit]) {
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
        // On a datagram path the client holds data until the server has its
        // flight, so nothing is sent that the server cannot decrypt yet.
        if self.role == Role::Client
            && self.path_kind() == PathKind::Datagram
            && self.hs_send.as_ref().is_some_and(|s| !s.done)
        {
            return Ok(None);
        }
        let Some(q) = self.queues.iter().position(|q| !q.is_empty()) else {
            if matches!(self.state, State::Closing) && self.disconnect.is_some() {
                if self.recv_keys.is_none() {
                    return self.write_cleartext_disconnect(out);
                }
                let d = self.disconnect.take().ok_or(0usize)?;
                return match self.write_sealed(&d, out) {
                    Ok(n) => Ok(Some(n)),
                    Err(needed) => {
                        self.disconnect = Some(d);
                        Err(needed)
                    }
                };
            }
            return Ok(None);
        };
        let item = self.queues[q].pop_front().ok_or(0usize)?;
        match self.write_sealed(&item, out) {
            Ok(n) => {
                self.queued_bytes -= item.body.len();
                Ok(Some(n))
            }
            Err(needed) => {
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

    pub(super) fn write_sealed(&mut self, item: &Outgoing, out: &mut [u8]) -> Result<usize, usize> {
        let len = item.payload_len();
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
        let payload = &mut out[HEADER_LEN..total];
        let body_at = match item.head {
            Head::Data(d) => {
                d.write(payload);
                codec::DATA_HEADER_LEN
            }
            Head::Heartbeat(kind, id) => {
                codec::write_heartbeat(kind, id, payload);
                codec::HEARTBEAT_LEN
            }
            Head::Raw => 0,
        };
        payload[body_at..].copy_from_slice(&item.body);
        let mut header = Header::new(item.ty, peer, self.next_seq);
        header.flags = item.flags;
        let keys = self.send_keys.as_mut().ok_or(usize::MAX)?;
        let n = keys.seal(cipher, header, len, out).map_err(|_| usize::MAX)?;
        self.next_seq += 1;
        self.stats.frames_sent += 1;
        Ok(n)
    }

    /// Handshake chunks and acknowledgements (cleartext).
    pub(super) fn write_handshake(&mut self, out: &mut [u8]) -> Result<Option<usize>, usize> {
        let ty = match self.role {
            Role::Client => MessageType::HANDSHAKE,
            Role::Server => MessageType::HANDSHAKE_ACK,
        };
        let ack = self.hs_recv.contiguous() as u32;
        let min = HEADER_LEN + codec::HANDSHAKE_HEADER_LEN;
        let wants = self.hs_send.as_ref().is_some_and(FlightSend::wants_send);
        if !wants && !self.hs_ack_pending {
            return Ok(None);
        }
        if out.len() < min + usize::from(wants) {
            return Err(min + 1);
        }
        let (stage, offset, data_len, sid) = match self.hs_send.as_ref().filter(|s| s.wants_send()) {
            Some(s) => {
                let (offset, chunk) = s.chunk(out.len() - min);
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
        payload.resize(codec::HANDSHAKE_HEADER_LEN, 0);
        HandshakeChunk::write_header(stage, offset, ack, &mut payload);
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
