//! Admission and bad peers: a burst of honest clients from one address,
//! peers that break the framing or stall, bad WebSocket upgrades.

use super::*;

/// A burst of honest clients from one address (a NAT in front of many
/// nodes), far beyond its prefix's share of the half-open slots: each
/// hello over the share is answered with Busy, its client waits and tries
/// again, and every client connects (SPEC.md 3.2, "Busy").
pub async fn a_burst_from_one_address(pair: Pair) {
    for t in TRANSPORTS {
        let mut endpoint = (*ServerSetup::new(crate::harness::identity()).endpoint).clone();
        endpoint.max_half_open_per_prefix = 2;
        endpoint.busy_retry_after = Duration::from_millis(20);
        // Under load, hellos prove their address first (a Retry, on every
        // transport); proven ones count toward the prefix's share.
        endpoint.retry = xtmp_core::endpoint::RetryPolicy::UnderLoad(2);
        let mut setup = ServerSetup::new(crate::harness::identity());
        setup.endpoint = Arc::new(endpoint);
        let server = pair.serve_with(setup, t, echo()).await;
        let addr = server.local_addr();
        let connects: Vec<_> = (0..24)
            .map(|_| {
                let (rt, setup) = (pair.client.clone(), pair.setup());
                pair.spawn(async move { xtmp_adapter::Client::connect(rt, addr, t, setup).await })
            })
            .collect();
        let clients: Vec<Client> = join_all(connects)
            .await
            .into_iter()
            .map(|c| c.unwrap_or_else(|e| panic!("{t:?}: a client of the burst failed: {e}")))
            .collect();
        for (i, c) in clients.iter().enumerate() {
            ask(c, format!("burst {i}").as_bytes()).await;
        }
        let stats = server.stats().await;
        assert_eq!(stats.endpoint.sessions_created, 24, "{t:?}: {stats:?}");
        assert!(stats.endpoint.busy_sent > 0, "{t:?}: the burst passed the share: {stats:?}");
        assert!(stats.endpoint.retries_sent > 0, "{t:?}: the burst passed the Retry threshold: {stats:?}");
        server.shutdown(Duration::from_secs(1)).await;
    }
}

/// Bad peers lose their own connection and nothing else: garbage, an
/// oversized frame, half a header then silence, silence; clients that
/// complete a handshake and abort at once, three times as many as the
/// half-open limit (their draining sessions must not hold its slots);
/// garbage datagrams are dropped and counted. A well-behaved client is
/// answered throughout.
pub async fn bad_peers(pair: Pair) {
    let mut endpoint = (*ServerSetup::new(crate::harness::identity()).endpoint).clone();
    endpoint.hello_timeout = Duration::from_millis(300);
    endpoint.max_half_open = 4;
    let setup = ServerSetup { endpoint: Arc::new(endpoint), ..ServerSetup::new(crate::harness::identity()) };

    let server = pair.serve_with(setup.clone(), Transport::Tcp, echo()).await;
    let addr = server.local_addr();
    let good = pair.connect(addr, Transport::Tcp, pair.setup()).await;
    let mut oversized = [0u8; HEADER_LEN];
    oversized[offset::MAGIC..offset::MAGIC + 4].copy_from_slice(&MAGIC);
    oversized[offset::VERSION] = VERSION;
    oversized[offset::PAYLOAD_LEN..offset::PAYLOAD_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let peers: [(&str, &[u8]); 4] =
        [("garbage", &[0x5a; 300]), ("oversized", &oversized), ("half a header", &oversized[..10]), ("silent", &[])];
    for (what, bytes) in peers {
        let mut link = pair.client.dial(addr, PathKind::Stream).await.expect("the server accepts");
        send_all(&mut *link, bytes).await;
        assert_eq!(closed_by_server(&mut *link).await, 0, "{what}: the server answered a bad peer");
        ask(&good, what.as_bytes()).await;
    }
    // Well within one drain period, each of these still connects.
    for _ in 0..12 {
        pair.connect(addr, Transport::Tcp, short_handshake(pair.setup())).await.abort();
    }
    ask(&good, b"after the churn").await;
    let stats = server.stats().await;
    assert_eq!(stats.endpoint.hellos_shed, 0, "{stats:?}");
    // With several shards, a connection that never sends the 16 bytes that
    // name its shard (half a header, silence) is closed before it reaches
    // an endpoint; with one, the endpoint resets it.
    let unrouted = if stats.shards > 1 { 2 } else { 0 };
    assert_eq!(stats.endpoint.streams_reset, 4 - unrouted, "{stats:?}");
    assert_eq!(stats.connections_dropped, unrouted, "{stats:?}");
    assert!(stats.sessions <= 13, "the good client's and the draining ones: {stats:?}");
    server.shutdown(Duration::from_secs(1)).await;

    let server = pair.serve_with(setup, Transport::Udp, echo()).await;
    let addr = server.local_addr();
    let good = pair.connect(addr, Transport::Udp, pair.setup()).await;
    let mut noise = pair.client.dial(addr, PathKind::Datagram).await.expect("a socket");
    for i in 0..50u8 {
        let bytes: &[u8] = if i % 2 == 0 { &[0xa5; 700] } else { &oversized };
        send_all(&mut *noise, bytes).await;
    }
    ask(&good, b"after the noise").await;
    // Datagrams are unordered across sockets: wait until all 50 were seen.
    loop {
        let stats = server.stats().await;
        if stats.endpoint.dropped >= 50 {
            break;
        }
        yield_now().await;
    }
    let mut buf = [0u8; 2048];
    let answered = std::future::poll_fn(|cx| match noise.poll_recv(cx, &mut buf) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending => Poll::Ready(None),
    })
    .now_or_never()
    .flatten();
    assert!(answered.is_none(), "the server answered noise: {answered:?}");
    server.shutdown(Duration::from_secs(1)).await;
}

/// A WebSocket upgrade request for `/xtmp`, offering `protocol` if any.
fn upgrade_request(protocol: Option<&str>) -> String {
    let offer = protocol.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default();
    format!(
        "GET /xtmp HTTP/1.1\r\nHost: bpci\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )
}

/// Reads an HTTP response head (up to the blank line).
async fn response_head(link: &mut dyn Link) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match std::future::poll_fn(|cx| link.poll_recv(cx, &mut buf)).await {
            Ok(1) => head.push(buf[0]),
            other => panic!("the response head ended early ({other:?}): {:?}", String::from_utf8_lossy(&head)),
        }
    }
    String::from_utf8(head).expect("an ASCII head").to_ascii_lowercase()
}

/// A client's WebSocket frame (masked, with the all-zero key).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

/// Bad WebSocket peers lose their own connection and nothing else: bytes
/// that are not HTTP, an upgrade without the `xtmp` subprotocol (refused
/// with 400), a text message, and a binary message that is not XTMP (the
/// endpoint resets that stream). A well-behaved client is answered
/// throughout.
pub async fn bad_websocket_peers(pair: Pair) {
    let server = pair.serve(Transport::WebSocket, echo()).await;
    let addr = server.local_addr();
    let good = pair.connect(addr, Transport::WebSocket, pair.setup()).await;
    let dial = || async { pair.client.dial(addr, PathKind::Stream).await.expect("the server accepts") };

    let mut link = dial().await;
    send_all(&mut *link, &[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00]).await;
    send_all(&mut *link, b"\r\n\r\n").await;
    closed_by_server(&mut *link).await;
    ask(&good, b"not http").await;

    let mut link = dial().await;
    send_all(&mut *link, upgrade_request(Some("chat")).as_bytes()).await;
    let head = response_head(&mut *link).await;
    assert!(head.starts_with("http/1.1 400"), "an upgrade without xtmp was answered: {head}");
    closed_by_server(&mut *link).await;
    ask(&good, b"no subprotocol").await;

    for (what, frame) in [("text", client_frame(0x1, b"hello")), ("binary garbage", client_frame(0x2, &[0x5a; 300]))] {
        let mut link = dial().await;
        send_all(&mut *link, upgrade_request(Some("chat, xtmp")).as_bytes()).await;
        let head = response_head(&mut *link).await;
        assert!(head.starts_with("http/1.1 101"), "{what}: {head}");
        assert!(head.contains("sec-websocket-protocol: xtmp\r\n"), "{what}: {head}");
        send_all(&mut *link, &frame).await;
        closed_by_server(&mut *link).await;
        ask(&good, what.as_bytes()).await;
    }
    let stats = server.stats().await;
    assert_eq!(stats.endpoint.streams_reset, 1, "only the binary garbage reached the endpoint: {stats:?}");
    assert_eq!(stats.sessions, 1, "{stats:?}");
    server.shutdown(Duration::from_secs(1)).await;
}

/// Reads from `link` until the server closes it; the bytes it sent back.
async fn closed_by_server(link: &mut dyn Link) -> usize {
    let mut buf = [0u8; 4096];
    let mut got = 0;
    loop {
        match std::future::poll_fn(|cx| link.poll_recv(cx, &mut buf)).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got += n,
        }
    }
}

async fn send_all(link: &mut dyn Link, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let n = std::future::poll_fn(|cx| link.poll_send(cx, bytes)).await.expect("the send is taken");
        bytes = &bytes[n..];
    }
}
