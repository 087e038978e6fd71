//! The structure-aware differential target: a sequence of operations
//! (sends with options, deliver, drop, duplicate, reorder, time, key
//! updates and re-keys) on an in-memory client–server pair, checked
//! against what was sent.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use super::fixture::{self, established};
use crate::crypto::AeadAlgorithm;
use crate::handshake::Role;
use crate::session::{Event, MessageId, PathId, PathKind, PriorityClass, SendOptions, Session};
use crate::time::Instant;
use crate::wire::{MessageType, Priority};

/// One step of the scenario.
#[derive(Arbitrary, Debug)]
enum Op {
    /// `to_server`: the client sends, else the server.
    Send {
        to_server: bool,
        size: u16,
        class: u8,
        reliable: bool,
        compress: bool,
    },
    Deliver {
        to_server: bool,
        count: u8,
    },
    Drop {
        to_server: bool,
    },
    Duplicate {
        to_server: bool,
    },
    /// The next datagram waits behind the one after it.
    Swap {
        to_server: bool,
    },
    Advance {
        millis: u16,
    },
    UpdateKey {
        client: bool,
    },
    Rekey {
        client: bool,
    },
}

/// What one side sent: per message, its class, whether reliable, and what
/// became of it.
#[derive(Debug, Default)]
struct Sent {
    /// Message id to (index, class, reliable).
    by_id: BTreeMap<MessageId, (u32, usize, bool)>,
    acked: Vec<u32>,
    failed: Vec<u32>,
}

/// What one side received: indices in arrival order per class.
#[derive(Debug, Default)]
struct Received {
    reliable: [Vec<u32>; 3],
    unreliable: Vec<u32>,
}

struct Side {
    session: Session,
    sent: Sent,
    received: Received,
    next_index: u32,
    /// Datagrams in flight to this side.
    inbox: VecDeque<Vec<u8>>,
}

/// Message `index`'s body: its index, then a pattern that compresses.
fn body(index: u32, size: usize) -> Bytes {
    let mut b = alloc::vec![0u8; size.max(4)];
    b[..4].copy_from_slice(&index.to_be_bytes());
    for (i, x) in b[4..].iter_mut().enumerate() {
        *x = (index as usize).wrapping_add(i / 16) as u8;
    }
    Bytes::from(b)
}

fn index_of(b: &[u8]) -> u32 {
    let index = u32::from_be_bytes(b[..4].try_into().expect("bodies are at least 4 bytes"));
    assert!(b == &body(index, b.len())[..], "message {index} arrived changed");
    index
}

fn class_index(p: PriorityClass) -> usize {
    match p {
        PriorityClass::Normal => 0,
        PriorityClass::High => 1,
        PriorityClass::Emergency => 2,
    }
}

/// Moves `from`'s transmits into `to`'s inbox and both sides' events into
/// their records.
fn flush(now: Instant, from: &mut Side, to: &mut Side, buf: &mut [u8]) {
    let mut n = 0;
    while let Ok(Some(t)) = from.session.poll_transmit(now, buf) {
        to.inbox.push_back(buf[..t.len].to_vec());
        n += 1;
        assert!(n < 100_000, "poll_transmit never runs dry");
    }
    while let Some(e) = from.session.poll_event() {
        match e {
            Event::Message(m) => {
                let index = index_of(&m.body);
                let class = match m.priority {
                    Priority::Normal => 0,
                    Priority::High => 1,
                    Priority::Emergency => 2,
                };
                // Reliability is the sender's choice: the index says which.
                if index & 1 == 1 {
                    from.received.reliable[class].push(index);
                } else {
                    from.received.unreliable.push(index);
                }
            }
            Event::Acked(id) => {
                let (index, _, reliable) = from.sent.by_id[&id];
                assert!(reliable, "an unreliable message was acknowledged");
                from.sent.acked.push(index);
            }
            Event::Failed(id, _) => {
                let (index, _, _) = from.sent.by_id[&id];
                from.sent.failed.push(index);
            }
            _ => {}
        }
    }
}

fn exchange(now: Instant, c: &mut Side, s: &mut Side, buf: &mut [u8]) {
    flush(now, c, s, buf);
    flush(now, s, c, buf);
}

/// Runs fuzzer-chosen operations, then lets the network settle without
/// faults, and checks both directions: every reliable message acknowledged
/// was delivered; every delivery is unmodified, at most once, and reliable
/// ones in send order within their class; after settling, every reliable
/// message not reported failed was delivered and acknowledged.
pub fn session_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let alg = if u.arbitrary().unwrap_or(false) { AeadAlgorithm::ChaCha20Poly1305 } else { AeadAlgorithm::Aes256Gcm };
    let config = Arc::new(fixture::small_config());
    let new_side = |role| Side {
        session: established(role, PathKind::Datagram, alg, config.clone()),
        sent: Sent::default(),
        received: Received::default(),
        next_index: 0,
        inbox: VecDeque::new(),
    };
    let (mut c, mut s) = (new_side(Role::Client), new_side(Role::Server));
    let mut now = fixture::start();
    let mut buf = alloc::vec![0u8; 65_536];
    let mut steps = 0;
    while let Ok(op) = u.arbitrary::<Op>() {
        steps += 1;
        if steps > 400 {
            break;
        }
        match op {
            Op::Send { to_server, size, class, reliable, compress } => {
                let side = if to_server { &mut c } else { &mut s };
                // Odd indices are reliable, even ones not.
                let index = side.next_index * 2 + u32::from(reliable);
                side.next_index += 1;
                let priority = match class % 3 {
                    0 => PriorityClass::Normal,
                    1 => PriorityClass::High,
                    _ => PriorityClass::Emergency,
                };
                let opts = SendOptions { priority, reliable, compress, ..SendOptions::default() };
                let size = usize::from(size) % 40_000;
                if let Ok(id) = side.session.send(MessageType(0x20), body(index, size), opts) {
                    side.sent.by_id.insert(id, (index, class_index(priority), reliable));
                }
            }
            Op::Deliver { to_server, count } => {
                let to = if to_server { &mut s } else { &mut c };
                for _ in 0..=count % 8 {
                    if let Some(d) = to.inbox.pop_front() {
                        to.session.handle_input(now, PathId(0), &d);
                    }
                }
            }
            Op::Drop { to_server } => {
                let to = if to_server { &mut s } else { &mut c };
                to.inbox.pop_front();
            }
            Op::Duplicate { to_server } => {
                let to = if to_server { &mut s } else { &mut c };
                if let Some(d) = to.inbox.front().cloned() {
                    to.inbox.push_back(d);
                }
            }
            Op::Swap { to_server } => {
                let to = if to_server { &mut s } else { &mut c };
                if to.inbox.len() >= 2 {
                    to.inbox.swap(0, 1);
                }
            }
            Op::Advance { millis } => {
                now = now.saturating_add(Duration::from_millis(u64::from(millis % 5_000)));
                c.session.handle_timeout(now);
                s.session.handle_timeout(now);
            }
            Op::UpdateKey { client } => {
                let _ = if client { &mut c } else { &mut s }.session.update_key_now(now);
            }
            Op::Rekey { client } => {
                let _ = if client { &mut c } else { &mut s }.session.rekey_now(now);
            }
        }
        exchange(now, &mut c, &mut s, &mut buf);
        check(&c, &s);
        check(&s, &c);
    }
    settle(&mut now, &mut c, &mut s, &mut buf);
    check(&c, &s);
    check(&s, &c);
    for (from, to) in [(&c, &s), (&s, &c)] {
        // An acknowledgement is a promise, even when the session ended.
        let delivered: Vec<u32> = to.received.reliable.iter().flatten().copied().collect();
        for index in &from.sent.acked {
            assert!(delivered.contains(index), "message {index} acknowledged but never delivered");
        }
        if from.session.is_closed() || to.session.is_closed() {
            continue;
        }
        let delivered: Vec<u32> = to.received.reliable.iter().flatten().copied().collect();
        for (index, _, reliable) in from.sent.by_id.values() {
            if *reliable && !from.sent.failed.contains(index) {
                assert!(delivered.contains(index), "reliable message {index} never arrived");
                assert!(from.sent.acked.contains(index), "reliable message {index} never acknowledged");
            }
        }
    }
}

/// Safety, at any time: deliveries are unique, and reliable ones come in
/// send order within their class and in the class they were sent in.
fn check(from: &Side, to: &Side) {
    let mut seen = alloc::collections::BTreeSet::new();
    for index in to.received.reliable.iter().flatten().chain(&to.received.unreliable) {
        assert!(seen.insert(*index), "message {index} delivered twice");
    }
    for class in &to.received.reliable {
        assert!(class.windows(2).all(|w| w[0] < w[1]), "out of send order within a class: {class:?}");
    }
    for (index, class, reliable) in from.sent.by_id.values() {
        if *reliable && seen.contains(index) {
            assert!(to.received.reliable[*class].contains(index), "message {index} arrived in another class");
        }
    }
}

/// Delivers everything, in order, and runs timers until both sides are
/// closed, or both are open with nothing outstanding or held (or a
/// generous virtual deadline passes).
fn settle(now: &mut Instant, c: &mut Side, s: &mut Side, buf: &mut [u8]) {
    let deadline = now.saturating_add(Duration::from_secs(300));
    for _ in 0..20_000 {
        exchange(*now, c, s, buf);
        let mut moved = false;
        for side in [&mut *c, &mut *s] {
            while let Some(d) = side.inbox.pop_front() {
                side.session.handle_input(*now, PathId(0), &d);
                moved = true;
            }
        }
        if moved {
            continue;
        }
        let idle = |x: &Side| {
            let st = x.session.stats();
            st.unacked_messages == 0 && st.reassembly_bytes == 0
        };
        let closed = |x: &Side| x.session.is_closed();
        if (closed(c) && closed(s)) || (!closed(c) && !closed(s) && idle(c) && idle(s)) {
            return;
        }
        let next = [c.session.poll_timeout(), s.session.poll_timeout()].into_iter().flatten().min();
        let Some(next) = next else { return };
        if next > deadline {
            return;
        }
        *now = (*now).max(next);
        c.session.handle_timeout(*now);
        s.session.handle_timeout(*now);
    }
    panic!("the pair never settles");
}
