//! The tokio runtime, as the shared drivers of [`xtmp_adapter`] see it:
//! tasks, timers, TCP and UDP sockets, and name lookup.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Handle;
use xtmp_adapter::runtime::wildcard_for;
use xtmp_adapter::{BoxFuture, DatagramSocket, Link, Listener, Resolver, Runtime, Timer};
use xtmp_core::session::PathKind;

use crate::TokioResolver;

/// A tokio runtime, as the shared drivers take it. It holds the runtime's
/// [`Handle`], so that clients and servers on it may be driven from any
/// thread (another runtime's included): tasks, timers and sockets are
/// created on that runtime.
#[derive(Clone, Debug)]
pub struct Tokio {
    handle: Handle,
}

impl Tokio {
    /// The runtime this is called from.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does); use
    /// [`Tokio::with_handle`] there.
    pub fn current() -> Tokio {
        Tokio { handle: Handle::current() }
    }

    /// The runtime of `handle`.
    pub fn with_handle(handle: Handle) -> Tokio {
        Tokio { handle }
    }

    /// The runtime this is called from, as the shared drivers take it
    /// (panics outside a tokio runtime, as [`Tokio::current`]).
    pub fn shared() -> Arc<dyn Runtime> {
        Arc::new(Tokio::current())
    }
}

impl Runtime for Tokio {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.handle.spawn(task);
    }

    fn timer(&self) -> Box<dyn Timer> {
        Box::new(TokioTimer { handle: self.handle.clone(), sleep: None })
    }

    fn dial(&self, addr: SocketAddr, kind: PathKind) -> BoxFuture<'static, io::Result<Box<dyn Link>>> {
        let handle = self.handle.clone();
        Box::pin(async move {
            let link: Box<dyn Link> = match kind {
                PathKind::Stream => {
                    let s = handle.spawn(TcpStream::connect(addr)).await.map_err(io::Error::other)??;
                    s.set_nodelay(true)?;
                    Box::new(TcpLink(s))
                }
                PathKind::Datagram => {
                    let s = std::net::UdpSocket::bind(wildcard_for(addr))?;
                    s.connect(addr)?;
                    s.set_nonblocking(true)?;
                    let _on = handle.enter();
                    Box::new(UdpLink(UdpSocket::from_std(s)?))
                }
            };
            Ok(link)
        })
    }

    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let handle = self.handle.clone();
        Box::pin(async move {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            let _on = handle.enter();
            Ok(Box::new(TcpListen(TcpListener::from_std(l)?)) as Box<dyn Listener>)
        })
    }

    fn adopt_udp(&self, socket: std::net::UdpSocket) -> io::Result<Box<dyn DatagramSocket>> {
        socket.set_nonblocking(true)?;
        let _on = self.handle.enter();
        Ok(Box::new(UdpServer(UdpSocket::from_std(socket)?)))
    }

    fn resolver(&self) -> Arc<dyn Resolver> {
        Arc::new(TokioResolver::with_handle(self.handle.clone()))
    }
}

struct TokioTimer {
    handle: Handle,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Timer for TokioTimer {
    fn reset(&mut self, deadline: Instant) {
        let at = tokio::time::Instant::from_std(deadline);
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(at),
            None => {
                let _on = self.handle.enter();
                self.sleep = Some(Box::pin(tokio::time::sleep_until(at)));
            }
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

use std::future::Future;

struct TcpLink(TcpStream);

impl Link for TcpLink {
    fn kind(&self) -> PathKind {
        PathKind::Stream
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut b = ReadBuf::new(buf);
        Pin::new(&mut self.0).poll_read(cx, &mut b).map_ok(|()| b.filled().len())
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

struct UdpLink(UdpSocket);

impl Link for UdpLink {
    fn kind(&self) -> PathKind {
        PathKind::Datagram
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut b = ReadBuf::new(buf);
        self.0.poll_recv(cx, &mut b).map_ok(|()| b.filled().len())
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.poll_send(cx, buf)
    }
}

struct TcpListen(TcpListener);

impl Listener for TcpListen {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Box<dyn Link>, SocketAddr)>> {
        self.0.poll_accept(cx).map_ok(|(s, addr)| {
            let _ = s.set_nodelay(true);
            (Box::new(TcpLink(s)) as Box<dyn Link>, addr)
        })
    }
}

struct UdpServer(UdpSocket);

impl DatagramSocket for UdpServer {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut b = ReadBuf::new(buf);
        self.0.poll_recv_from(cx, &mut b).map_ok(|addr| (b.filled().len(), addr))
    }

    fn poll_send_to(&self, cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<usize>> {
        self.0.poll_send_to(cx, buf, to)
    }
}
