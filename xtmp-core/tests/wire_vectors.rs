//! The SPEC.md frame test vectors (`vectors/frames.json`): regenerated and
//! compared byte for byte, then every vector checked through the public API.
//!
//! Regenerate after an intended change with
//! `XTMP_REGEN_VECTORS=1 cargo test -p xtmp-core --test wire_vectors`.

use serde_json::{Value, json};
use xtmp_core::wire::{EncryptionType, Flags, Frame, HEADER_LEN, Header, MessageType, write_crc};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors/frames.json");
const MAX_PAYLOAD: u32 = 65536;

fn frame(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; HEADER_LEN + payload.len()];
    Frame::encode(h, payload, &mut out).unwrap();
    out
}

fn encrypted(t: MessageType, flags: Flags, cipher: EncryptionType) -> Header {
    let mut h = Header::new(t, 0x8f3a_51c2_0d9e_7b14, 0x0000_0000_0000_0029);
    h.flags = Flags::ENCRYPTED | flags;
    h.encryption = cipher;
    h.key_id = *b"\x1f\x2e\x3d\x4c\x5b\x6a\x79\x88\x97\xa6\xb5\xc4\xd3\xe2\xf1\x00";
    h.nonce[..12].copy_from_slice(&[0x3c, 0x91, 0x0b, 0x7e, 0x22, 0x5d, 0xa8, 0x64, 0x10, 0xf3, 0xc9, 0x47]);
    h.tag = [0xd4; 16];
    h
}

fn fields(h: &Header, payload: &[u8]) -> Value {
    json!({
        "version": h.version,
        "message_type": h.message_type.0,
        "flags": h.flags.bits(),
        "session_id": format!("{:016x}", h.session_id),
        "sequence": format!("{:016x}", h.sequence),
        "payload_len": payload.len(),
        "crc": format!("{:08x}", h.crc),
        "encryption": h.encryption.0,
        "key_id": hex::encode(h.key_id),
        "nonce": hex::encode(h.nonce),
        "tag": hex::encode(h.tag),
        "payload": hex::encode(payload),
    })
}

/// A valid frame with `edit` applied to its bytes and the CRC resealed
/// (unless `reseal` is false), for invalid vectors.
fn broken(edit: impl FnOnce(&mut Vec<u8>), reseal: bool) -> Vec<u8> {
    let mut f =
        frame(&encrypted(MessageType::WALLET_REGISTER, Flags::REQUIRES_ACK, EncryptionType::AES_256_GCM), b"wallet");
    edit(&mut f);
    if reseal {
        write_crc(&mut f).unwrap();
    }
    f
}

fn generate() -> Value {
    let mut valid = Vec::new();
    let mut add = |name: &str, h: Header, payload: &[u8]| {
        let bytes = frame(&h, payload);
        let (decoded, _) = Frame::decode(&bytes, MAX_PAYLOAD).unwrap();
        valid.push(json!({"name": name, "hex": hex::encode(&bytes), "fields": fields(decoded.header(), payload)}));
    };
    add("cleartext heartbeat, empty payload", Header::new(MessageType::HEARTBEAT, 1, 0), b"");
    add("cleartext handshake", Header::new(MessageType::HANDSHAKE, 0, 0), b"client hello bytes");
    add(
        "AES-256-GCM bundle submit, high priority, ack required",
        encrypted(MessageType::BUNDLE_SUBMIT, Flags::PRIORITY_HIGH | Flags::REQUIRES_ACK, EncryptionType::AES_256_GCM),
        &[0xa5; 64],
    );
    add(
        "ChaCha20-Poly1305 emergency wallet transaction",
        encrypted(MessageType::WALLET_TRANSACTION, Flags::EMERGENCY, EncryptionType::CHACHA20_POLY1305),
        b"\x00\x01\x02\x03",
    );
    add(
        "last fragment of a compressed message",
        encrypted(
            MessageType::REGISTRY_UPDATE,
            Flags::COMPRESSED | Flags::FRAGMENTED | Flags::LAST_FRAGMENT,
            EncryptionType::AES_256_GCM,
        ),
        b"fragment",
    );
    add(
        "stream item",
        encrypted(MessageType::METRICS_STREAM, Flags::STREAM_DATA, EncryptionType::CHACHA20_POLY1305),
        b"{\"cpu\":0.5}",
    );
    add(
        "control frame in 0xC0 range",
        encrypted(MessageType(0xC0), Flags::empty(), EncryptionType::AES_256_GCM),
        b"ack",
    );
    add("extension type 0x50", encrypted(MessageType(0x50), Flags::empty(), EncryptionType::AES_256_GCM), b"ext");

    let truncated_payload = frame(&Header::new(MessageType::HEARTBEAT, 1, 0), b"abcdef");
    let invalid = vec![
        json!({"name": "shorter than a header", "hex": hex::encode(&truncated_payload[..95]), "error": "Truncated"}),
        json!({"name": "payload shorter than declared", "hex": hex::encode(&truncated_payload[..100]), "error": "Truncated"}),
        json!({"name": "wrong magic", "hex": hex::encode(broken(|f| f[..4].copy_from_slice(b"XTMQ"), true)), "error": "BadMagic"}),
        json!({"name": "version 2", "hex": hex::encode(broken(|f| f[4] = 2, true)), "error": "UnsupportedVersion"}),
        json!({"name": "payload length above max_payload", "hex": hex::encode(broken(|f| f[24..28].copy_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes()), true)), "error": "PayloadTooLarge"}),
        json!({"name": "flipped payload bit", "hex": hex::encode(broken(|f| f[HEADER_LEN] ^= 1, false)), "error": "BadCrc"}),
        json!({"name": "CRC field altered", "hex": hex::encode(broken(|f| f[31] ^= 0x80, false)), "error": "BadCrc"}),
        json!({"name": "reserved byte 7 set", "hex": hex::encode(broken(|f| f[7] = 1, true)), "error": "NonZeroReserved"}),
        json!({"name": "reserved byte 39 set", "hex": hex::encode(broken(|f| f[39] = 0x80, true)), "error": "NonZeroReserved"}),
        json!({"name": "message type 0x00", "hex": hex::encode(broken(|f| f[5] = 0, true)), "error": "InvalidMessageType"}),
        json!({"name": "encryption type 0x03", "hex": hex::encode(broken(|f| f[32] = 3, true)), "error": "UnsupportedEncryption"}),
        json!({"name": "LAST_FRAGMENT without FRAGMENTED", "hex": hex::encode(broken(|f| f[6] |= Flags::LAST_FRAGMENT.bits(), true)), "error": "InvalidFlags"}),
        json!({"name": "PRIORITY_HIGH with EMERGENCY", "hex": hex::encode(broken(|f| f[6] |= (Flags::PRIORITY_HIGH | Flags::EMERGENCY).bits(), true)), "error": "InvalidFlags"}),
        json!({"name": "ENCRYPTED with encryption type none", "hex": hex::encode(broken(|f| { f[32] = 0; f[40..96].fill(0); }, true)), "error": "InvalidFlags"}),
        json!({"name": "cipher without ENCRYPTED", "hex": hex::encode(broken(|f| f[6] &= !Flags::ENCRYPTED.bits(), true)), "error": "InvalidFlags"}),
        json!({"name": "control frame with STREAM_DATA", "hex": hex::encode(broken(|f| { f[5] = 0xC1; f[6] |= Flags::STREAM_DATA.bits(); }, true)), "error": "InvalidFlags"}),
        json!({"name": "cleartext frame with a key id", "hex": hex::encode({ let mut f = frame(&Header::new(MessageType::HANDSHAKE, 0, 0), b"x"); f[45] = 1; write_crc(&mut f).unwrap(); f }), "error": "NonZeroUnused"}),
        json!({"name": "nonce padding set", "hex": hex::encode(broken(|f| f[79] = 1, true)), "error": "NonZeroUnused"}),
    ];
    json!({
        "description": "XTMP v1 frame test vectors (SPEC.md, Frames). Integers above 32 bits are hex strings; error names are those of SPEC.md, Errors.",
        "max_payload": MAX_PAYLOAD,
        "valid": valid,
        "invalid": invalid,
    })
}

fn variant_name(e: &impl std::fmt::Debug) -> String {
    let s = format!("{e:?}");
    s.split(|c: char| !c.is_alphanumeric()).next().unwrap().to_string()
}

#[test]
fn vectors_file_matches_generator() {
    let generated = generate();
    if std::env::var_os("XTMP_REGEN_VECTORS").is_some() {
        std::fs::write(PATH, serde_json::to_string_pretty(&generated).unwrap() + "\n").unwrap();
    }
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    assert_eq!(on_disk, generated, "vectors/frames.json is stale: regenerate it (see module docs)");
}

#[test]
fn every_vector_decodes_as_recorded() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let max = v["max_payload"].as_u64().unwrap() as u32;
    let valid = v["valid"].as_array().unwrap();
    assert!(valid.len() >= 8);
    for case in valid {
        let bytes = hex::decode(case["hex"].as_str().unwrap()).unwrap();
        let (f, used) = Frame::decode(&bytes, max).unwrap_or_else(|e| panic!("{}: {e}", case["name"]));
        assert_eq!(used, bytes.len());
        assert_eq!(fields(f.header(), f.payload()), case["fields"], "{}", case["name"]);
        // Re-encoding the decoded fields gives the same bytes.
        assert_eq!(frame(f.header(), f.payload()), bytes, "{}", case["name"]);
    }
    let invalid = v["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 15);
    for case in invalid {
        let bytes = hex::decode(case["hex"].as_str().unwrap()).unwrap();
        let err = Frame::decode(&bytes, max).expect_err(case["name"].as_str().unwrap());
        assert_eq!(variant_name(&err), case["error"].as_str().unwrap(), "{}: {err}", case["name"]);
    }
}
