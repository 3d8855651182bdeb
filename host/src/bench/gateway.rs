//! `pincer bench gateway`: the real server driven over loopback.
//!
//! A gateway (with the bundled plugins) is started in this process on
//! `127.0.0.1:0` and driven by protocol clients over real sockets; the
//! results are printed as a Markdown table (copied into `BENCHMARKS.md`).
//! Every figure has a same-run baseline because the machines this runs on
//! are shared and noisy. The clients live in the same process and on the
//! same tokio runtime as the server, so they compete with it for the CPU and
//! their memory is included in the RSS figures.
//!
//! Needs about 2 100 file descriptors (1 000 idle connections, both ends in
//! this process): run it after `ulimit -n 4096`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::client::{FRAME_WAIT, Ws, connect, open, open_file_limit, response, send_json};
use super::{Lat, ms, ratio, rss_bytes};
use crate::gateway::launch::{self, Options};

/// The shared token the bench gateway is started with.
const TOKEN: &str = "bench";

/// File descriptors the benchmark needs (idle connections on both ends plus
/// slack for the database, plugins and the handshake loops).
const FDS_NEEDED: u64 = 4096;

/// Idle connections held open for the memory and fan-out measurements.
const IDLE: usize = 1000;

/// One measured loop: rate, p50, p99.
struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

impl Run {
    fn show(&self, unit: &str) -> String {
        format!(
            "{:.0} {unit}/s (p50 {}, p99 {})",
            self.rate,
            ms(self.p50),
            ms(self.p99)
        )
    }
}

/// `n` handshakes (`full`: through hello-ok; else upgrade + challenge only)
/// spread over `par` concurrent tasks.
async fn handshakes(url: &str, n: usize, par: usize, full: bool) -> anyhow::Result<Run> {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..par {
        let url = url.to_string();
        let count = n / par;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let mut ws = if full {
                    connect(&url, TOKEN).await?
                } else {
                    open(&url).await?
                };
                lat.push(t.elapsed());
                let _ = ws.close(None).await;
            }
            anyhow::Ok(lat)
        }));
    }
    summarise(tasks, t, "handshake task").await
}

/// Join tasks that each return their latencies; the rate is over the time
/// since `t`.
async fn summarise(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>>,
    t: Instant,
    what: &'static str,
) -> anyhow::Result<Run> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context(what)??);
    }
    let elapsed = t.elapsed();
    let mut lat = Lat(all);
    Ok(Run {
        rate: lat.0.len() as f64 / elapsed.as_secs_f64(),
        p50: lat.pct(0.5),
        p99: lat.pct(0.99),
    })
}

/// `total` requests of `method` over `conns` connections, one outstanding
/// request per connection.
async fn requests(url: &str, method: &str, total: usize, conns: usize) -> anyhow::Result<Run> {
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        sockets.push(connect(url, TOKEN).await?);
    }
    let per = total / conns;
    let start = Arc::new(tokio::sync::Barrier::new(conns + 1));
    let mut tasks = Vec::new();
    for (c, mut ws) in sockets.into_iter().enumerate() {
        let method = method.to_string();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            start.wait().await;
            for i in 0..per {
                let id = format!("{c}-{i}");
                let t = Instant::now();
                send_json(
                    &mut ws,
                    &json!({"type": "req", "id": id, "method": method, "params": {}}),
                )
                .await?;
                response(&mut ws, &id).await?;
                lat.push(t.elapsed());
            }
            let _ = ws.close(None).await;
            anyhow::Ok(lat)
        }));
    }
    start.wait().await;
    let t = Instant::now();
    summarise(tasks, t, "request task").await
}

/// One chat fan-out: every reader's time to the `final` chat event of the
/// run, and the `chat` + `agent` events delivered per second.
struct Fanout {
    rate: f64,
    p50: Duration,
    p99: Duration,
    elapsed: Duration,
}

/// A reader task: counts `chat` and `agent` events and reports the instant
/// it saw each run's `final` chat event.
fn spawn_reader(
    mut ws: Ws,
    events: Arc<AtomicU64>,
    finals: tokio::sync::mpsc::UnboundedSender<(String, Instant)>,
    closed: Arc<AtomicU64>,
) {
    tokio::spawn(async move {
        loop {
            let msg = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => continue,
            };
            let Ok(v) = serde_json::from_str::<Value>(&msg) else {
                continue;
            };
            if v["type"] != "event" {
                continue;
            }
            let ev = v["event"].as_str().unwrap_or("");
            if ev == "chat" || ev == "agent" {
                events.fetch_add(1, Ordering::Relaxed);
            }
            if ev == "chat" && v["payload"]["state"] == "final" {
                let run = v["payload"]["runId"].as_str().unwrap_or("").to_string();
                if finals.send((run, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
}

/// One `chat.send` from `sender` and wait until `readers` clients saw its
/// `final` event.
async fn fanout(
    sender: &mut Ws,
    readers: usize,
    events: &AtomicU64,
    finals: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
) -> anyhow::Result<Fanout> {
    let words: Vec<String> = (0..50).map(|i| format!("word{i}")).collect();
    let run = uuid::Uuid::new_v4().to_string();
    let id = format!("chat-{run}");
    events.store(0, Ordering::Relaxed);
    let t = Instant::now();
    send_json(
        sender,
        &json!({"type": "req", "id": id, "method": "chat.send", "params": {
            "sessionKey": "main", "message": words.join(" "), "idempotencyKey": run,
        }}),
    )
    .await?;
    let res = response(sender, &id).await.context("chat.send")?;
    anyhow::ensure!(
        res["runId"] == run.as_str(),
        "unexpected chat.send reply {res}"
    );
    let mut lat = Vec::with_capacity(readers);
    while lat.len() < readers {
        let (r, at) = tokio::time::timeout(FRAME_WAIT, finals.recv())
            .await
            .with_context(|| {
                format!(
                    "only {} of {readers} clients saw the final chat event",
                    lat.len()
                )
            })?
            .context("all readers ended")?;
        if r == run {
            lat.push(at.duration_since(t));
        }
    }
    let elapsed = t.elapsed();
    let n = events.load(Ordering::Relaxed);
    let mut lat = Lat(lat);
    Ok(Fanout {
        rate: n as f64 / elapsed.as_secs_f64(),
        p50: lat.pct(0.5),
        p99: lat.pct(0.99),
        elapsed,
    })
}

/// Run the gateway benchmark and print a Markdown table. `idle`: how
/// many idle connections the idle-connections part holds (default
/// [`super::idle::DEFAULT_IDLE`], capped by the descriptor limit);
/// `idle_only` runs only that part.
pub async fn gateway(idle: Option<usize>, idle_only: bool) -> anyhow::Result<()> {
    let idle = idle.unwrap_or(super::idle::DEFAULT_IDLE);
    if idle_only {
        let rows = super::idle::rows(idle).await?;
        print_rows(&rows);
        println!("Command: `./target/release/pincer bench gateway --idle-only --idle {idle}`");
        return Ok(());
    }
    crate::gateway::fdlimit::raise();
    if let Some(limit) = open_file_limit() {
        anyhow::ensure!(
            limit >= FDS_NEEDED,
            "the open-file limit is {limit}; this benchmark holds {IDLE} connections with \
             both ends in this process: run `ulimit -n {FDS_NEEDED}` (or more) first"
        );
    }
    let dir = std::env::temp_dir().join(format!("pincer-bench-gw-{}", uuid::Uuid::new_v4()));
    let r = run(&dir, idle).await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn print_rows(rows: &[[String; 4]]) {
    println!("| measure | value | baseline | ratio |");
    println!("|---|---|---|---|");
    for [a, b, c, d] in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
    println!();
}

async fn run(dir: &std::path::Path, idle_n: usize) -> anyhow::Result<()> {
    let mut opts = Options::new(dir);
    opts.gateway.listen = "127.0.0.1:0".parse()?;
    opts.gateway.token = Some(TOKEN.into());
    opts.gateway.max_connections = 20_000;
    let running = launch::start(opts).await.context("starting the gateway")?;
    let url = format!("ws://{}/", running.addr);
    // Let plugin loading and start-up settle before the idle figure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_bytes();
    let mut rows: Vec<[String; 4]> = Vec::new();

    // 1. Handshakes: upgrade + challenge (baseline) vs through hello-ok.
    for (n, par) in [(2000, 1), (4000, 8)] {
        let base = handshakes(&url, n, par, false).await?;
        let full = handshakes(&url, n, par, true).await?;
        let label = if par == 1 {
            format!("handshakes, sequential ({n})")
        } else {
            format!("handshakes, {par} concurrent ({n})")
        };
        rows.push([
            format!("{label}: connect → hello-ok"),
            full.show("hs"),
            format!("upgrade → challenge: {}", base.show("hs")),
            format!("{} of the rate", ratio(full.rate, base.rate)),
        ]);
    }

    // 2. Requests: `health` vs `last-heartbeat` (the protocol floor).
    let total = 20_000;
    for conns in [1, 10, 100] {
        let base = requests(&url, "last-heartbeat", total, conns).await?;
        let health = requests(&url, "health", total, conns).await?;
        rows.push([
            format!("`health`, {conns} connection(s), {total} requests"),
            health.show("req"),
            format!("`last-heartbeat`: {}", base.show("req")),
            format!("{} of the rate", ratio(health.rate, base.rate)),
        ]);
    }

    // 3. Memory per idle connection: RSS delta over IDLE hello-ok
    //    connections held open (both ends are in this process).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(connect(&url, TOKEN).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes();
    let per_conn = after.saturating_sub(before) as f64 / IDLE as f64;
    rows.push([
        format!("RSS per idle connection ({IDLE}, hello-ok, held open)"),
        format!("{:.1} KiB", per_conn / 1024.0),
        "includes the client end (same process, 4 KiB read buffer): upper bound for the server"
            .into(),
        "n/a".into(),
    ]);
    rows.push([
        "process RSS after start, bundled plugins loaded, no connection".into(),
        format!("{:.1} MiB", idle_rss as f64 / (1 << 20) as f64),
        format!(
            "{:.1} MiB with {IDLE} idle connections",
            after as f64 / (1 << 20) as f64
        ),
        "n/a".into(),
    ]);

    // 4. Chat fan-out to the IDLE clients, now reading events.
    let events = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let (tx, mut finals) = tokio::sync::mpsc::unbounded_channel();
    for ws in idle {
        spawn_reader(ws, events.clone(), tx.clone(), closed.clone());
    }
    drop(tx);
    let mut sender = connect(&url, TOKEN).await?;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(fanout(&mut sender, IDLE, &events, &mut finals).await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    runs.sort_by_key(|r| r.elapsed);
    let f = &runs[runs.len() / 2];
    let base = requests(&url, "last-heartbeat", total, 100).await?;
    rows.push([
        format!("chat fan-out to {IDLE} clients (50 words, median of 3)"),
        format!(
            "all final in {} ({:.0} events/s; per-client p50 {}, p99 {})",
            ms(f.elapsed),
            f.rate,
            ms(f.p50),
            ms(f.p99)
        ),
        format!("`last-heartbeat` at 100 conns: {:.0} frames/s", base.rate),
        format!("{} of the rate", ratio(f.rate, base.rate)),
    ]);
    let _ = sender.close(None).await;
    let gw = &running.gateway;
    rows.push([
        "server: events dropped / slow consumers closed / readers closed".into(),
        format!(
            "{} / {} / {}",
            gw.hub.dropped.load(Ordering::Relaxed),
            gw.hub.slow_closed.load(Ordering::Relaxed),
            closed.load(Ordering::Relaxed)
        ),
        "all should be 0".into(),
        "n/a".into(),
    ]);

    running.stop().await.context("stopping the gateway")?;
    // 5. Idle connections against a gateway in its own process.
    rows.extend(super::idle::rows(idle_n).await?);
    print_rows(&rows);
    println!("Command: `./target/release/pincer bench gateway`");
    Ok(())
}
