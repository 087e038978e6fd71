//! The client commands: request, send, subscribe, ping.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures_lite::StreamExt;
use xtmp_core::wire::MessageType;
use xtmp_tokio::{Client, ClientSetup};

use crate::show::{self, Distribution};
use crate::{Connect, parse_type};

#[derive(Args, Debug)]
pub(crate) struct RequestArgs {
    #[command(flatten)]
    connect: Connect,
    /// The request's type: a name (`registry-query`) or a code (`0x30`).
    #[arg(long = "type", short, default_value = "echo", value_parser = parse_type)]
    message_type: MessageType,
    /// The request's body (`-`: read it from stdin).
    #[arg(default_value = "")]
    body: String,
}

#[derive(Args, Debug)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    connect: Connect,
    /// The message's type.
    #[arg(long = "type", short, default_value = "echo", value_parser = parse_type)]
    message_type: MessageType,
    /// The message's body (`-`: read it from stdin).
    body: String,
}

#[derive(Args, Debug)]
pub(crate) struct SubscribeArgs {
    #[command(flatten)]
    connect: Connect,
    /// The stream's type.
    #[arg(long = "type", short, default_value = "live-updates", value_parser = parse_type)]
    message_type: MessageType,
    /// Stop after this many items.
    #[arg(long, short = 'n')]
    count: Option<usize>,
    /// The subscription's filter (passed to the server as is).
    #[arg(default_value = "")]
    filter: String,
}

#[derive(Args, Debug)]
pub(crate) struct PingArgs {
    #[command(flatten)]
    connect: Connect,
    /// Round trips to measure.
    #[arg(long, short = 'n', default_value_t = 1_000)]
    count: usize,
    /// Request body size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Pause between round trips, in milliseconds.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// The type of the requests (the server must answer it).
    #[arg(long = "type", short, default_value = "echo", value_parser = parse_type)]
    message_type: MessageType,
}

/// Connects as `c` says.
pub(crate) async fn connect(c: &Connect) -> Result<(Client, Duration), String> {
    let mut setup = ClientSetup::registry(c.registry.clone(), c.trust_on_first_use);
    setup.request_timeout = Duration::from_millis(c.timeout_ms);
    setup.reconnect = None;
    let started = Instant::now();
    let client = Client::connect_to(&c.endpoint, setup).await.map_err(|e| format!("{}: {e}", c.endpoint))?;
    Ok((client, started.elapsed()))
}

fn body(text: &str) -> Result<Bytes, String> {
    if text != "-" {
        return Ok(Bytes::copy_from_slice(text.as_bytes()));
    }
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(buf.into())
}

/// Writes `bytes` to stdout, with a newline after text that lacks one.
fn print_body(bytes: &[u8]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).map_err(|e| e.to_string())?;
    if std::str::from_utf8(bytes).is_ok() && !bytes.ends_with(b"\n") {
        out.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

pub(crate) async fn request(a: RequestArgs) -> Result<(), String> {
    let (client, _) = connect(&a.connect).await?;
    let answer = client.request(a.message_type, body(&a.body)?).await.map_err(|e| e.to_string())?;
    client.close().await;
    print_body(&answer.body)
}

pub(crate) async fn send(a: SendArgs) -> Result<(), String> {
    let (client, _) = connect(&a.connect).await?;
    let started = Instant::now();
    client.send(a.message_type, body(&a.body)?).await.map_err(|e| e.to_string())?;
    println!("acknowledged in {}", show::duration(started.elapsed()));
    client.close().await;
    Ok(())
}

pub(crate) async fn subscribe(a: SubscribeArgs) -> Result<(), String> {
    let (client, _) = connect(&a.connect).await?;
    let filter = Bytes::copy_from_slice(a.filter.as_bytes());
    let mut stream = client.subscribe(a.message_type, filter).await.map_err(|e| e.to_string())?;
    let mut seen = 0;
    while a.count.is_none_or(|n| seen < n) {
        let Some(item) = stream.next().await else {
            let end = stream.end().map(|e| e.to_string()).unwrap_or_else(|| "the stream ended".into());
            eprintln!("{end}");
            break;
        };
        print_body(&item.body)?;
        seen += 1;
    }
    drop(stream);
    client.close().await;
    Ok(())
}

pub(crate) async fn ping(a: PingArgs) -> Result<(), String> {
    if a.count == 0 {
        return Err("--count must be at least 1".into());
    }
    let (client, handshake) = connect(&a.connect).await?;
    println!("connected to {} in {} (handshake included)", a.connect.endpoint, show::duration(handshake));
    let payload = Bytes::from(vec![0x5a; a.size]);
    let mut samples = Vec::with_capacity(a.count);
    let mut progress = show::Progress::new();
    for i in 0..a.count {
        let started = Instant::now();
        let answer = client.request(a.message_type, payload.clone()).await.map_err(|e| e.to_string())?;
        samples.push(started.elapsed());
        if answer.body.len() != a.size {
            return Err(format!("the answer had {} bytes, not the {} sent", answer.body.len(), a.size));
        }
        if i % 64 == 0 {
            progress.update(format!("{} {i}/{}", show::bar(i, a.count, 30), a.count));
        }
        if a.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(a.interval_ms)).await;
        }
    }
    let d = Distribution::of(&samples).ok_or("no samples")?;
    progress.done(format!("{} round trips of {} bytes", a.count, a.size));
    println!("rtt  {}", d.line());
    for line in show::histogram(&samples) {
        println!("     {line}");
    }
    let s = client.stats();
    println!(
        "session: {} frames sent, {} received, {} retransmissions, smoothed rtt {}",
        s.session.frames_sent,
        s.session.frames_received,
        s.session.retransmissions,
        s.session.rtt.map(show::duration).unwrap_or_else(|| "-".into())
    );
    client.close().await;
    Ok(())
}
