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

/// A timer for a deadline that moves (a driver's next timeout). Moving it
/// later leaves the timer where it is: most moves are later ones (each
/// send pushes the idle timeout, each answer retires a retransmission
/// timer), and resetting a runtime's timer costs more than the spurious
/// wake-up at the old time, when the timer is moved on.
pub(crate) struct Deadline {
    timer: Box<dyn Timer>,
    armed: Option<Instant>,
}

impl Deadline {
    pub(crate) fn new(timer: Box<dyn Timer>) -> Deadline {
        Deadline { timer, armed: None }
    }

    /// Ready once `deadline` has passed by `now` (the caller's reading of
    /// the clock); otherwise makes sure the timer fires by then and
    /// registers `cx`'s waker.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, deadline: Instant, now: Instant) -> Poll<()> {
        if deadline <= now {
            self.armed = None;
            return Poll::Ready(());
        }
        let keep = self.armed.is_some_and(|a| a <= deadline && a > now);
        if !keep {
            self.arm(deadline);
        }
        if self.timer.poll_expired(cx).is_ready() {
            // Fired at an earlier deadline that has moved since.
            self.arm(deadline);
            if self.timer.poll_expired(cx).is_ready() {
                self.armed = None;
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }

    /// When the timer fires now (`None`: not armed).
    pub(crate) fn armed(&self) -> Option<Instant> {
        self.armed
    }

    fn arm(&mut self, deadline: Instant) {
        self.timer.reset(deadline);
        self.armed = Some(deadline);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// The timer's deadline, the test's clock, and every reset.
    type State = (Option<Instant>, Option<Instant>, Vec<Instant>);

    /// A timer on a clock the test moves, that records its resets.
    #[derive(Clone, Default)]
    struct FakeTimer(Arc<Mutex<State>>);

    impl Timer for FakeTimer {
        fn reset(&mut self, deadline: Instant) {
            let mut s = self.0.lock().unwrap();
            s.0 = Some(deadline);
            s.2.push(deadline);
        }
        fn poll_expired(&mut self, _: &mut Context<'_>) -> Poll<()> {
            let s = self.0.lock().unwrap();
            match (s.0, s.1) {
                (Some(d), Some(now)) if d <= now => Poll::Ready(()),
                _ => Poll::Pending,
            }
        }
    }

    #[test]
    fn a_deadline_that_moves_later_keeps_its_timer_until_it_fires() {
        let fake = FakeTimer::default();
        let mut d = Deadline::new(Box::new(fake.clone()));
        let cx = &mut Context::from_waker(std::task::Waker::noop());
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let at = |now| fake.0.lock().unwrap().1 = Some(now);
        at(t0);
        assert!(d.poll(cx, ms(10), t0).is_pending());
        // Later deadlines: no reset.
        for later in [11, 20, 30] {
            assert!(d.poll(cx, ms(later), t0).is_pending());
        }
        assert_eq!(fake.0.lock().unwrap().2, [ms(10)]);
        // An earlier one: reset.
        assert!(d.poll(cx, ms(5), t0).is_pending());
        assert_eq!(fake.0.lock().unwrap().2, [ms(10), ms(5)]);
        // The timer fires at 5 ms for a deadline now at 30 ms: moved on,
        // not reported.
        at(ms(5));
        assert!(d.poll(cx, ms(30), ms(5)).is_pending());
        assert_eq!(fake.0.lock().unwrap().2, [ms(10), ms(5), ms(30)]);
        // Due: ready.
        at(ms(30));
        assert!(d.poll(cx, ms(30), ms(30)).is_ready());
        assert!(d.poll(cx, ms(40), ms(30)).is_pending());
        assert_eq!(fake.0.lock().unwrap().2.last(), Some(&ms(40)));
    }
}
