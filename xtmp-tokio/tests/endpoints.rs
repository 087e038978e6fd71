//! Connecting by endpoint string: pinned keys, the registry file, trust on
//! first use, and what is refused before any packet is sent.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::IdentityKeypair;
use xtmp_core::session::CloseReason;
use xtmp_core::wire::MessageType;
use xtmp_tokio::xtmp_adapter::ConnectError;
use xtmp_tokio::{Client, ClientSetup, Endpoint, Error, Reply, Router, Server, ServerSetup, Transport};

fn identity(seed: u8) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([seed; 32])).unwrap())
}

async fn server(id: &Arc<IdentityKeypair>, transport: Transport) -> Server {
    let router = Router::new().route(MessageType::REGISTRY_QUERY, |req| async move {
        Ok(Reply::new(MessageType::REGISTRY_QUERY, req.message.body))
    });
    Server::bind(ServerSetup::new(id.clone()), transport, "127.0.0.1:0".parse().unwrap(), router).await.unwrap()
}

async fn echo(client: &Client) {
    let answer = client.request(MessageType::REGISTRY_QUERY, Bytes::from_static(b"ping")).await.unwrap();
    assert_eq!(&answer.body[..], b"ping");
}

/// A short handshake timeout: a server with another identity stays silent.
fn quick(mut setup: ClientSetup) -> ClientSetup {
    let mut session = (*setup.session).clone();
    session.handshake_timeout = std::time::Duration::from_secs(1);
    setup.session = Arc::new(session);
    setup
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtmp-tokio-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("registry")
}

#[tokio::test]
async fn an_endpoint_key_pins_the_server_over_tcp_and_udp() {
    let id = identity(1);
    for (scheme, transport) in [("xtmp", Transport::Tcp), ("xtmp+udp", Transport::Udp)] {
        let s = server(&id, transport).await;
        let e: Endpoint = format!("{scheme}://{}?key={}", s.local_addr(), id.key_id()).parse().unwrap();
        let client = Client::connect_to(&e, ClientSetup::registry(None, false)).await.unwrap();
        echo(&client).await;
        // The same address pinned to another key: refused.
        let e: Endpoint = format!("{scheme}://{}?key={}", s.local_addr(), identity(2).key_id()).parse().unwrap();
        match Client::connect_to(&e, quick(ClientSetup::registry(None, false))).await {
            Err(Error::Closed(CloseReason::HandshakeTimeout | CloseReason::HandshakeFailed(_))) => {}
            other => panic!("{scheme}: expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unpinned_server_is_refused_before_connecting() {
    let e: Endpoint = "xtmp://127.0.0.1:9".parse().unwrap();
    match Client::connect_to(&e, ClientSetup::registry(None, false)).await {
        Err(Error::Connect(ConnectError::Unpinned(_))) => {}
        other => panic!("expected Unpinned, got {other:?}"),
    }
}

#[tokio::test]
async fn the_registry_maps_a_name_to_an_address_and_a_key() {
    let id = identity(3);
    let s = server(&id, Transport::Tcp).await;
    let path = temp("registry");
    std::fs::write(&path, format!("# test\nbpci.main  {}  {}\n", s.local_addr(), id.key_id())).unwrap();
    let client =
        Client::connect_to(&"xtmp://bpci.main".parse().unwrap(), ClientSetup::registry(Some(path.clone()), false))
            .await
            .unwrap();
    echo(&client).await;
    // A malformed registry is reported with its line.
    std::fs::write(&path, "bpci.main\n").unwrap();
    let err =
        Client::connect_to(&"xtmp://bpci.main".parse().unwrap(), ClientSetup::registry(Some(path.clone()), false))
            .await
            .unwrap_err();
    assert!(err.to_string().contains(":1: a name without an address"), "{err}");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn trust_on_first_use_records_the_server_then_refuses_another() {
    let path = temp("tofu");
    let first = identity(4);
    let s = server(&first, Transport::Tcp).await;
    let addr = s.local_addr();
    let e: Endpoint = format!("xtmp://{addr}").parse().unwrap();
    let client = Client::connect_to(&e, ClientSetup::registry(Some(path.clone()), true)).await.unwrap();
    echo(&client).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&first.key_id().to_string()), "{text}");
    // Another server on the same host (the registry pins per host): the
    // recorded key is required now.
    let impostor = server(&identity(5), Transport::Tcp).await;
    let e2: Endpoint = format!("xtmp://{}", impostor.local_addr()).parse().unwrap();
    match Client::connect_to(&e2, quick(ClientSetup::registry(Some(path.clone()), true))).await {
        Err(Error::Closed(CloseReason::HandshakeTimeout | CloseReason::HandshakeFailed(_))) => {}
        other => panic!("expected the impostor to be refused, got {other:?}"),
    }
    // The first server still is.
    let again = Client::connect_to(&e, ClientSetup::registry(Some(path.clone()), true)).await.unwrap();
    echo(&again).await;
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

/// `close` returns once the server has been told, not after the drain
/// period (here an hour) in which the session still ignores stray frames.
#[tokio::test]
async fn close_returns_once_the_server_is_told_not_after_the_drain_period() {
    let id = identity(5);
    for transport in [Transport::Tcp, Transport::Udp] {
        let s = server(&id, transport).await;
        let mut setup = ClientSetup::pinned(id.public().clone());
        let mut session = (*setup.session).clone();
        session.drain_period = std::time::Duration::from_secs(3600);
        setup.session = Arc::new(session);
        let client = Client::connect(s.local_addr(), transport, setup).await.unwrap();
        echo(&client).await;
        let closed = tokio::time::timeout(std::time::Duration::from_secs(60), client.close()).await;
        match closed {
            Ok(CloseReason::Local { reason, .. }) => assert_eq!(reason, "client closed", "{transport:?}"),
            other => panic!("{transport:?}: close did not return as it should: {other:?}"),
        }
        assert!(matches!(client.state(), xtmp_tokio::ConnectionState::Closed(_)));
        assert!(client.request(MessageType::REGISTRY_QUERY, Bytes::new()).await.is_err());
    }
}
