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
use xtmp_adapter::{BoxFuture, DatagramSocket, Link, Listener, Resolver, Runtime, Timer};
use xtmp_core::session::PathKind;

use crate::TokioResolver;

/// The tokio runtime. Its methods must be called from within a tokio
/// runtime (as every `xtmp-tokio` entry point is).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

impl Tokio {
    /// The runtime as the shared drivers take it.
    pub fn shared() -> Arc<dyn Runtime> {
        Arc::new(Tokio)
    }
}

impl Runtime for Tokio {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        tokio::spawn(task);
    }

    fn timer(&self) -> Box<dyn Timer> {
        Box::new(TokioTimer { sleep: None })
    }

    fn dial(&self, addr: SocketAddr, kind: PathKind) -> BoxFuture<'static, io::Result<Box<dyn Link>>> {
        Box::pin(async move {
            let link: Box<dyn Link> = match kind {
                PathKind::Stream => {
                    let s = TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    Box::new(TcpLink(s))
                }
                PathKind::Datagram => {
                    let local = SocketAddr::new(unspecified(addr), 0);
                    let s = UdpSocket::bind(local).await?;
                    s.connect(addr).await?;
                    Box::new(UdpLink(s))
                }
            };
            Ok(link)
        })
    }

    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move { Ok(Box::new(TcpListen(TcpListener::bind(addr).await?)) as Box<dyn Listener>) })
    }

    fn bind_udp(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn DatagramSocket>>> {
        Box::pin(async move { Ok(Box::new(UdpServer(UdpSocket::bind(addr).await?)) as Box<dyn DatagramSocket>) })
    }

    fn resolver(&self) -> Arc<dyn Resolver> {
        Arc::new(TokioResolver)
    }
}

fn unspecified(peer: SocketAddr) -> std::net::IpAddr {
    if peer.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() }
}

struct TokioTimer {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Timer for TokioTimer {
    fn reset(&mut self, deadline: Instant) {
        let at = tokio::time::Instant::from_std(deadline);
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
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
