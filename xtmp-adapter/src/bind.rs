//! The public `Client` and `Server` of a runtime adapter: the shared ones,
//! bound to that adapter's runtime, defined once here so that the adapters
//! do not repeat them.

/// Defines `Client` and `Server` in a runtime adapter crate: newtypes of
/// [`crate::Client`] and [`crate::Server`] whose constructors take no
/// runtime argument (they use `$runtime`, an expression of type
/// `Arc<dyn Runtime>` evaluated at each call). `$name` names the runtime
/// in the generated documentation.
#[doc(hidden)]
#[macro_export]
macro_rules! bind_runtime {
    (runtime = $runtime:expr, name = $name:literal) => {
        #[doc = concat!("A connected XTMP client on ", $name, ": cheap to clone, usable from any task.")]
        ///
        /// Every method of [`xtmp_adapter::Client`] (request, send, post,
        /// subscribe, state, stats, close, abort) is available through
        /// `Deref`; this type adds the constructors that bring the runtime.
        #[derive(Clone, Debug)]
        pub struct Client($crate::Client);

        impl Client {
            /// Connects to `endpoint`: the registry (if the setup names one)
            /// maps its name and pins its key, host names are resolved with
            /// the runtime's resolver (unless the setup names one), the
            /// setup's trust policy picks the server verifier, and the
            /// addresses are tried in order until a handshake completes.
            pub async fn connect_to(
                endpoint: &$crate::Endpoint,
                setup: $crate::ClientSetup,
            ) -> Result<Client, $crate::Error> {
                $crate::Client::connect_to($runtime, endpoint, setup).await.map(Client)
            }

            /// Connects to the endpoint named by `BPCI_XTMP_ENDPOINT`
            /// (default `xtmp://localhost:7778`), as [`Client::connect_to`].
            pub async fn from_env(setup: $crate::ClientSetup) -> Result<Client, $crate::Error> {
                let endpoint = $crate::Endpoint::from_env().map_err(|e| $crate::Error::Config(e.to_string()))?;
                Client::connect_to(&endpoint, setup).await
            }

            /// Connects to `addr` over `transport` and completes the
            /// handshake, trusting the server by the setup's client
            /// configuration.
            pub async fn connect(
                addr: ::std::net::SocketAddr,
                transport: $crate::Transport,
                setup: $crate::ClientSetup,
            ) -> Result<Client, $crate::Error> {
                $crate::Client::connect($runtime, addr, transport, setup).await.map(Client)
            }

            /// The runtime-neutral client.
            pub fn into_inner(self) -> $crate::Client {
                self.0
            }
        }

        impl ::std::ops::Deref for Client {
            type Target = $crate::Client;

            fn deref(&self) -> &$crate::Client {
                &self.0
            }
        }

        #[doc = concat!("A running XTMP server on ", $name, ".")]
        ///
        /// Dropping it stops it at once (every session is aborted with a
        /// Disconnect); [`Server::shutdown`] stops it gracefully.
        #[derive(Debug)]
        pub struct Server($crate::Server);

        impl Server {
            /// Listens on `addr` over `transport` and serves `router`.
            pub async fn bind(
                setup: $crate::ServerSetup,
                transport: $crate::Transport,
                addr: ::std::net::SocketAddr,
                router: $crate::Router,
            ) -> Result<Server, $crate::Error> {
                Server::start(setup, &[(transport, addr)], router).await
            }

            /// Listens on each of `listeners` (TCP, UDP and WebSocket, any
            /// mix, at most one UDP or hybrid listener) and serves `router`, on
            /// [`ServerLimits::shards`]($crate::ServerLimits::shards) shards.
            pub async fn start(
                setup: $crate::ServerSetup,
                listeners: &[($crate::Transport, ::std::net::SocketAddr)],
                router: $crate::Router,
            ) -> Result<Server, $crate::Error> {
                $crate::Server::start($runtime, setup, listeners, router).await.map(Server)
            }

            /// The first listener's address.
            pub fn local_addr(&self) -> ::std::net::SocketAddr {
                self.0.local_addr()
            }

            /// Every listener's transport and address.
            pub fn listeners(&self) -> &[($crate::Transport, ::std::net::SocketAddr)] {
                self.0.listeners()
            }

            /// The server's counters.
            pub async fn stats(&self) -> $crate::ServerStats {
                self.0.stats().await
            }

            /// Stops gracefully (see [`xtmp_adapter::Server::shutdown`]).
            pub async fn shutdown(self, grace: ::std::time::Duration) {
                self.0.shutdown(grace).await
            }

            /// The runtime-neutral server.
            pub fn into_inner(self) -> $crate::Server {
                self.0
            }
        }
    };
}
