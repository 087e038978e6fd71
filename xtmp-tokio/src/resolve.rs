//! Host name lookup on tokio.

use std::io;
use std::net::SocketAddr;

use tokio::runtime::Handle;
use xtmp_adapter::{BoxFuture, Resolver};

/// Resolves host names with tokio's resolver (the system's, run on
/// tokio's blocking pool): the pool of the runtime it is called from, or
/// of the one [`TokioResolver::with_handle`] names.
#[derive(Clone, Debug, Default)]
pub struct TokioResolver {
    handle: Option<Handle>,
}

impl TokioResolver {
    /// Looks names up on `handle`'s runtime, from any thread.
    pub fn with_handle(handle: Handle) -> TokioResolver {
        TokioResolver { handle: Some(handle) }
    }
}

impl Resolver for TokioResolver {
    fn lookup<'a>(&'a self, name: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        let target = (name.to_owned(), port);
        let lookup = async move { Ok(tokio::net::lookup_host(target).await?.collect()) };
        match &self.handle {
            None => Box::pin(lookup),
            Some(h) => {
                let task = h.spawn(lookup);
                Box::pin(async move { task.await.map_err(io::Error::other)? })
            }
        }
    }
}
