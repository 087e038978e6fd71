//! What the benches that drive a real `xtmp serve` share: the server
//! process and what `/proc` says about a process (Linux).

#![allow(dead_code)] // each bench uses part of it

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use xtmp_tokio::Endpoint;

/// An `xtmp serve --ephemeral` process, killed when dropped.
pub(crate) struct Serve {
    pub(crate) child: Child,
    /// The port it listens on (every transport of a hybrid listener).
    pub(crate) port: u16,
    /// Its identity's fingerprint.
    pub(crate) key: String,
}

impl Serve {
    /// Starts `xtmp serve --ephemeral` with `args` and waits for the
    /// endpoint line it prints once listening.
    pub(crate) fn start(args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xtmp"))
            .arg("serve")
            .arg("--ephemeral")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("xtmp serve starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = lines.next().expect("an endpoint line").expect("text");
        // SCHEME://127.0.0.1:PORT?key=FINGERPRINT
        let rest = line.trim().split("://").nth(1).expect("an endpoint");
        let (addr, key) = rest.split_once("?key=").expect("a key");
        let port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
        Serve { child, port, key: key.to_string() }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's endpoint over `scheme` (`xtmp`, `xtmp+udp`, ...),
    /// its identity pinned.
    pub(crate) fn endpoint(&self, scheme: &str) -> Endpoint {
        format!("{scheme}://127.0.0.1:{}?key={}", self.port, self.key).parse().expect("an endpoint")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time used so far (user + system).
    pub(crate) fn cpu(&self) -> Duration {
        cpu_of(self.pid())
    }

    /// Resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        rss_kib_of(&self.pid().to_string())
    }

    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's CPU time so far, summed over its threads from
/// `/proc/PID/task/*/schedstat` (nanoseconds of run time; the tick-based
/// `utime`/`stime` of `/proc/PID/stat` under-count short bursts).
/// Threads that already ended are not counted.
pub(crate) fn cpu_of(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// A process's resident memory in KiB (`pid` may be `self`).
pub(crate) fn rss_kib_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The `q` quantile of `v` (sorted in place).
pub(crate) fn percentile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v.get(((v.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or_default()
}
