//! Host name lookup on async-io.

use std::io;
use std::net::SocketAddr;

use xtmp_adapter::{BoxFuture, Resolver};

/// Resolves host names with the system's resolver, run on a blocking
/// thread pool (`async-net`'s `resolve`).
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncNetResolver;

impl Resolver for AsyncNetResolver {
    fn lookup<'a>(&'a self, name: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { async_net::resolve((name, port)).await })
    }
}
