//! Property tests of the frame codec: round trips of arbitrary valid headers,
//! streams cut into random chunks, and arbitrary bytes never panicking.

use proptest::prelude::*;
use xtmp_core::wire::{
    DatagramFrames, Deframer, EncryptionType, Flags, Frame, HEADER_LEN, Header, MessageType, WireError,
};

fn arb_header() -> impl Strategy<Value = Header> {
    (
        1u8..=255,
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        0u8..3,
        any::<[u8; 16]>(),
        any::<[u8; 12]>(),
        any::<[u8; 16]>(),
    )
        .prop_map(|(t, flag_bits, session_id, sequence, enc, key_id, nonce12, tag)| {
            let message_type = MessageType(t);
            let mut flags = Flags::from_bits_retain(flag_bits);
            // Repair the combinations SPEC.md forbids.
            if !flags.contains(Flags::FRAGMENTED) {
                flags.remove(Flags::LAST_FRAGMENT);
            }
            if flags.contains(Flags::EMERGENCY) {
                flags.remove(Flags::PRIORITY_HIGH);
            }
            if message_type.is_control() {
                flags.remove(Flags::COMPRESSED | Flags::FRAGMENTED | Flags::LAST_FRAGMENT | Flags::STREAM_DATA);
            }
            let mut h = Header::new(message_type, session_id, sequence);
            if enc == 0 {
                flags.remove(Flags::ENCRYPTED);
            } else {
                flags.insert(Flags::ENCRYPTED);
                h.encryption = EncryptionType(enc);
                h.key_id = key_id;
                h.nonce[..12].copy_from_slice(&nonce12);
                h.tag = tag;
            }
            h.flags = flags;
            h
        })
}

fn encode(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; HEADER_LEN + payload.len()];
    Frame::encode(h, payload, &mut out).unwrap();
    out
}

proptest! {
    #[test]
    fn header_round_trips(h in arb_header(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let bytes = encode(&h, &payload);
        let (f, used) = Frame::decode(&bytes, 1024).unwrap();
        prop_assert_eq!(used, bytes.len());
        let got = *f.header();
        prop_assert_eq!(Header { crc: 0, payload_len: 0, ..got }, Header { crc: 0, payload_len: 0, ..h });
        prop_assert_eq!(got.payload_len as usize, payload.len());
        prop_assert_eq!(f.payload(), &payload[..]);
        prop_assert_eq!(encode(&got, &payload), bytes);
    }

    #[test]
    fn stream_in_random_chunks_decodes_to_the_same_frames(
        frames in proptest::collection::vec((arb_header(), proptest::collection::vec(any::<u8>(), 0..200)), 1..12),
        cuts in proptest::collection::vec(1usize..150, 1..64),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(|(h, p)| encode(h, p)).collect();
        let mut d = Deframer::new(256);
        let mut got = Vec::new();
        let (mut pos, mut i) = (0, 0);
        while pos < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - pos);
            i += 1;
            let mut input = &stream[pos..pos + n];
            pos += n;
            while let Some(f) = d.decode(&mut input).unwrap() {
                got.push((f.header().sequence, f.payload().to_vec()));
            }
            prop_assert!(input.is_empty());
            prop_assert!(d.buffered() <= HEADER_LEN + 256);
        }
        let want: Vec<_> = frames.iter().map(|(h, p)| (h.sequence, p.clone())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn datagram_batches_decode_in_order(
        frames in proptest::collection::vec((arb_header(), proptest::collection::vec(any::<u8>(), 0..64)), 1..8),
    ) {
        let dgram: Vec<u8> = frames.iter().flat_map(|(h, p)| encode(h, p)).collect();
        let got: Vec<_> = DatagramFrames::new(&dgram, 64)
            .map(|f| f.map(|f| f.payload().to_vec()))
            .collect::<Result<_, WireError>>()
            .unwrap();
        let want: Vec<_> = frames.iter().map(|(_, p)| p.clone()).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), cut in 1usize..64) {
        let _ = Frame::decode(&bytes, 128);
        for f in DatagramFrames::new(&bytes, 128) {
            let _ = f;
        }
        let mut d = Deframer::new(128);
        for chunk in bytes.chunks(cut) {
            let mut input = chunk;
            while let Ok(Some(_)) = d.decode(&mut input) {}
        }
        prop_assert!(d.buffered() <= HEADER_LEN + 128);
    }

    #[test]
    fn corrupted_frames_are_rejected(h in arb_header(), payload in proptest::collection::vec(any::<u8>(), 0..64),
                                     pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = encode(&h, &payload);
        let at = pos.index(bytes.len());
        bytes[at] ^= 1 << bit;
        prop_assert!(Frame::decode(&bytes, 1024).is_err());
    }
}
