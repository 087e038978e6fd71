//! The client and the server on loopback, over TCP and UDP.

use std::sync::Arc;

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::IdentityKeypair;
use xtmp_core::session::{CloseReason, ErrorCode};
use xtmp_core::wire::MessageType;
use xtmp_tokio::{Client, ClientSetup, Error, Rejection, Reply, Router, Server, ServerSetup, Transport};

fn identity(seed: u8) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([seed; 32])).unwrap())
}

fn router() -> Router {
    Router::new()
        .route(MessageType::REGISTRY_QUERY, |req| async move {
            let mut body = b"answer to ".to_vec();
            body.extend_from_slice(&req.message.body);
            Ok(Reply::new(MessageType::REGISTRY_QUERY, body))
        })
        .route(MessageType::WALLET_AUTH, |_| async move { Err(Rejection::refused("wallet locked")) })
}

async fn pair(transport: Transport) -> (Server, Client) {
    let id = identity(1);
    let server =
        Server::bind(ServerSetup::new(id.clone()), transport, "127.0.0.1:0".parse().unwrap(), router()).await.unwrap();
    let client =
        Client::connect(server.local_addr(), transport, ClientSetup::pinned(id.public().clone())).await.unwrap();
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_their_own_answers_over_tcp_and_udp() {
    for transport in [Transport::Tcp, Transport::Udp] {
        let (_server, client) = pair(transport).await;
        // 200 concurrent requests, some large enough to be fragmented on UDP.
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                let len = if i % 20 == 0 { 5_000 } else { 16 };
                let body: Vec<u8> = format!("{i:08}").into_bytes().into_iter().cycle().take(len).collect();
                let answer = c.request(MessageType::REGISTRY_QUERY, Bytes::from(body.clone())).await.unwrap();
                assert_eq!(answer.message_type, MessageType::REGISTRY_QUERY);
                assert_eq!(&answer.body[..10], b"answer to ");
                assert_eq!(&answer.body[10..], &body[..], "{transport:?}: request {i} got another's answer");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

#[tokio::test]
async fn refusals_and_unknown_types_are_typed_errors() {
    for transport in [Transport::Tcp, Transport::Udp] {
        let (_server, client) = pair(transport).await;
        match client.request(MessageType::WALLET_AUTH, Bytes::from_static(b"w1")).await {
            Err(Error::Remote { code, reason }) => {
                assert_eq!(code, ErrorCode::REFUSED);
                assert_eq!(reason, "wallet locked");
            }
            other => panic!("{transport:?}: expected a refusal, got {other:?}"),
        }
        match client.request(MessageType::BUNDLE_SYNC, Bytes::new()).await {
            Err(Error::Remote { code, .. }) => assert_eq!(code, ErrorCode::UNKNOWN_TYPE),
            other => panic!("{transport:?}: expected UNKNOWN_TYPE, got {other:?}"),
        }
        // The session survives both.
        let ok = client.request(MessageType::REGISTRY_QUERY, Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(&ok.body[..], b"answer to x");
    }
}

#[tokio::test]
async fn acknowledged_sends_resolve_once_the_server_has_them() {
    for transport in [Transport::Tcp, Transport::Udp] {
        let (_server, client) = pair(transport).await;
        let sends: Vec<_> = (0..50u8)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move { c.send(MessageType::BUNDLE_SUBMIT, Bytes::from(vec![i; 300])).await })
            })
            .collect();
        for s in sends {
            s.await.unwrap().unwrap();
        }
        // One at a time too (each waits for the peer's delayed ACK).
        client.send(MessageType::BUNDLE_SUBMIT, Bytes::from_static(b"last")).await.unwrap();
    }
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused() {
    // The server drops a hello keyed to an identity it does not hold
    // (mac1, SPEC.md 2.2): it does not even reveal that it is there, so
    // the client's handshake times out (shortened here).
    let server = Server::bind(ServerSetup::new(identity(2)), Transport::Tcp, "127.0.0.1:0".parse().unwrap(), router())
        .await
        .unwrap();
    let mut pinned = ClientSetup::pinned(identity(1).public().clone());
    let mut session = (*pinned.session).clone();
    session.handshake_timeout = std::time::Duration::from_secs(1);
    pinned.session = Arc::new(session);
    match Client::connect(server.local_addr(), Transport::Tcp, pinned).await {
        Err(Error::Closed(CloseReason::HandshakeTimeout)) => {}
        other => panic!("expected the handshake to time out, got {other:?}"),
    }
}
