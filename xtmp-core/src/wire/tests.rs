use alloc::vec;
use alloc::vec::Vec;

use super::*;

fn sample_header() -> Header {
    Header {
        version: VERSION,
        message_type: MessageType::BUNDLE_SUBMIT,
        flags: Flags::ENCRYPTED | Flags::REQUIRES_ACK | Flags::PRIORITY_HIGH,
        session_id: 0x0102_0304_0506_0708,
        sequence: 0x1112_1314_1516_1718,
        payload_len: 0,
        crc: 0,
        encryption: EncryptionType::AES_256_GCM,
        key_id: [0xAA; 16],
        nonce: {
            let mut n = [0u8; 24];
            n[..12].fill(0xBB);
            n
        },
        tag: [0xCC; 16],
    }
}

fn encode(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + payload.len()];
    Frame::encode(h, payload, &mut out).unwrap();
    out
}

/// Re-seals the CRC after a test mutated header bytes.
fn recrc(frame: &mut [u8]) {
    write_crc(frame).unwrap();
}

#[test]
fn every_field_lands_at_its_offset() {
    let raw = encode(&sample_header(), b"xyz");
    assert_eq!(&raw[0..4], b"XTMP");
    assert_eq!(raw[4], 1);
    assert_eq!(raw[5], 0x20);
    assert_eq!(raw[6], 0b0000_1101);
    assert_eq!(raw[7], 0);
    assert_eq!(&raw[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&raw[16..24], &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
    assert_eq!(&raw[24..28], &[0, 0, 0, 3]);
    let crc = u32::from_be_bytes(raw[28..32].try_into().unwrap());
    let mut zeroed = raw.clone();
    zeroed[28..32].fill(0);
    assert_eq!(crc, crc32fast::hash(&zeroed));
    assert_eq!(raw[32], 1);
    assert_eq!(&raw[33..40], &[0; 7]);
    assert_eq!(&raw[40..56], &[0xAA; 16]);
    assert_eq!(&raw[56..68], &[0xBB; 12]);
    assert_eq!(&raw[68..80], &[0; 12]);
    assert_eq!(&raw[80..96], &[0xCC; 16]);
    assert_eq!(&raw[96..], b"xyz");
}

#[test]
fn decode_returns_fields_and_borrows_payload() {
    let h = sample_header();
    let mut raw = encode(&h, b"payload");
    raw.extend_from_slice(b"trailing");
    let (frame, used) = Frame::decode(&raw, 1024).unwrap();
    assert_eq!(used, HEADER_LEN + 7);
    let got = frame.header();
    assert_eq!(got.message_type, h.message_type);
    assert_eq!(got.flags, h.flags);
    assert_eq!(got.session_id, h.session_id);
    assert_eq!(got.sequence, h.sequence);
    assert_eq!(got.payload_len, 7);
    assert_eq!(got.key_id, h.key_id);
    assert_eq!(got.nonce, h.nonce);
    assert_eq!(got.tag, h.tag);
    assert_eq!(frame.payload(), b"payload");
    assert!(core::ptr::eq(frame.payload().as_ptr(), raw[HEADER_LEN..].as_ptr()));
}

#[test]
fn short_input_is_truncated() {
    let raw = encode(&sample_header(), b"abcdef");
    assert_eq!(Frame::decode(&raw[..95], 1024).unwrap_err(), WireError::Truncated { needed: 96, available: 95 });
    assert_eq!(Frame::decode(&raw[..100], 1024).unwrap_err(), WireError::Truncated { needed: 102, available: 100 });
}

#[test]
fn bad_magic_version_and_length_are_rejected_before_crc() {
    let mut raw = encode(&sample_header(), b"abc");
    raw[0] = b'Y';
    assert_eq!(Frame::decode(&raw, 1024).unwrap_err(), WireError::BadMagic(*b"YTMP"));

    let mut raw = encode(&sample_header(), b"abc");
    raw[4] = 2;
    assert_eq!(Frame::decode(&raw, 1024).unwrap_err(), WireError::UnsupportedVersion(2));

    // Length above the limit is refused even though the bytes are absent.
    let mut raw = encode(&sample_header(), b"abc");
    raw[24..28].copy_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
    assert_eq!(Frame::decode(&raw, 1024).unwrap_err(), WireError::PayloadTooLarge { length: 0x7FFF_FFFF, max: 1024 });
    assert_eq!(
        Frame::decode(&encode(&sample_header(), &[0; 9]), 8).unwrap_err(),
        WireError::PayloadTooLarge { length: 9, max: 8 }
    );
}

#[test]
fn any_flipped_bit_fails_the_crc_or_an_earlier_check() {
    let raw = encode(&sample_header(), b"some payload bytes");
    for byte in 0..raw.len() {
        for bit in 0..8 {
            let mut bad = raw.clone();
            bad[byte] ^= 1 << bit;
            let err = Frame::decode(&bad, 1 << 16).unwrap_err();
            match byte {
                0..=3 => assert!(matches!(err, WireError::BadMagic(_))),
                4 => assert!(matches!(err, WireError::UnsupportedVersion(_))),
                24..=27 => assert!(matches!(
                    err,
                    WireError::PayloadTooLarge { .. } | WireError::Truncated { .. } | WireError::BadCrc { .. }
                )),
                _ => assert!(matches!(err, WireError::BadCrc { .. }), "byte {byte}: {err:?}"),
            }
        }
    }
}

#[test]
fn reserved_bytes_must_be_zero() {
    for at in [7usize, 33, 34, 35, 36, 37, 38, 39] {
        let mut raw = encode(&sample_header(), b"");
        raw[at] = 0x5A;
        recrc(&mut raw);
        assert_eq!(Frame::decode(&raw, 1024).unwrap_err(), WireError::NonZeroReserved { offset: at, value: 0x5A });
    }
}

#[test]
fn message_type_zero_is_invalid_and_other_codes_decode() {
    let mut raw = encode(&sample_header(), b"");
    raw[5] = 0;
    recrc(&mut raw);
    assert_eq!(Frame::decode(&raw, 1024).unwrap_err(), WireError::InvalidMessageType(0));
    for code in 1..=255u8 {
        let mut h = sample_header();
        h.message_type = MessageType(code);
        if h.message_type.is_control() {
            h.flags = Flags::ENCRYPTED;
        }
        let raw = encode(&h, b"");
        assert_eq!(Frame::decode(&raw, 1024).unwrap().0.header().message_type.0, code);
    }
}

#[test]
fn unknown_encryption_type_is_rejected() {
    let mut raw = encode(&sample_header(), b"");
    raw[32] = 0x07;
    recrc(&mut raw);
    assert_eq!(Frame::decode(&raw, 1024).unwrap_err(), WireError::UnsupportedEncryption(EncryptionType(7)));
    let mut h = sample_header();
    h.encryption = EncryptionType::TEST_NULL;
    let err = Frame::encode(&h, b"", &mut [0u8; 96]);
    if cfg!(feature = "__null-cipher") {
        assert!(err.is_ok());
    } else {
        assert_eq!(err.unwrap_err(), WireError::UnsupportedEncryption(EncryptionType::TEST_NULL));
    }
}

#[test]
fn each_flag_rule_has_its_own_error() {
    let cases: &[(Flags, EncryptionType, MessageType, FlagRule)] = &[
        (
            Flags::ENCRYPTED | Flags::LAST_FRAGMENT,
            EncryptionType::AES_256_GCM,
            MessageType::BUNDLE_SUBMIT,
            FlagRule::LastFragmentWithoutFragmented,
        ),
        (
            Flags::ENCRYPTED | Flags::PRIORITY_HIGH | Flags::EMERGENCY,
            EncryptionType::AES_256_GCM,
            MessageType::BUNDLE_SUBMIT,
            FlagRule::TwoPriorityClasses,
        ),
        (Flags::ENCRYPTED, EncryptionType::NONE, MessageType::BUNDLE_SUBMIT, FlagRule::EncryptedWithoutCipher),
        (
            Flags::empty(),
            EncryptionType::CHACHA20_POLY1305,
            MessageType::BUNDLE_SUBMIT,
            FlagRule::CipherWithoutEncrypted,
        ),
        (
            Flags::ENCRYPTED | Flags::STREAM_DATA,
            EncryptionType::AES_256_GCM,
            MessageType(0xC0),
            FlagRule::ControlFrameDataFlag,
        ),
    ];
    for &(flags, encryption, message_type, rule) in cases {
        let mut h = sample_header();
        h.message_type = message_type;
        h.encryption = EncryptionType::AES_256_GCM;
        h.flags = Flags::ENCRYPTED;
        let mut raw = encode(&h, b"");
        raw[6] = flags.bits();
        raw[32] = encryption.0;
        if encryption == EncryptionType::NONE {
            raw[40..96].fill(0);
        }
        recrc(&mut raw);
        let want = WireError::InvalidFlags { flags: flags.bits(), rule };
        assert_eq!(Frame::decode(&raw, 1024).unwrap_err(), want, "{rule:?}");
        // The encoder refuses to emit the same header.
        let bad = Header { flags, encryption, ..Header::read(raw[..96].try_into().unwrap()) };
        assert_eq!(Frame::encode(&bad, b"", &mut [0u8; 96]).unwrap_err(), want);
    }
}

#[test]
fn cleartext_frames_have_zero_security_fields() {
    for (at, field) in [(40usize, "key id"), (60, "nonce"), (95, "auth tag")] {
        let mut raw = encode(&Header::new(MessageType::HANDSHAKE, 0, 0), b"hello");
        raw[at] = 1;
        recrc(&mut raw);
        assert_eq!(Frame::decode(&raw, 1024).unwrap_err(), WireError::NonZeroUnused { field, offset: at });
    }
    let mut raw = encode(&sample_header(), b"");
    raw[70] = 1;
    recrc(&mut raw);
    assert_eq!(Frame::decode(&raw, 1024).unwrap_err(), WireError::NonZeroUnused { field: "nonce padding", offset: 70 });
}

#[test]
fn encode_checks_the_buffer() {
    let h = sample_header();
    assert_eq!(
        Frame::encode(&h, b"abc", &mut [0u8; 98]).unwrap_err(),
        WireError::BufferTooSmall { needed: 99, available: 98 }
    );
    let mut small = [0u8; 10];
    let mut slice: &mut [u8] = &mut small;
    assert_eq!(
        Frame::encode_to(&h, b"abc", &mut slice).unwrap_err(),
        WireError::BufferTooSmall { needed: 99, available: 10 }
    );
    let mut v = Vec::new();
    assert_eq!(Frame::encode_to(&h, b"abc", &mut v).unwrap(), 99);
    assert_eq!(v, encode(&h, b"abc"));
}

#[test]
fn associated_data_zeroes_crc_and_tag_only() {
    let raw = encode(&sample_header(), b"abc");
    let aad = associated_data(raw[..96].try_into().unwrap());
    assert_eq!(&aad[..28], &raw[..28]);
    assert_eq!(&aad[28..32], &[0; 4]);
    assert_eq!(&aad[32..80], &raw[32..80]);
    assert_eq!(&aad[80..], &[0; 16]);
}

#[test]
fn datagram_carries_frames_back_to_back() {
    let mut dgram = encode(&sample_header(), b"one");
    dgram.extend(encode(&Header::new(MessageType::HEARTBEAT, 9, 1), b""));
    let frames: Vec<_> = DatagramFrames::new(&dgram, 1024).collect::<Result<_, _>>().unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].payload(), b"one");
    assert_eq!(frames[1].header().session_id, 9);

    // Trailing garbage: first frame still good, then one error, then the end.
    dgram.extend_from_slice(b"junk");
    let mut it = DatagramFrames::new(&dgram, 1024);
    assert!(it.next().unwrap().is_ok());
    assert!(it.next().unwrap().is_ok());
    assert_eq!(it.next().unwrap().unwrap_err(), WireError::Truncated { needed: 96, available: 4 });
    assert!(it.next().is_none());
    assert_eq!(DatagramFrames::new(&[], 1024).count(), 0);
}

#[test]
fn deframer_bounds_and_poisoning() {
    let mut d = Deframer::new(16);
    let big = encode(&sample_header(), &[0u8; 17]);
    // Header split in two: nothing is decided until 96 bytes are in.
    let mut input = &big[..50];
    assert!(d.decode(&mut input).unwrap().is_none());
    assert_eq!(d.buffered(), 50);
    let mut input = &big[50..];
    assert_eq!(d.decode(&mut input).unwrap_err(), WireError::PayloadTooLarge { length: 17, max: 16 });
    assert!(d.is_poisoned());
    assert_eq!(d.buffered(), 0);
    let mut input = &big[..];
    assert_eq!(d.decode(&mut input).unwrap_err(), WireError::Poisoned);
}

#[test]
fn deframer_byte_by_byte() {
    let frames = [encode(&sample_header(), b"first"), encode(&Header::new(MessageType::HEARTBEAT, 2, 3), b"")];
    let stream: Vec<u8> = frames.concat();
    let mut d = Deframer::new(1024);
    let mut got = Vec::new();
    for b in &stream {
        let mut input = core::slice::from_ref(b);
        while let Some(f) = d.decode(&mut input).unwrap() {
            got.push((f.header().sequence, f.payload().to_vec()));
        }
        assert!(input.is_empty());
        assert!(d.buffered() < HEADER_LEN + 5);
    }
    assert_eq!(got, [(sample_header().sequence, b"first".to_vec()), (3, Vec::new())]);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn flags_priority() {
    assert_eq!(Flags::empty().priority(), Priority::Normal);
    assert_eq!(Flags::PRIORITY_HIGH.priority(), Priority::High);
    assert_eq!(Flags::EMERGENCY.priority(), Priority::Emergency);
    assert!(Priority::Emergency > Priority::High && Priority::High > Priority::Normal);
}

#[test]
fn message_type_classes_and_names() {
    assert_eq!(MessageType::HANDSHAKE.class(), TypeClass::Connection);
    assert_eq!(MessageType::METRICS_STREAM.class(), TypeClass::Application);
    assert_eq!(MessageType(0x50).class(), TypeClass::Extension);
    assert_eq!(MessageType(0xC5).class(), TypeClass::Control);
    assert_eq!(MessageType(0xF0).class(), TypeClass::Reserved);
    assert_eq!(MessageType::ERROR.class(), TypeClass::Error);
    assert_eq!(MessageType::KNOWN.len(), 20);
    assert_eq!(alloc::format!("{}", MessageType::WALLET_AUTH), "WalletAuth(0x11)");
    assert_eq!(alloc::format!("{}", MessageType(0x99)), "MessageType(0x99)");
}

#[test]
fn error_messages_name_field_and_value() {
    use alloc::string::ToString;
    let cases = [
        (WireError::BadMagic(*b"HTTP"), "bad magic: bytes 0..4 are 48545450"),
        (WireError::UnsupportedVersion(9), "unsupported version 9"),
        (WireError::PayloadTooLarge { length: 5, max: 4 }, "payload length 5 exceeds the maximum of 4"),
        (WireError::BadCrc { received: 1, computed: 2 }, "header carries 0x00000001"),
        (WireError::NonZeroReserved { offset: 7, value: 3 }, "reserved byte at offset 7 is 0x03"),
        (WireError::UnsupportedEncryption(EncryptionType(9)), "unsupported encryption type 0x09"),
    ];
    for (err, text) in cases {
        assert!(err.to_string().contains(text), "{err}");
    }
}
