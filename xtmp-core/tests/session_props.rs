//! Property: whatever the network does to datagrams (drops, duplicates,
//! reorders, replays of old ones, bit flips) and however sends and time
//! interleave, a session never delivers a message twice, never delivers
//! one that was not sent, and never delivers altered content.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use xtmp_core::session::{Event, PathKind, SendOptions};
use xtmp_core::wire::MessageType;

#[derive(Clone, Debug)]
enum Op {
    Send { to_server: bool, len: usize },
    Flush,
    Deliver { to_server: bool },
    Drop { to_server: bool },
    Duplicate { to_server: bool },
    Swap { to_server: bool },
    Replay { to_server: bool, index: usize },
    Flip { to_server: bool, byte: usize, bit: u8 },
    Advance { ms: u64 },
    UpdateKey { client: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0usize..600).prop_map(|(to_server, len)| Op::Send { to_server, len }),
        3 => Just(Op::Flush),
        6 => any::<bool>().prop_map(|to_server| Op::Deliver { to_server }),
        1 => any::<bool>().prop_map(|to_server| Op::Drop { to_server }),
        1 => any::<bool>().prop_map(|to_server| Op::Duplicate { to_server }),
        1 => any::<bool>().prop_map(|to_server| Op::Swap { to_server }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to_server, index)| Op::Replay { to_server, index }),
        1 => (any::<bool>(), any::<usize>(), 0u8..8).prop_map(|(to_server, byte, bit)| Op::Flip { to_server, byte, bit }),
        1 => (0u64..2000).prop_map(|ms| Op::Advance { ms }),
        1 => any::<bool>().prop_map(|client| Op::UpdateKey { client }),
    ]
}

struct Ledger {
    sent: BTreeMap<u64, Bytes>,
    delivered: BTreeSet<u64>,
}

impl Ledger {
    fn check(&mut self, events: &[Event], from: usize) -> Result<(), TestCaseError> {
        for e in &events[from..] {
            if let Event::Message(m) = e {
                let sent = self.sent.get(&m.id.0);
                prop_assert!(sent.is_some(), "message {} was never sent", m.id.0);
                prop_assert_eq!(sent.unwrap(), &m.body, "message {} altered", m.id.0);
                prop_assert!(self.delivered.insert(m.id.0), "message {} delivered twice", m.id.0);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_duplicates_no_forgeries(ops in proptest::collection::vec(op(), 1..120)) {
        let mut p = Setup::new(PathKind::Datagram).start();
        p.connect();
        let mut to_server = Ledger { sent: BTreeMap::new(), delivered: BTreeSet::new() };
        let mut to_client = Ledger { sent: BTreeMap::new(), delivered: BTreeSet::new() };
        let mut history: [Vec<(xtmp_core::endpoint::Remote, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
        let (mut seen_c, mut seen_s) = (p.client_events.len(), p.server_events.len());
        let mut counter = 0u32;
        for op in ops {
            match op {
                Op::Send { to_server: up, len } => {
                    counter += 1;
                    let body: Bytes = (0..len).map(|i| (i as u32 ^ counter) as u8).collect::<Vec<u8>>().into();
                    let ty = MessageType::LIVE_UPDATES;
                    if up {
                        if let Ok(id) = p.client.send(ty, body.clone(), SendOptions::default()) {
                            to_server.sent.insert(id.0, body);
                        }
                    } else if let Ok(id) = p.server_session().send(ty, body.clone(), SendOptions::default()) {
                        to_client.sent.insert(id.0, body);
                    }
                }
                Op::Flush => {
                    p.flush();
                }
                Op::Deliver { to_server: up } => {
                    let q = if up { &mut p.to_server } else { &mut p.to_client };
                    if let Some((r, b)) = q.pop_front() {
                        history[up as usize].push((r, b.clone()));
                        if up {
                            p.server.handle_input(p.now, r, &b);
                        } else {
                            p.client.handle_input(p.now, xtmp_core::session::PathId(0), &b);
                        }
                        p.collect();
                    }
                }
                Op::Drop { to_server: up } => {
                    let q = if up { &mut p.to_server } else { &mut p.to_client };
                    q.pop_front();
                }
                Op::Duplicate { to_server: up } => {
                    let q = if up { &mut p.to_server } else { &mut p.to_client };
                    if let Some(front) = q.front().cloned() {
                        q.push_back(front);
                    }
                }
                Op::Swap { to_server: up } => {
                    let q = if up { &mut p.to_server } else { &mut p.to_client };
                    if q.len() >= 2 {
                        q.swap(0, 1);
                    }
                }
                Op::Replay { to_server: up, index } => {
                    let h = &history[up as usize];
                    if !h.is_empty() {
                        let item = h[index % h.len()].clone();
                        let q = if up { &mut p.to_server } else { &mut p.to_client };
                        q.push_front(item);
                    }
                }
                Op::Flip { to_server: up, byte, bit } => {
                    let q = if up { &mut p.to_server } else { &mut p.to_client };
                    if let Some((_, b)) = q.front_mut() {
                        let i = byte % b.len();
                        b[i] ^= 1 << bit;
                    }
                }
                Op::Advance { ms } => {
                    p.now += Duration::from_millis(ms);
                    p.client.handle_timeout(p.now);
                    p.server.handle_timeout(p.now);
                    p.collect();
                }
                Op::UpdateKey { client } => {
                    let now = p.now;
                    if client {
                        p.client.update_key_now(now);
                    } else {
                        p.server_session().update_key_now(now);
                    }
                }
            }
            to_server.check(&p.server_events, seen_s)?;
            to_client.check(&p.client_events, seen_c)?;
            seen_s = p.server_events.len();
            seen_c = p.client_events.len();
        }
        // Honest traffic and a hostile network never make either side
        // close: damage is dropped, not fatal.
        prop_assert!(p.client.is_established(), "{:?}", p.client_events.last());
        prop_assert!(p.server_session().is_established());
    }
}
