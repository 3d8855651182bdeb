//! `pincer bench cluster`, webhook part: outgoing webhook deliveries per
//! second through whole gateways on SQLite (one node), on PostgreSQL (one
//! node) and on three nodes sharing one PostgreSQL database, whose
//! dispatchers share the outbox by claims. The nodes run in this process;
//! the receiver is the webhook bench's ([`super::webhooks`]: axum on
//! loopback, 204, records every `webhook-id`).
//!
//! Each scenario registers [`ENDPOINTS`] endpoints on the first node and
//! appends `n` events (`SessionStore::append_event`: the event and one
//! delivery per endpoint in one transaction), spread evenly over the
//! nodes, each node's share from its own blocking thread, while the
//! dispatchers run; the rate is deliveries over the time from the first
//! append to the last receipt. Every endpoint must get each event exactly
//! once (counted as problems otherwise). `[webhooks]
//! concurrency_per_endpoint` (default 4) holds for the whole cluster, so
//! the three nodes together keep at most `4 x ENDPOINTS` attempts in
//! flight, as one node does.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::webhooks::{Sink, check, event_data, start_receiver};
use crate::gateway::launch::{Options, Running, start};
use crate::store::StoreConfig;
use crate::webhooks::NewWebhook;

/// Endpoints every event is delivered to.
pub(super) const ENDPOINTS: usize = 4;

/// One scenario's figures.
pub(super) struct Figures {
    /// What ran.
    pub label: String,
    /// Deliveries made (events x endpoints).
    pub deliveries: usize,
    /// From the first append to the last receipt.
    pub elapsed: Duration,
    /// How long the appends took (the slowest node's share).
    pub append: Duration,
    /// Missing or repeated deliveries (must be 0).
    pub problems: usize,
}

impl Figures {
    /// Deliveries per second.
    pub fn rate(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64()
    }
}

/// Deliver `n` events to [`ENDPOINTS`] endpoints through `nodes` gateways
/// on `url` (SQLite in `dir` when `None`).
pub(super) async fn scenario(
    label: &str,
    dir: &Path,
    url: Option<&str>,
    nodes: usize,
    n: usize,
) -> anyhow::Result<Figures> {
    let sink = Sink::new();
    let (base, receiver) = start_receiver(sink.clone()).await?;
    let mut running: Vec<Running> = Vec::new();
    for i in 0..nodes {
        let mut opts = Options::new(dir.join(format!("node{i}")));
        opts.gateway.listen = "127.0.0.1:0".parse()?;
        opts.gateway.token = Some("bench".into());
        opts.install_bundled = false;
        opts.gateway.cluster.node_name = Some(format!("bench-wh-{i}"));
        opts.webhooks.allow_cidrs = vec!["127.0.0.0/8".into()];
        if let Some(u) = url {
            opts.store = StoreConfig {
                url: Some(u.to_string().into()),
                ..StoreConfig::default()
            };
        }
        running.push(start(opts).await.context("starting a bench node")?);
    }
    let first = &running.first().context("no node")?.gateway;
    for e in 0..ENDPOINTS {
        first
            .webhooks
            .add(NewWebhook {
                url: format!("{base}/wh/{e}"),
                events: None,
                description: None,
                enabled: None,
            })
            .await
            .context("registering a bench endpoint")?;
    }
    sink.take();
    let t0 = Instant::now();
    let mut appenders = Vec::new();
    for (k, r) in running.iter().enumerate() {
        let sessions = r.gateway.sessions.clone();
        let mine: Vec<usize> = (0..n).filter(|i| i % nodes == k).collect();
        appenders.push(tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            for i in mine {
                sessions.append_event("message.received", None, event_data(i))?;
            }
            anyhow::Ok(t.elapsed())
        }));
    }
    let mut append = Duration::ZERO;
    for a in appenders {
        append = append.max(a.await.context("append task")??);
    }
    sink.wait(n * ENDPOINTS, label).await?;
    let receipts = sink.take();
    let paths: Vec<String> = (0..ENDPOINTS).map(|e| format!("/wh/{e}")).collect();
    let (problems, last) = check(&receipts, &paths, n);
    let elapsed = last.context("no receipt")?.saturating_duration_since(t0);
    eprintln!("{label}: webhook deliveries done");
    for r in running {
        r.stop().await?;
    }
    receiver.abort();
    Ok(Figures {
        label: label.into(),
        deliveries: n * ENDPOINTS,
        elapsed,
        append,
        problems,
    })
}

/// Print the scenarios' table (the first is the baseline).
pub(super) fn print(figures: &[Figures], n: usize) {
    println!(
        "\n| Setup | webhook deliveries ({n} events x {ENDPOINTS} endpoints) | time | deliveries/s | vs SQLite | appends took | missing or repeated |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let base = figures.first().map_or(0.0, Figures::rate);
    for f in figures {
        println!(
            "| {} | {} | {:.2} s | {:.0} | {} | {:.2} s | {} |",
            f.label,
            f.deliveries,
            f.elapsed.as_secs_f64(),
            f.rate(),
            super::ratio(f.rate(), base),
            f.append.as_secs_f64(),
            f.problems,
        );
    }
}
