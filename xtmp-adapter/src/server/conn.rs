//! One accepted TCP connection: a task that passes what it reads to the
//! driver of its shard (waiting while [`CONN_BACKLOG`] of its reads wait
//! for the driver, or the driver's input queue is full, which pushes back
//! on the sender) and writes what the driver queues for it. With several
//! shards, the connection's first 16 bytes name its shard (SPEC.md 3.8.1).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener};
use futures_channel::mpsc;
use futures_core::Stream;
use xtmp_core::endpoint::Remote;
use xtmp_core::shard::Shard;

use super::driver::Input;
use crate::runtime::{Deadline, Link, Timer};

/// How long a busy connection's read buffer is.
pub(crate) const READ_BUF: usize = 64 * 1024;

/// How long a new connection's read buffer is: a read that fills it
/// makes it four times longer, up to [`READ_BUF`]. A silent or slow
/// connection (thousands of them, in a flood) costs this, not 64 KiB.
const FIRST_READ_BUF: usize = 2 * 1024;

/// A read this short is copied out, and the buffer kept; a longer one
/// hands the buffer itself to the driver.
const COPY_BELOW: usize = 4 * 1024;

/// Reads of one connection handed to the driver and not yet taken, at
/// most: 256 KiB of 64 KiB reads. A peer that sends faster than its
/// session is served waits in its own socket (TCP flow control), not in
/// the shard's queue, and what the driver takes next was read recently
/// (still in cache): with a 1,024-entry shard queue as the only bound, one
/// bulk sender queued up to 64 MiB, and loopback bulk transfer ran at half
/// speed.
pub(crate) const CONN_BACKLOG: usize = 4;

/// A connection's reads that wait for the driver: the driver counts them
/// down as it takes them and wakes the reader.
#[derive(Default)]
pub(crate) struct Backlog {
    reads: AtomicUsize,
    room: Event,
}

impl Backlog {
    /// The driver took one of the connection's reads.
    pub(crate) fn taken(&self) {
        self.reads.fetch_sub(1, Ordering::AcqRel);
        self.room.notify(1);
    }
}

/// Read buffers kept for reuse at most.
const POOL_MAX: usize = 64;

/// Read buffers that connection tasks fill and the driver gives back once
/// the core has taken their bytes. A connection carrying bulk data reuses
/// the same few buffers, where a fresh 64 KiB allocation per read would
/// make the allocator fault in (and give back) pages on every read.
#[derive(Clone, Default)]
pub(crate) struct BufPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufPool {
    /// A buffer of `READ_BUF` bytes.
    pub(crate) fn take(&self) -> Vec<u8> {
        let reused = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| vec![0; READ_BUF])
    }

    /// Keeps `buf` for reuse, unless enough are kept already.
    pub(crate) fn give(&self, buf: Vec<u8>) {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if buf.len() == READ_BUF && pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

/// What every shard driver and connection task of one server shares.
pub(crate) struct Shared {
    /// Each shard's input queue, by shard number.
    pub(crate) inputs: Vec<mpsc::Sender<Input>>,
    /// TCP and WebSocket connections open now.
    pub(crate) connections: AtomicUsize,
    /// Subscriptions live on every shard (their publishers).
    pub(crate) subscriptions: Arc<AtomicUsize>,
    /// Of those, how many come from each address prefix.
    pub(crate) by_prefix: Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    pub(crate) connections_dropped: AtomicU64,
    /// Datagrams that arrived on another shard's socket and were handed over.
    pub(crate) datagrams_forwarded: AtomicU64,
    /// How long a connection may take to send the 16 bytes that name its
    /// shard (the endpoint's hello timeout).
    pub(crate) hello_timeout: Duration,
    pub(crate) pool: BufPool,
}

impl Shared {
    fn shards(&self) -> u32 {
        self.inputs.len() as u32
    }
}

impl Shared {
    /// Takes a connection slot for a peer in `prefix`, unless the server
    /// holds `max` connections, or that prefix `per_prefix`.
    pub(crate) fn admit(&self, prefix: std::net::IpAddr, max: usize, per_prefix: usize) -> bool {
        let mut by = self.by_prefix.lock().unwrap_or_else(|e| e.into_inner());
        let n = by.entry(prefix).or_default();
        if *n >= per_prefix || self.connections.load(Ordering::Relaxed) >= max {
            if *n == 0 {
                by.remove(&prefix);
            }
            return false;
        }
        *n += 1;
        self.connections.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn release(&self, prefix: std::net::IpAddr) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        let mut by = self.by_prefix.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by.get_mut(&prefix) {
            *n -= 1;
            if *n == 0 {
                by.remove(&prefix);
            }
        }
    }
}

/// One open connection counted in [`Shared::connections`] and
/// [`Shared::by_prefix`] (taken by [`Shared::admit`]) until dropped.
struct Slot(Arc<Shared>, std::net::IpAddr);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

pub(crate) struct Conn {
    link: Box<dyn Link>,
    remote: Remote,
    slot: Slot,
    /// The shard's input queue, once the connection's first frame named
    /// the shard (at once when there is one shard).
    inputs: Option<mpsc::Sender<Input>>,
    /// Until then, what was read so far, and when a connection that has not
    /// sent 16 bytes is closed.
    first: Vec<u8>,
    hello: Option<(Deadline, Instant)>,
    /// The input that tells the shard about the connection, until its queue
    /// has room.
    opened: Option<Input>,
    writes: Option<mpsc::Receiver<Vec<u8>>>,
    write_queue: usize,
    buf: Vec<u8>,
    /// A chunk being written, and how much of it went.
    unsent: Option<(Vec<u8>, usize)>,
    /// The read side ended (and the driver must be told).
    read_done: bool,
    told: bool,
    backlog: Arc<Backlog>,
    /// Waits for the driver to take a read, while [`CONN_BACKLOG`] wait.
    room: Option<EventListener>,
}

impl Conn {
    /// A connection whose slot [`Shared::admit`] took for `prefix`;
    /// `timer` times the wait for its first bytes when there are several
    /// shards.
    pub(crate) fn new(
        link: Box<dyn Link>,
        (remote, prefix): (Remote, std::net::IpAddr),
        shared: &Arc<Shared>,
        timer: Box<dyn Timer>,
        write_queue: usize,
    ) -> Conn {
        let several = shared.shards() > 1;
        let mut conn = Conn {
            link,
            remote,
            slot: Slot(shared.clone(), prefix),
            inputs: None,
            first: Vec::new(),
            hello: several.then(|| (Deadline::new(timer), Instant::now() + shared.hello_timeout)),
            opened: None,
            writes: None,
            write_queue,
            buf: vec![0; FIRST_READ_BUF],
            unsent: None,
            read_done: false,
            told: false,
            backlog: Arc::default(),
            room: None,
        };
        if !several {
            conn.assign(0);
        }
        conn
    }

    /// Hands the connection to shard `shard`, with what was read so far.
    fn assign(&mut self, shard: u32) {
        let (wtx, wrx) = mpsc::channel(self.write_queue);
        self.inputs = Some(self.slot.0.inputs[shard as usize].clone());
        self.writes = Some(wrx);
        self.hello = None;
        let first = std::mem::take(&mut self.first);
        self.opened = Some(Input::Opened(self.remote, wtx, first, self.backlog.clone()));
    }

    /// Reads until the first 16 bytes name the connection's shard; `Ready`
    /// if the peer left (or stayed silent too long) before.
    fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some((timer, at)) = &mut self.hello
                && timer.poll(cx, *at, Instant::now()).is_ready()
            {
                tracing::debug!(peer = %self.remote.addr, "connection closed: no frame header within the hello timeout");
                self.slot.0.connections_dropped.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(());
            }
            match self.link.poll_recv(cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => {
                    self.first.extend_from_slice(&self.buf[..n]);
                    if n == self.buf.len() {
                        self.buf = grown(&self.buf, &self.slot.0.pool);
                    }
                    if let Some(shard) = Shard::route(&self.first, self.slot.0.shards()) {
                        self.assign(shard);
                        return Poll::Pending;
                    }
                }
                Poll::Ready(_) => return Poll::Ready(()),
            }
        }
    }

    /// Writes until the link or the queue has nothing more; `Ready` once
    /// the driver dropped its sender (close) or the link broke.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some((chunk, pos)) = &mut self.unsent {
                match self.link.poll_send(cx, &chunk[*pos..]) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(n)) if n > 0 => {
                        *pos += n;
                        if *pos == chunk.len() {
                            self.unsent = None;
                        }
                    }
                    Poll::Ready(_) => return Poll::Ready(()),
                }
                continue;
            }
            let Some(writes) = &mut self.writes else { return Poll::Pending };
            match Pin::new(writes).poll_next(cx) {
                Poll::Ready(Some(chunk)) => self.unsent = Some((chunk, 0)),
                Poll::Ready(None) => {
                    let _ = self.link.poll_shutdown(cx);
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    // Nothing more to write: push out what a buffering
                    // link (WebSocket) holds.
                    return match self.link.poll_flush(cx) {
                        Poll::Ready(Err(_)) => Poll::Ready(()),
                        _ => Poll::Pending,
                    };
                }
            }
        }
    }

    /// Reads while the driver takes input; `Ready` once the driver was
    /// told the connection ended (or is gone).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(inputs) = &mut self.inputs else {
                if self.read_done || self.poll_first(cx).is_ready() {
                    // Gone before it joined a shard: no one to tell.
                    self.read_done = true;
                    return Poll::Ready(());
                }
                if self.inputs.is_none() {
                    return Poll::Pending;
                }
                continue;
            };
            match inputs.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            if let Some(opened) = self.opened.take() {
                let _ = inputs.start_send(opened);
                continue;
            }
            if self.read_done {
                if !self.told {
                    self.told = true;
                    let _ = inputs.start_send(Input::Closed(self.remote));
                }
                return Poll::Ready(());
            }
            if poll_room(&self.backlog, &mut self.room, cx).is_pending() {
                return Poll::Pending;
            }
            match self.link.poll_recv(cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => {
                    self.backlog.reads.fetch_add(1, Ordering::AcqRel);
                    let bytes = if n < COPY_BELOW || self.buf.len() < READ_BUF {
                        let bytes = self.buf[..n].to_vec();
                        if n == self.buf.len() {
                            // Full: the peer has more to say.
                            self.buf = grown(&self.buf, &self.slot.0.pool);
                        }
                        bytes
                    } else {
                        let mut full = std::mem::replace(&mut self.buf, self.slot.0.pool.take());
                        full.truncate(n);
                        full
                    };
                    let _ = inputs.start_send(Input::Bytes(self.remote, bytes));
                }
                Poll::Ready(_) => self.read_done = true,
            }
        }
    }
}

/// A read buffer four times as long as `buf` (the pool's, at full length).
fn grown(buf: &[u8], pool: &BufPool) -> Vec<u8> {
    let len = (buf.len() * 4).min(READ_BUF);
    if len == READ_BUF { pool.take() } else { vec![0; len] }
}

/// `Ready` while fewer than [`CONN_BACKLOG`] reads wait for the driver.
fn poll_room(backlog: &Backlog, room: &mut Option<EventListener>, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        if backlog.reads.load(Ordering::Acquire) < CONN_BACKLOG {
            *room = None;
            return Poll::Ready(());
        }
        match room {
            // Listening first, then checking again: a `taken` between the
            // two is not missed.
            None => *room = Some(backlog.room.listen()),
            Some(l) => {
                if Pin::new(l).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *room = None;
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The next connection reads into it (a fresh 64 KiB buffer would be
        // faulted in page by page).
        self.slot.0.pool.give(std::mem::take(&mut self.buf));
    }
}

impl Future for Conn {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.writes.is_none() {
            // Not joined to a shard yet: nothing to write until the first
            // bytes name the shard.
            let gone = this.poll_read(cx).is_ready();
            if this.writes.is_none() {
                return if gone { Poll::Ready(()) } else { Poll::Pending };
            }
        }
        let write_done = this.poll_write(cx).is_ready();
        if write_done {
            // Closed by the driver, or broken: the read side ends too.
            this.read_done = true;
        }
        match (this.poll_read(cx), write_done) {
            (Poll::Ready(()), true) => Poll::Ready(()),
            // The peer stopped sending: keep writing until the driver
            // closes the connection.
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::AtomicBool;
    use std::task::{Wake, Waker};

    use xtmp_core::endpoint::RemoteKind;
    use xtmp_core::session::PathKind;

    use super::*;

    /// A peer that always has another 64 KiB ready.
    struct Firehose(Arc<AtomicUsize>);

    impl Link for Firehose {
        fn kind(&self) -> PathKind {
            PathKind::Stream
        }
        fn poll_recv(&mut self, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            buf.fill(0x5a);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_send(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
    }

    struct NeverTimer;

    impl Timer for NeverTimer {
        fn reset(&mut self, _: Instant) {}
        fn poll_expired(&mut self, _: &mut Context<'_>) -> Poll<()> {
            Poll::Pending
        }
    }

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// One shard's input queue `tx`, nothing else.
    fn shared_with(tx: mpsc::Sender<Input>) -> Shared {
        Shared {
            inputs: vec![tx],
            connections: Default::default(),
            subscriptions: Default::default(),
            by_prefix: Default::default(),
            connections_dropped: Default::default(),
            datagrams_forwarded: Default::default(),
            hello_timeout: Duration::from_secs(1),
            pool: Default::default(),
        }
    }

    #[test]
    fn a_connection_stops_reading_while_its_backlog_waits_for_the_driver() {
        let (tx, mut rx) = mpsc::channel(1024);
        let shared = Arc::new(shared_with(tx));
        let reads = Arc::new(AtomicUsize::new(0));
        let remote = Remote { addr: "127.0.0.1:9".parse().unwrap(), kind: RemoteKind::Stream };
        let prefix = remote.addr.ip();
        assert!(shared.admit(prefix, 10, 10));
        let mut conn = Conn::new(Box::new(Firehose(reads.clone())), (remote, prefix), &shared, Box::new(NeverTimer), 8);
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let cx = &mut Context::from_waker(&waker);

        // The peer never stops sending; the driver takes nothing yet.
        assert!(Pin::new(&mut conn).poll(cx).is_pending());
        let mut taken = Vec::new();
        while let Ok(i) = rx.try_recv() {
            taken.push(i);
        }
        let backlog = match taken.first() {
            Some(Input::Opened(_, _, _, backlog)) => backlog.clone(),
            _ => panic!("the connection's first input is not Opened"),
        };
        let sizes: Vec<usize> =
            taken.iter().filter_map(|i| if let Input::Bytes(_, b) = i { Some(b.len()) } else { None }).collect();
        assert_eq!(sizes, [2048, 8192, 32768, READ_BUF], "a new connection's buffer grows as reads fill it");
        let bytes = sizes.len();
        assert_eq!(bytes, CONN_BACKLOG, "reads queued for the driver");
        assert_eq!(reads.load(Ordering::Relaxed), CONN_BACKLOG, "reads from the socket");
        assert!(!flag.0.load(Ordering::SeqCst));

        // The driver takes one: the connection wakes and reads one more.
        backlog.taken();
        assert!(flag.0.load(Ordering::SeqCst), "taking a read wakes the connection");
        assert!(Pin::new(&mut conn).poll(cx).is_pending());
        let more = std::iter::from_fn(|| rx.try_recv().ok()).filter(|i| matches!(i, Input::Bytes(..))).count();
        assert_eq!(more, 1);
        assert_eq!(reads.load(Ordering::Relaxed), CONN_BACKLOG + 1);
        drop(taken);
        drop(conn);
        assert_eq!(shared.connections.load(Ordering::Relaxed), 0, "the slot is given back");
        assert!(shared.by_prefix.lock().unwrap().is_empty());
    }

    #[test]
    fn connection_slots_are_shared_out_by_prefix() {
        let (tx, _rx) = mpsc::channel(1);
        let shared = shared_with(tx);
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = ("10.0.0.0".parse().unwrap(), "10.0.1.0".parse().unwrap());
        assert!((0..3).all(|_| shared.admit(a, 5, 3)));
        assert!(!shared.admit(a, 5, 3), "the prefix's share is taken");
        assert!(shared.admit(b, 5, 3), "another prefix still gets in");
        assert!(shared.admit(b, 5, 3));
        assert!(!shared.admit(b, 5, 3), "the server's limit");
        shared.release(a);
        assert!(shared.admit(a, 5, 3), "a slot given back is free again");
        assert_eq!(shared.connections.load(Ordering::Relaxed), 5);
    }
}
