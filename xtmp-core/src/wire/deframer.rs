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
    /// The last returned frame lived in `buf`; clear it on the next call.
    release: bool,
    poisoned: bool,
}

impl Deframer {
    /// A deframer accepting payloads of at most `max_payload` bytes.
    pub fn new(max_payload: u32) -> Self {
        Deframer { buf: Vec::new(), frame_len: None, max_payload, release: false, poisoned: false }
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
        if self.poisoned {
            return Err(WireError::Poisoned);
        }
        if self.release {
            self.buf.clear();
            self.frame_len = None;
            self.release = false;
        }
        if self.buf.is_empty() {
            // Fast path: a whole frame at the front of the chunk, no copy.
            let chunk: &'i [u8] = input;
            if let Some((raw, _)) = chunk.split_first_chunk::<HEADER_LEN>() {
                let total = HEADER_LEN + self.guard(check_prefix(raw, self.max_payload))? as usize;
                if chunk.len() >= total {
                    let payload = &chunk[HEADER_LEN..total];
                    let header = self.guard(check_rest(raw, payload))?;
                    *input = &chunk[total..];
                    return Ok(Some(Frame::from_checked(raw, header, payload)));
                }
            }
            if chunk.is_empty() {
                return Ok(None);
            }
        }
        // Slow path: accumulate into the buffer, header first.
        if self.frame_len.is_none() {
            take(&mut self.buf, input, HEADER_LEN);
            let Some((raw, _)) = self.buf.split_first_chunk::<HEADER_LEN>() else {
                return Ok(None);
            };
            let prefix = check_prefix(raw, self.max_payload);
            let total = HEADER_LEN + self.guard(prefix)? as usize;
            // Nothing is reserved for the announced length: the buffer
            // grows as the bytes arrive, so a peer that announces a large
            // frame and stalls holds what it sent, not what it announced.
            self.frame_len = Some(total);
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
}
