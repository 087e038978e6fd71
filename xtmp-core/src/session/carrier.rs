//! Carrying handshake flights in Handshake frames (SPEC.md section 3.2):
//! fragmentation at any offset, cumulative HandshakeAcks, retransmission
//! with exponential backoff on datagram paths, bounded reassembly.

use alloc::vec::Vec;
use core::time::Duration;

use crate::time::Instant;

/// Largest flight a receiver buffers: the biggest flight (the server's,
/// with an inline identity and credential) is under 10 KiB.
pub(crate) const MAX_FLIGHT_LEN: usize = 32 * 1024;
/// Out-of-order byte ranges a receiver remembers per flight.
const MAX_RANGES: usize = 32;

/// The sending side of one flight.
#[derive(Debug)]
pub(crate) struct FlightSend {
    pub(crate) stage: u8,
    pub(crate) data: Vec<u8>,
    /// Bytes the peer has acknowledged (cumulative).
    pub(crate) acked: usize,
    /// Next byte to (re)send.
    pub(crate) next: usize,
    /// When the last byte of the flight was last sent; `None` while unsent.
    pub(crate) sent_at: Option<Instant>,
    pub(crate) rto: Duration,
    /// Set once the peer has all of it (acknowledged or implied).
    pub(crate) done: bool,
}

impl FlightSend {
    pub(crate) fn new(stage: u8, data: Vec<u8>, rto: Duration) -> Self {
        FlightSend { stage, data, acked: 0, next: 0, sent_at: None, rto, done: false }
    }

    /// The peer has the whole flight: frees its bytes.
    pub(crate) fn release(&mut self) {
        self.done = true;
        self.data = Vec::new();
    }

    /// Whether bytes are waiting to be (re)sent.
    pub(crate) fn wants_send(&self) -> bool {
        !self.done && self.next < self.data.len()
    }

    /// The next chunk of at most `max` bytes: `(offset, bytes)`.
    pub(crate) fn chunk(&self, max: usize) -> (u32, &[u8]) {
        let end = self.data.len().min(self.next + max);
        (self.next as u32, &self.data[self.next..end])
    }

    pub(crate) fn advance(&mut self, n: usize, now: Instant) {
        self.next += n;
        if self.next >= self.data.len() {
            self.sent_at = Some(now);
        }
    }

    /// The retransmission deadline, if one is armed.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.done || self.next < self.data.len() {
            return None;
        }
        self.sent_at.map(|t| t + self.rto)
    }

    /// On the deadline: resend from the first unacknowledged byte and back off.
    pub(crate) fn on_timeout(&mut self, now: Instant, max_rto: Duration) -> bool {
        match self.deadline() {
            Some(d) if now >= d => {
                self.next = self.acked;
                self.rto = (self.rto * 2).min(max_rto);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn on_ack(&mut self, received: u32) {
        let r = (received as usize).min(self.data.len());
        if r > self.acked {
            self.acked = r;
            self.next = self.next.max(r);
        }
        if self.acked == self.data.len() {
            self.done = true;
        }
    }
}

/// Why a Handshake frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlightError {
    /// The frame's bytes end beyond [`MAX_FLIGHT_LEN`].
    TooLong,
    /// Too many separate ranges arrived out of order.
    TooFragmented,
}

/// The receiving side of one flight: bytes at offsets, and which are in.
#[derive(Debug)]
pub(crate) struct FlightRecv {
    buf: Vec<u8>,
    /// Disjoint, sorted ranges received beyond `contiguous`.
    ranges: Vec<(usize, usize)>,
    contiguous: usize,
    /// Bytes of the contiguous prefix already handed to the handshake.
    pub(crate) consumed: usize,
}

impl FlightRecv {
    pub(crate) fn new() -> Self {
        FlightRecv { buf: Vec::new(), ranges: Vec::new(), contiguous: 0, consumed: 0 }
    }

    /// Stores `data` at `offset`. Nothing changes if it is refused.
    pub(crate) fn insert(&mut self, offset: u32, data: &[u8]) -> Result<(), FlightError> {
        let start = offset as usize;
        let end = start.checked_add(data.len()).ok_or(FlightError::TooLong)?;
        if end > MAX_FLIGHT_LEN {
            return Err(FlightError::TooLong);
        }
        if end <= self.contiguous || data.is_empty() {
            return Ok(());
        }
        if start > self.contiguous && self.ranges.len() >= MAX_RANGES {
            return Err(FlightError::TooFragmented);
        }
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        // Bytes below `contiguous` were already accepted: never rewrite them.
        let from = start.max(self.contiguous);
        self.buf[from..end].copy_from_slice(&data[from - start..]);
        self.ranges.push((from, end));
        self.ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        if let Some(first) = merged.first().copied().filter(|r| r.0 <= self.contiguous) {
            self.contiguous = self.contiguous.max(first.1);
            merged.remove(0);
        }
        self.ranges = merged;
        Ok(())
    }

    /// Bytes received in order from offset 0.
    pub(crate) fn contiguous(&self) -> usize {
        self.contiguous
    }

    /// The contiguous bytes not yet consumed (none once released).
    pub(crate) fn pending(&self) -> &[u8] {
        self.buf.get(self.consumed..self.contiguous).unwrap_or_default()
    }

    /// The contiguous prefix from offset 0 (empty once released).
    pub(crate) fn prefix(&self) -> &[u8] {
        self.buf.get(..self.contiguous).unwrap_or_default()
    }

    /// The handshake is over: frees the bytes, keeps how many arrived
    /// (repeated chunks are still acknowledged with it).
    pub(crate) fn release(&mut self) {
        self.buf = Vec::new();
        self.ranges = Vec::new();
        self.consumed = self.contiguous;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_out_of_order_and_overlapping() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut r = FlightRecv::new();
        r.insert(3000, &data[3000..4000]).unwrap();
        r.insert(1000, &data[1000..2500]).unwrap();
        assert_eq!(r.contiguous(), 0);
        r.insert(0, &data[0..1200]).unwrap();
        assert_eq!(r.contiguous(), 2500);
        r.insert(2400, &data[2400..3100]).unwrap();
        assert_eq!(r.contiguous(), 4000);
        r.insert(4000, &data[4000..]).unwrap();
        assert_eq!(r.prefix(), &data[..]);
        r.consumed = 10;
        assert_eq!(r.pending(), &data[10..]);
    }

    #[test]
    fn bounds() {
        let mut r = FlightRecv::new();
        assert_eq!(r.insert(u32::MAX, &[1]), Err(FlightError::TooLong));
        assert_eq!(r.insert((MAX_FLIGHT_LEN - 1) as u32, &[1, 2]), Err(FlightError::TooLong));
        for i in 0..MAX_RANGES {
            r.insert((10 + 2 * i) as u32, &[1]).unwrap();
        }
        assert_eq!(r.insert(1000, &[1]), Err(FlightError::TooFragmented));
        assert!(r.buf.len() <= MAX_FLIGHT_LEN);
    }

    #[test]
    fn send_retransmits_from_ack_with_backoff() {
        let mut s = FlightSend::new(1, alloc::vec![0; 3000], Duration::from_millis(100));
        let t0 = Instant::ZERO;
        let (off, c) = s.chunk(1000);
        assert_eq!((off, c.len()), (0, 1000));
        s.advance(1000, t0);
        assert_eq!(s.deadline(), None, "armed only once the whole flight is out");
        s.advance(2000, t0);
        assert_eq!(s.deadline(), Some(t0 + Duration::from_millis(100)));
        s.on_ack(1500);
        assert!(!s.on_timeout(t0 + Duration::from_millis(99), Duration::from_secs(2)));
        assert!(s.on_timeout(t0 + Duration::from_millis(100), Duration::from_secs(2)));
        assert_eq!(s.chunk(10_000).0, 1500);
        assert_eq!(s.rto, Duration::from_millis(200));
        s.on_ack(3000);
        assert!(s.done && !s.wants_send());
    }
}
