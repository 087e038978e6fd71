//! Whole frames: a borrowed view for decoding, encoding into caller buffers,
//! the CRC32 and the frames of one datagram.

use bytes::BufMut;

use super::error::WireError;
use super::header::{HEADER_LEN, Header, check_prefix, check_reserved, offset};

/// CRC32 (IEEE) of a frame: over the header with the CRC field (bytes
/// 28..32) taken as zero, then the payload bytes as sent.
pub fn frame_crc(header: &[u8; HEADER_LEN], payload: &[u8]) -> u32 {
    // One contiguous update for the header: the SIMD kernel has a set-up
    // cost per call that dominates small frames.
    let mut zeroed = *header;
    zeroed[offset::CRC..offset::CRC + 4].fill(0);
    let mut h = crc32fast::Hasher::new();
    h.update(&zeroed);
    h.update(payload);
    h.finalize()
}

/// Computes the CRC of an encoded frame (`frame` = header ‖ payload) and
/// writes it into the header. For senders that fill the tag after encoding.
///
/// Returns [`WireError::Truncated`] if `frame` is shorter than a header.
pub fn write_crc(frame: &mut [u8]) -> Result<(), WireError> {
    let (head, payload) = split_header_mut(frame)?;
    let crc = frame_crc(head, payload);
    head[offset::CRC..offset::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// The AEAD associated data of a frame: the raw header with the CRC and the
/// tag fields zeroed (SPEC.md, "Record protection").
pub fn associated_data(raw: &[u8; HEADER_LEN]) -> [u8; HEADER_LEN] {
    let mut aad = *raw;
    aad[offset::CRC..offset::CRC + 4].fill(0);
    aad[offset::TAG..HEADER_LEN].fill(0);
    aad
}

fn split_header_mut(frame: &mut [u8]) -> Result<(&mut [u8; HEADER_LEN], &mut [u8]), WireError> {
    let available = frame.len();
    match frame.split_first_chunk_mut::<HEADER_LEN>() {
        Some(parts) => Ok(parts),
        None => Err(WireError::Truncated { needed: HEADER_LEN, available }),
    }
}

/// A decoded frame borrowing its bytes from the input: no copy, no heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    raw_header: &'a [u8; HEADER_LEN],
    header: Header,
    payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Decodes one frame from the start of `buf`, accepting payloads of at
    /// most `max_payload` bytes. Returns the frame and the number of bytes
    /// it occupied; bytes after it are left alone.
    ///
    /// Checks, in this order (SPEC.md, "Receiving a frame"): length of a
    /// header, magic, version, payload length limit, length of the whole
    /// frame, CRC32, reserved bytes, then the header's field rules.
    pub fn decode(buf: &'a [u8], max_payload: u32) -> Result<(Frame<'a>, usize), WireError> {
        let Some((raw_header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated { needed: HEADER_LEN, available: buf.len() });
        };
        let len = check_prefix(raw_header, max_payload)? as usize;
        let Some(payload) = rest.get(..len) else {
            return Err(WireError::Truncated { needed: HEADER_LEN + len, available: buf.len() });
        };
        let frame = Frame::finish(raw_header, payload)?;
        Ok((frame, HEADER_LEN + len))
    }

    /// The checks after [`check_prefix`]: CRC, reserved bytes, field rules.
    /// `payload` must be exactly the declared length.
    pub(crate) fn finish(raw_header: &'a [u8; HEADER_LEN], payload: &'a [u8]) -> Result<Frame<'a>, WireError> {
        let header = check_rest(raw_header, payload)?;
        Ok(Frame { raw_header, header, payload })
    }

    /// Assembles a frame already checked by [`check_rest`].
    pub(crate) fn from_checked(raw_header: &'a [u8; HEADER_LEN], header: Header, payload: &'a [u8]) -> Frame<'a> {
        Frame { raw_header, header, payload }
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The header exactly as received (for the AEAD's associated data).
    pub fn raw_header(&self) -> &'a [u8; HEADER_LEN] {
        self.raw_header
    }

    /// The payload as received (ciphertext for encrypted frames).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Total encoded length: header plus payload.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Encodes `header` and `payload` into `out`, setting the payload length
    /// and the CRC from the bytes (the `payload_len` and `crc` fields of
    /// `header` are ignored). Returns the number of bytes written.
    ///
    /// The header is checked with [`Header::validate`] first, so this never
    /// emits a frame a conforming receiver rejects (other than for size).
    pub fn encode(header: &Header, payload: &[u8], out: &mut [u8]) -> Result<usize, WireError> {
        let total = HEADER_LEN + payload.len();
        if out.len() < total {
            return Err(WireError::BufferTooSmall { needed: total, available: out.len() });
        }
        let raw = encode_header(header, payload)?;
        out[..HEADER_LEN].copy_from_slice(&raw);
        out[HEADER_LEN..total].copy_from_slice(payload);
        Ok(total)
    }

    /// Like [`Frame::encode`], appending to a [`BufMut`].
    pub fn encode_to<B: BufMut>(header: &Header, payload: &[u8], out: &mut B) -> Result<usize, WireError> {
        let total = HEADER_LEN + payload.len();
        if out.remaining_mut() < total {
            return Err(WireError::BufferTooSmall { needed: total, available: out.remaining_mut() });
        }
        let raw = encode_header(header, payload)?;
        out.put_slice(&raw);
        out.put_slice(payload);
        Ok(total)
    }
}

/// The checks after [`check_prefix`] (CRC, reserved bytes, field rules),
/// without keeping a borrow. `payload` must be exactly the declared length.
pub(crate) fn check_rest(raw_header: &[u8; HEADER_LEN], payload: &[u8]) -> Result<Header, WireError> {
    let header = Header::read(raw_header);
    debug_assert_eq!(header.payload_len as usize, payload.len());
    let computed = frame_crc(raw_header, payload);
    if computed != header.crc {
        return Err(WireError::BadCrc { received: header.crc, computed });
    }
    check_reserved(raw_header)?;
    header.validate()?;
    Ok(header)
}

fn encode_header(header: &Header, payload: &[u8]) -> Result<[u8; HEADER_LEN], WireError> {
    header.validate()?;
    let payload_len =
        u32::try_from(payload.len()).map_err(|_| WireError::PayloadTooLarge { length: u32::MAX, max: u32::MAX })?;
    let mut raw = [0u8; HEADER_LEN];
    Header { payload_len, crc: 0, ..*header }.write(&mut raw);
    let crc = frame_crc(&raw, payload);
    raw[offset::CRC..offset::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(raw)
}

/// Iterates over the frames of one datagram (SPEC.md, "Datagrams").
///
/// A datagram carries one or more whole frames back to back. The iterator
/// yields each frame in order; at the first error it yields that error and
/// then ends, because the frame boundaries after a bad frame are unknown.
/// Frames before the error remain valid.
#[derive(Clone, Debug)]
pub struct DatagramFrames<'a> {
    rest: &'a [u8],
    max_payload: u32,
    done: bool,
}

impl<'a> DatagramFrames<'a> {
    /// Frames of `datagram`, each with at most `max_payload` payload bytes.
    pub fn new(datagram: &'a [u8], max_payload: u32) -> Self {
        DatagramFrames { rest: datagram, max_payload, done: datagram.is_empty() }
    }
}

impl<'a> Iterator for DatagramFrames<'a> {
    type Item = Result<Frame<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match Frame::decode(self.rest, self.max_payload) {
            Ok((frame, used)) => {
                self.rest = &self.rest[used..];
                self.done = self.rest.is_empty();
                Some(Ok(frame))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl core::iter::FusedIterator for DatagramFrames<'_> {}
