//! Encode + decode + CRC of one frame, 64-byte and 64 KiB payloads.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use xtmp_core::wire::{EncryptionType, Flags, Frame, HEADER_LEN, Header, MessageType};

fn header() -> Header {
    let mut h = Header::new(MessageType::BUNDLE_SUBMIT, 0x0102_0304_0506_0708, 42);
    h.flags = Flags::ENCRYPTED | Flags::REQUIRES_ACK;
    h.encryption = EncryptionType::AES_256_GCM;
    h.key_id = [7; 16];
    h.nonce[..12].fill(9);
    h.tag = [3; 16];
    h
}

fn bench_roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/encode+decode+crc");
    for size in [64usize, 64 * 1024] {
        let payload = vec![0x5Au8; size];
        let mut buf = vec![0u8; HEADER_LEN + size];
        let h = header();
        group.throughput(Throughput::Bytes((HEADER_LEN + size) as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                let n = Frame::encode(black_box(&h), black_box(&payload), &mut buf).unwrap();
                let (frame, used) = Frame::decode(black_box(&buf[..n]), 1 << 20).unwrap();
                black_box(frame.payload().len() + used)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_roundtrip, bench_parts);
criterion_main!(benches);

fn bench_parts(c: &mut Criterion) {
    let payload = vec![0x5Au8; 64];
    let mut buf = vec![0u8; HEADER_LEN + 64];
    let n = Frame::encode(&header(), &payload, &mut buf).unwrap();
    let raw: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
    c.bench_function("wire/parts/crc-160B", |b| {
        b.iter(|| xtmp_core::wire::frame_crc(black_box(&raw), black_box(&payload)))
    });
    c.bench_function("wire/parts/decode-64B", |b| b.iter(|| Frame::decode(black_box(&buf[..n]), 1 << 20).unwrap().1));
    c.bench_function("wire/parts/encode-64B", |b| {
        b.iter(|| Frame::encode(black_box(&header()), black_box(&payload), &mut buf).unwrap())
    });
}
