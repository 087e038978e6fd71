//! Path MTU discovery on the primary datagram path (SPEC.md 4.10): when
//! a probe goes, what its acknowledgement or loss means, and the fallback
//! when large datagrams disappear. The search itself is
//! [`crate::reliability::mtu`]'s.

use super::*;
use crate::reliability::recovery::Content;

impl Session {
    /// Whether the primary path may probe now: a validated datagram path
    /// of a confirmed, established session, with room in the window.
    fn probing_allowed(&self) -> bool {
        let p = &self.paths[self.primary.0 as usize];
        p.kind == PathKind::Datagram
            && p.alive
            && p.validated
            && self.confirmed
            && matches!(self.state, State::Established)
            && self.send_keys.is_some()
            && self.recovery.in_flight() < self.congestion.window()
    }

    /// When the primary path's next probe is due.
    pub(super) fn mtu_deadline(&self) -> Option<Instant> {
        if !self.probing_allowed() {
            return None;
        }
        self.paths[self.primary.0 as usize].mtu.deadline().map(|d| d.max(self.now))
    }

    /// Whether a probe is due now.
    pub(super) fn probe_due(&self) -> bool {
        self.mtu_deadline().is_some_and(|d| d <= self.now)
    }

    /// Sends the primary path's probe, if one is due: one Padding frame,
    /// alone in a datagram of the size probed, acknowledged by the peer.
    pub(super) fn transmit_probe(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if !self.probe_due() {
            return None;
        }
        let path = self.primary;
        let now = self.now;
        let room = buf.len().min(HEADER_LEN + self.peer_max_frame as usize);
        let mtu = &mut self.paths[path.0 as usize].mtu;
        mtu.cap(room);
        let size = mtu.due(now)?;
        let padding = Head::Padding((size - HEADER_LEN) as u32);
        let probe = Outgoing::new(PADDING, Flags::REQUIRES_ACK, padding, Bytes::new());
        self.tx_path = path;
        self.tx_offset = 0;
        let in_flight = self.recovery.in_flight();
        let len = self.write_sealed(&probe, None, &mut buf[..size]).ok()?;
        let p = &mut self.paths[path.0 as usize];
        p.mtu.on_probe_sent();
        p.sent += len as u64;
        self.stats.mtu_probes += 1;
        self.stats.bytes_sent += len as u64;
        self.last_send = now;
        self.on_datagram_sent(path, len, in_flight);
        Some(Transmit { path, len })
    }

    /// A frame was acknowledged: a probe's size works; a large datagram
    /// got through.
    pub(super) fn on_mtu_acked(&mut self, f: &SentFrame) {
        let Some(p) = self.paths.get_mut(f.path as usize) else { return };
        if let Content::MtuProbe(size) = f.content {
            p.mtu.on_probe_acked(size as usize);
        } else if f.large {
            p.mtu.on_large_acked();
        }
    }

    /// One loss detection's lost frames: large datagrams lost count once
    /// per path toward a black hole.
    pub(super) fn on_large_lost(&mut self, lost: &[SentFrame]) {
        let now = self.now;
        for (i, p) in self.paths.iter_mut().enumerate() {
            let hit =
                lost.iter().any(|f| f.large && f.path as usize == i && !matches!(f.content, Content::MtuProbe(_)));
            if hit && p.mtu.on_large_lost(now) {
                self.stats.black_holes += 1;
            }
        }
    }
}
