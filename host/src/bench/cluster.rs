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
//! times until every client has the last run's final `chat` event.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::client::{connect, send_json};
use super::ratio;
use crate::gateway::launch::{Options, Running, start};
use crate::store::StoreConfig;

/// Runs per scenario.
const RUNS: usize = 10;
/// Words per run (one `agent` event each).
const WORDS: usize = 200;

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
/// 30, else 300).
pub async fn cluster(quick: bool) -> anyhow::Result<()> {
    let clients = if quick { 30 } else { 300 };
    let dir = std::env::temp_dir().join(format!("pincer-bench-cluster-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let (server, urls) = tokio::task::spawn_blocking(|| {
        let server = super::pgserver::PgServer::start(&[])?;
        let urls = [
            server.create_db("cluster_1")?,
            server.create_db("cluster_3")?,
        ];
        anyhow::Ok((server, urls))
    })
    .await??;
    let mut figures = Vec::new();
    figures.push(scenario("SQLite, 1 node", &dir.join("sqlite"), None, 1, clients).await?);
    for ((label, nodes), url) in [("PostgreSQL, 1 node", 1), ("PostgreSQL, 3 nodes", 3)]
        .into_iter()
        .zip(urls)
    {
        let sub = dir.join(format!("pg{nodes}"));
        figures.push(scenario(label, &sub, Some(url), nodes, clients).await?);
    }
    println!(
        "## Cluster: run events fanned out to {clients} clients ({RUNS} runs of {WORDS} words, debug build)\n"
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
        "\nAll nodes in one process on the same cores; PostgreSQL: a local server on 127.0.0.1:{} (defaults).",
        server.port()
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
    dir: &std::path::Path,
    url: Option<String>,
    nodes: usize,
    clients: usize,
) -> anyhow::Result<Figures> {
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
    eprintln!("{label}: done");
    drop(sender);
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
    })
}
