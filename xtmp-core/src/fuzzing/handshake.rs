//! The handshake from both ends: a client fed server bytes, and a server
//! endpoint fed client bytes. Real transcripts (fixed seeds) let the
//! fuzzer go deep: it can deliver the real frames in any order, mutate,
//! truncate or extend them (CRC fixed or not), and mix in forged frames
//! and raw bytes, while time moves on.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use arbitrary::Unstructured;

use super::fixture::{self, forged_frame, mutate, transcript};
use crate::endpoint::{Remote, RemoteKind};
use crate::session::{Event, PathId};

/// A client fed server bytes.
pub fn handshake_client(data: &[u8]) {
    let t = transcript();
    let mut client = fixture::client();
    let sid = client.local_session_id();
    let mut now = fixture::start();
    let mut buf = alloc::vec![0u8; 65_536];
    let mut u = Unstructured::new(data);
    let mut connected = false;
    while !u.is_empty() {
        let input = match u.int_in_range(0..=5u8) {
            Ok(0 | 1) => u.choose(&t.server).ok().cloned(),
            Ok(2) => u.choose(&t.server).ok().and_then(|d| mutate(&mut u, d).ok()),
            Ok(3) => forged_frame(&mut u, &[sid]).ok(),
            Ok(4) => u.arbitrary::<Vec<u8>>().ok(),
            _ => {
                now = now.saturating_add(Duration::from_millis(u.int_in_range(0..=3_000u64).unwrap_or(0)));
                client.handle_timeout(now);
                None
            }
        };
        if let Some(bytes) = input {
            client.handle_input(now, PathId(0), &bytes);
        }
        let mut sent = 0;
        while let Ok(Some(_)) = client.poll_transmit(now, &mut buf) {
            sent += 1;
            assert!(sent < 1_000, "the client never stops sending");
        }
        while let Some(e) = client.poll_event() {
            if let Event::Connected { peer, .. } = e {
                assert!(!connected, "connected twice");
                connected = true;
                // Pinned trust: only the real server completes a handshake.
                assert_eq!(peer.as_ref(), Some(fixture::identity().public()), "connected to someone else");
            }
        }
        assert!(client.is_closed() || client.poll_timeout().is_some(), "a live session without a timer");
    }
}

/// A server endpoint fed client bytes from three addresses (the real one,
/// another datagram address, and a stream). An address that never sent
/// the real client's frames is never sent more than three times what it
/// sent on a datagram path (the amplification limit), and every session
/// comes from some input.
pub fn handshake_server(data: &[u8]) {
    let t = transcript();
    let mut server = fixture::endpoint();
    let mut now = fixture::start();
    let mut buf = alloc::vec![0u8; 65_536];
    let mut u = Unstructured::new(data);
    let remotes = [
        fixture::remote(),
        Remote { addr: SocketAddr::from(([198, 51, 100, 9], 5000)), kind: RemoteKind::Datagram },
        Remote { addr: SocketAddr::from(([198, 51, 100, 10], 5001)), kind: RemoteKind::Stream },
    ];
    // Per remote: bytes in, bytes out, and whether it sent real client frames.
    let mut traffic: BTreeMap<usize, (u64, u64, bool)> = BTreeMap::new();
    // The client's own session id.
    let ids = [t.client_sid];
    let mut inputs = 0;
    while !u.is_empty() {
        let Ok(r) = u.choose_index(remotes.len()) else { break };
        let input = match u.int_in_range(0..=5u8) {
            Ok(0 | 1) => u.choose(&t.client).ok().cloned().map(|d| (d, true)),
            Ok(2) => u.choose(&t.client).ok().and_then(|d| mutate(&mut u, d).ok()).map(|d| (d, false)),
            Ok(3) => forged_frame(&mut u, &ids).ok().map(|d| (d, false)),
            Ok(4) => u.arbitrary::<Vec<u8>>().ok().map(|d| (d, false)),
            _ => {
                now = now.saturating_add(Duration::from_millis(u.int_in_range(0..=3_000u64).unwrap_or(0)));
                server.handle_timeout(now);
                None
            }
        };
        if let Some((bytes, real)) = input {
            inputs += 1;
            let e = traffic.entry(r).or_default();
            e.0 += bytes.len() as u64;
            e.2 |= real;
            server.handle_input(now, remotes[r], &bytes);
        }
        let mut sent = 0;
        while let Ok(Some((to, len))) = server.poll_transmit(now, &mut buf) {
            sent += 1;
            assert!(sent < 1_000, "the endpoint never stops sending");
            let i = remotes.iter().position(|x| *x == to).expect("sent to an address nobody used");
            traffic.entry(i).or_default().1 += len as u64;
        }
        while server.poll_event().is_some() {}
        for (&i, (got, out, real)) in &traffic {
            let limited = !real && remotes[i].kind == RemoteKind::Datagram;
            assert!(!limited || *out <= 3 * *got, "remote {i}: sent {out} bytes after receiving {got}");
        }
        assert!(server.session_count() <= inputs, "{} sessions from {inputs} inputs", server.session_count());
    }
}
