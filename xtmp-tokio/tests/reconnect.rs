//! Reconnection on loopback: a TCP proxy between the client and the server
//! that the test cuts mid-stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::IdentityKeypair;
use xtmp_core::wire::MessageType;
use xtmp_tokio::{Backoff, Client, ClientSetup, ConnectionState, Reply, Router, Server, ServerSetup, Transport};

/// Forwards connections to `target`; bumping the generation cuts every
/// connection open at the time (both sockets are dropped: the peers see
/// the connection end, as when a middlebox or the server drops it).
async fn proxy(target: SocketAddr) -> (SocketAddr, watch::Sender<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, generation) = watch::channel(0u64);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut generation = generation.clone();
            let born = *generation.borrow_and_update();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = generation.wait_for(|g| *g != born) => {}
                }
            });
        }
    });
    (addr, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_redialed_and_every_send_arrives_exactly_once() {
    const N: usize = 600;
    let id = Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([5; 32])).unwrap());
    let seen: Arc<Mutex<HashMap<Bytes, usize>>> = Arc::default();
    let all = Arc::new(Notify::new());
    let (s2, a2) = (seen.clone(), all.clone());
    let router = Router::new().route(MessageType::WALLET_REGISTER, move |r| {
        let (seen, all) = (s2.clone(), a2.clone());
        async move {
            let mut seen = seen.lock().unwrap();
            *seen.entry(r.message.body).or_default() += 1;
            if seen.len() == N {
                all.notify_one();
            }
            Ok(Reply::new(MessageType::WALLET_REGISTER, Bytes::new()))
        }
    });
    let server = Server::bind(ServerSetup::new(id.clone()), Transport::Tcp, "127.0.0.1:0".parse().unwrap(), router)
        .await
        .unwrap();
    let (via, cut) = proxy(server.local_addr()).await;
    let backoff = Backoff { initial: Duration::from_millis(20), ..Backoff::default() };
    let setup = ClientSetup { reconnect: Some(backoff), ..ClientSetup::pinned(id.public().clone()) };
    let client = Client::connect(via, Transport::Tcp, setup).await.unwrap();
    assert_eq!(client.state(), ConnectionState::Connected);

    let send = |i: usize| {
        let c = client.clone();
        tokio::spawn(async move { c.send(MessageType::WALLET_REGISTER, Bytes::from(format!("wallet {i:04}"))).await })
    };
    // Half before the cut, acknowledged.
    let first: Vec<_> = (0..N / 2).map(send).collect();
    for s in first {
        s.await.unwrap().unwrap();
    }
    // The state is observable: the next change is the loss.
    let mut changed = Box::pin(client.state_changed());
    assert!(futures::poll!(&mut changed).is_pending());
    cut.send_modify(|g| *g += 1);
    // The other half while the connection is being lost and redialed.
    let second: Vec<_> = (N / 2..N).map(send).collect();
    assert!(matches!(changed.await, ConnectionState::Reconnecting { .. }));
    for s in second {
        s.await.unwrap().unwrap();
    }
    all.notified().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), N, "every message arrived");
    assert!(seen.values().all(|&n| n == 1), "a message was applied twice");
    assert_eq!(client.state(), ConnectionState::Connected);
    let stats = client.stats();
    assert!(stats.paths_redialed >= 1, "{stats:?}");
    assert_eq!(stats.sessions, 1, "the session was resumed, not replaced: {stats:?}");
    // And it still answers.
    let r = client.request(MessageType::WALLET_REGISTER, Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(r.message_type, MessageType::WALLET_REGISTER);
}
