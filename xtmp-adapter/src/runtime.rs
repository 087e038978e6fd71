//! What the shared drivers need from an async runtime: tasks, timers,
//! sockets and name lookup. Each runtime adapter implements [`Runtime`]
//! once (a few dozen lines); the client and server drivers, written once
//! here, run on it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use xtmp_core::session::PathKind;

use crate::resolve::{BoxFuture, Resolver};

/// An async runtime, as the drivers see it.
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// Runs `task` to completion in the background.
    fn spawn(&self, task: BoxFuture<'static, ()>);
    /// A timer, initially unset (never fires until [`Timer::reset`]).
    fn timer(&self) -> Box<dyn Timer>;
    /// Opens a link to `addr`: a connected TCP stream or UDP socket.
    fn dial(&self, addr: SocketAddr, kind: PathKind) -> BoxFuture<'static, io::Result<Box<dyn Link>>>;
    /// Listens for TCP connections on `addr`.
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>>;
    /// Takes a bound UDP socket (for a server) into the runtime's reactor.
    fn adopt_udp(&self, socket: std::net::UdpSocket) -> io::Result<Box<dyn DatagramSocket>>;
    /// The runtime's host-name resolver.
    fn resolver(&self) -> Arc<dyn Resolver>;
}

/// A resettable deadline.
pub trait Timer: Send {
    /// Fires at `deadline` (replacing any earlier one).
    fn reset(&mut self, deadline: Instant);
    /// Ready once the deadline passed; registers `cx`'s waker otherwise.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// One path's socket on a client, or one accepted connection on a server:
/// a byte stream (TCP) or a connected datagram socket (UDP).
pub trait Link: Send + 'static {
    /// Which kind of path it carries.
    fn kind(&self) -> PathKind;
    /// Reads the next chunk of the stream, or the next datagram, into
    /// `buf`. `Ok(0)` on a stream: the peer closed it.
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes from `buf`, returning how much was taken: a stream may take
    /// part of it; a datagram socket takes all of it (one datagram).
    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Pushes out what a buffering link took but has not written yet; the
    /// drivers call it whenever they have nothing more to send. (Sockets
    /// do not buffer: the default does nothing.)
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    /// Closes the sending direction of a stream (a no-op on datagrams).
    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A TCP listener.
pub trait Listener: Send + 'static {
    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The next connection and its peer's address.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Box<dyn Link>, SocketAddr)>>;
}

/// A server's unconnected UDP socket.
pub trait DatagramSocket: Send + Sync + 'static {
    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The next datagram and its sender.
    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<(usize, SocketAddr)>>;
    /// Sends one datagram to `to`.
    fn poll_send_to(&self, cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<usize>>;
}

/// Binds a UDP socket to `addr` on `rt`, for a server.
pub fn bind_udp(rt: &dyn Runtime, addr: SocketAddr) -> io::Result<Box<dyn DatagramSocket>> {
    rt.adopt_udp(std::net::UdpSocket::bind(addr)?)
}

/// Waits until `deadline` on `rt`'s timers.
pub async fn sleep_until(rt: &dyn Runtime, deadline: Instant) {
    let mut timer = rt.timer();
    timer.reset(deadline);
    std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
}

/// The wildcard address of `peer`'s family, to bind a client's UDP socket
/// that will talk to `peer`.
pub fn wildcard_for(peer: SocketAddr) -> SocketAddr {
    let ip: std::net::IpAddr =
        if peer.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
    SocketAddr::new(ip, 0)
}

/// A timer for a deadline that moves (a driver's next timeout): it is
/// reset only when the deadline changes.
pub(crate) struct Deadline {
    timer: Box<dyn Timer>,
    armed: Option<Instant>,
}

impl Deadline {
    pub(crate) fn new(timer: Box<dyn Timer>) -> Deadline {
        Deadline { timer, armed: None }
    }

    /// Ready once `deadline` has passed by `now` (the caller's reading of
    /// the clock); otherwise arms the timer for it and registers `cx`'s
    /// waker.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, deadline: Instant, now: Instant) -> Poll<()> {
        if deadline > now {
            if self.armed != Some(deadline) {
                self.timer.reset(deadline);
                self.armed = Some(deadline);
            }
            if self.timer.poll_expired(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.armed = None;
        Poll::Ready(())
    }
}
