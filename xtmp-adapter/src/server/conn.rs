//! One accepted TCP connection: a task that passes what it reads to the
//! server's driver (waiting while the driver's input queue is full, which
//! pushes back on the sender) and writes what the driver queues for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_channel::mpsc;
use futures_core::Stream;
use xtmp_core::endpoint::Remote;

use super::driver::Input;
use crate::runtime::Link;

/// How long a connection's read buffer is.
pub(crate) const READ_BUF: usize = 64 * 1024;

/// A read this short is copied out, and the buffer kept; a longer one
/// hands the buffer itself to the driver.
const COPY_BELOW: usize = 4 * 1024;

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

pub(crate) struct Conn {
    pub(crate) link: Box<dyn Link>,
    pub(crate) remote: Remote,
    pub(crate) inputs: mpsc::Sender<Input>,
    pub(crate) writes: mpsc::Receiver<Vec<u8>>,
    pub(crate) buf: Vec<u8>,
    pub(crate) pool: BufPool,
    /// A chunk being written, and how much of it went.
    pub(crate) unsent: Option<(Vec<u8>, usize)>,
    /// The read side ended (and the driver must be told).
    pub(crate) read_done: bool,
    pub(crate) told: bool,
}

impl Conn {
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
            match Pin::new(&mut self.writes).poll_next(cx) {
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
            match self.inputs.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            if self.read_done {
                if !self.told {
                    self.told = true;
                    let _ = self.inputs.start_send(Input::Closed(self.remote));
                }
                return Poll::Ready(());
            }
            match self.link.poll_recv(cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => {
                    let bytes = if n < COPY_BELOW {
                        self.buf[..n].to_vec()
                    } else {
                        let mut full = std::mem::replace(&mut self.buf, self.pool.take());
                        full.truncate(n);
                        full
                    };
                    let _ = self.inputs.start_send(Input::Bytes(self.remote, bytes));
                }
                Poll::Ready(_) => self.read_done = true,
            }
        }
    }
}

impl Future for Conn {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
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
