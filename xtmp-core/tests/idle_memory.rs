//! Heap held by an idle established session (SPEC.md's figures in the
//! README; issue target: under 8 KiB per session, socket buffers aside),
//! measured exactly with dhat's counting allocator. A plain `main`, like
//! `allocations.rs`, so no harness thread allocates meanwhile.
//!
//! Sixty-four clients connect to one endpoint over each path kind, exchange
//! a request and its response, then idle through a heartbeat and the key
//! grace period. The endpoint's growth over its empty state, divided by the
//! sessions, is the server's figure; what dropping the clients frees is the
//! client's. Both are asserted against the bound below, so a regression in
//! per-session memory fails the suite.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::endpoint::{Endpoint, EndpointEvent, Remote, RemoteKind};
use xtmp_core::session::{PathId, PathKind, SendOptions, Session};
use xtmp_core::time::Instant;
use xtmp_core::wire::MessageType;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const SESSIONS: usize = 64;

/// Per-session bound, bytes: the 8 KiB target.
const BOUND: usize = 8 * 1024;

struct Net {
    now: Instant,
    server: Endpoint,
    clients: Vec<(Session, Remote)>,
    buf: Vec<u8>,
}

impl Net {
    /// Moves traffic until none is left, answering requests.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for (c, remote) in &mut self.clients {
                while let Some(t) = c.poll_transmit(self.now, &mut self.buf).unwrap() {
                    self.server.handle_input(self.now, *remote, &self.buf[..t.len]);
                    moved = true;
                }
                while c.poll_event().is_some() {}
            }
            while let Some((remote, len)) = self.server.poll_transmit(self.now, &mut self.buf).unwrap() {
                let (c, _) = self.clients.iter_mut().find(|(_, r)| *r == remote).unwrap();
                c.handle_input(self.now, PathId(0), &self.buf[..len]);
                moved = true;
            }
            while let Some(e) = self.server.poll_event() {
                if let EndpointEvent::Session(h, xtmp_core::session::Event::Message(m)) = e
                    && let Some(s) = self.server.session_mut(h)
                {
                    s.respond(m.id, MessageType::REGISTRY_QUERY, Bytes::from_static(b"ok"), SendOptions::default())
                        .unwrap();
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("traffic never settled");
    }

    /// Lets `d` pass, running every timer on the way.
    fn idle(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.settle();
            let next =
                self.clients.iter().filter_map(|(c, _)| c.poll_timeout()).chain(self.server.poll_timeout()).min();
            let Some(t) = next.filter(|t| *t <= until) else { break };
            self.now = self.now.max(t);
            for (c, _) in &mut self.clients {
                c.handle_timeout(self.now);
            }
            self.server.handle_timeout(self.now);
        }
        self.now = until;
    }
}

fn heap() -> usize {
    dhat::HeapStats::get().curr_bytes
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    for kind in [PathKind::Stream, PathKind::Datagram] {
        let setup = Setup::new(kind);
        let session = Arc::new(setup.session.clone());
        let client_config = Arc::new(setup.client.clone());
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let now = Instant::from_nanos(1_000_000_000);
        let endpoint_config = Arc::new(setup.endpoint);
        let mut net = Net {
            now,
            server: Endpoint::new(now, endpoint_config, &mut rng).unwrap(),
            clients: Vec::with_capacity(SESSIONS),
            buf: vec![0u8; 70_000],
        };
        let empty = heap();
        let remote_kind = if kind == PathKind::Stream { RemoteKind::Stream } else { RemoteKind::Datagram };
        for i in 0..SESSIONS {
            let addr: SocketAddr = format!("192.0.2.{}:40000", i + 1).parse().unwrap();
            let c = Session::connect(net.now, session.clone(), client_config.clone(), kind, &mut rng).unwrap();
            net.clients.push((c, Remote { addr, kind: remote_kind }));
        }
        net.settle();
        for (c, _) in &mut net.clients {
            assert!(c.is_established());
            c.send(MessageType::REGISTRY_QUERY, Bytes::from_static(b"q"), SendOptions::request()).unwrap();
        }
        // Past the first heartbeats and the key grace period: only what an
        // idle session keeps is left.
        net.idle(Duration::from_secs(30));
        let full = heap();
        let clients = std::mem::take(&mut net.clients);
        let with_clients = heap();
        drop(clients);
        let server_only = heap();
        let server = (server_only - empty) / SESSIONS;
        let client = (with_clients - server_only) / SESSIONS;
        println!("{kind:?}: an idle established session holds {server} B on the server, {client} B on the client");
        assert_eq!(full, with_clients);
        dhat::assert!(server < BOUND, "server session: {} B", server);
        dhat::assert!(client < BOUND, "client session: {} B", client);
    }
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
