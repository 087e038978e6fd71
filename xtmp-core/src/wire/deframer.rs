//! Frame boundaries on a byte stream (TCP and WebSocket paths).

use alloc::vec::Vec;

use super::error::WireError;
use super::frame::{Frame, check_rest};
use super::header::{HEADER_LEN, check_prefix};

/// Reassembles frames from a byte stream fed in chunks split anywhere.
///
/// Bounded: at most one frame (96 bytes plus the configured maximum payload)
/// is ever buffered, only after the header's magic, version and length have
/// been checked, and the buffer grows with the bytes that arrive (a
/// stalled frame costs what was sent of it, not what its header announced). A whole frame that
/// lies inside one input chunk is returned straight from that chunk, without
/// a copy.
///
/// After any error the deframer is poisoned: framing on the stream is lost,
/// and SPEC.md says the stream path must be closed.
///
/// ```
/// use xtmp_core::wire::{Deframer, Frame, Header, MessageType, HEADER_LEN};
///
/// let mut bytes = [0u8; 2 * (HEADER_LEN + 3)];
/// let n = Frame::encode(&Header::new(MessageType::HEARTBEAT, 1, 0), b"one", &mut bytes).unwrap();
/// Frame::encode(&Header::new(MessageType::HEARTBEAT, 1, 1), b"two", &mut bytes[n..]).unwrap();
///
/// let mut deframer = Deframer::new(1 << 16);
/// let mut seen = Vec::new();
/// for chunk in bytes.chunks(7) {
///     let mut input = chunk;
///     while let Some(frame) = deframer.decode(&mut input).unwrap() {
///         seen.push(frame.payload().to_vec());
///     }
/// }
/// assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
/// ```
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Total length of the frame being assembled, once its header is known.
    frame_len: Option<usize>,
    max_payload: u32,
    /// Payload bytes of a skipped frame still to discard.
    skip: usize,
    /// The last returned frame lived in `buf`; clear it on the next call.
    release: bool,
    poisoned: bool,
}

/// What a receiver does with a frame on a stream, decided from its header
/// alone, before any of its payload is kept ([`Deframer::decode_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Take it if its payload is at most this long (and within the
    /// deframer's maximum); a longer one is
    /// [`WireError::PayloadTooLarge`], which ends the stream's framing.
    Take(u32),
    /// Discard its payload as it arrives, never buffered, and go on with
    /// the next frame.
    Skip,
}

impl Deframer {
    /// A deframer accepting payloads of at most `max_payload` bytes.
    pub fn new(max_payload: u32) -> Self {
        Deframer { buf: Vec::new(), frame_len: None, max_payload, skip: 0, release: false, poisoned: false }
    }

    /// Bytes held for a frame not yet complete.
    pub fn buffered(&self) -> usize {
        if self.release { 0 } else { self.buf.len() }
    }

    /// Whether an error has ended this stream's framing.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Consumes bytes from the front of `input` and returns the next whole
    /// frame, or `None` once `input` is used up without completing one
    /// (what was read is kept for the next call).
    ///
    /// Call repeatedly with the same `input` until it returns `None`, then
    /// feed the next chunk. The frame borrows either `input` or the
    /// deframer's buffer, so it must be dropped before the next call.
    pub fn decode<'f, 'i: 'f>(&'f mut self, input: &mut &'i [u8]) -> Result<Option<Frame<'f>>, WireError> {
        self.decode_with(input, |_| Admission::Take(u32::MAX))
    }

    /// As [`Deframer::decode`], with `admit` deciding from each frame's
    /// header (magic, version and length already checked) whether to take
    /// it and how long it may be, or to skip it: a server caps what a
    /// connection that has not joined a session may make it hold
    /// (SPEC.md 3.2). Skipped frames are not returned.
    pub fn decode_with<'f, 'i: 'f>(
        &'f mut self,
        input: &mut &'i [u8],
        mut admit: impl FnMut(&[u8; HEADER_LEN]) -> Admission,
    ) -> Result<Option<Frame<'f>>, WireError> {
        if self.poisoned {
            return Err(WireError::Poisoned);
        }
        if self.release {
            self.buf.clear();
            self.frame_len = None;
            self.release = false;
        }
        loop {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                *input = &input[n..];
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            if self.buf.is_empty() {
                // Fast path: a whole frame at the front of the chunk, no copy.
                let chunk: &'i [u8] = input;
                if let Some((raw, _)) = chunk.split_first_chunk::<HEADER_LEN>() {
                    let len = self.guard(check_prefix(raw, self.max_payload))?;
                    match admit(raw) {
                        Admission::Skip => {
                            *input = &chunk[HEADER_LEN..];
                            self.skip = len as usize;
                            continue;
                        }
                        Admission::Take(cap) if len > cap => {
                            return self.guard(Err(WireError::PayloadTooLarge { length: len, max: cap }));
                        }
                        Admission::Take(_) => {}
                    }
                    let total = HEADER_LEN + len as usize;
                    if chunk.len() >= total {
                        let payload = &chunk[HEADER_LEN..total];
                        let header = self.guard(check_rest(raw, payload))?;
                        *input = &chunk[total..];
                        return Ok(Some(Frame::from_checked(raw, header, payload)));
                    }
                    // Admitted: the slow path takes it without asking again.
                    self.frame_len = Some(total);
                }
                if chunk.is_empty() {
                    return Ok(None);
                }
            }
            if self.frame_len.is_some() {
                break;
            }
            // Slow path: accumulate into the buffer, header first.
            take(&mut self.buf, input, HEADER_LEN);
            let Some((raw, _)) = self.buf.split_first_chunk::<HEADER_LEN>() else {
                return Ok(None);
            };
            let prefix = check_prefix(raw, self.max_payload);
            let len = self.guard(prefix)?;
            let Some((raw, _)) = self.buf.split_first_chunk::<HEADER_LEN>() else {
                return Err(WireError::Poisoned);
            };
            match admit(raw) {
                Admission::Skip => {
                    self.buf.clear();
                    self.skip = len as usize;
                }
                Admission::Take(cap) if len > cap => {
                    return self.guard(Err(WireError::PayloadTooLarge { length: len, max: cap }));
                }
                Admission::Take(_) => {
                    // Nothing is reserved for the announced length: the
                    // buffer grows as the bytes arrive, so a peer that
                    // announces a large frame and stalls holds what it
                    // sent, not what it announced.
                    self.frame_len = Some(HEADER_LEN + len as usize);
                    break;
                }
            }
        }
        let total = self.frame_len.unwrap_or(HEADER_LEN);
        take(&mut self.buf, input, total);
        if self.buf.len() < total {
            return Ok(None);
        }
        let checked = match self.buf.split_first_chunk::<HEADER_LEN>() {
            Some((raw, payload)) => check_rest(raw, payload),
            None => Err(WireError::Poisoned),
        };
        let header = self.guard(checked)?;
        self.release = true;
        let (raw, payload) = self.buf.split_first_chunk::<HEADER_LEN>().ok_or(WireError::Poisoned)?;
        Ok(Some(Frame::from_checked(raw, header, payload)))
    }

    /// Poisons the deframer on an error and passes the result through.
    fn guard<T>(&mut self, result: Result<T, WireError>) -> Result<T, WireError> {
        if result.is_err() {
            self.poisoned = true;
            self.buf = Vec::new();
            self.frame_len = None;
            self.skip = 0;
        }
        result
    }
}

/// Moves bytes from `input` into `buf` until `buf` holds `upto` bytes.
fn take(buf: &mut Vec<u8>, input: &mut &[u8], upto: usize) {
    let want = upto.saturating_sub(buf.len()).min(input.len());
    let (head, rest) = input.split_at(want);
    buf.extend_from_slice(head);
    *input = rest;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Header, MessageType};

    #[test]
    fn a_stalled_large_frame_holds_what_arrived_not_what_it_announced() {
        let payload = alloc::vec![7u8; 60_000];
        let mut bytes = alloc::vec![0u8; HEADER_LEN + payload.len()];
        Frame::encode(&Header::new(MessageType::HEARTBEAT, 1, 0), &payload, &mut bytes).unwrap();
        let mut d = Deframer::new(1 << 16);
        // The header and 200 bytes, in two chunks (the slow path), then
        // nothing more: the peer stalls.
        for chunk in [&bytes[..50], &bytes[50..HEADER_LEN + 200]] {
            let mut input = chunk;
            assert!(d.decode(&mut input).unwrap().is_none());
        }
        assert_eq!(d.buffered(), HEADER_LEN + 200);
        assert!(d.buf.capacity() < 4 * 1024, "{} bytes reserved", d.buf.capacity());
        // The rest arrives: the frame is whole.
        let mut input = &bytes[HEADER_LEN + 200..];
        let f = d.decode(&mut input).unwrap().expect("the frame");
        assert_eq!(f.payload(), &payload[..]);
    }

    /// Three frames (heartbeat types 1, 2, 3 in their session ids, 500-byte
    /// payloads) in one byte string.
    fn three() -> alloc::vec::Vec<u8> {
        let mut bytes = alloc::vec::Vec::new();
        for sid in 1..=3u64 {
            let mut f = alloc::vec![0u8; HEADER_LEN + 500];
            Frame::encode(&Header::new(MessageType::HEARTBEAT, sid, 0), &[sid as u8; 500], &mut f).unwrap();
            bytes.extend_from_slice(&f);
        }
        bytes
    }

    fn sid(raw: &[u8; HEADER_LEN]) -> u64 {
        u64::from_be_bytes(raw[8..16].try_into().unwrap())
    }

    #[test]
    fn skipped_frames_are_discarded_unbuffered_in_any_split() {
        let bytes = three();
        for size in [1, 7, 95, 96, 97, 500, 596, 597, 2000] {
            let mut d = Deframer::new(1 << 16);
            let mut seen = alloc::vec::Vec::new();
            for chunk in bytes.chunks(size) {
                let mut input = chunk;
                while let Some(f) = d
                    .decode_with(&mut input, |raw| if sid(raw) == 2 { Admission::Skip } else { Admission::Take(1024) })
                    .unwrap()
                {
                    seen.push(f.header().session_id);
                }
                assert!(d.buffered() <= HEADER_LEN + 500, "split {size}");
                // Skipping holds nothing: while in frame 2, at most its header.
                assert!(d.skip == 0 || d.buffered() == 0, "split {size}");
            }
            assert_eq!(seen, [1, 3], "split {size}");
        }
    }

    #[test]
    fn a_frame_longer_than_its_admission_ends_the_framing_at_its_header() {
        let bytes = three();
        for size in [10, 96, 1788] {
            let mut d = Deframer::new(1 << 16);
            let mut input = &bytes[..size];
            let mut cap = |_: &[u8; HEADER_LEN]| Admission::Take(499);
            let r = if size < HEADER_LEN {
                assert!(d.decode_with(&mut input, &mut cap).unwrap().is_none());
                let mut rest = &bytes[size..];
                d.decode_with(&mut rest, &mut cap).map(|f| f.is_some())
            } else {
                d.decode_with(&mut input, &mut cap).map(|f| f.is_some())
            };
            assert_eq!(r, Err(WireError::PayloadTooLarge { length: 500, max: 499 }), "split {size}");
            assert!(d.is_poisoned());
            assert_eq!(d.buffered(), 0);
        }
    }
}
