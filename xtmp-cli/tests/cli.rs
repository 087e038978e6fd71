//! The `xtmp` command end to end: keygen, a server process, the client
//! commands against it, and the demo.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn xtmp() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtmp"));
    c.env_remove("BPCI_XTMP_ENDPOINT").env_remove("XTMP_LOG");
    c
}

fn run(args: &[&str]) -> Output {
    xtmp().args(args).output().expect("xtmp runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `args` succeed; their stdout.
fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "xtmp {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtmp-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// A server process, stopped with SIGINT (graceful) when dropped.
struct Serve {
    child: Child,
    endpoints: Vec<String>,
}

impl Serve {
    fn start(args: &[&str], listeners: usize) -> Serve {
        let mut child = xtmp()
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("xtmp serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let endpoints: Vec<String> =
            (0..listeners).map(|_| lines.next().expect("an endpoint line").expect("text")).collect();
        Serve { child, endpoints }
    }

    /// Stops the server with SIGINT and checks that it exits cleanly.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status} after Ctrl-C");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keygen_writes_an_identity_and_refuses_to_overwrite_it() {
    let dir = temp_dir("keygen");
    let id = dir.join("id.pem");
    let public = dir.join("id.pub.pem");
    let fingerprint = ok(&["keygen", "--out", path(&id), "--public", path(&public)]);
    let fingerprint = fingerprint.trim();
    assert!(fingerprint.starts_with("xtmp1:") && fingerprint.len() == 38, "{fingerprint:?}");
    let text = std::fs::read_to_string(&id).unwrap();
    assert!(text.contains("PRIVATE") || text.contains("SECRET") || text.contains("IDENTITY"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&id).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(std::fs::read_to_string(&public).unwrap().contains("PUBLIC"));

    let again = run(&["keygen", "--out", path(&id)]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists (use --force"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&id).unwrap(), text, "the identity was overwritten");
    let forced = ok(&["keygen", "--out", path(&id), "--force"]);
    assert_ne!(forced.trim(), fingerprint, "--force wrote a new identity");
}

#[test]
fn the_client_commands_talk_to_a_served_identity_over_tcp_and_udp() {
    let dir = temp_dir("serve");
    let id = dir.join("id.pem");
    let fingerprint = ok(&["keygen", "--out", path(&id)]).trim().to_string();
    let registry = dir.join("registry");
    std::fs::write(&registry, format!("bpci 10.1.2.3:7778 {fingerprint}\n")).unwrap();
    let server = Serve::start(
        &[
            "--identity",
            path(&id),
            "--listen",
            "xtmp://127.0.0.1:0",
            "--listen",
            "xtmp+udp://127.0.0.1:0",
            "--registry",
            path(&registry),
            "--rate",
            "100",
        ],
        2,
    );
    assert!(server.endpoints[0].starts_with("xtmp://127.0.0.1:"), "{:?}", server.endpoints);
    assert!(server.endpoints[1].starts_with("xtmp+udp://127.0.0.1:"), "{:?}", server.endpoints);
    for e in &server.endpoints {
        assert!(e.ends_with(&format!("?key={fingerprint}")), "{e}");
        assert_eq!(ok(&["request", "--endpoint", e, "hello over XTMP"]), "hello over XTMP\n");
    }
    let tcp = server.endpoints[0].as_str();

    // The endpoint may come from the environment.
    let o = xtmp().args(["request", "from the environment"]).env("BPCI_XTMP_ENDPOINT", tcp).output().unwrap();
    assert_eq!(stdout(&o), "from the environment\n", "{}", stderr(&o));

    assert_eq!(
        ok(&["request", "-e", tcp, "--type", "registry-query", "bpci"]).split_whitespace().collect::<Vec<_>>(),
        ["bpci", "10.1.2.3:7778", fingerprint.as_str()]
    );
    let unknown = run(&["request", "-e", tcp, "--type", "registry-query", "nobody"]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("no entry for nobody"), "{}", stderr(&unknown));

    assert!(ok(&["send", "-e", tcp, "--type", "bundle-submit", "bundle 1"]).starts_with("acknowledged in "));

    let items = ok(&["subscribe", "-e", tcp, "-n", "3"]);
    let items: Vec<&str> = items.lines().collect();
    assert_eq!(items.len(), 3, "{items:?}");
    for (i, item) in items.iter().enumerate() {
        assert!(item.starts_with(&format!("LiveUpdates #{} ", i + 1)), "{items:?}");
    }
    let ended = ok(&["subscribe", "-e", tcp, "--type", "event-stream", "count=2"]);
    assert_eq!(ended.lines().count(), 2, "{ended}");

    let ping = ok(&["ping", "-e", &server.endpoints[1], "-n", "50", "--size", "100"]);
    assert!(ping.contains("50 round trips of 100 bytes"), "{ping}");
    assert!(ping.lines().any(|l| l.starts_with("rtt  min ")), "{ping}");

    // Unpinned, or pinned to another key: refused, with a reason.
    let unpinned = tcp.split('?').next().unwrap();
    let o = run(&["request", "-e", unpinned, "x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pin"), "{}", stderr(&o));
    let o = run(&["request", "-e", "xtmp://127.0.0.1:1?key=nonsense", "x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid value"), "{}", stderr(&o));

    server.stop();
}

#[test]
fn the_demo_runs_every_step() {
    let o = run(&["demo", "--requests", "200", "--concurrent", "1000", "--handshakes", "2"]);
    let out = stdout(&o);
    assert!(o.status.success(), "the demo failed: {}\n{out}", stderr(&o));
    for step in [
        "1. Identities",
        "2. Post-quantum handshake",
        "3. Requests and responses",
        "4. A live stream",
        "5. Key rotation",
        "6. Reconnection",
        "7. The session's counters",
        "closed gracefully",
    ] {
        assert!(out.contains(step), "missing {step:?}:\n{out}");
    }
    assert!(out.contains("200 sequential requests"), "{out}");
    assert!(out.contains("25 LiveUpdates items"), "{out}");
    assert!(
        out.contains("all 300 sends acknowledged; the server handled 300 distinct ones, 0 more than once"),
        "{out}"
    );
    // The cut shows as a redial of the live session. (The printed states
    // are sampled by `state_changed`, which returns the latest state: on a
    // loaded machine Reconnecting can come and go before the sampler runs.)
    let redials = out
        .split("connections redialed for the live session: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse::<u64>().ok());
    let sessions =
        out.split("sessions: ").nth(1).and_then(|rest| rest.split(')').next()).and_then(|n| n.parse::<u64>().ok());
    assert!(redials.is_some_and(|n| n >= 1) || sessions.is_some_and(|n| n >= 2), "the cut was not seen:\n{out}");
}
