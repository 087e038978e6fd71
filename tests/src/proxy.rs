//! A TCP proxy on any [`Runtime`], which the test can cut: every
//! connection open at the time is dropped on both sides, as when a
//! middlebox or the server drops it. It also relays datagrams on the same
//! port (a hybrid client's UDP path), which a cut leaves alone.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::channel::oneshot;
use futures::future::select;
use xtmp_adapter::runtime::bind_udp;
use xtmp_adapter::{DatagramSocket, Link, Runtime};
use xtmp_core::session::PathKind;

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// One sender per open connection: dropping it ends the connection.
    open: Arc<Mutex<Vec<oneshot::Sender<()>>>>,
}

impl Proxy {
    /// Forwards every connection to `addr` to `target`, on `rt`.
    pub async fn start(rt: Arc<dyn Runtime>, target: SocketAddr) -> io::Result<Proxy> {
        // A TCP port whose UDP twin is free too: another test may hold the
        // UDP port the kernel's TCP choice names, so try a few.
        let mut tries = 0;
        let (mut listener, addr, udp) = loop {
            let listener = rt.listen(crate::harness::any_port()).await?;
            let addr = listener.local_addr()?;
            match bind_udp(&*rt, addr) {
                Ok(udp) => break (listener, addr, udp),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 20 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        let out = bind_udp(&*rt, crate::harness::any_port())?;
        rt.spawn(Box::pin(relay(udp, out, target)));
        let open: Arc<Mutex<Vec<oneshot::Sender<()>>>> = Arc::default();
        let conns = open.clone();
        let spawner = rt.clone();
        rt.spawn(Box::pin(async move {
            while let Ok((inbound, _)) = std::future::poll_fn(|cx| listener.poll_accept(cx)).await {
                let (tx, cut) = oneshot::channel::<()>();
                conns.lock().expect("not poisoned").push(tx);
                let dial = spawner.dial(target, PathKind::Stream);
                spawner.spawn(Box::pin(async move {
                    let Ok(outbound) = dial.await else { return };
                    let mut pipe = Pipe { a: inbound, b: outbound, ab: Buf::default(), ba: Buf::default() };
                    let copy = std::future::poll_fn(move |cx| pipe.poll(cx));
                    let _ = select(Box::pin(copy), cut).await;
                }));
            }
        }));
        Ok(Proxy { addr, open })
    }

    /// Cuts every connection open now; later ones go through.
    pub fn cut(&self) {
        self.open.lock().expect("not poisoned").clear();
    }
}

/// Relays datagrams from the newest client address to `target` through
/// `out`, and `target`'s answers back. One that cannot go at once is lost,
/// as UDP allows.
async fn relay(inbound: Box<dyn DatagramSocket>, out: Box<dyn DatagramSocket>, target: SocketAddr) {
    let mut client = None;
    let mut buf = vec![0u8; 65_536];
    std::future::poll_fn(move |cx| {
        loop {
            let mut moved = false;
            if let Poll::Ready(r) = inbound.poll_recv_from(cx, &mut buf) {
                moved = true;
                if let Ok((n, from)) = r {
                    client = Some(from);
                    let _ = out.poll_send_to(cx, &buf[..n], target);
                }
            }
            if let Poll::Ready(r) = out.poll_recv_from(cx, &mut buf) {
                moved = true;
                if let (Ok((n, _)), Some(to)) = (r, client) {
                    let _ = inbound.poll_send_to(cx, &buf[..n], to);
                }
            }
            if !moved {
                return Poll::<()>::Pending;
            }
        }
    })
    .await
}

#[derive(Default)]
struct Buf {
    data: Vec<u8>,
    pos: usize,
}

/// Copies both ways; ready when either side ends or fails.
struct Pipe {
    a: Box<dyn Link>,
    b: Box<dyn Link>,
    ab: Buf,
    ba: Buf,
}

impl Pipe {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let forward = copy(cx, &mut *self.a, &mut *self.b, &mut self.ab);
        let back = copy(cx, &mut *self.b, &mut *self.a, &mut self.ba);
        if forward.is_ready() || back.is_ready() { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// Moves bytes from `from` to `to` until one of them would block (pending)
/// or ends (ready).
fn copy(cx: &mut Context<'_>, from: &mut dyn Link, to: &mut dyn Link, buf: &mut Buf) -> Poll<()> {
    loop {
        if buf.pos < buf.data.len() {
            match to.poll_send(cx, &buf.data[buf.pos..]) {
                Poll::Ready(Ok(n)) if n > 0 => buf.pos += n,
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
            continue;
        }
        buf.data.resize(16 * 1024, 0);
        match from.poll_recv(cx, &mut buf.data) {
            Poll::Ready(Ok(n)) if n > 0 => {
                buf.data.truncate(n);
                buf.pos = 0;
            }
            Poll::Ready(_) => return Poll::Ready(()),
            Poll::Pending => {
                buf.data.clear();
                buf.pos = 0;
                return Poll::Pending;
            }
        }
    }
}
