//! Host name lookup on tokio.

use std::io;
use std::net::SocketAddr;

use xtmp_adapter::{BoxFuture, Resolver};

/// Resolves host names with tokio's resolver (the system's, run on
/// tokio's blocking pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioResolver;

impl Resolver for TokioResolver {
    fn lookup<'a>(&'a self, name: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((name, port)).await?.collect()) })
    }
}
