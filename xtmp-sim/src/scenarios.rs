//! The scenarios the simulator ships, by name. Each is a plain
//! [`Scenario`]; tests and the `xtmp-sim` command run them over seeds.

use std::time::Duration;

use xtmp_core::endpoint::RetryPolicy;
use xtmp_core::reliability::MtuDiscoveryConfig;

use crate::link::{Latency, LinkConfig, Loss};
use crate::scenario::{Action, Attacker, ClockFaults, Dir, Flood, Mark, Scenario, Transport, Who, Workload};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

/// Every named scenario, for sweeps.
pub const NAMES: &[&str] = &[
    "clean",
    "lossy",
    "corruption",
    "partition_heals",
    "partition_idle",
    "server_restart",
    "server_restart_reset",
    "client_restart",
    "key_rotation",
    "many_clients",
    "large_messages",
    "shared_reassembly",
    "subscriptions",
    "attacker",
    "stream_severed",
    "hybrid",
    "hybrid_udp_blocked",
    "nat_rebinding",
    "clock_faults",
    "mtu_change",
    "path_mtu",
    "cookies",
    "hello_flood",
    "nat_burst",
    "off_path_forgeries",
    "tcp_hello_flood",
    "stalled_streams",
    "slow_reader",
    "swarm",
    "swarm_events",
];

/// The scenario called `name`.
pub fn by_name(name: &str) -> Option<Scenario> {
    Some(match name {
        "clean" => clean(),
        "lossy" => lossy(),
        "corruption" => corruption(),
        "partition_heals" => partition_heals(),
        "partition_idle" => partition_idle(),
        "server_restart" => server_restart(),
        "server_restart_reset" => server_restart_reset(),
        "client_restart" => client_restart(),
        "key_rotation" => key_rotation(),
        "many_clients" => many_clients(),
        "large_messages" => large_messages(),
        "shared_reassembly" => shared_reassembly(),
        "subscriptions" => subscriptions(),
        "attacker" => attacker(),
        "stream_severed" => stream_severed(),
        "hybrid" => hybrid(),
        "hybrid_udp_blocked" => hybrid_udp_blocked(),
        "nat_rebinding" => nat_rebinding(),
        "clock_faults" => clock_faults(),
        "mtu_change" => mtu_change(),
        "path_mtu" => path_mtu(),
        "cookies" => cookies(),
        "hello_flood" => hello_flood(),
        "nat_burst" => nat_burst(),
        "off_path_forgeries" => off_path_forgeries(),
        "tcp_hello_flood" => tcp_hello_flood(),
        "stalled_streams" => stalled_streams(),
        "slow_reader" => slow_reader(),
        "swarm" => swarm(),
        "swarm_events" => swarm_events(),
        _ => return None,
    })
}

/// A clean handshake and 10,000 messages.
pub fn clean() -> Scenario {
    let mut s = Scenario::new("clean");
    s.workload = Workload { messages: 10_000, interval: Duration::from_micros(500), ..Workload::default() };
    s
}

/// 20 % loss both ways, with reordering and duplication.
pub fn lossy() -> Scenario {
    let link = LinkConfig {
        latency: Latency::Uniform(ms(5), ms(30)),
        loss: Loss::Bernoulli(0.2),
        duplicate: 0.05,
        reorder: 0.1,
        hold_back: ms(80),
        ..LinkConfig::default()
    };
    let mut s = Scenario::new("lossy").links(link).expect(&[Mark::Retransmission, Mark::ReplayRejected]);
    s.workload.messages = 300;
    s
}

/// Bit flips and truncations on 5 % of datagrams: refused, never delivered.
pub fn corruption() -> Scenario {
    let link = LinkConfig { corrupt: 0.05, ..LinkConfig::default() };
    Scenario::new("corruption").links(link).expect(&[Mark::Rejected, Mark::Retransmission])
}

/// A partition longer than the retransmission timeout, which heals.
pub fn partition_heals() -> Scenario {
    Scenario::new("partition_heals")
        .at(ms(400), Action::Partition(Who::All, None))
        .at(secs(4), Action::Heal(Who::All))
        .expect(&[Mark::Probe, Mark::Retransmission])
}

/// A partition longer than the idle timeout: both sides end the session
/// cleanly; the client reconnects after the heal.
pub fn partition_idle() -> Scenario {
    let mut s = Scenario::new("partition_idle")
        .at(ms(400), Action::Partition(Who::All, None))
        .at(secs(12), Action::Heal(Who::All))
        .expect(&[Mark::IdleTimeout, Mark::Reconnect]);
    s.idle_timeout = secs(5);
    s.session.heartbeat_interval = Some(secs(1));
    s.lossless = false;
    s
}

/// The server crashes (all state lost) and restarts: the client notices
/// (idle timeout) and starts a new session.
pub fn server_restart() -> Scenario {
    let mut s = Scenario::new("server_restart")
        .at(ms(500), Action::CrashServer)
        .at(secs(2), Action::RestartServer)
        .expect(&[Mark::Reconnect, Mark::IdleTimeout]);
    s.idle_timeout = secs(5);
    s.session.heartbeat_interval = Some(secs(1));
    s.workload.messages = 400;
    s.workload.subscriptions = 2;
    s.lossless = false;
    s
}

/// The server crashes and restarts with the same identity, hence the same
/// stateless reset key: each client's next frame gets a Reset and the
/// client starts a new session within 2 s of the restart (an invariant),
/// long before its 30 s idle timeout; over TCP and UDP at once (hybrid),
/// with loss.
pub fn server_restart_reset() -> Scenario {
    let mut s = Scenario::new("server_restart_reset")
        .links(LinkConfig { loss: Loss::Bernoulli(0.02), ..LinkConfig::default() })
        .at(ms(500), Action::CrashServer)
        .at(secs(2), Action::RestartServer)
        .expect(&[Mark::StatelessReset, Mark::Reconnect]);
    s.clients = 3;
    s.transport = Transport::Hybrid;
    s.idle_timeout = secs(30);
    s.session.heartbeat_interval = Some(secs(1));
    s.stateless_reset = true;
    s.workload.messages = 300;
    s.workload.subscriptions = 2;
    s.lossless = false;
    s
}

/// Clients crash (all state lost, no Disconnect) and restart: each starts
/// a new session from new sockets; the server closes the orphaned ones on
/// their idle timeout (or when their stream breaks) and the new sessions
/// carry on. Hybrid, so a crash resets a stream and abandons a datagram
/// path at once; one client crashes twice, once mid-handshake.
pub fn client_restart() -> Scenario {
    let mut s = Scenario::new("client_restart")
        .links(LinkConfig {
            latency: Latency::Uniform(ms(2), ms(20)),
            loss: Loss::Bernoulli(0.02),
            ..LinkConfig::default()
        })
        .at(ms(700), Action::CrashClient(Who::Client(0)))
        .at(ms(900), Action::RestartClient(Who::Client(0)))
        .at(ms(905), Action::CrashClient(Who::Client(0)))
        .at(secs(2), Action::RestartClient(Who::Client(0)))
        .at(ms(1500), Action::CrashClient(Who::Client(1)))
        .at(secs(3), Action::RestartClient(Who::Client(1)));
    s.clients = 3;
    s.transport = Transport::Hybrid;
    s.idle_timeout = secs(5);
    s.session.heartbeat_interval = Some(secs(1));
    s.workload.messages = 400;
    s.workload.subscriptions = 2;
    s.lossless = false;
    s.expect(&[Mark::Reconnect, Mark::OrphanClosed])
}

/// Key rotation under load: the sending key ratchets every second, and a
/// hybrid re-key is forced twice.
pub fn key_rotation() -> Scenario {
    let mut s = Scenario::new("key_rotation")
        .at(secs(3), Action::Rekey(Who::All))
        .at(secs(7), Action::Rekey(Who::All))
        .at(ms(5500), Action::UpdateKey(Who::All))
        .links(LinkConfig { loss: Loss::Bernoulli(0.02), reorder: 0.05, ..LinkConfig::default() })
        .expect(&[Mark::KeyUpdate, Mark::Rekey]);
    s.session.key_update_interval = secs(1);
    s.session.key_grace = ms(500);
    s.workload = Workload { messages: 2_000, interval: ms(5), ..Workload::default() };
    s
}

/// Twenty clients on one server.
pub fn many_clients() -> Scenario {
    let mut s =
        Scenario::new("many_clients").links(LinkConfig { loss: Loss::Bernoulli(0.01), ..LinkConfig::default() });
    s.clients = 20;
    s.workload.messages = 100;
    s
}

/// Messages up to 1 MiB over a 1,200-byte MTU with 5 % loss.
pub fn large_messages() -> Scenario {
    let link = LinkConfig { mtu: 1200, loss: Loss::Bernoulli(0.05), ..LinkConfig::default() };
    let mut s = Scenario::new("large_messages").links(link).expect(&[Mark::Fragmented, Mark::Retransmission]);
    s.workload = Workload {
        messages: 60,
        interval: ms(20),
        large_chance: 0.3,
        large: 1 << 20,
        unreliable: 0.0,
        ..Workload::default()
    };
    s.session.max_reassembly_bytes = 2 << 20;
    s
}

/// Eight clients send messages up to 128 KiB over links that lose and
/// reorder, to a server whose sessions share 256 KiB of reassembly (each
/// could hold 2 MiB alone; their messages next in line alone exceed the
/// budget): frames beyond it are refused and sent again, the total stays
/// within the budget plus the messages next in line, nothing is lost, and
/// no session starves.
pub fn shared_reassembly() -> Scenario {
    let link = LinkConfig { mtu: 1200, loss: Loss::Bernoulli(0.03), reorder: 0.1, ..LinkConfig::default() };
    let mut s = Scenario::new("shared_reassembly").links(link).expect(&[
        Mark::Fragmented,
        Mark::Retransmission,
        Mark::ReassemblyRefused,
    ]);
    s.clients = 8;
    s.endpoint_reassembly = Some(256 * 1024);
    s.hold_faults = true;
    s.session.max_reassembly_bytes = 2 << 20;
    s.workload = Workload {
        messages: 12,
        interval: ms(2),
        large_chance: 0.6,
        large: 128 * 1024,
        unreliable: 0.0,
        ..Workload::default()
    };
    s
}

/// Four clients each hold three subscriptions (live updates, events,
/// metrics) per session, reliable or best-effort, over links that lose,
/// reorder and duplicate, with a stream reset and a rebinding: the server
/// pushes an item to each every 20 ms and ends half of them; the clients
/// leave the others halfway. Each subscription's window holds four items,
/// so reliable ones wait for credit, and those waiting when their
/// subscriber leaves fail as withdrawn. Reliable items arrive exactly once
/// in order, best-effort ones at most once, none after an end or an
/// unsubscribe.
pub fn subscriptions() -> Scenario {
    let link = LinkConfig { loss: Loss::Bernoulli(0.03), reorder: 0.05, duplicate: 0.02, ..LinkConfig::default() };
    let mut s = Scenario::new("subscriptions").links(link).expect(&[Mark::Retransmission, Mark::ItemWithdrawn]);
    s.clients = 4;
    s.subscription_window = Some(4 * (40 + 32));
    s.workload = Workload {
        messages: 60,
        interval: ms(20),
        push_interval: Some(ms(20)),
        subscriptions: 3,
        items: 40,
        ..Workload::default()
    };
    s
}

/// An attacker on the path replays, reflects, forges and sprays frames.
pub fn attacker() -> Scenario {
    let mut s = Scenario::new("attacker").expect(&[Mark::ReplayRejected, Mark::Rejected]);
    s.attacker = Some(Attacker { interval: ms(10) });
    s.clients = 2;
    s
}

/// The server's application stops taking its events for seconds at a
/// time, under a 16 KiB flow-control window, with 2 % loss: its clients
/// wait for credit, unread memory stays bounded, nothing is lost.
pub fn slow_reader() -> Scenario {
    let mut s = Scenario::new("slow_reader")
        .links(LinkConfig { loss: Loss::Bernoulli(0.02), ..LinkConfig::default() })
        .at(ms(200), Action::ServerReading(false))
        .at(secs(3), Action::ServerReading(true))
        .at(ms(3500), Action::ServerReading(false))
        .at(secs(5), Action::ServerReading(true))
        .expect(&[Mark::FlowBlocked, Mark::Fragmented]);
    s.clients = 2;
    s.receive_window = Some(16 * 1024);
    s.workload = Workload { messages: 150, interval: ms(5), large_chance: 0.1, large: 40_000, ..Workload::default() };
    s
}

/// A stream transport whose connection is reset three times.
pub fn stream_severed() -> Scenario {
    let mut s = Scenario::new("stream_severed")
        .at(ms(300), Action::Sever(Who::All))
        .at(ms(900), Action::Sever(Who::All))
        .at(ms(1500), Action::Sever(Who::All))
        .expect(&[Mark::Migration]);
    s.transport = Transport::Stream;
    s.workload.interval = ms(4);
    s
}

/// A stream path and a datagram path in one session; the stream is reset.
pub fn hybrid() -> Scenario {
    let mut s = Scenario::new("hybrid")
        .links(LinkConfig { loss: Loss::Bernoulli(0.05), ..LinkConfig::default() })
        .at(ms(600), Action::Sever(Who::All));
    s.transport = Transport::Hybrid;
    s
}

/// Hybrid sessions whose datagram paths stop delivering for good (a
/// firewall starts dropping UDP) while their streams work: the sessions
/// give the datagram paths up and move their real-time traffic
/// (subscription items, pushes) to the streams; the new datagram paths
/// the clients keep opening fail their validation.
pub fn hybrid_udp_blocked() -> Scenario {
    let mut s = Scenario::new("hybrid_udp_blocked")
        .links(LinkConfig { loss: Loss::Bernoulli(0.02), ..LinkConfig::default() })
        .at(ms(500), Action::BlockDatagrams(Who::All))
        .expect(&[Mark::DatagramPathFailed]);
    s.transport = Transport::Hybrid;
    s.clients = 2;
    s.workload.subscriptions = 2;
    s.workload.items = 40;
    s.workload.reliable_items = 0.5;
    s.workload.push_interval = Some(ms(100));
    s
}

/// The client's address changes (a NAT rebinding) eight times, twice as
/// often as a session may hold live paths: each old address must be
/// retired, not kept until the path limit refuses the next one.
pub fn nat_rebinding() -> Scenario {
    let mut s = Scenario::new("nat_rebinding");
    for t in [300, 700, 1200, 1600, 2000, 2500, 2900, 3400] {
        s = s.at(ms(t), Action::Rebind(Who::All));
    }
    // Traffic throughout (about 4 s), so every rebinding moves a path.
    s.workload.interval = ms(20);
    s.expect(&[Mark::Migration])
}

/// Clocks offset by up to an hour, drifting by up to 500 ppm, and stepping.
pub fn clock_faults() -> Scenario {
    let mut s = Scenario::new("clock_faults")
        .at(ms(500), Action::ClockStep(Some(0), secs(2)))
        .at(secs(1), Action::ClockStep(None, ms(700)))
        .links(LinkConfig { loss: Loss::Bernoulli(0.03), ..LinkConfig::default() });
    s.clocks = ClockFaults { max_offset: secs(3600), max_drift_ppm: 500 };
    s.clients = 2;
    s
}

/// The path MTU drops below the datagram size for a while, then recovers.
pub fn mtu_change() -> Scenario {
    let mut s = Scenario::new("mtu_change")
        .at(ms(300), Action::SetMtu(Who::All, 600))
        .at(secs(3), Action::SetMtu(Who::All, 1500))
        .expect(&[Mark::Retransmission]);
    s.workload.small = 1000;
    s
}

/// Path MTU discovery over a 1,400-byte path with 1 % loss: the sessions
/// find it, the path narrows to 1,300 bytes (a black hole for what they
/// found) and they fall back, then it widens again and they search anew.
pub fn path_mtu() -> Scenario {
    let link = LinkConfig { mtu: 1400, loss: Loss::Bernoulli(0.01), ..LinkConfig::default() };
    let mut s = Scenario::new("path_mtu")
        .links(link)
        .at(secs(2), Action::SetMtu(Who::All, 1300))
        .at(secs(5), Action::SetMtu(Who::All, 1500))
        .expect(&[Mark::MtuRaised, Mark::BlackHole, Mark::Fragmented]);
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.interval = secs(2);
    s.session.mtu_discovery = Some(mtu);
    s.workload = Workload {
        messages: 400,
        interval: ms(20),
        large_chance: 0.2,
        large: 64 * 1024,
        unreliable: 0.1,
        ..Workload::default()
    };
    s
}

/// The server answers every datagram hello with a Retry cookie.
pub fn cookies() -> Scenario {
    let mut s = Scenario::new("cookies").expect(&[Mark::CookieIssued]);
    s.retry = RetryPolicy::Always;
    s.clients = 3;
    s.workload.messages = 50;
    s
}

/// Spoofed ClientHellos flood the server from 16 prefixes (first
/// datagrams alone, and some whole hellos) while the clients crash and
/// connect again: every honest handshake completes within 3 s, the server
/// answers the flood with stateless Retries and never sends a spoofed
/// address more than three times what it got from it, and its half-open
/// state stays within its limits (SPEC.md 3.2).
pub fn hello_flood() -> Scenario {
    let mut s = Scenario::new("hello_flood")
        .links(LinkConfig { loss: Loss::Bernoulli(0.01), ..LinkConfig::default() })
        .at(ms(1500), Action::CrashClient(Who::All))
        .at(ms(1700), Action::RestartClient(Who::All))
        .expect(&[Mark::Flooded, Mark::CookieIssued]);
    s.clients = 4;
    s.retry = RetryPolicy::UnderLoad(16);
    s.flood = Some(Flood {
        from: ms(300),
        until: secs(4),
        interval: ms(4),
        prefixes: 16,
        whole: 0.1,
        forgeries: 0.0,
        tcp_hellos: 0.0,
        stalled_streams: 0.0,
    });
    s.max_handshake = Some(secs(3));
    s.lossless = false;
    s.workload.messages = 100;
    s
}

/// Forgeries of captured sealed frames of live sessions arrive from
/// spoofed addresses, hundreds a second, against sessions that close at 8
/// failed decryptions: off the path they count toward nothing, so no
/// session is lost and every message arrives (SPEC.md 3.6).
pub fn off_path_forgeries() -> Scenario {
    let mut s = Scenario::new("off_path_forgeries").expect(&[Mark::ForgeryIgnored]);
    s.clients = 2;
    s.session.max_decrypt_failures = 8;
    s.flood = Some(Flood {
        from: ms(200),
        until: secs(3),
        interval: ms(3),
        prefixes: 16,
        whole: 0.0,
        forgeries: 1.0,
        tcp_hellos: 0.0,
        stalled_streams: 0.0,
    });
    s.workload.messages = 300;
    s
}

/// Whole hellos over TCP from 32 addresses of one /24, never finished,
/// while the clients (another prefix) crash and connect again over TCP:
/// the flood fills only its prefix's share of the half-open slots, and
/// under that load every hello proves that its sender reads (a Retry
/// round trip over TCP), so every honest handshake completes within 3 s
/// (SPEC.md 3.2).
pub fn tcp_hello_flood() -> Scenario {
    let mut s = Scenario::new("tcp_hello_flood")
        .at(ms(1500), Action::CrashClient(Who::All))
        .at(ms(1700), Action::RestartClient(Who::All))
        .expect(&[Mark::Flooded, Mark::CookieIssued]);
    s.clients = 4;
    s.transport = Transport::Stream;
    s.flood = Some(Flood {
        from: ms(300),
        until: secs(4),
        interval: ms(5),
        prefixes: 1,
        whole: 1.0,
        forgeries: 0.0,
        tcp_hellos: 1.0,
        stalled_streams: 0.0,
    });
    s.max_handshake = Some(secs(3));
    s.lossless = false;
    s.workload.messages = 100;
    s
}

/// Thousands of TCP connections from one /24 that stay silent, or
/// announce a 60,000-byte frame, send 1,000 bytes of it and stall, while
/// honest clients connect over TCP (and crash and connect again): each
/// such connection is reset within the hello timeout, the bytes held for
/// them stay within a frame each, and every honest handshake completes
/// within 3 s.
pub fn stalled_streams() -> Scenario {
    let mut s = Scenario::new("stalled_streams")
        .at(ms(1500), Action::CrashClient(Who::All))
        .at(ms(1700), Action::RestartClient(Who::All))
        .expect(&[Mark::Flooded]);
    s.clients = 4;
    s.transport = Transport::Stream;
    s.flood = Some(Flood {
        from: ms(200),
        until: secs(4),
        interval: ms(2),
        prefixes: 1,
        whole: 1.0,
        forgeries: 0.0,
        tcp_hellos: 0.0,
        stalled_streams: 1.0,
    });
    s.max_handshake = Some(secs(3));
    s.lossless = false;
    s.workload.messages = 100;
    s
}

/// Twenty clients behind one NAT connect at once, and again after they
/// crash, over streams and datagrams, against a half-open share of 4 per
/// prefix: those beyond it are told Busy and come back, and every
/// handshake completes within 5 s (SPEC.md 3.2, "Busy").
pub fn nat_burst() -> Scenario {
    let mut s = Scenario::new("nat_burst")
        .at(secs(1), Action::CrashClient(Who::All))
        .at(ms(1100), Action::RestartClient(Who::All))
        .expect(&[Mark::Busy]);
    s.clients = 20;
    s.nat = true;
    s.transport = Transport::Hybrid;
    s.half_open_per_prefix = Some(4);
    s.retry = RetryPolicy::Always;
    s.max_handshake = Some(secs(5));
    s.lossless = false;
    s.workload.messages = 20;
    s
}

/// Datagram link faults drawn from the seed for each direction ("swarm"
/// testing), one direction cut for a while.
pub fn swarm() -> Scenario {
    let mut s = Scenario::new("swarm")
        .at(ms(800), Action::Partition(Who::Client(0), Some(Dir::Down)))
        .at(secs(2), Action::Heal(Who::Client(0)));
    s.swarm = true;
    s.clients = 2;
    s.workload.messages = 150;
    s.workload.large_chance = 0.05;
    s.workload.subscriptions = 2;
    s
}

/// [`swarm`] plus a drawn transport (datagram, stream, hybrid) and up to
/// four random recoverable events per run (partitions, flapping, NAT
/// rebinding, stream resets, MTU dips, clock steps). The test suite sweeps
/// 500 seeds; about 0.5 % of seeds still fail (mostly a stream path that
/// fails while it carries the client's final flight), listed in
/// `regressions/open.txt` and skipped there until fixed.
pub fn swarm_events() -> Scenario {
    let mut s = swarm();
    s.name = "swarm_events".into();
    s.swarm_events = true;
    s
}
