//! The async-io runtime (the reactor, timers and sockets that async-std
//! and smol share), as the shared drivers of [`xtmp_adapter`] see it.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use async_io::Async;
use futures_io::{AsyncRead, AsyncWrite};
use xtmp_adapter::runtime::wildcard_for;
use xtmp_adapter::{BoxFuture, DatagramSocket, Link, Listener, Resolver, Runtime, Timer};
use xtmp_core::session::PathKind;

use crate::AsyncNetResolver;

type Spawn = dyn Fn(BoxFuture<'static, ()>) + Send + Sync;

/// The async-io runtime: async-io's reactor and timers for I/O and time,
/// and an executor for the drivers' tasks: smol's global executor by
/// default (sized by `SMOL_THREADS`), or the one
/// [`AsyncIo::with_spawner`] names, such as async-std's.
#[derive(Clone)]
pub struct AsyncIo {
    spawn: Arc<Spawn>,
}

impl fmt::Debug for AsyncIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncIo").finish_non_exhaustive()
    }
}

impl Default for AsyncIo {
    fn default() -> Self {
        AsyncIo::with_spawner(|task| smol::spawn(task).detach())
    }
}

static GLOBAL: OnceLock<Arc<dyn Runtime>> = OnceLock::new();

impl AsyncIo {
    /// Tasks run on smol's global executor.
    pub fn new() -> Self {
        AsyncIo::default()
    }

    /// Tasks run by `spawn`, for example
    /// `|task| { async_std::task::spawn(task); }`.
    pub fn with_spawner(spawn: impl Fn(BoxFuture<'static, ()>) + Send + Sync + 'static) -> Self {
        AsyncIo { spawn: Arc::new(spawn) }
    }

    /// Makes this the runtime that [`Client`](crate::Client) and
    /// [`Server`](crate::Server) use. It can be set once, before either
    /// is first used; later calls return the runtime back as an error.
    pub fn install(self) -> Result<(), AsyncIo> {
        let mut this = Some(self);
        GLOBAL.get_or_init(|| Arc::new(this.take().expect("taken once")));
        match this {
            None => Ok(()),
            Some(rt) => Err(rt),
        }
    }

    /// The installed runtime ([`AsyncIo::install`]), or the default one.
    pub fn shared() -> Arc<dyn Runtime> {
        GLOBAL.get_or_init(|| Arc::new(AsyncIo::default())).clone()
    }
}

impl Runtime for AsyncIo {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        (self.spawn)(task)
    }

    fn timer(&self) -> Box<dyn Timer> {
        Box::new(IoTimer(async_io::Timer::never()))
    }

    fn dial(&self, addr: SocketAddr, kind: PathKind) -> BoxFuture<'static, io::Result<Box<dyn Link>>> {
        Box::pin(async move {
            let link: Box<dyn Link> = match kind {
                PathKind::Stream => {
                    let s = Async::<TcpStream>::connect(addr).await?;
                    s.get_ref().set_nodelay(true)?;
                    Box::new(TcpLink(s))
                }
                PathKind::Datagram => {
                    let s = Async::<UdpSocket>::bind(wildcard_for(addr))?;
                    s.get_ref().connect(addr)?;
                    Box::new(UdpLink(s))
                }
            };
            Ok(link)
        })
    }

    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move { Ok(Box::new(TcpListen(Async::<TcpListener>::bind(addr)?)) as Box<dyn Listener>) })
    }

    fn adopt_udp(&self, socket: UdpSocket) -> io::Result<Box<dyn DatagramSocket>> {
        Ok(Box::new(UdpServer(Async::new(socket)?)))
    }

    fn resolver(&self) -> Arc<dyn Resolver> {
        Arc::new(AsyncNetResolver)
    }
}

struct IoTimer(async_io::Timer);

impl Timer for IoTimer {
    fn reset(&mut self, deadline: Instant) {
        self.0.set_at(deadline);
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// Runs `op` until it stops reporting `WouldBlock`, waiting for readiness
/// with `ready` in between (async-io's readiness is edge-triggered).
fn retry<T>(
    cx: &mut Context<'_>,
    mut op: impl FnMut() -> io::Result<T>,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
) -> Poll<io::Result<T>> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            res => return Poll::Ready(res),
        }
        ready!(ready(cx))?;
    }
}

struct TcpLink(Async<TcpStream>);

impl Link for TcpLink {
    fn kind(&self) -> PathKind {
        PathKind::Stream
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

struct UdpLink(Async<UdpSocket>);

impl Link for UdpLink {
    fn kind(&self) -> PathKind {
        PathKind::Datagram
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let s = &self.0;
        retry(cx, || s.get_ref().recv(buf), |cx| s.poll_readable(cx))
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let s = &self.0;
        retry(cx, || s.get_ref().send(buf), |cx| s.poll_writable(cx))
    }
}

struct TcpListen(Async<TcpListener>);

impl Listener for TcpListen {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Box<dyn Link>, SocketAddr)>> {
        let l = &self.0;
        let (s, addr) = ready!(retry(cx, || l.get_ref().accept(), |cx| l.poll_readable(cx)))?;
        let _ = s.set_nodelay(true);
        Poll::Ready(Ok((Box::new(TcpLink(Async::new(s)?)) as Box<dyn Link>, addr)))
    }
}

struct UdpServer(Async<UdpSocket>);

impl DatagramSocket for UdpServer {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<(usize, SocketAddr)>> {
        let s = &self.0;
        retry(cx, || s.get_ref().recv_from(buf), |cx| s.poll_readable(cx))
    }

    fn poll_send_to(&self, cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<usize>> {
        let s = &self.0;
        retry(cx, || s.get_ref().send_to(buf, to), |cx| s.poll_writable(cx))
    }
}
