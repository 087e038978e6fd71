//! The adapter conformance suite: every scenario of
//! [`xtmp_tests::scenarios`] against every adapter (tokio, smol,
//! async-std) and across them (a server on one runtime, its client on
//! another), and the simulator's counterpart of each scenario that makes
//! sense without real sockets.

use xtmp_tests::harness::{AsyncStd, Smol, Tokio, run};
use xtmp_tests::scenarios;

macro_rules! suite {
    ($module:ident, server = $server:ty, client = $client:ty) => {
        mod $module {
            use super::*;

            #[test]
            fn handshake_on_every_transport() {
                run::<$server, $client, _>(scenarios::handshake);
            }

            #[test]
            fn requests_under_concurrency() {
                run::<$server, $client, _>(scenarios::requests_under_concurrency);
            }

            #[test]
            fn acknowledged_sends() {
                run::<$server, $client, _>(scenarios::acknowledged_sends);
            }

            #[test]
            fn subscriptions() {
                run::<$server, $client, _>(scenarios::subscriptions);
            }

            #[test]
            fn reconnection_without_loss() {
                run::<$server, $client, _>(scenarios::reconnection);
            }

            #[test]
            fn large_messages() {
                run::<$server, $client, _>(scenarios::large_messages);
            }

            #[test]
            fn slow_subscriber() {
                run::<$server, $client, _>(scenarios::slow_subscriber);
            }

            #[test]
            fn slow_best_effort_subscriber() {
                run::<$server, $client, _>(scenarios::slow_best_effort_subscriber);
            }

            #[test]
            fn in_flight_limit() {
                run::<$server, $client, _>(scenarios::in_flight_limit);
            }

            #[test]
            fn accept_failures() {
                run::<$server, $client, _>(scenarios::accept_failures);
            }

            #[test]
            fn graceful_shutdown() {
                run::<$server, $client, _>(scenarios::graceful_shutdown);
            }

            #[test]
            fn subscription_budget() {
                run::<$server, $client, _>(scenarios::subscription_budget);
            }

            #[test]
            fn item_budget() {
                run::<$server, $client, _>(scenarios::item_budget);
            }

            #[test]
            fn a_burst_from_one_address() {
                run::<$server, $client, _>(scenarios::a_burst_from_one_address);
            }

            #[test]
            fn bad_peers() {
                run::<$server, $client, _>(scenarios::bad_peers);
            }

            #[test]
            fn sharded_server() {
                run::<$server, $client, _>(scenarios::sharded_server);
            }

            #[test]
            fn bad_websocket_peers() {
                run::<$server, $client, _>(scenarios::bad_websocket_peers);
            }

            #[test]
            fn request_timeouts() {
                run::<$server, $client, _>(scenarios::request_timeouts);
            }

            #[test]
            fn ordered_sends() {
                run::<$server, $client, _>(scenarios::ordered_sends);
            }

            #[test]
            fn key_rotation() {
                run::<$server, $client, _>(scenarios::key_rotation);
            }
        }
    };
}

suite!(tokio, server = Tokio, client = Tokio);
suite!(smol, server = Smol, client = Smol);
suite!(async_std, server = AsyncStd, client = AsyncStd);
// Interop: each runtime's client against the other's server.
suite!(async_std_client_tokio_server, server = Tokio, client = AsyncStd);
suite!(tokio_client_async_std_server, server = AsyncStd, client = Tokio);
suite!(smol_client_tokio_server, server = Tokio, client = Smol);

/// The simulator's counterpart of each scenario: the same behaviour on
/// the core, under seeded faults and virtual time.
mod sim {
    fn sweep(name: &str, seeds: u64) {
        let scenario = xtmp_sim::scenarios::by_name(name).expect("a shipped scenario");
        let s = xtmp_sim::sweep(&scenario, 0..seeds);
        if let Err(e) = s.check() {
            panic!("{e}");
        }
        assert!(s.messages > 0, "{name}: nothing was sent");
    }

    #[test]
    fn handshake_on_every_transport() {
        sweep("clean", 6);
        sweep("cookies", 10);
    }

    #[test]
    fn requests_under_concurrency() {
        sweep("many_clients", 10);
    }

    #[test]
    fn acknowledged_sends() {
        sweep("lossy", 20);
    }

    #[test]
    fn subscriptions() {
        sweep("subscriptions", 20);
    }

    #[test]
    fn reconnection_without_loss() {
        sweep("stream_severed", 20);
        sweep("nat_rebinding", 20);
    }

    #[test]
    fn bad_peers() {
        sweep("attacker", 20);
        sweep("corruption", 20);
    }

    #[test]
    fn key_rotation() {
        sweep("key_rotation", 20);
    }
}
