//! Targets over the wire layer: frame decoding and the stream deframer.

use alloc::vec::Vec;

use crate::wire::{DatagramFrames, Deframer, Frame, HEADER_LEN, WireError};

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

/// Feeds the bytes after the first to a stream deframer in chunks whose
/// sizes the first byte seeds, and checks the frames against decoding the
/// same bytes in one piece (a differential test of the deframer).
pub fn deframer(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else { return };
    // Reference: frames decoded back to back from the whole stream.
    let mut expected: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut expect_error = false;
    let mut rest = stream;
    while !rest.is_empty() {
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
            match d.decode(&mut input) {
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
