//! What the nodes send and what arrives: pumping transmits onto the
//! simulated links, stream connections and their backlogs, delivery.

use super::*;

impl World {
    /// Drains every node's output and events until nothing moves.
    pub(super) fn pump(&mut self) {
        let mut buf = vec![0u8; 1 << 17];
        loop {
            let mut moved = false;
            for i in 0..self.clients.len() {
                self.client_events(i);
                self.feed(i);
                let now = self.now;
                loop {
                    let c = &mut self.clients[i];
                    let Some(s) = &mut c.session else { break };
                    let t = match s.poll_transmit(c.clock.local(now), &mut buf) {
                        Ok(Some(t)) => t,
                        Ok(None) => break,
                        Err(e) => {
                            self.violation(format!("client{i}: poll_transmit: {e}"));
                            return;
                        }
                    };
                    moved = true;
                    self.client_sent(i, t.path, buf[..t.len].to_vec());
                }
                self.client_events(i);
            }
            self.server_events();
            let now = self.now;
            while let Some(e) = self.server.endpoint.as_mut() {
                let (remote, len) = match e.poll_transmit(self.server.clock.local(now), &mut buf) {
                    Ok(Some(t)) => t,
                    Ok(None) => break,
                    Err(e) => {
                        self.violation(format!("server: poll_transmit: {e}"));
                        return;
                    }
                };
                moved = true;
                self.server_sent(remote, buf[..len].to_vec());
            }
            self.server_events();
            if !moved {
                return;
            }
        }
    }

    pub(super) fn schedule(&mut self, arrivals: Vec<Arrival>, dest: Dest, link: &str) {
        for a in arrivals {
            match a.fault {
                Fault::Corrupted => self.counters.corrupted += 1,
                Fault::Duplicate | Fault::Replay => self.counters.duplicated += 1,
                _ => {}
            }
            let n = self.next_packet;
            self.next_packet += 1;
            let len = a.bytes.len();
            let fault = a.fault;
            self.note(
                &[9, a.at, len as u64, fault as u64],
                || link.to_string(),
                "send",
                || format!("{len} B {fault:?}"),
            );
            self.inflight.insert((a.at, n), Packet { dest, bytes: a.bytes, fault: a.fault, forged: false });
        }
    }

    pub(super) fn client_sent(&mut self, i: usize, path: PathId, bytes: Vec<u8>) {
        self.counters.transmits += 1;
        let Some(p) = self.clients[i].paths.get(path.0 as usize).copied() else {
            return self.violation(format!("client{i}: transmit on unknown path {}", path.0));
        };
        if !p.alive {
            return;
        }
        let now = self.now;
        match p.kind {
            PathKind::Datagram => {
                let dest = Dest::Server { src: p.addr, kind: RemoteKind::Datagram, conn: None };
                self.capture(dest, p.addr, &bytes);
                self.capture_hello(&bytes);
                let c = &mut self.clients[i];
                match c.up_dgram.datagram(now, &bytes, &mut self.choices) {
                    Ok(a) => self.schedule(a, dest, "up"),
                    Err(d) => self.dropped(d, bytes.len(), "up"),
                }
            }
            PathKind::Stream => {
                self.capture_hello(&bytes);
                let conn = p.conn;
                let dest = Dest::Server { src: p.addr, kind: RemoteKind::Stream, conn };
                self.stream_send(i, conn.unwrap_or(0), true, dest, bytes);
            }
        }
    }

    pub(super) fn server_sent(&mut self, remote: Remote, bytes: Vec<u8>) {
        self.counters.transmits += 1;
        let now = self.now;
        match remote.kind {
            RemoteKind::Datagram => {
                let dest = Dest::Client { dst: remote.addr, conn: None };
                self.capture(dest, SERVER, &bytes);
                if flood::is_spoofed(remote.addr) {
                    return self.sent_to_spoofed(remote.addr, bytes.len());
                }
                let Some(&i) = self.addr_owner.get(&remote.addr) else { return self.dropped_unknown(remote) };
                let c = &mut self.clients[i];
                match c.down_dgram.datagram(now, &bytes, &mut self.choices) {
                    Ok(a) => self.schedule(a, dest, "down"),
                    Err(d) => self.dropped(d, bytes.len(), "down"),
                }
            }
            RemoteKind::Stream => {
                if flood::is_spoofed(remote.addr) {
                    // The flood's own connections: it reads nothing.
                    return;
                }
                let Some(&id) = self.conn_by_addr.get(&remote.addr) else { return self.dropped_unknown(remote) };
                let Some(conn) = self.conns.get(&id).copied() else { return };
                if !conn.alive {
                    return;
                }
                let dest = Dest::Client { dst: remote.addr, conn: Some(id) };
                self.stream_send(conn.client, id, false, dest, bytes);
            }
        }
    }

    pub(super) fn dropped_unknown(&mut self, remote: Remote) {
        // Only the attacker's own address is nobody's.
        if remote.addr != ATTACKER {
            self.violation(format!("server sent to {} which no client ever used", remote.addr));
        }
    }

    pub(super) fn dropped(&mut self, why: crate::link::Drop, len: usize, link: &str) {
        self.counters.dropped += 1;
        self.note(&[10, why as u64, len as u64], || link.to_string(), "drop", || format!("{len} B {why:?}"));
    }

    /// Bytes on a stream connection: in order, possibly split into chunks;
    /// held while the direction is partitioned.
    pub(super) fn stream_send(&mut self, i: usize, conn: u64, up: bool, dest: Dest, bytes: Vec<u8>) {
        let now = self.now;
        let mut pieces = vec![bytes];
        if self.scenario.split_stream_writes && self.choices.chance(0.3) {
            let b = pieces.pop().unwrap_or_default();
            let cut = self.choices.below(b.len() as u64 + 1) as usize;
            pieces = vec![b[..cut].to_vec(), b[cut..].to_vec()];
        }
        for piece in pieces {
            let c = &mut self.clients[i];
            let link = if up { &mut c.up_stream } else { &mut c.down_stream };
            match link.stream(now, &piece, &mut self.choices) {
                Some(a) => self.schedule(vec![a], dest, if up { "up tcp" } else { "down tcp" }),
                None => self.backlog.entry((conn, up)).or_default().push(piece),
            }
        }
    }

    pub(super) fn flush_backlog(&mut self, i: usize) {
        let keys: Vec<(u64, bool)> =
            self.backlog.keys().filter(|(c, _)| self.conns.get(c).is_some_and(|c| c.client == i)).copied().collect();
        for (conn, up) in keys {
            let Some(chunks) = self.backlog.remove(&(conn, up)) else { continue };
            let Some(cn) = self.conns.get(&conn).copied() else { continue };
            if !cn.alive {
                continue;
            }
            let dest = if up {
                Dest::Server { src: cn.addr, kind: RemoteKind::Stream, conn: Some(conn) }
            } else {
                Dest::Client { dst: cn.addr, conn: Some(conn) }
            };
            for b in chunks {
                self.stream_send(i, conn, up, dest, b);
            }
        }
    }

    /// A stream connection breaks: both ends learn it; bytes in flight are
    /// lost. `by_client`: the client closed it (its session ended).
    pub(super) fn sever_conn(&mut self, id: u64, by_client: bool) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if !conn.alive {
            return;
        }
        conn.alive = false;
        let conn = *conn;
        self.counters.severed += 1;
        self.backlog.remove(&(id, true));
        self.backlog.remove(&(id, false));
        let now = self.now;
        if let Some(e) = &mut self.server.endpoint {
            e.remote_closed(Remote { addr: conn.addr, kind: RemoteKind::Stream });
        }
        let wait = self.choices.between(SECOND / 100, SECOND / 2);
        let c = &mut self.clients[conn.client];
        if let Some(idx) = c.paths.iter().position(|p| p.conn == Some(id) && p.alive) {
            c.paths[idx].alive = false;
            if !by_client && let Some(s) = &mut c.session {
                s.path_closed(PathId(idx as u32));
                // Dial again shortly (a closing session needs a path too,
                // to deliver its Disconnect).
                c.redial_at = Some(now + wait);
                c.redial_kind = PathKind::Stream;
            }
        }
        let name = format!("client{}", conn.client);
        self.note(&[11, id], || name, "severed", || format!("connection {id}"));
    }

    // ------------------------------------------------------------ arrival

    pub(super) fn deliver(&mut self, p: Packet) {
        let now = self.now;
        let len = p.bytes.len();
        match p.dest {
            Dest::Server { src, kind, conn } => {
                if let Some(id) = conn
                    && !self.conns.get(&id).is_some_and(|c| c.alive)
                {
                    return;
                }
                let Some(e) = &mut self.server.endpoint else { return };
                self.trace.record(
                    &[12, len as u64, p.forged as u64],
                    || ("server".into(), "recv".into(), format!("{len} B from {src} {:?}", p.fault)),
                    now,
                );
                e.handle_input(self.server.clock.local(now), Remote { addr: src, kind }, &p.bytes);
            }
            Dest::Client { dst, conn } => {
                if let Some(id) = conn
                    && !self.conns.get(&id).is_some_and(|c| c.alive)
                {
                    return;
                }
                let Some(&i) =
                    self.addr_owner.get(&dst).or_else(|| conn.and_then(|id| self.conns.get(&id)).map(|c| &c.client))
                else {
                    return;
                };
                let c = &mut self.clients[i];
                let Some(path) = c.path_at(dst, conn) else { return };
                let name = c.name();
                let Some(s) = &mut c.session else { return };
                self.trace.record(
                    &[13, i as u64, len as u64],
                    || (name, "recv".into(), format!("{len} B on path {}", path.0)),
                    now,
                );
                s.handle_input(c.clock.local(now), path, &p.bytes);
            }
        }
    }
}
