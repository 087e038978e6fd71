//! Targets over the wire layer: frame decoding and the stream deframer.

use alloc::vec::Vec;

use crate::wire::{Admission, DatagramFrames, Deframer, Frame, HEADER_LEN, WireError, check_prefix, offset};

/// Payload limit the wire targets decode with: small, so length checks bite.
const MAX_PAYLOAD: u32 = 4096;

/// Decodes `data` as one frame and as a datagram; any frame that decodes
/// must re-encode to exactly its input bytes.
pub fn frame_decode(data: &[u8]) {
    if let Ok((frame, used)) = Frame::decode(data, MAX_PAYLOAD) {
        assert_eq!(used, frame.encoded_len());
        let mut out = alloc::vec![0u8; used];
        let n = Frame::encode(frame.header(), frame.payload(), &mut out).expect("a decoded frame re-encodes");
        assert_eq!(&out[..n], &data[..used], "re-encoding changed the frame");
    }
    let mut total = 0;
    for frame in DatagramFrames::new(data, MAX_PAYLOAD) {
        match frame {
            Ok(f) => total += f.encoded_len(),
            Err(_) => break,
        }
    }
    assert!(total <= data.len());
}

/// Whether the deframer target skips this frame: with the seed's low bit
/// set, frames with an odd sequence number are skipped unread.
fn skipped(seed: u8, raw: &[u8; HEADER_LEN]) -> bool {
    seed & 1 == 1 && raw[offset::SEQUENCE + 7] & 1 == 1
}

/// Feeds the bytes after the first to a stream deframer in chunks whose
/// sizes the first byte seeds, and checks the frames against decoding the
/// same bytes in one piece (a differential test of the deframer). The
/// seed's low bit also has the deframer skip frames with an odd sequence
/// number, read only as far as their header.
pub fn deframer(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else { return };
    // Reference: frames decoded back to back from the whole stream.
    let mut expected: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut expect_error = false;
    let mut rest = stream;
    while !rest.is_empty() {
        if let Some((raw, _)) = rest.split_first_chunk::<HEADER_LEN>()
            && let Ok(len) = check_prefix(raw, MAX_PAYLOAD)
            && skipped(seed, raw)
        {
            match rest.get(HEADER_LEN + len as usize..) {
                Some(after) => rest = after,
                None => break,
            }
            continue;
        }
        match Frame::decode(rest, MAX_PAYLOAD) {
            Ok((f, used)) => {
                expected.push((f.header().sequence, f.payload().to_vec()));
                rest = &rest[used..];
            }
            Err(WireError::Truncated { .. }) => break,
            Err(_) => {
                expect_error = true;
                break;
            }
        }
    }
    let mut got = Vec::new();
    let mut d = Deframer::new(MAX_PAYLOAD);
    let mut errored = false;
    let mut pos = 0;
    let mut step = u32::from(seed);
    'feed: while pos < stream.len() {
        step = step.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = 1 + (step >> 16) as usize % 300;
        let mut input = &stream[pos..(pos + n).min(stream.len())];
        pos += input.len();
        loop {
            let admit = |raw: &[u8; HEADER_LEN]| {
                if skipped(seed, raw) { Admission::Skip } else { Admission::Take(MAX_PAYLOAD) }
            };
            match d.decode_with(&mut input, admit) {
                Ok(Some(f)) => got.push((f.header().sequence, f.payload().to_vec())),
                Ok(None) => break,
                Err(_) => {
                    errored = true;
                    break 'feed;
                }
            }
        }
        assert!(d.buffered() <= HEADER_LEN + MAX_PAYLOAD as usize);
    }
    assert_eq!(got, expected, "deframer disagrees with one-shot decoding");
    assert_eq!(errored, expect_error);
}
