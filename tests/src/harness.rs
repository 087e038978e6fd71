//! The adapters under test, and how a scenario runs on a pair of them.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{Either, select};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_adapter::runtime::sleep_until;
use xtmp_adapter::{Client, ClientSetup, Router, Runtime, Server, ServerSetup, Transport};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::IdentityKeypair;

/// A runtime adapter: its [`Runtime`] for the shared drivers, and how to
/// block on a future with its executor.
pub trait Adapter {
    /// Names the adapter in failure messages.
    const NAME: &'static str;
    /// The runtime the client or server runs on.
    fn runtime() -> Arc<dyn Runtime>;
    /// Runs `f` to completion on this adapter's executor.
    fn block_on<F: Future>(f: F) -> F::Output;
}

/// `xtmp-tokio` on a multi-threaded tokio runtime (two workers).
#[derive(Debug)]
pub struct Tokio;

fn tokio_rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
    })
}

impl Adapter for Tokio {
    const NAME: &'static str = "tokio";

    fn runtime() -> Arc<dyn Runtime> {
        Arc::new(xtmp_tokio::Tokio::with_handle(tokio_rt().handle().clone()))
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio_rt().block_on(f)
    }
}

/// `xtmp-async-std` on smol (its default executor).
#[derive(Debug)]
pub struct Smol;

impl Adapter for Smol {
    const NAME: &'static str = "smol";

    fn runtime() -> Arc<dyn Runtime> {
        Arc::new(xtmp_async_std::AsyncIo::new())
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        smol::block_on(f)
    }
}

/// `xtmp-async-std` with its tasks on async-std's executor.
#[derive(Debug)]
pub struct AsyncStd;

impl Adapter for AsyncStd {
    const NAME: &'static str = "async-std";

    fn runtime() -> Arc<dyn Runtime> {
        Arc::new(xtmp_async_std::AsyncIo::with_spawner(|task| {
            async_std::task::spawn(task);
        }))
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        async_std::task::block_on(f)
    }
}

/// A scenario's two runtimes: the server's and the client's (the same
/// adapter, or two for interop).
#[derive(Clone, Debug)]
pub struct Pair {
    /// The server's runtime.
    pub server: Arc<dyn Runtime>,
    /// The client's runtime (also the proxy's and the raw peers').
    pub client: Arc<dyn Runtime>,
}

/// A scenario that hangs fails after this (it never gates a result).
pub const HANG: Duration = Duration::from_secs(60);

/// Runs `scenario` with a server on `S` and a client on `C`, on `C`'s
/// executor; fails if it does not finish within [`HANG`].
pub fn run<S: Adapter, C: Adapter, Fut: Future<Output = ()>>(scenario: impl FnOnce(Pair) -> Fut) {
    let pair = Pair { server: S::runtime(), client: C::runtime() };
    let watchdog = pair.client.clone();
    C::block_on(async move {
        let deadline = sleep_until(&*watchdog, Instant::now() + HANG);
        if let Either::Right(_) = select(pin!(scenario(pair)), pin!(deadline)).await {
            panic!("server on {}, client on {}: the scenario hung for {HANG:?}", S::NAME, C::NAME);
        }
    })
}

/// The server's identity (one per process: key generation is not what is
/// tested).
pub fn identity() -> Arc<IdentityKeypair> {
    static ID: OnceLock<Arc<IdentityKeypair>> = OnceLock::new();
    ID.get_or_init(|| {
        Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([42; 32])).expect("a keypair"))
    })
    .clone()
}

/// Loopback, any port.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

impl Pair {
    /// Starts a server on the server runtime with the default setup.
    pub async fn serve(&self, transport: Transport, router: Router) -> Server {
        self.serve_with(ServerSetup::new(identity()), transport, router).await
    }

    /// Starts a server on the server runtime.
    pub async fn serve_with(&self, setup: ServerSetup, transport: Transport, router: Router) -> Server {
        Server::start(self.server.clone(), setup, &[(transport, any_port())], router).await.expect("server starts")
    }

    /// A client setup that pins the server's identity.
    pub fn setup(&self) -> ClientSetup {
        ClientSetup::pinned(identity().public().clone())
    }

    /// Connects a client on the client runtime.
    pub async fn connect(&self, addr: SocketAddr, transport: Transport, setup: ClientSetup) -> Client {
        Client::connect(self.client.clone(), addr, transport, setup).await.expect("client connects")
    }

    /// Runs `f` as a task of the client runtime; its output arrives
    /// through the returned future.
    pub fn spawn<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        f: F,
    ) -> impl Future<Output = T> + use<T, F> {
        let (tx, rx) = oneshot::channel();
        self.client.spawn(Box::pin(async move {
            let _ = tx.send(f.await);
        }));
        async move { rx.await.expect("the task ran to completion") }
    }
}

/// Lets other tasks run once.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}
