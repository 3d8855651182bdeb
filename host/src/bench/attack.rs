//! `pincer bench attack`: a healthy operator's `health` latency and the
//! gateway's memory while the gateway is attacked, each measured against
//! the same run without an attack.
//!
//! The gateway runs as a child process (`pincer serve` from this binary) so
//! its resident memory and CPU time are its own; the attackers and the
//! healthy client live in this process and reach it over loopback. The
//! healthy client runs on a thread of its own (its latency must not include
//! queueing behind attacker tasks in this process), the attackers on a
//! runtime of their own. The gateway runs as a public deployment would:
//! per-address limits apply to loopback too (`limit_loopback`), the
//! network attackers come from their own addresses (127.0.0.2 upward, one
//! per socket, like a botnet) and the healthy operator from 127.0.0.1.
//! Scenarios, one at a time:
//!
//! 1. 2,000 unauthenticated sockets, each sending an unfinished 20 MiB
//!    fragment then a ping every 4 s, reconnecting 200 ms after each close;
//! 2. a plugin flooding key-value data, logs and outbound requests;
//! 3. 8 CPU-spinning tool calls at a time;
//! 4. one channel sender sending 1,000 messages;
//! 5. 1,000 webhook pushes from 1,000 senders to a slow channel (an `echo`
//!    copy whose replies go to a receiver that takes 2 s per request).
//!
//! Each scenario is measured against the healthy client's figures in the
//! window just before it (a paired baseline: the load of a shared machine
//! drifts within minutes), and the machine's load average is shown. The
//! whole sequence runs `PINCER_BENCH_RUNS` times (default 3), each against
//! a fresh gateway; the table shows the median of each figure and of each
//! run's ratio.
//! `PINCER_BENCH_ONLY=TEXT` runs only the scenarios whose name contains
//! TEXT (and the baseline). `PINCER_BENCH_ATTACKER_NICE=N` (default 0)
//! runs the attackers' threads at nice N: a model of remote attackers that do not share the gateway's
//! cores, not a gateway defence. For A/B runs, `PINCER_BENCH_TOML` adds
//! top-level lines to the gateway's configuration and
//! `PINCER_BENCH_GATEWAY_TOML` lines to its `[gateway]` table (for example
//! `plugin_nice = 0`, or `limit_loopback = false`).
//!
//! Needs about 2,200 file descriptors in this process: run it after
//! `ulimit -n 8192`. It uses the test-only `hostile` plugin, so it runs from
//! a build of the source tree. `PINCER_BENCH_KEEP=1` keeps the gateway's
//! data directory and log.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::client::{connect, next_json, open_file_limit, response, send_json};
use super::cpu_time;
use super::{Lat, ms, ratio};
use crate::plugins::nice;

/// The token the attacked gateway is started with.
const TOKEN: &str = "bench-attack-token";

/// Unauthenticated sockets in the pre-auth flood.
const PREAUTH_SOCKETS: usize = 2000;

/// The size each pre-auth socket declares for its unfinished fragment.
const FRAGMENT: u64 = 20 << 20;

/// Descriptors this process needs (the pre-auth sockets plus clients).
const FDS_NEEDED: u64 = 4096;

/// How long an attack runs before the healthy client starts measuring.
const RAMP: Duration = Duration::from_secs(2);

/// How long the healthy client measures.
const WINDOW: Duration = Duration::from_secs(6);

/// Pause between two healthy `health` requests.
const PROBE_GAP: Duration = Duration::from_millis(10);

/// Most connect attempts of the healthy client, [`CONNECT_RETRY`] apart:
/// under the pre-auth flood every `max_preauth` slot may be taken when it
/// connects, and a refused client retries, as a real one would after
/// `Retry-After` (the refusals are shown in the scenario's note).
const CONNECT_ATTEMPTS: u32 = 40;

/// The pause between the healthy client's connect attempts.
const CONNECT_RETRY: Duration = Duration::from_millis(250);

/// How long the slow channel's reply receiver takes per request.
const SLOW_REPLY: Duration = Duration::from_secs(2);

/// The gateway under attack: a child process.
struct Target {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Target {
    fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `(VmRSS, VmHWM)` of the gateway, in bytes.
    fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time the gateway has used (user and system).
    fn cpu(&self) -> Duration {
        cpu_time(&self.pid.to_string())
    }

    /// Reset the peak (`VmHWM`) to the current RSS.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5");
    }
}

/// A small HTTP server in this process: the slow channel's reply receiver
/// and the sink the flooding plugin may reach. Counts requests.
struct Receivers {
    addr: SocketAddr,
    slow_hits: Arc<AtomicU64>,
    sink_hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

async fn receivers() -> anyhow::Result<Receivers> {
    use axum::routing::{any, post};
    let slow_hits = Arc::new(AtomicU64::new(0));
    let sink_hits = Arc::new(AtomicU64::new(0));
    let (s, k) = (slow_hits.clone(), sink_hits.clone());
    let app = axum::Router::new()
        .route(
            "/reply",
            post(move || {
                let s = s.clone();
                async move {
                    tokio::time::sleep(SLOW_REPLY).await;
                    s.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }
            }),
        )
        .route(
            "/sink",
            any(move || {
                let k = k.clone();
                async move {
                    k.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Receivers {
        addr,
        slow_hits,
        sink_hits,
        task,
    })
}

/// A free loopback port (bound and released; the child binds it next).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Install the plugins the scenarios use and write the configuration.
fn prepare(dir: &Path, port: u16, rx: SocketAddr) -> anyhow::Result<PathBuf> {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    crate::bundled::install(&plugins, true)?;
    let built = Path::new(crate::bundled::BUILD_PLUGIN_DIR);
    let (_, echo, echo_toml) = crate::bundled::BUNDLED
        .iter()
        .find(|(n, _, _)| *n == "echo")
        .context("echo is bundled")?;
    // The slow channel: an echo copy whose replies go to the slow receiver.
    std::fs::write(
        plugins.join("slow.toml"),
        echo_toml.replace("name = \"echo\"", "name = \"slow\""),
    )?;
    std::fs::write(plugins.join("slow.wasm"), echo)?;
    for ext in ["toml", "wasm"] {
        let from = built.join(format!("hostile.{ext}"));
        std::fs::copy(&from, plugins.join(format!("hostile.{ext}"))).with_context(|| {
            format!(
                "{} (the test-only `hostile` plugin; run this benchmark from a build of the source tree)",
                from.display()
            )
        })?;
    }
    let config = dir.join("pincer.toml");
    let extra = |name: &str| std::env::var(name).unwrap_or_default().replace(';', "\n");
    let (top, mut gateway) = (
        extra("PINCER_BENCH_TOML"),
        extra("PINCER_BENCH_GATEWAY_TOML"),
    );
    if !gateway.contains("limit_loopback") {
        // As a public deployment: per-address limits apply to every peer.
        gateway.push_str("\nlimit_loopback = true");
    }
    std::fs::write(
        &config,
        format!(
            r#"allow_cidrs = ["127.0.0.0/8"]
{top}

[gateway]
listen = "127.0.0.1:{port}"
{gateway}

[plugins.echo]
dm_policy = "open"

[plugins.slow]
dm_policy = "open"
allowed_hosts = ["http://{rx}"]
config = {{ reply_url = "http://{rx}/reply" }}

[plugins.hostile]
allowed_hosts = ["http://{rx}"]
"#
        ),
    )?;
    Ok(config)
}

/// Start `pincer serve` and wait until it is ready.
async fn start(dir: &Path, port: u16, config: &Path) -> anyhow::Result<Target> {
    let exe = std::env::current_exe().context("locating the pincer binary")?;
    let log = std::fs::File::create(dir.join("gateway.log"))?;
    let child = tokio::process::Command::new(exe)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(config)
        .arg("--no-bundled")
        .env("PINCER_GATEWAY_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting `pincer serve`")?;
    let pid = child.id().context("child pid")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let target = Target {
        child,
        pid,
        addr,
        dir: dir.to_path_buf(),
    };
    let client = reqwest::Client::new();
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(target.http("/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(target);
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(120),
            "the gateway did not become ready; see {}",
            dir.join("gateway.log").display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The healthy client's figures: latencies, failed requests and the
/// connect attempts refused before one succeeded.
type Probed = (Lat, u64, u32);

/// The healthy client: connect (retrying a refusal), then `health`
/// requests, one at a time, for `WINDOW`.
async fn probe(url: &str) -> anyhow::Result<Probed> {
    let mut refused = 0;
    let mut ws = loop {
        match connect(url, TOKEN).await {
            Ok(ws) => break ws,
            Err(e) if refused + 1 < CONNECT_ATTEMPTS => {
                tracing::debug!(error = %e, "healthy client refused; retrying");
                refused += 1;
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            Err(e) => return Err(e.context("healthy client connect")),
        }
    };
    let mut lat = Vec::new();
    let mut failed = 0u64;
    let end = Instant::now() + WINDOW;
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        let id = format!("h{i}");
        let t = Instant::now();
        send_json(
            &mut ws,
            &json!({"type": "req", "id": id, "method": "health", "params": {}}),
        )
        .await?;
        match response(&mut ws, &id).await {
            Ok(_) => lat.push(t.elapsed()),
            Err(_) => failed += 1,
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
    Ok((Lat(lat), failed, refused))
}

/// [`probe`] on a thread and runtime of its own, so its latency is the
/// gateway's and not this process's scheduling of attacker tasks.
async fn probe_alone(url: String) -> anyhow::Result<Probed> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-healthy".into())
        .spawn(move || {
            let r = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(probe(&url)));
            let _ = tx.send(r);
        })?;
    rx.await.context("the healthy client's thread ended")?
}

/// One scenario's figures.
#[derive(Clone)]
struct Outcome {
    name: String,
    p50: Duration,
    p99: Duration,
    failed: u64,
    peak: u64,
    after: u64,
    /// Gateway CPU time during the measurement window.
    cpu: Duration,
    /// This process's CPU time (the attackers, mostly) in the window.
    bench_cpu: Duration,
    /// The healthy client's p50 and p99 just before the attack started
    /// (the paired baseline; the load on a shared machine drifts).
    base_p50: Duration,
    base_p99: Duration,
    /// The machine's 1-minute load average at the end of the window.
    load: f64,
    note: String,
}

/// The machine's 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Measure the healthy client without an attack (the paired baseline),
/// then run `attack` on `attackers` (started, then measured after `RAMP`
/// for `WINDOW`), stop it and collect its note.
async fn scenario<F, Fut>(
    target: &Target,
    attackers: &tokio::runtime::Handle,
    name: &str,
    attack: F,
) -> anyhow::Result<Outcome>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let (mut base, _, _) = probe_alone(target.ws_url()).await?;
    target.reset_peak();
    let stop = CancellationToken::new();
    let task = attackers.spawn(attack(stop.clone()));
    tokio::time::sleep(RAMP).await;
    let (cpu_before, bench_before) = (target.cpu(), cpu_time("self"));
    let (mut lat, failed, refused) = probe_alone(target.ws_url()).await?;
    let cpu = target.cpu().saturating_sub(cpu_before);
    let bench_cpu = cpu_time("self").saturating_sub(bench_before);
    let load = load_average();
    let (_, peak) = target.memory();
    stop.cancel();
    let note = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .map_err(|_| anyhow::anyhow!("scenario `{name}` did not stop"))?
        .context("attack task")?;
    let note = if refused > 0 {
        format!("{note}; the healthy client was refused {refused} times before it connected")
    } else {
        note
    };
    // Let the gateway release what the attack made it hold.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, _) = target.memory();
    Ok(Outcome {
        name: name.into(),
        p50: lat.pct(0.5),
        p99: lat.pct(0.99),
        failed,
        peak,
        after,
        cpu,
        bench_cpu,
        base_p50: base.pct(0.5),
        base_p99: base.pct(0.99),
        load,
        note,
    })
}

/// 64 KiB of `a`: the unmasked payload of the pre-auth fragments.
static CHUNK: [u8; 65536] = [b'a'; 65536];

/// Counters of the pre-auth flood.
#[derive(Default)]
struct FloodStats {
    refused: AtomicU64,
    /// Refused with 429 (an address limit; at accept or at the upgrade).
    limited: AtomicU64,
    /// Closed before any answer.
    reset: AtomicU64,
    upgraded: AtomicU64,
    closed_early: AtomicU64,
    whole_fragment: AtomicU64,
    max_written: AtomicU64,
}

/// One pre-auth attacker: upgrade, send an unfinished `FRAGMENT`-byte text
/// fragment, then a ping every 4 s; reconnect when the server closes.
async fn preauth_attacker(
    addr: SocketAddr,
    from: Ipv4Addr,
    stats: Arc<FloodStats>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let attempt = preauth_once(addr, from, &stats);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = attempt => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// The source address of pre-auth attacker `i`: 127.0.0.2 upward.
fn attacker_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i as u32)
}

/// A TCP connection to `addr` from `from`.
async fn connect_from(addr: SocketAddr, from: Ipv4Addr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

/// One pre-auth connection's life; `None` when it ended (refused, closed
/// by the server or failed).
async fn preauth_once(addr: SocketAddr, from: Ipv4Addr, stats: &FloodStats) -> Option<()> {
    let mut s = connect_from(addr, from).await.ok()?;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = match s.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ if head.is_empty() => {
                stats.reset.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            _ => break,
        };
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        if head.starts_with(b"HTTP/1.1 429") {
            stats.limited.fetch_add(1, Ordering::Relaxed);
        }
        return None;
    }
    stats.upgraded.fetch_add(1, Ordering::Relaxed);
    // FIN=0, text; masked with a zero key; 64-bit length.
    let mut frame = vec![0x01, 0x80 | 127];
    frame.extend_from_slice(&FRAGMENT.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    s.write_all(&frame).await.ok()?;
    let mut written = 0u64;
    while written < FRAGMENT {
        let n = (FRAGMENT - written).min(CHUNK.len() as u64) as usize;
        if s.write_all(&CHUNK[..n]).await.is_err() {
            stats.max_written.fetch_max(written, Ordering::Relaxed);
            stats.closed_early.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        written += n as u64;
    }
    stats.max_written.fetch_max(written, Ordering::Relaxed);
    stats.whole_fragment.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_secs(4)).await;
        // A masked, empty ping.
        s.write_all(&[0x89, 0x80, 0, 0, 0, 0]).await.ok()?;
    }
}

async fn preauth_flood(addr: SocketAddr, stop: CancellationToken) -> String {
    let stats = Arc::new(FloodStats::default());
    let tasks: Vec<_> = (0..PREAUTH_SOCKETS)
        .map(|i| {
            tokio::spawn(preauth_attacker(
                addr,
                attacker_ip(i),
                stats.clone(),
                stop.clone(),
            ))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    format!(
        "{} upgrades, {} refused ({} with 429), {} closed unanswered; {} closed mid-fragment (most sent {} KiB), {} sent the whole 20 MiB",
        stats.upgraded.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.limited.load(Ordering::Relaxed),
        stats.reset.load(Ordering::Relaxed),
        stats.closed_early.load(Ordering::Relaxed),
        stats.max_written.load(Ordering::Relaxed) / 1024,
        stats.whole_fragment.load(Ordering::Relaxed),
    )
}

/// POST `total` echo-channel messages to `channel` with `par` workers;
/// `sender(i)` names the sender of message `i`.
async fn pushes(
    base: String,
    channel: &'static str,
    total: usize,
    par: usize,
    sender: fn(usize) -> String,
    stop: CancellationToken,
) -> String {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        u64,
    >::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..par {
        let (client, next, statuses, stop, base) = (
            client.clone(),
            next.clone(),
            statuses.clone(),
            stop.clone(),
            base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total || stop.is_cancelled() {
                    return;
                }
                let body = json!({
                    "conversation": format!("conv-{}", sender(i)),
                    "sender": sender(i),
                    "text": format!("message {i}"),
                    "id": format!("m{i}"),
                });
                let key = match client
                    .post(format!("{base}/channels/{channel}/webhook"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(_) => "error".into(),
                };
                *statuses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(key)
                    .or_default() += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let statuses = statuses.lock().unwrap_or_else(|p| p.into_inner()).clone();
    format!(
        "{} pushes in {:.1} s, answers {}",
        next.load(Ordering::Relaxed).min(total as u64),
        started.elapsed().as_secs_f64(),
        statuses
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Run `/tool hostile {args}` as an operator in session `session` until
/// stopped; returns (runs finished, runs that ended in an error).
async fn tool_loop(
    url: String,
    session: String,
    args: Value,
    stop: CancellationToken,
) -> (u64, u64) {
    let Ok(mut ws) = connect(&url, TOKEN).await else {
        return (0, 0);
    };
    let (mut done, mut errors) = (0u64, 0u64);
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let run = format!("{session}-{n}-{}", uuid::Uuid::new_v4());
        let id = format!("c{n}");
        let msg = format!("/tool hostile {args}");
        if send_json(
            &mut ws,
            &json!({"type": "req", "id": id, "method": "chat.send", "params": {
                "sessionKey": session, "message": msg, "idempotencyKey": run,
            }}),
        )
        .await
        .is_err()
        {
            break;
        }
        // Wait for this run's end (final, error or aborted).
        let ended = async {
            loop {
                let v = next_json(&mut ws).await?;
                if v["type"] == "res" && v["id"] == id && v["ok"] != true {
                    return anyhow::Ok(false);
                }
                if v["event"] == "chat" && v["payload"]["runId"] == run.as_str() {
                    match v["payload"]["state"].as_str() {
                        Some("final") => return Ok(true),
                        Some("error") | Some("aborted") => return Ok(false),
                        _ => {}
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            r = ended => match r {
                Ok(true) => done += 1,
                Ok(false) => { done += 1; errors += 1; }
                Err(_) => break,
            },
        }
    }
    (done, errors)
}

async fn tool_calls(url: String, calls: Vec<(String, Value)>, stop: CancellationToken) -> String {
    let tasks: Vec<_> = calls
        .iter()
        .map(|(session, args)| {
            tokio::spawn(tool_loop(
                url.clone(),
                session.clone(),
                args.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let mut parts = Vec::new();
    for ((session, _), t) in calls.iter().zip(tasks) {
        let (done, errors) = t.await.unwrap_or((0, 0));
        parts.push(format!(
            "{session}: {done} runs ({errors} refused or failed)"
        ));
    }
    parts.join("; ")
}

/// A whole number from environment variable `name`, or `default`.
fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The runtime the attackers run on (threads at nice `nice`, when asked).
fn attacker_runtime(nice: i32) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-attacker")
        .on_thread_start(move || nice::lower_current_thread_or_warn(nice))
        .enable_all()
        .build()
        .context("starting the attackers' runtime")
}

/// Run the attack benchmark and print the results.
pub async fn attack() -> anyhow::Result<()> {
    if let Some(limit) = open_file_limit() {
        anyhow::ensure!(
            limit >= FDS_NEEDED,
            "the open-file limit is {limit}; this benchmark holds {PREAUTH_SOCKETS} sockets: \
             run `ulimit -n 8192` first"
        );
    }
    let runs = env_number("PINCER_BENCH_RUNS", 3).max(1) as usize;
    let attacker_nice = env_number("PINCER_BENCH_ATTACKER_NICE", 0) as i32;
    let attackers = attacker_runtime(attacker_nice)?;
    let mut all: Vec<Vec<Outcome>> = Vec::new();
    let mut result = Ok(());
    for n in 1..=runs {
        eprintln!("run {n} of {runs}");
        match one_gateway(attackers.handle(), n).await {
            Ok(rows) => {
                let one: Vec<Median> = medians(vec![rows.clone()]);
                print_table(&one, &mut std::io::stderr());
                all.push(rows);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    attackers.shutdown_background();
    result?;
    println!("{runs} run(s), median of each figure; attacker threads at nice {attacker_nice}\n");
    print_table(&medians(all), &mut std::io::stdout());
    Ok(())
}

/// One fresh gateway through every scenario.
async fn one_gateway(attackers: &tokio::runtime::Handle, n: usize) -> anyhow::Result<Vec<Outcome>> {
    let dir = std::env::temp_dir().join(format!("pincer-bench-attack-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let rx = receivers().await?;
    let port = free_port()?;
    let config = prepare(&dir, port, rx.addr)?;
    let mut target = start(&dir, port, &config).await?;
    let result = run(&target, attackers, &rx).await;
    let _ = target.child.kill().await;
    rx.task.abort();
    if result.is_ok() && std::env::var_os("PINCER_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&target.dir);
    } else {
        eprintln!("gateway log kept in {}", target.dir.display());
    }
    result
}

/// Each scenario's median over the runs (figure by figure; the ratios
/// are the medians of each run's ratio to its paired baseline, see
/// [`Median`]); the attack notes are the first run's.
fn medians(mut all: Vec<Vec<Outcome>>) -> Vec<Median> {
    fn mid<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
        v.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    }
    let first = all.remove(0);
    first
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let others: Vec<&Outcome> = all.iter().filter_map(|r| r.get(i)).collect();
            let pick = |f: &dyn Fn(&Outcome) -> Duration| {
                mid(std::iter::once(f(&o))
                    .chain(others.iter().map(|x| f(x)))
                    .collect())
            };
            let pick_u = |f: &dyn Fn(&Outcome) -> u64| {
                mid(std::iter::once(f(&o))
                    .chain(others.iter().map(|x| f(x)))
                    .collect())
            };
            let pick_f = |f: &dyn Fn(&Outcome) -> f64| {
                mid(std::iter::once(f(&o))
                    .chain(others.iter().map(|x| f(x)))
                    .collect())
            };
            let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
            Median {
                r50: pick_f(&|x| r(x.p50, x.base_p50)),
                r99: pick_f(&|x| r(x.p99, x.base_p99)),
                outcome: Outcome {
                    p50: pick(&|x| x.p50),
                    p99: pick(&|x| x.p99),
                    base_p50: pick(&|x| x.base_p50),
                    base_p99: pick(&|x| x.base_p99),
                    cpu: pick(&|x| x.cpu),
                    bench_cpu: pick(&|x| x.bench_cpu),
                    load: pick_f(&|x| x.load),
                    failed: pick_u(&|x| x.failed),
                    peak: pick_u(&|x| x.peak),
                    after: pick_u(&|x| x.after),
                    ..o
                },
            }
        })
        .collect()
}

/// A scenario's medians over the runs, with the median of the per-run
/// ratios under attack / paired baseline.
struct Median {
    outcome: Outcome,
    r50: f64,
    r99: f64,
}

/// The Markdown table of `rows` (RSS is relative to the first row, the
/// run without any attack).
fn print_table(rows: &[Median], out: &mut dyn std::io::Write) {
    let Some(first) = rows.first() else {
        return;
    };
    let base_rss = first.outcome.peak as f64;
    let _ = writeln!(
        out,
        "| scenario | healthy `health` p50 / p99 under attack | just before, no attack | ratio (p50 / p99) | gateway RSS peak / 3 s after | CPU in the window: gateway / attackers | load | attack outcome |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for m in rows {
        let r = &m.outcome;
        let failed = if r.failed > 0 {
            format!(" ({} failed)", r.failed)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} / {}{failed} | {} / {} | {:.2}x / {:.2}x | {:.0} MiB ({}) / {:.0} MiB | {:.0}% / {:.0}% of a core | {:.1} | {} |",
            r.name,
            ms(r.p50),
            ms(r.p99),
            ms(r.base_p50),
            ms(r.base_p99),
            m.r50,
            m.r99,
            r.peak as f64 / (1 << 20) as f64,
            ratio(r.peak as f64, base_rss),
            r.after as f64 / (1 << 20) as f64,
            100.0 * r.cpu.as_secs_f64() / WINDOW.as_secs_f64(),
            100.0 * r.bench_cpu.as_secs_f64() / WINDOW.as_secs_f64(),
            r.load,
            r.note,
        );
    }
    let _ = writeln!(out);
}

async fn run(
    target: &Target,
    attackers: &tokio::runtime::Handle,
    rx: &Receivers,
) -> anyhow::Result<Vec<Outcome>> {
    let url = target.ws_url();
    let base = format!("http://{}", target.addr);
    let mut rows = Vec::new();
    let only = std::env::var("PINCER_BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    rows.push(
        scenario(target, attackers, "baseline (no attack)", |_stop| async {
            String::new()
        })
        .await?,
    );
    let addr = target.addr;
    if wanted("2,000 unauthenticated sockets sending 20 MiB fragments") {
        rows.push(
            scenario(
                target,
                attackers,
                "2,000 unauthenticated sockets sending 20 MiB fragments",
                move |stop| preauth_flood(addr, stop),
            )
            .await?,
        );
    }
    let sink_before = rx.sink_hits.load(Ordering::Relaxed);
    let sink = format!("http://{}/sink", rx.addr);
    let u = url.clone();
    if wanted("a plugin floods key-value data, logs and outbound requests") {
        rows.push(
            scenario(
                target,
                attackers,
                "a plugin floods key-value data, logs and outbound requests",
                move |stop| {
                    tool_calls(
                        u,
                        vec![
                            ("flood-kv".into(), json!({"mode": "kvflood"})),
                            ("flood-log".into(), json!({"mode": "logflood"})),
                            (
                                "flood-http".into(),
                                json!({"mode": "httpflood", "url": sink}),
                            ),
                        ],
                        stop,
                    )
                },
            )
            .await?,
        );
    }
    let sink_hits = rx.sink_hits.load(Ordering::Relaxed) - sink_before;
    if let Some(r) = rows
        .last_mut()
        .filter(|r| r.name.starts_with("a plugin floods"))
    {
        r.note
            .push_str(&format!("; {sink_hits} requests reached the sink"));
    }
    let u = url.clone();
    if wanted("8 CPU-spinning tool calls at a time") {
        rows.push(
            scenario(
                target,
                attackers,
                "8 CPU-spinning tool calls at a time",
                move |stop| {
                    tool_calls(
                        u,
                        (0..8)
                            .map(|i| (format!("spin-{i}"), json!({"mode": "loop"})))
                            .collect(),
                        stop,
                    )
                },
            )
            .await?,
        );
    }
    let b = base.clone();
    if wanted("one sender sends 1,000 messages") {
        rows.push(
            scenario(
                target,
                attackers,
                "one sender sends 1,000 messages",
                move |stop| pushes(b, "echo", 1000, 10, |_| "spammer".into(), stop),
            )
            .await?,
        );
    }

    let slow_before = rx.slow_hits.load(Ordering::Relaxed);
    // Last: its 1,000 queued runs hold the channel's run slots for minutes
    // (each reply takes the slow receiver 2 s).
    let b = base.clone();
    if wanted("1,000 webhook pushes to a slow channel") {
        rows.push(
            scenario(
                target,
                attackers,
                "1,000 webhook pushes to a slow channel",
                move |stop| pushes(b, "slow", 1000, 50, |i| format!("user{i}"), stop),
            )
            .await?,
        );
    }
    let slow_replies = rx.slow_hits.load(Ordering::Relaxed) - slow_before;
    if let Some(r) = rows
        .last_mut()
        .filter(|r| r.name.starts_with("1,000 webhook"))
    {
        r.note.push_str(&format!(
            "; {slow_replies} replies reached the slow receiver"
        ));
    }
    Ok(rows)
}
