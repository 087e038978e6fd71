//! WebSocket paths (`xtmp+ws://`, SPEC 1.7): XTMP's byte stream carried in
//! binary WebSocket messages over a runtime's TCP [`Link`], for networks
//! that pass only web traffic.
//!
//! Both sides ask for the `xtmp` subprotocol; a server refuses an upgrade
//! that does not offer it. Message boundaries mean nothing (each message
//! is a chunk of the stream), a text message ends the path, and XTMP's own
//! encryption protects the frames (no `wss`). Because the WebSocket layer
//! only wraps a [`Link`], every runtime gets it from its TCP sockets.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Bytes, Message, client::IntoClientRequest};
use futures_channel::mpsc;
use futures_core::Stream;
use futures_sink::Sink;
use xtmp_core::session::PathKind;

use crate::endpoint::Host;
use crate::runtime::{Link, Listener, Runtime, sleep_until};

/// The subprotocol both sides name in the upgrade.
pub const SUBPROTOCOL: &str = "xtmp";

/// How long an upgrade may take, on either side, before the connection is
/// dropped.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest WebSocket message accepted (SPEC 1.7); a peer sending a
/// larger one loses the connection.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Upgrades a server holds at once; more connections wait in the listen
/// backlog.
pub const MAX_PENDING_UPGRADES: usize = 256;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        // Each message goes to the socket as it is sent; what the socket
        // does not take waits for `poll_flush`.
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// The request URI a client sends for `host`, `port` and `path`.
pub fn uri(host: &Host, port: u16, path: &str) -> String {
    format!("ws://{host}:{port}{path}")
}

/// A [`Link`] seen as `futures-io` byte stream, for the WebSocket codec.
struct LinkIo(Box<dyn Link>);

impl futures_io::AsyncRead for LinkIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.get_mut().0.poll_recv(cx, buf)
    }
}

impl futures_io::AsyncWrite for LinkIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().0.poll_send(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().0.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().0.poll_shutdown(cx)
    }
}

/// A stream path over WebSocket.
struct WsLink {
    ws: WebSocketStream<LinkIo>,
    /// What the caller has not read yet of the last binary message.
    rest: Bytes,
}

fn ws_error(e: async_tungstenite::tungstenite::Error) -> io::Error {
    match e {
        async_tungstenite::tungstenite::Error::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

impl Link for WsLink {
    fn kind(&self) -> PathKind {
        PathKind::Stream
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            if !self.rest.is_empty() {
                let n = self.rest.len().min(buf.len());
                buf[..n].copy_from_slice(&self.rest.split_to(n));
                return Poll::Ready(Ok(n));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(0)),
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
                Some(Ok(Message::Binary(b))) => self.rest = b,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message on an XTMP WebSocket path",
                    )));
                }
                // Pings are answered by the codec; pongs and raw frames
                // carry nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            }
        }
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(ws_error)?;
        // A message carries a chunk of the byte stream (SPEC 1.7), at most
        // what a receiver must take.
        let chunk = &buf[..buf.len().min(MAX_MESSAGE)];
        ws.start_send(Message::Binary(Bytes::copy_from_slice(chunk))).map_err(ws_error)?;
        Poll::Ready(Ok(chunk.len()))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_error)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(ws_error)
    }
}

/// `fut`'s output, or a timed-out error after [`UPGRADE_TIMEOUT`].
async fn within<T>(rt: &dyn Runtime, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    let mut fut = std::pin::pin!(fut);
    let mut timeout = std::pin::pin!(sleep_until(rt, Instant::now() + UPGRADE_TIMEOUT));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        ready!(timeout.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the WebSocket upgrade timed out")))
    })
    .await
}

/// Upgrades a client's TCP `link` to a WebSocket path at `uri`.
pub(crate) async fn connect(rt: &dyn Runtime, link: Box<dyn Link>, uri: &str) -> io::Result<Box<dyn Link>> {
    let mut request =
        uri.into_client_request().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    request.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    let upgrade = async_tungstenite::client_async_with_config(request, LinkIo(link), Some(config()));
    let (ws, _) = within(rt, async { upgrade.await.map_err(ws_error) }).await?;
    Ok(Box::new(WsLink { ws, rest: Bytes::new() }))
}

/// Whether the request offers the `xtmp` subprotocol.
fn offers_xtmp(request: &Request) -> bool {
    request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
}

/// Upgrades a server's accepted TCP `link` to a WebSocket path. Any request
/// path is accepted (a reverse proxy may route by it).
async fn accept(rt: &dyn Runtime, link: Box<dyn Link>) -> io::Result<Box<dyn Link>> {
    // The signature is tungstenite's `Callback`.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        if !offers_xtmp(request) {
            let mut refusal = ErrorResponse::new(Some(String::from("the xtmp WebSocket subprotocol is required")));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            return Err(refusal);
        }
        response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        Ok(response)
    };
    let upgrade = async_tungstenite::accept_hdr_async_with_config(LinkIo(link), check, Some(config()));
    let ws = within(rt, async { upgrade.await.map_err(ws_error) }).await?;
    Ok(Box::new(WsLink { ws, rest: Bytes::new() }))
}

/// An upgrade's end: the peer, and its link if the upgrade succeeded.
type Upgraded = (SocketAddr, Option<Box<dyn Link>>);

/// A TCP listener whose connections are upgraded to WebSocket paths
/// before they are accepted. Upgrades run as their own tasks (at most
/// [`MAX_PENDING_UPGRADES`], and at most a configured share of them from
/// one address prefix, each for at most [`UPGRADE_TIMEOUT`]), so a slow
/// one holds up nobody, and a few peers that start upgrades and stall
/// hold only their prefix's share: a connection beyond it is closed at
/// once.
pub(crate) struct WsListener {
    inner: Box<dyn Listener>,
    rt: Arc<dyn Runtime>,
    done_tx: mpsc::UnboundedSender<Upgraded>,
    done: mpsc::UnboundedReceiver<Upgraded>,
    pending: usize,
    /// Upgrades in progress by address prefix.
    by_prefix: HashMap<IpAddr, usize>,
    /// IPv4 and IPv6 prefix lengths, and the upgrades one prefix may run.
    prefixes: (u8, u8, usize),
}

impl WsListener {
    pub(crate) fn new(rt: Arc<dyn Runtime>, inner: Box<dyn Listener>, prefixes: (u8, u8, usize)) -> WsListener {
        let (done_tx, done) = mpsc::unbounded();
        WsListener { inner, rt, done_tx, done, pending: 0, by_prefix: HashMap::new(), prefixes }
    }

    fn prefix(&self, peer: SocketAddr) -> IpAddr {
        xtmp_core::endpoint::prefix_of(peer.ip(), self.prefixes.0, self.prefixes.1)
    }
}

impl Listener for WsListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Box<dyn Link>, SocketAddr)>> {
        loop {
            // Every upgrade reports, failed ones without a link, so that a
            // listener waiting for a free slot is woken.
            while let Poll::Ready(Some((peer, link))) = Pin::new(&mut self.done).poll_next(cx) {
                self.pending -= 1;
                let prefix = self.prefix(peer);
                if let Some(n) = self.by_prefix.get_mut(&prefix) {
                    *n -= 1;
                    if *n == 0 {
                        self.by_prefix.remove(&prefix);
                    }
                }
                if let Some(link) = link {
                    return Poll::Ready(Ok((link, peer)));
                }
            }
            if self.pending >= MAX_PENDING_UPGRADES {
                return Poll::Pending;
            }
            let (link, peer) = ready!(self.inner.poll_accept(cx))?;
            let prefix = self.prefix(peer);
            let n = self.by_prefix.entry(prefix).or_default();
            if *n >= self.prefixes.2 {
                // Its prefix has its share of upgrades running: closed.
                tracing::debug!(%peer, "WebSocket upgrade refused: its prefix has its share running");
                drop(link);
                continue;
            }
            *n += 1;
            self.pending += 1;
            let rt = self.rt.clone();
            let tx = self.done_tx.clone();
            self.rt.spawn(Box::pin(async move {
                let upgraded = accept(rt.as_ref(), link).await.ok();
                let _ = tx.unbounded_send((peer, upgraded));
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(protocols: &[&str]) -> Request {
        let mut r = Request::new(());
        for p in protocols {
            r.headers_mut().append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(p).unwrap());
        }
        r
    }

    #[test]
    fn the_xtmp_subprotocol_is_found_in_any_offer() {
        assert!(offers_xtmp(&request(&["xtmp"])));
        assert!(offers_xtmp(&request(&["chat, xtmp"])));
        assert!(offers_xtmp(&request(&["chat", " xtmp "])));
        assert!(!offers_xtmp(&request(&[])));
        assert!(!offers_xtmp(&request(&["xtmp2, chat"])));
    }

    #[test]
    fn uris_bracket_ipv6_hosts() {
        let v6 = Host::Ip("::1".parse().unwrap());
        assert_eq!(uri(&v6, 7778, "/"), "ws://[::1]:7778/");
        assert_eq!(uri(&Host::Name("bpci".into()), 80, "/xtmp"), "ws://bpci:80/xtmp");
    }
}
