//! Heap allocations per message in steady state, counted exactly (dhat's
//! testing mode). A plain `main` (no test harness), because the counting
//! allocator is global to the binary and the harness's threads would
//! allocate concurrently.
//!
//! Bounds: the send path (send + seal into the caller's buffer) and the
//! open path (endpoint routing, replay check, open, event) allocate nothing
//! per message; bodies are split off a reusable receive buffer that is
//! reclaimed once the application drops them. A reliable message's whole
//! round trip (send, open, the peer's ACK, `Acked`) allocates nothing either.

mod common;

use core::time::Duration;

use bytes::Bytes;
use common::*;
use xtmp_core::session::{Event, PathId, PathKind, SendOptions};
use xtmp_core::wire::MessageType;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut buf = vec![0u8; 70_000];
    for (kind, size) in [(PathKind::Stream, 64), (PathKind::Stream, 16 * 1024), (PathKind::Datagram, 64)] {
        let mut p = Setup::new(kind).start();
        p.connect();
        let body = Bytes::from(vec![0x5a; size]);
        let _ = body.clone();
        let mut run = |p: &mut Pair, n: u64| {
            let (mut send, mut open) = (0u64, 0u64);
            for _ in 0..n {
                // Time passes between messages, as it does for a real
                // sender (the pacer refills).
                p.now += Duration::from_micros(100);
                let s0 = dhat::HeapStats::get().total_blocks;
                p.client.send(MessageType::BUNDLE_SUBMIT, body.clone(), SendOptions::unreliable()).unwrap();
                let t = p.client.poll_transmit(p.now, &mut buf).unwrap().unwrap();
                let s1 = dhat::HeapStats::get().total_blocks;
                p.server.handle_input(p.now, p.remote, &buf[..t.len]);
                let event = p.server.poll_event();
                assert!(event.is_some());
                drop(event);
                let s2 = dhat::HeapStats::get().total_blocks;
                send += s1 - s0;
                open += s2 - s1;
                // Acknowledgements flow back (measured in the round trip
                // below): on a datagram path the congestion window needs them.
                while let Some((_, len)) = p.server.poll_transmit(p.now, &mut buf).unwrap() {
                    p.client.handle_input(p.now, PathId(0), &buf[..len]);
                }
                while p.client.poll_event().is_some() {}
            }
            (send, open)
        };
        run(&mut p, 1_000); // warm up: queues and buffers reach their size
        let (send, open) = run(&mut p, 5_000);
        println!("{kind:?} {size} B: {send} allocations on the send path, {open} on the open path, in 5,000 messages");
        dhat::assert_eq!(send, 0);
        dhat::assert_eq!(open, 0);

        // Reliable: the server acknowledges every second frame at once.
        let mut round_trip = |p: &mut Pair, n: u64| {
            let mut acked = 0u64;
            let s0 = dhat::HeapStats::get().total_blocks;
            for _ in 0..n {
                p.now += Duration::from_micros(100);
                p.client.send(MessageType::BUNDLE_SUBMIT, body.clone(), SendOptions::default()).unwrap();
                while let Some(t) = p.client.poll_transmit(p.now, &mut buf).unwrap() {
                    p.server.handle_input(p.now, p.remote, &buf[..t.len]);
                }
                while let Some(e) = p.server.poll_event() {
                    drop(e);
                }
                while let Some((_, len)) = p.server.poll_transmit(p.now, &mut buf).unwrap() {
                    p.client.handle_input(p.now, PathId(0), &buf[..len]);
                }
                while let Some(e) = p.client.poll_event() {
                    acked += u64::from(matches!(e, Event::Acked(_)));
                }
            }
            (dhat::HeapStats::get().total_blocks - s0, acked)
        };
        round_trip(&mut p, 1_000);
        let (allocations, acked) = round_trip(&mut p, 5_000);
        println!("{kind:?} {size} B reliable: {allocations} allocations in 5,000 round trips, {acked} acknowledged");
        dhat::assert!(acked >= 4_999);
        dhat::assert_eq!(allocations, 0);
    }
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
