//! `pincer bench cluster`: run events fanned out to many clients, on one
//! node with the embedded SQLite store and in-process fan-out (the
//! default), on one node with PostgreSQL (every cluster-wide event through
//! the shared log), and on three nodes on one PostgreSQL database (the
//! clients spread over them, the runs on the first). All nodes run in this
//! one process on the same cores, so the three-node figure measures the
//! log's overhead, not a gain from more machines.
//!
//! Each scenario sends `RUNS` runs of `WORDS` words (echo provider, no
//! delay: one `agent` event per word, as fast as the log takes them) and
//! times until every client has the last run's final `chat` event. Then,
//! on the same nodes, `CHAT_RUNS` short runs (each in its own session, sent
//! round-robin through every node) give chat runs per second. Before any
//! client connects, the nodes' idle cost is measured over `IDLE_WINDOW`:
//! memory and CPU per node, and PostgreSQL transactions per second per node
//! (heartbeats and polls).
//!
//! Then webhook deliveries per second on the same three setups
//! ([`super::cluster_webhooks`]), and the failover time of a polling
//! channel after kill -9 of its node, p50 and p99 over `FAILOVER_TRIALS`
//! trials with the default lease ([`super::cluster_failover`]: three
//! `pincer serve` processes, since only a process can be killed).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::client::{connect, send_json};
use super::{cluster_failover, cluster_webhooks, ratio};
use crate::gateway::launch::{Options, Running, start};
use crate::store::StoreConfig;

/// Runs per scenario.
const RUNS: usize = 10;
/// Words per run (one `agent` event each).
const WORDS: usize = 200;
/// Short runs for the chat-runs-per-second part (a fifth with `--quick`).
const CHAT_RUNS: usize = 500;
/// The window the idle cost is measured over.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Events of the webhook part (a tenth with `--quick`).
const WEBHOOK_EVENTS: usize = 2_000;
/// Failover trials (3 with `--quick`).
const FAILOVER_TRIALS: usize = 20;

/// One scenario's figures.
struct Figures {
    label: String,
    /// Run events (`chat` and `agent`) each client received.
    per_client: usize,
    clients: usize,
    elapsed: Duration,
    /// Median over clients of the time from the first `chat.send` to the
    /// client's first run event.
    first_event: Duration,
    /// Appends to the log and events written (PostgreSQL only).
    batches: u64,
    written: u64,
    /// Chat runs completed per second (short runs, all nodes sending).
    runs_per_s: f64,
    /// Idle cost per node: resident memory added, bytes.
    idle_rss_per_node: u64,
    /// Idle cost per node: CPU, fraction of one core.
    idle_cpu_per_node: f64,
    /// Idle cost per node: PostgreSQL transactions per second.
    idle_xacts_per_node: Option<f64>,
}

impl Figures {
    /// Events delivered per second, all clients together.
    fn delivered_per_s(&self) -> f64 {
        (self.per_client * self.clients) as f64 / self.elapsed.as_secs_f64()
    }
    /// Events produced per second (what one client saw).
    fn produced_per_s(&self) -> f64 {
        self.per_client as f64 / self.elapsed.as_secs_f64()
    }
}

/// Run the cluster bench with `clients` clients per scenario (`quick`:
/// 30, else 1,000).
pub async fn cluster(quick: bool) -> anyhow::Result<()> {
    let clients = if quick { 30 } else { 1000 };
    let chat_runs = if quick { CHAT_RUNS / 5 } else { CHAT_RUNS };
    let dir = std::env::temp_dir().join(format!("pincer-bench-cluster-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let (server, urls) = tokio::task::spawn_blocking(|| {
        let server = super::pgserver::PgServer::start(&[])?;
        let urls = [
            server.create_db("cluster_1")?,
            server.create_db("cluster_3")?,
            server.create_db("webhooks_1")?,
            server.create_db("webhooks_3")?,
            server.create_db("failover")?,
        ];
        anyhow::Ok((server, urls))
    })
    .await??;
    let mut figures = Vec::new();
    let pg_port = server.port();
    let sc = |label: &'static str, sub: std::path::PathBuf, url: Option<String>, nodes: usize| {
        scenario(label, sub, url, nodes, clients, chat_runs, pg_port)
    };
    figures.push(sc("SQLite, 1 node", dir.join("sqlite"), None, 1).await?);
    let [pg1, pg3, wh1, wh3, failover_db] = urls;
    for ((label, nodes), url) in [("PostgreSQL, 1 node", 1), ("PostgreSQL, 3 nodes", 3)]
        .into_iter()
        .zip([pg1, pg3])
    {
        let sub = dir.join(format!("pg{nodes}"));
        figures.push(sc(label, sub, Some(url), nodes).await?);
    }
    println!(
        "## Cluster: run events fanned out to {clients} clients ({RUNS} runs of {WORDS} words, {} build)\n",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "| Setup | events per client | time | events/s produced | events/s delivered (all clients) | vs SQLite | first event (median) | log appends (events per append) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let base = figures[0].delivered_per_s();
    for f in &figures {
        let appends = if f.batches == 0 {
            "—".to_string()
        } else {
            format!("{} ({:.1})", f.batches, f.written as f64 / f.batches as f64)
        };
        println!(
            "| {} ({} clients) | {} | {:.2} s | {:.0} | {:.0} | {} | {} | {} |",
            f.label,
            f.clients,
            f.per_client,
            f.elapsed.as_secs_f64(),
            f.produced_per_s(),
            f.delivered_per_s(),
            ratio(f.delivered_per_s(), base),
            super::ms(f.first_event),
            appends,
        );
    }
    println!(
        "\n| Setup | chat runs/s ({chat_runs} short runs, sent through every node) | vs SQLite | idle cost per node: RSS | CPU | PostgreSQL transactions/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let base_runs = figures[0].runs_per_s;
    for f in &figures {
        println!(
            "| {} | {:.0} | {} | {:.1} MiB | {:.2}% of a core | {} |",
            f.label,
            f.runs_per_s,
            ratio(f.runs_per_s, base_runs),
            f.idle_rss_per_node as f64 / (1 << 20) as f64,
            f.idle_cpu_per_node * 100.0,
            f.idle_xacts_per_node
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "—".into()),
        );
    }
    println!(
        "\nAll nodes in one process on the same cores; PostgreSQL: a local server on 127.0.0.1:{} (defaults). Idle cost: over {} s before any client connects.",
        server.port(),
        IDLE_WINDOW.as_secs()
    );
    let events = if quick {
        WEBHOOK_EVENTS / 10
    } else {
        WEBHOOK_EVENTS
    };
    let mut hooks = vec![
        cluster_webhooks::scenario("SQLite, 1 node", &dir.join("wh-sqlite"), None, 1, events)
            .await?,
    ];
    for (label, url, nodes) in [
        ("PostgreSQL, 1 node", &wh1, 1),
        ("PostgreSQL, 3 nodes", &wh3, 3),
    ] {
        let sub = dir.join(format!("wh-pg{nodes}"));
        hooks.push(cluster_webhooks::scenario(label, &sub, Some(url), nodes, events).await?);
    }
    cluster_webhooks::print(&hooks, events);
    println!(
        "\nEvents appended while the dispatchers run, spread over the nodes; the rate is from the first append to the last receipt; the receiver (loopback, answers 204) shares the process and the cores."
    );
    let trials = if quick { 3 } else { FAILOVER_TRIALS };
    let lease_ms = StoreConfig::default().lease_ms;
    let mut f = cluster_failover::failover(&dir, &failover_db, trials, lease_ms).await?;
    cluster_failover::print(&mut f);
    println!(
        "\nThree `pincer serve` processes on the same cores and database; the default lease; the bot polled with the plugin's long poll."
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Start `nodes` gateways on `url` (SQLite in `dir` when `None`), connect
/// `clients` readers spread over them, run the runs on the first node
/// (each in its own session, so they stream at once) and time until every
/// reader has every run's end.
async fn scenario(
    label: &str,
    dir: std::path::PathBuf,
    url: Option<String>,
    nodes: usize,
    clients: usize,
    chat_runs: usize,
    pg_port: u16,
) -> anyhow::Result<Figures> {
    let dir = dir.as_path();
    let rss_before = super::rss_bytes();
    let mut running: Vec<Running> = Vec::new();
    for i in 0..nodes {
        let mut opts = Options::new(dir.join(format!("node{i}")));
        opts.gateway.listen = "127.0.0.1:0".parse()?;
        opts.gateway.token = Some("bench".into());
        opts.install_bundled = false;
        opts.gateway.max_connections = clients + 16;
        opts.gateway.cluster.node_name = Some(format!("bench-{i}"));
        if let Some(u) = &url {
            opts.store = StoreConfig {
                url: Some(u.clone().into()),
                ..StoreConfig::default()
            };
        }
        running.push(start(opts).await.context("starting a bench node")?);
    }
    let urls: Vec<String> = running
        .iter()
        .map(|r| format!("ws://{}/", r.addr))
        .collect();
    let (idle_rss_per_node, idle_cpu_per_node, idle_xacts_per_node) =
        idle_cost(nodes, rss_before, url.as_ref().map(|_| pg_port), dir).await?;
    let mut readers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(clients);
    for i in 0..clients {
        let mut ws = connect(&urls[i % urls.len()], "bench").await?;
        let ready = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            let _ = ready.send(()).await;
            // Frames are matched as text, not parsed: the readers share
            // the cores with the gateways, and parsing every frame in a
            // debug build would measure the readers.
            let mut n = 0usize;
            let mut first = None;
            let mut ended = 0usize;
            loop {
                let frame = tokio::time::timeout(super::client::FRAME_WAIT, ws.next())
                    .await
                    .context("no frame within 30 s")?;
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e).context("reading a frame"),
                    None => anyhow::bail!("socket ended"),
                };
                let chat = text.starts_with(r#"{"type":"event","event":"chat""#);
                if !chat && !text.starts_with(r#"{"type":"event","event":"agent""#) {
                    continue;
                }
                n += 1;
                first.get_or_insert_with(Instant::now);
                if chat && text.contains(r#""state":"final""#) {
                    ended += 1;
                    if ended == RUNS {
                        return anyhow::Ok((n, first.unwrap_or_else(Instant::now)));
                    }
                }
            }
        }));
    }
    for _ in 0..clients {
        ready_rx.recv().await;
    }
    let mut sender = connect(&urls[0], "bench").await?;
    let text = (0..WORDS)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let start_at = Instant::now();
    for r in 0..RUNS {
        // One session per run: the runs stream at once.
        let req = json!({"type": "req", "id": format!("s{r}"), "method": "chat.send", "params": {
            "sessionKey": format!("bench-{r}"), "message": text, "idempotencyKey": format!("bench-run-{r}"),
        }});
        send_json(&mut sender, &req).await?;
    }
    let mut counts = Vec::new();
    let mut firsts = Vec::new();
    for r in readers {
        let (n, first) = r.await.context("a reader")??;
        counts.push(n);
        firsts.push(first.saturating_duration_since(start_at));
    }
    let elapsed = start_at.elapsed();
    let per_client = counts.iter().copied().min().unwrap_or(0);
    let first_event = super::median(firsts);
    let (mut batches, mut written) = (0, 0);
    for r in &running {
        if let Some(c) = r.gateway.cluster.get() {
            batches += c.stats.batches.load(Ordering::Relaxed);
            written += c.stats.written.load(Ordering::Relaxed);
        }
    }
    drop(sender);
    let runs_per_s = chat_runs_per_s(&urls, chat_runs).await?;
    eprintln!("{label}: done");
    for r in running {
        r.stop().await?;
    }
    Ok(Figures {
        label: label.into(),
        per_client,
        clients,
        elapsed,
        first_event,
        batches,
        written,
        runs_per_s,
        idle_rss_per_node,
        idle_cpu_per_node,
        idle_xacts_per_node,
    })
}

/// The database a scenario's nodes use, from its directory name (the
/// bench creates `cluster_1` and `cluster_3`).
fn database_of(dir: &std::path::Path) -> &'static str {
    if dir.ends_with("pg3") {
        "cluster_3"
    } else {
        "cluster_1"
    }
}

/// What `nodes` idle nodes cost, each: resident memory added since
/// `rss_before`, CPU (fraction of a core) and PostgreSQL transactions per
/// second (when on the server at `pg_port`), over [`IDLE_WINDOW`] after a
/// 2 s settle.
async fn idle_cost(
    nodes: usize,
    rss_before: u64,
    pg_port: Option<u16>,
    dir: &std::path::Path,
) -> anyhow::Result<(u64, f64, Option<f64>)> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let db = database_of(dir);
    let xacts = move || -> anyhow::Result<Option<i64>> {
        let Some(port) = pg_port else { return Ok(None) };
        let url = format!(
            "postgres://{}@127.0.0.1:{port}/postgres",
            super::pgserver::USER
        );
        let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
        let row = c.query_one(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
            &[&db],
        )?;
        Ok(Some(row.get(0)))
    };
    let x0 = tokio::task::spawn_blocking(xacts).await??;
    let (cpu0, t0) = (super::cpu_time("self"), Instant::now());
    tokio::time::sleep(IDLE_WINDOW).await;
    let (cpu1, secs) = (super::cpu_time("self"), t0.elapsed().as_secs_f64());
    let x1 = tokio::task::spawn_blocking(xacts).await??;
    let n = nodes.max(1) as f64;
    let rss = super::rss_bytes().saturating_sub(rss_before) / nodes.max(1) as u64;
    let cpu = cpu1.saturating_sub(cpu0).as_secs_f64() / secs / n;
    // The two stats queries themselves are 2 transactions (and the
    // statistics are flushed about every second, so this is approximate).
    let x = match (x0, x1) {
        (Some(a), Some(b)) => Some(((b - a - 2).max(0)) as f64 / secs / n),
        _ => None,
    };
    Ok((rss, cpu, x))
}

/// Chat runs per second: `n` short runs, each in its own session, sent
/// round-robin through the nodes at `urls`; timed until a client of the
/// first node has seen every run's final `chat` event.
async fn chat_runs_per_s(urls: &[String], n: usize) -> anyhow::Result<f64> {
    let mut watcher = connect(&urls[0], "bench").await?;
    let mut senders = Vec::new();
    for u in urls {
        senders.push(connect(u, "bench").await?);
    }
    let start_at = Instant::now();
    for i in 0..n {
        let s = &mut senders[i % urls.len()];
        let req = json!({"type": "req", "id": format!("r{i}"), "method": "chat.send", "params": {
            "sessionKey": format!("bench-runs-{i}"), "message": "one two three",
            "idempotencyKey": format!("bench-short-{i}"),
        }});
        send_json(s, &req).await?;
    }
    let mut finals = 0usize;
    while finals < n {
        let frame = tokio::time::timeout(super::client::FRAME_WAIT, watcher.next())
            .await
            .context("no frame within 30 s while counting finished runs")?;
        match frame {
            Some(Ok(Message::Text(t)))
                if t.starts_with(r#"{"type":"event","event":"chat""#)
                    && t.contains(r#""state":"final""#) =>
            {
                finals += 1
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading a frame"),
            None => anyhow::bail!("socket ended"),
        }
    }
    Ok(n as f64 / start_at.elapsed().as_secs_f64())
}
