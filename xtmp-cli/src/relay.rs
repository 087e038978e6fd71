//! A TCP relay for the demo: it forwards connections to the server and
//! can cut them all at once, as a broken network would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub(crate) struct Relay {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    /// Listens on loopback and forwards each connection to `target`.
    pub(crate) async fn start(target: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                held.lock().unwrap_or_else(|p| p.into_inner()).push(link);
            }
        });
        Ok(Relay { addr, accept, links })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection relayed so far (both sides see it end);
    /// new ones are still accepted.
    pub(crate) fn cut(&self) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(|p| p.into_inner()));
        let live = links.iter().filter(|l| !l.is_finished()).count();
        for l in links {
            l.abort();
        }
        live
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
