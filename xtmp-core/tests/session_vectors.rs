//! The handshake and record test vectors (`vectors/session.json`, SPEC.md
//! sections 2.9 and 3.9): a whole handshake from fixed seeds with every
//! secret of the key schedule (through the `KeyLog`), and sealed frames of
//! both directions, before and after a key update, plus a re-key
//! derivation. The file is regenerated and compared byte for byte, then
//! every record is checked independently of the session code: keys derived
//! through the public key schedule and opened with the `aes-gcm` crate.
//!
//! Regenerate after an intended change with
//! `XTMP_REGEN_VECTORS=1 cargo test -p xtmp-core --test session_vectors`.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{AeadInOut, KeyInit};
use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use xtmp_core::crypto::schedule::{TrafficKeys, next_traffic_secret, rekey_secret, rekeyed_traffic_secret};
use xtmp_core::crypto::{RustCrypto, Secret};
use xtmp_core::handshake::KeyLog;
use xtmp_core::session::{PathKind, SendOptions};
use xtmp_core::wire::{Frame, MessageType, associated_data};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors/session.json");

#[derive(Debug, Default)]
struct Log(Mutex<Vec<(&'static str, String)>>);

impl KeyLog for Log {
    fn log(&self, label: &'static str, _client_random: &[u8; 32], secret: &[u8]) {
        self.0.lock().unwrap().push((label, hex::encode(secret)));
    }
}

/// Splits a stream transmit into its frames.
fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (_, n) = Frame::decode(bytes, 1 << 20).unwrap();
        out.push(bytes[..n].to_vec());
        bytes = &bytes[n..];
    }
    out
}

/// Every frame the pair exchanged, with its direction.
type Wire = Rc<RefCell<Vec<(Dir, Vec<u8>)>>>;

fn secret48(hex_str: &str) -> Secret<48> {
    Secret::new(hex::decode(hex_str).unwrap().try_into().unwrap())
}

fn generation(base: &Secret<48>, n: u32) -> Secret<48> {
    let mut s = Secret::new(*base.expose());
    for _ in 0..n {
        s = next_traffic_secret(&RustCrypto, &s).unwrap();
    }
    s
}

fn generate() -> Value {
    let log = Arc::new(Log::default());
    let mut s = Setup::new(PathKind::Stream);
    s.client.key_log = Some(log.clone());
    // Small enough that the reliability vectors below fragment a message
    // and move the flow-control window.
    s.server().params.max_frame_payload = 1024;
    s.server().params.receive_window = 2048;
    // And the client's subscription window, for the SubscriptionCredit.
    s.client.params.subscription_window = 2048;
    let mut p = s.start();
    let wire: Wire = Rc::new(RefCell::new(Vec::new()));
    let w = wire.clone();
    p.filter = Some(Box::new(move |dir, b| {
        for f in frames(b) {
            w.borrow_mut().push((dir, f));
        }
        Verdict::Deliver
    }));
    p.connect();
    let handshake: Vec<Value> = wire
        .borrow()
        .iter()
        .map(|(d, f)| json!({ "from": if *d == Dir::ToServer { "client" } else { "server" }, "frame": hex::encode(f) }))
        .collect();
    let secrets: serde_json::Map<String, Value> =
        log.0.lock().unwrap().iter().map(|(l, s)| (l.to_string(), Value::String(s.clone()))).collect();

    let mut records = Vec::new();
    let mut capture = |p: &mut Pair, name: &str, from_client: bool, generation: u32, body: &'static [u8]| {
        wire.borrow_mut().clear();
        let ty = if from_client { MessageType::WALLET_REGISTER } else { MessageType::LIVE_UPDATES };
        if from_client {
            p.client.send(ty, Bytes::from_static(body), SendOptions::default()).unwrap();
        } else {
            p.server_session().send(ty, Bytes::from_static(body), SendOptions::default()).unwrap();
        }
        p.settle();
        // The message's frame (an ACK may go just before it).
        let (_, frame) = wire.borrow().iter().find(|(_, f)| f[5] == ty.0).cloned().unwrap();
        records.push(json!({
            "name": name,
            "from": if from_client { "client" } else { "server" },
            "traffic_secret": if from_client { "c_ap_traffic" } else { "s_ap_traffic" },
            "generation": generation,
            "body": hex::encode(body),
            "frame": hex::encode(frame),
        }));
    };
    capture(&mut p, "client message, generation 0", true, 0, b"register wallet 7");
    capture(&mut p, "server push, generation 0", false, 0, b"block 1024 sealed");
    let now = p.now;
    assert!(p.client.update_key_now(now));
    capture(&mut p, "client message after a key update, generation 1", true, 1, b"register wallet 8");
    assert!(p.server_session().update_key_now(now));
    assert!(p.server_session().update_key_now(now));
    capture(&mut p, "server push after two key updates, generation 2", false, 2, b"block 1025 sealed");

    let reliability = reliability_frames(&mut p, &wire);

    // The re-key derivation from fixed inputs (section 3.6.1).
    let th = [0x11u8; 48];
    let (ss_k, ss_x) = (Secret::new([0x22u8; 32]), Secret::new([0x33u8; 32]));
    let rk = rekey_secret(&RustCrypto, &th, &ss_k, &ss_x);
    let before = secret48(secrets["c_ap_traffic"].as_str().unwrap());
    let after = rekeyed_traffic_secret(&RustCrypto, &before, &rk).unwrap();
    let keys = TrafficKeys::derive(&RustCrypto, &after).unwrap();
    let rekey = json!({
        "exchange_hash": hex::encode(th),
        "ss_mlkem": hex::encode(ss_k.expose()),
        "ss_x25519": hex::encode(ss_x.expose()),
        "rk": hex::encode(rk.expose()),
        "secret_before": "c_ap_traffic",
        "secret_after": hex::encode(after.expose()),
        "key_id_after": hex::encode(keys.key_id),
    });

    json!({
        "description": "XTMP v1 handshake over a stream path from fixed seeds (identity seed [1; 32], pair seed [7; 32], ChaCha20 generators), every key-schedule secret as logged by the client, and sealed AES-256-GCM records of both directions. SPEC.md sections 2.9 and 3.9.",
        "cipher": "AES-256-GCM",
        "secrets": secrets,
        "handshake_frames": handshake,
        "records": records,
        "reliability_frames": reliability,
        "rekey": rekey,
        "padding_probe": padding_probe(),
        "stateless_reset": stateless_reset(),
    })
}

/// A stateless reset (SPEC.md 3.7.1): the reset key of the vectors' server
/// identity (ChaCha20 generator from the seed [1; 32]: its ML-DSA-87 seed,
/// then its Ed25519 key), the token of one server session id, the
/// Parameters entry that carries it and the Reset frame.
fn stateless_reset() -> Value {
    let id = identity(1);
    let key = id.derive_key(&RustCrypto, b"stateless reset key").unwrap();
    let sid = 0x0123_4567_89ab_cdef_u64;
    let token = xtmp_core::session::reset::reset_token(&RustCrypto, &key, sid);
    let mut parameter = vec![0x00, 0x06, 0x00, 0x10];
    parameter.extend_from_slice(&token);
    json!({
        "label": "stateless reset key",
        "reset_key": hex::encode(key.expose()),
        "server_session_id": format!("{sid:016x}"),
        "token": hex::encode(token),
        "parameter": hex::encode(parameter),
        "frame": hex::encode(xtmp_core::session::reset::reset_frame(&RustCrypto, &key, sid)),
    })
}

/// A path MTU probe (SPEC.md 4.10): the datagram a client sends once its
/// datagram session is confirmed, a single sealed Padding frame (`C7`)
/// filling it to the probed size, 1,452 bytes. From its own session
/// (datagram path, the same seeds), whose client traffic secret it carries.
fn padding_probe() -> Value {
    let log = Arc::new(Log::default());
    let mut s = Setup::new(PathKind::Datagram);
    s.client.key_log = Some(log.clone());
    let mut p = s.start();
    let datagrams: Wire = Rc::new(RefCell::new(Vec::new()));
    let d = datagrams.clone();
    p.filter = Some(Box::new(move |dir, b| {
        d.borrow_mut().push((dir, b.to_vec()));
        Verdict::Deliver
    }));
    p.connect();
    let is_probe = |(dir, b): &(Dir, Vec<u8>)| *dir == Dir::ToServer && b.get(5) == Some(&0xC7);
    p.drive(1000, |_| datagrams.borrow().iter().any(is_probe));
    let (_, probe) = datagrams.borrow().iter().find(|x| is_probe(x)).cloned().unwrap();
    let secret = log.0.lock().unwrap().iter().find(|(l, _)| *l == "c_ap_traffic").unwrap().1.clone();
    json!({
        "secrets": { "c_ap_traffic": secret },
        "record": {
            "name": "path MTU probe: one Padding frame filling a 1,452-byte datagram",
            "from": "client",
            "traffic_secret": "c_ap_traffic",
            "generation": 0,
            "frame": hex::encode(probe),
        },
    })
}

/// One sealed frame of each section 4 kind, from the same session (the
/// client's sending key at generation 1, the server's at 2): the first
/// fragment of a 1,500-byte message (the server accepts 1,024-byte frame
/// payloads), the server's ACK of it, the MaxData the server sends once
/// its application read it (its window is 2,048 bytes), and the Forward
/// the client sends for a message that waited for credit past its
/// deadline.
fn reliability_frames(p: &mut Pair, wire: &Wire) -> Vec<Value> {
    let mut out = Vec::new();
    let mut take = |wire: &Wire, name: &str, dir: Dir, ty: u8| {
        let (_, frame) = wire.borrow().iter().find(|(d, f)| *d == dir && f[5] == ty).cloned().unwrap();
        let from_client = dir == Dir::ToServer;
        out.push(json!({
            "name": name,
            "from": if from_client { "client" } else { "server" },
            "traffic_secret": if from_client { "c_ap_traffic" } else { "s_ap_traffic" },
            "generation": if from_client { 1 } else { 2 },
            "frame": hex::encode(frame),
        }));
    };
    wire.borrow_mut().clear();
    let big: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
    p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from(big), SendOptions::default()).unwrap();
    p.settle();
    take(wire, "first fragment of a 1,500-byte message", Dir::ToServer, MessageType::BUNDLE_SUBMIT.0);
    take(wire, "ACK", Dir::ToClient, 0xC0);
    take(wire, "MaxData after the application read 1,500 bytes", Dir::ToClient, 0xC6);

    wire.borrow_mut().clear();
    p.server_reading = false;
    // Offset 1,534 (the two 17-byte records, then 1,500) is below the
    // limit of 1,534 + 2,048: it goes. The next, at 3,634, waits for
    // credit until its deadline.
    p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from(vec![7u8; 2100]), SendOptions::default()).unwrap();
    let short = SendOptions { deadline: Some(std::time::Duration::from_secs(1)), ..SendOptions::default() };
    p.client.send(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"too late"), short).unwrap();
    p.drive(1000, |p| p.client_events.iter().any(|e| matches!(e, xtmp_core::session::Event::Failed(..))));
    p.settle();
    take(wire, "Forward past a message that waited for credit", Dir::ToServer, 0xC5);
    p.server_reading = true;
    p.settle();

    // The client subscribes with a 2,048-byte subscription window; the
    // server pushes a 1,200-byte reliable item; once the client's
    // application read it (1,232 of credit, above half the window), the
    // client raises the limit to 1,232 + 2,048.
    wire.borrow_mut().clear();
    let sub = p.client.subscribe(MessageType::LIVE_UPDATES, Bytes::from_static(b"bundle 7"), SendOptions::default());
    p.settle();
    let sub = sub.unwrap();
    p.server_session().push(sub, Bytes::from(vec![9u8; 1200]), SendOptions::default()).unwrap();
    p.settle();
    take(wire, "SubscriptionCredit after the application read a 1,200-byte item", Dir::ToServer, 0xC8);

    // A request, and the response that carries the server's ACK of it
    // inside its own frame (SPEC.md 4.3): no ACK frame of its own. First
    // the ACK delay passes, so no acknowledgement is owed from before.
    let quiet = p.now + std::time::Duration::from_millis(25);
    p.drive(100, |p| p.now >= quiet);
    p.settle();
    wire.borrow_mut().clear();
    p.client.send(MessageType::REGISTRY_QUERY, Bytes::from_static(b"wallet 7"), SendOptions::request()).unwrap();
    p.settle();
    let m = p.server_messages().last().unwrap().id;
    let answer = Bytes::from_static(b"balance 42");
    p.server_session().respond(m, MessageType::REGISTRY_QUERY, answer, SendOptions::default()).unwrap();
    p.settle();
    take(wire, "request", Dir::ToServer, MessageType::REGISTRY_QUERY.0);
    take(wire, "response carrying the ACK of the request", Dir::ToClient, MessageType::REGISTRY_QUERY.0);
    assert!(!wire.borrow().iter().any(|(d, f)| *d == Dir::ToClient && f[5] == 0xC0), "no ACK frame");
    out
}

/// The reset vector recomputed from SPEC.md 3.7.1's formulas with the
/// key schedule's public functions, and its frame parsed.
#[test]
fn the_stateless_reset_vector_follows_the_formulas() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let r = &v["stateless_reset"];
    let key = secret48(r["reset_key"].as_str().unwrap());
    let sid = u64::from_str_radix(r["server_session_id"].as_str().unwrap(), 16).unwrap();
    let mut token = [0u8; 16];
    xtmp_core::crypto::schedule::expand_label(&RustCrypto, &key, b"stateless reset", &sid.to_be_bytes(), &mut token)
        .unwrap();
    assert_eq!(hex::encode(token), r["token"]);
    let frame = hex::decode(r["frame"].as_str().unwrap()).unwrap();
    assert_eq!(frame.len(), 112);
    let (f, _) = Frame::decode(&frame, 1 << 16).unwrap();
    assert_eq!((f.header().message_type, f.header().session_id, f.header().sequence), (MessageType(0xC9), sid, 0));
    assert!(f.header().flags.is_empty());
    assert_eq!(f.payload(), token);
}

#[test]
fn vectors_file_matches_generator() {
    let generated = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    if std::env::var_os("XTMP_REGEN_VECTORS").is_some() {
        std::fs::write(PATH, &generated).unwrap();
    }
    let stored = std::fs::read_to_string(PATH).expect("vectors/session.json exists");
    assert!(stored == generated, "vectors/session.json differs from the generator: regenerate it deliberately");
}

/// Each record opened from the logged secrets alone, with the RustCrypto
/// `aes-gcm` crate directly (not the provider or the session).
/// Opens a recorded frame with the key its traffic secret and generation name.
fn open(v: &Value, r: &Value) -> Vec<u8> {
    let base = secret48(v["secrets"][r["traffic_secret"].as_str().unwrap()].as_str().unwrap());
    let keys = TrafficKeys::derive(&RustCrypto, &generation(&base, r["generation"].as_u64().unwrap() as u32)).unwrap();
    let frame = hex::decode(r["frame"].as_str().unwrap()).unwrap();
    let (f, _) = Frame::decode(&frame, 1 << 20).unwrap();
    let h = f.header();
    assert_eq!(h.key_id, keys.key_id, "{}: key id names the generation", r["name"]);
    let nonce: [u8; 12] = h.nonce[..12].try_into().unwrap();
    let mut plain = f.payload().to_vec();
    aes_gcm::Aes256Gcm::new(keys.key.expose().into())
        .decrypt_inout_detached(
            (&nonce).into(),
            &associated_data(f.raw_header()),
            plain.as_mut_slice().into(),
            (&h.tag).into(),
        )
        .unwrap_or_else(|_| panic!("{} opens", r["name"]));
    plain
}

#[test]
fn records_open_from_the_logged_secrets() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 4);
    for r in records {
        let base = secret48(v["secrets"][r["traffic_secret"].as_str().unwrap()].as_str().unwrap());
        let secret = generation(&base, r["generation"].as_u64().unwrap() as u32);
        let keys = TrafficKeys::derive(&RustCrypto, &secret).unwrap();
        let frame = hex::decode(r["frame"].as_str().unwrap()).unwrap();
        let (f, _) = Frame::decode(&frame, 1 << 20).unwrap();
        let h = f.header();
        assert_eq!(h.key_id, keys.key_id, "{}: key id names the generation", r["name"]);
        assert_eq!(h.nonce[..12], keys.nonce(h.sequence), "{}: nonce = iv xor seq", r["name"]);
        let aad = associated_data(f.raw_header());
        let nonce: [u8; 12] = h.nonce[..12].try_into().unwrap();
        let cipher = aes_gcm::Aes256Gcm::new(keys.key.expose().into());
        let mut plain = f.payload().to_vec();
        cipher
            .decrypt_inout_detached((&nonce).into(), &aad, plain.as_mut_slice().into(), (&h.tag).into())
            .unwrap_or_else(|_| panic!("{} opens", r["name"]));
        let body = hex::decode(r["body"].as_str().unwrap()).unwrap();
        // Data header: kind (with the ACK_NOW hint), message id, correlation id, order.
        assert_eq!(plain.len(), 25 + body.len());
        assert_eq!(plain[0] & 0x7f, 0, "a one-way message");
        assert_eq!(plain[0] & 0x80, 0x80, "nothing follows it: ACK_NOW (SPEC.md 4.3)");
        assert_eq!(plain[9..17], [0; 8], "no correlation");
        assert!(u64::from_be_bytes(plain[17..25].try_into().unwrap()) >= 1, "reliable: an order number");
        assert_eq!(&plain[25..], &body[..], "{}", r["name"]);
        // One flipped header bit and it no longer opens.
        let mut aad2 = aad;
        aad2[8] ^= 1;
        let mut again = f.payload().to_vec();
        assert!(
            cipher
                .decrypt_inout_detached((&nonce).into(), &aad2, again.as_mut_slice().into(), (&h.tag).into())
                .is_err()
        );
    }
    let frames = v["reliability_frames"].as_array().unwrap();
    let types: Vec<u8> = frames.iter().map(|r| hex::decode(r["frame"].as_str().unwrap()).unwrap()[5]).collect();
    assert_eq!(
        types,
        [0x20, 0xC0, 0xC6, 0xC5, 0xC8, 0x30, 0x30],
        "a fragment, an ACK, a MaxData, a Forward, a SubscriptionCredit, a request, its response"
    );
    let request = hex::decode(frames[5]["frame"].as_str().unwrap()).unwrap();
    let request_seq = u64::from_be_bytes(request[16..24].try_into().unwrap());
    for (i, (r, ty)) in frames.iter().zip(types).enumerate() {
        let plain = open(&v, r);
        let name = r["name"].as_str().unwrap();
        match ty {
            // The request: kind 01 (no ACK_NOW: its response acknowledges
            // it), no correlation, then the body.
            0x30 if i == 5 => {
                assert_eq!(plain[0], 0x01, "{name}");
                assert_eq!(plain[9..17], [0; 8], "{name}");
                assert_eq!(&plain[25..], b"wallet 7", "{name}");
            }
            // The response: kind 02 with bit 40 (an ACK follows the data
            // header), correlation = the request's message id, the ACK
            // block (its largest: the request's sequence number), the body.
            0x30 => {
                assert_eq!(plain[0], 0x02 | 0x40, "{name}");
                let request_plain = open(&v, &frames[5]);
                assert_eq!(plain[9..17], request_plain[1..9], "{name}: answers the request");
                let ack = &plain[25..];
                let ack_len = 21 + 16 * usize::from(ack[12]);
                assert_eq!(u64::from_be_bytes(ack[..8].try_into().unwrap()), request_seq, "{name}");
                assert_eq!(&ack[ack_len..], b"balance 42", "{name}");
            }
            // Data header, fragment header (offset 0, total 1,500), body:
            // a 1,024-byte payload, the server's frame limit.
            0x20 => {
                assert_eq!(plain.len(), 1024, "{name}");
                assert_eq!(&plain[25..33], [0, 0, 0, 0, 0, 0, 0x05, 0xdc], "{name}");
                assert!(plain[33..].iter().enumerate().all(|(i, b)| *b == i as u8), "{name}");
            }
            // MaxData: class 0, limit: what was read (the client's two
            // 17-byte records, then 1,500 bytes, each with 32 bytes of
            // overhead: 1,630) + the 2,048-byte window = 3,678.
            0xC6 => assert_eq!(plain, [0, 0, 0, 0, 0, 0, 0, 0x0e, 0x5e], "{name}"),
            // Forward: class 0; floor 6, the next order number (the two
            // records, the 1,500 and 2,100-byte messages and the one given
            // up on are 1 to 5); its credit offset 2 × 17 + 1,500 + 2,100 +
            // 8 + 5 × 32 = 3,802.
            0xC5 => {
                assert_eq!(plain.len(), 17, "{name}");
                assert_eq!(plain[0], 0, "{name}");
                assert_eq!(u64::from_be_bytes(plain[1..9].try_into().unwrap()), 6, "{name}");
                assert_eq!(u64::from_be_bytes(plain[9..17].try_into().unwrap()), 3802, "{name}");
            }
            // SubscriptionCredit: the subscription id (the subscribe's
            // message id: the client's sixth message, after its two
            // records and three bundles) ‖ limit 1,232 + 2,048.
            0xC8 => {
                assert_eq!(plain.len(), 16, "{name}");
                assert_eq!(u64::from_be_bytes(plain[..8].try_into().unwrap()), 6, "{name}");
                assert_eq!(u64::from_be_bytes(plain[8..].try_into().unwrap()), 3280, "{name}");
            }
            // ACK: largest ‖ delay ‖ count ‖ first range ‖ ranges.
            _ => assert_eq!(plain.len(), 21 + 16 * usize::from(plain[12]), "{name}"),
        }
    }
    // The probe: the whole datagram is one frame, REQUIRES_ACK, its
    // payload zeros.
    let probe = &v["padding_probe"];
    let datagram = hex::decode(probe["record"]["frame"].as_str().unwrap()).unwrap();
    assert_eq!(datagram.len(), 1452);
    assert_eq!(self::frames(&datagram).len(), 1, "a single frame");
    let (f, _) = Frame::decode(&datagram, 1 << 20).unwrap();
    assert_eq!(f.header().message_type.0, 0xC7);
    assert!(f.header().flags.contains(xtmp_core::wire::Flags::REQUIRES_ACK));
    let plain = open(probe, &probe["record"]);
    assert_eq!(plain.len(), 1452 - 96, "the frame payload fills the datagram");
    assert!(plain.iter().all(|b| *b == 0), "zero when sent");
    let rk = &v["rekey"];
    let before = secret48(v["secrets"]["c_ap_traffic"].as_str().unwrap());
    let th: [u8; 48] = hex::decode(rk["exchange_hash"].as_str().unwrap()).unwrap().try_into().unwrap();
    let k = Secret::new(hex::decode(rk["ss_mlkem"].as_str().unwrap()).unwrap().try_into().unwrap());
    let x = Secret::new(hex::decode(rk["ss_x25519"].as_str().unwrap()).unwrap().try_into().unwrap());
    let secret = rekeyed_traffic_secret(&RustCrypto, &before, &rekey_secret(&RustCrypto, &th, &k, &x)).unwrap();
    assert_eq!(hex::encode(secret.expose()), rk["secret_after"].as_str().unwrap());
}
