//! Heap pinned by messages the application holds (issue 42: every unread
//! subscription item pinned the whole 16 KiB receive buffer its body was
//! split from). Measured with dhat's counting allocator, in a plain `main`
//! so no harness thread allocates meanwhile.
//!
//! The server publishes small items on one subscription interleaved with
//! large messages; the client's application drops the large ones at once
//! and holds every small item, as a subscriber that reads one stream and
//! not another. What the held items cost is the heap's growth: it must
//! stay near their own size, not a receive buffer each.

mod common;

use bytes::Bytes;
use common::*;
use xtmp_core::session::{Event, MessageKind, PathKind, SendOptions};
use xtmp_core::wire::MessageType;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const HELD: usize = 300;
const SMALL: usize = 64;
const LARGE: usize = 6 * 1024;
/// Bytes a held 64-byte message may cost, all overhead included.
const BOUND: usize = 512;

fn heap() -> usize {
    dhat::HeapStats::get().curr_bytes
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let mut p = Setup::new(kind).connected();
        let sub = p.client.subscribe(MessageType::LIVE_UPDATES, Bytes::new(), SendOptions::default()).unwrap();
        p.settle();
        let m = p.server_messages().into_iter().rfind(|m| m.kind == MessageKind::Subscribe).unwrap().clone();
        p.server_session().respond(m.id, MessageType::LIVE_UPDATES, Bytes::new(), SendOptions::default()).unwrap();
        p.settle();
        p.client_events.clear();
        p.client_events.shrink_to_fit();
        let mut held: Vec<Bytes> = Vec::with_capacity(HELD);
        let before = heap();
        for i in 0..HELD {
            let small = Bytes::from(vec![i as u8; SMALL]);
            p.server_session().push(sub, small, SendOptions::default()).unwrap();
            let large = Bytes::from(vec![0xAB; LARGE]);
            p.server_session().send(MessageType::METRICS_STREAM, large, SendOptions::default()).unwrap();
            p.drive(10_000, |p| {
                p.client_events
                    .iter()
                    .any(|e| matches!(e, Event::Message(m) if m.message_type == MessageType::LIVE_UPDATES))
            });
            for e in p.client_events.drain(..) {
                if let Event::Message(m) = e
                    && m.kind == MessageKind::Item(sub)
                {
                    // The application took it: its window moves on.
                    p.client.release_item(sub);
                    held.push(m.body);
                }
            }
        }
        assert_eq!(held.len(), HELD, "{kind:?}: every small message arrived");
        let grown = heap().saturating_sub(before);
        let per = grown / HELD;
        println!("{kind:?}: {HELD} held {SMALL}-byte items grew the heap by {grown} bytes ({per} each)");
        assert!(per <= BOUND, "{kind:?}: a held {SMALL}-byte item costs {per} bytes (bound {BOUND})");
        drop(held);
        drop(p);
    }
}
