//! `pincer bench webhooks`: outgoing webhook delivery, end to end.
//!
//! Events are appended to a real SQLite file (in a temp dir) with
//! `SessionStore::append_event`, which writes the event and one delivery per
//! subscribed endpoint in one transaction; the real [`Dispatcher`] (SSRF
//! guard allowing `127.0.0.0/8`, signing, the default per-endpoint limit of
//! 4) delivers them to a receiver started by the bench on `127.0.0.1:0` (axum,
//! answers 204, records the receive time of every `webhook-id`). The results
//! are printed as a Markdown table (copied into `BENCHMARKS.md`).
//!
//! Every rate has a same-run baseline because the machines this runs on are
//! shared and noisy: the same receiver hit by a plain `reqwest::Client`
//! POSTing the same bodies (unsigned, nothing persisted) with the same
//! concurrency. The receiver, the dispatcher and the baseline client share
//! this process and its tokio runtime, so they compete for the CPU; appends
//! run on a blocking thread, as an event source outside the runtime would.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Lat, ms, ratio};
use crate::clock;
use crate::netguard::NetGuard;
use crate::store::{DeliveryStatus, SessionStore, SqliteStore, WebhookStore};
use crate::webhooks::ssrf::{SsrfGuard, SystemResolver};
use crate::webhooks::{Dispatcher, NewWebhook, WebhookConfig, Webhooks};

/// Events per throughput run unless `--events` says otherwise (the whole
/// bench then takes well under a minute on 2 vCPUs).
pub const DEFAULT_EVENTS: usize = 5000;

/// Events in the latency run (one at a time).
const LATENCY_EVENTS: usize = 200;

/// Endpoints in the fan-out run.
const FANOUT: usize = 4;

/// How long any one wait for deliveries may take before the benchmark
/// fails (a hang guard, not a measurement).
const DELIVERY_WAIT: Duration = Duration::from_secs(120);

/// One request seen by the receiver.
pub(super) struct Receipt {
    /// The request path (one per endpoint).
    path: String,
    /// The `webhook-id` header.
    id: String,
    /// When the handler ran (body read).
    at: Instant,
}

/// The receiver's shared state.
pub(super) struct Sink {
    log: Mutex<Vec<Receipt>>,
    /// Requests received since the last [`Sink::take`].
    count: watch::Sender<usize>,
}

impl Sink {
    /// An empty receiver state.
    pub(super) fn new() -> Arc<Sink> {
        Arc::new(Sink {
            log: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
        })
    }

    /// The receipts so far, resetting the log and the count.
    pub(super) fn take(&self) -> Vec<Receipt> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        self.count.send_replace(0);
        std::mem::take(&mut *log)
    }

    /// Wait until `n` requests were received since the last reset.
    pub(super) async fn wait(&self, n: usize, what: &str) -> anyhow::Result<()> {
        let mut rx = self.count.subscribe();
        let got = tokio::time::timeout(DELIVERY_WAIT, rx.wait_for(|c| *c >= n))
            .await
            .map(|r| r.map(|_| ()));
        match got {
            Ok(r) => r.context("receiver gone"),
            Err(_) => anyhow::bail!(
                "{what}: only {} of {n} requests received within {}s",
                *self.count.borrow(),
                DELIVERY_WAIT.as_secs()
            ),
        }
    }
}

async fn receive(
    State(sink): State<Arc<Sink>>,
    uri: Uri,
    headers: HeaderMap,
    _body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    sink.log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Receipt {
            path: uri.path().to_owned(),
            id,
            at,
        });
    sink.count.send_modify(|c| *c += 1);
    StatusCode::NO_CONTENT
}

/// Start the receiver on `127.0.0.1:0`; its base URL.
pub(super) async fn start_receiver(
    sink: Arc<Sink>,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the receiver")?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(receive).with_state(sink);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "bench receiver stopped");
        }
    });
    Ok((format!("http://{addr}"), task))
}

/// The data of bench event `i`: a small inbound message (the body sent is
/// about 300 bytes).
pub(super) fn event_data(i: usize) -> Value {
    json!({
        "channel": "bench",
        "conversation": "conv-1",
        "from": "user-1",
        "messageId": format!("m{i}"),
        "text": "The quick brown fox jumps over the lazy dog; a typical short chat message.",
    })
}

/// One database with `endpoints` endpoints on the receiver (paths
/// `/{name}/{i}`) and a dispatcher over it (not started).
struct Rig {
    store: Arc<SqliteStore>,
    dispatcher: Arc<Dispatcher>,
    endpoints: Vec<String>,
}

async fn rig(dir: &Path, name: &str, base: &str, endpoints: usize) -> anyhow::Result<Rig> {
    let store = Arc::new(SqliteStore::open(&dir.join(format!("{name}.db")))?);
    let allow = NetGuard::parse_cidrs("127.0.0.0/8").map_err(anyhow::Error::msg)?;
    let guard = SsrfGuard::new(NetGuard::new(allow), Arc::new(SystemResolver));
    let config = WebhookConfig::default();
    let clock = clock::system();
    let registry = Webhooks::new(
        store.clone(),
        guard.clone(),
        clock.clone(),
        config.rotation_grace(),
    );
    let mut ids = Vec::with_capacity(endpoints);
    for i in 0..endpoints {
        let added = registry
            .add(NewWebhook {
                url: format!("{base}/{name}/{i}"),
                events: None,
                description: None,
                enabled: None,
            })
            .await
            .context("registering the bench endpoint")?;
        ids.push(added.endpoint.id);
    }
    let dispatcher = Dispatcher::new(store.clone(), store.clone(), config, clock, guard)
        .context("building the dispatcher")?;
    Ok(Rig {
        store,
        dispatcher,
        endpoints: ids,
    })
}

/// Append events `0..n` on a blocking thread; how long it took.
async fn append(store: Arc<SqliteStore>, n: usize) -> anyhow::Result<Duration> {
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        for i in 0..n {
            store.append_event("message.received", None, event_data(i))?;
        }
        anyhow::Ok(t.elapsed())
    })
    .await
    .context("append task")?
}

/// What every run needs.
struct Cx {
    dir: std::path::PathBuf,
    sink: Arc<Sink>,
    /// The receiver's base URL.
    base: String,
    /// Missing, duplicate or not-delivered-first-time deliveries so far.
    problems: usize,
}

/// One delivery run.
struct Delivered {
    /// Deliveries per second, from the first append (live) or the
    /// dispatcher's start (backlog) to the last receipt.
    rate: f64,
    elapsed: Duration,
    /// How long appending took (live runs).
    append: Duration,
}

/// Check a run's receipts: each of `paths` got exactly the same `n`
/// distinct `webhook-id`s. Returns the number of problems (duplicates plus
/// missing) and the last receipt time.
pub(super) fn check(receipts: &[Receipt], paths: &[String], n: usize) -> (usize, Option<Instant>) {
    let mut per: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut problems = 0;
    for r in receipts {
        if !per.entry(&r.path).or_default().insert(&r.id) {
            problems += 1;
        }
    }
    let first = paths.first().and_then(|p| per.get(p.as_str()));
    for p in paths {
        let got = per.get(p.as_str());
        let len = got.map_or(0, HashSet::len);
        problems += n.saturating_sub(len);
        if let (Some(a), Some(b)) = (first, got)
            && a != b
        {
            problems += a.symmetric_difference(b).count();
        }
    }
    (problems, receipts.iter().map(|r| r.at).max())
}

/// Deliveries of `rig` not settled as delivered on the first attempt.
fn not_delivered_once(rig: &Rig, n: usize) -> anyhow::Result<usize> {
    let mut bad = 0;
    for ep in &rig.endpoints {
        let all = rig.store.list_deliveries(ep, None, None, n + 1)?;
        bad += n.abs_diff(all.len());
        bad += all
            .iter()
            .filter(|d| d.status != DeliveryStatus::Delivered || d.attempts != 1)
            .count();
    }
    Ok(bad)
}

/// `n` events appended to a database with `endpoints` endpoints, delivered
/// by the dispatcher: `live` starts it before the first append; otherwise
/// all events are appended first and the backlog is drained.
async fn deliver(
    cx: &mut Cx,
    name: &str,
    endpoints: usize,
    n: usize,
    live: bool,
) -> anyhow::Result<Delivered> {
    let sink = cx.sink.clone();
    let rig = rig(&cx.dir, name, &cx.base, endpoints).await?;
    sink.take();
    let (t, append_time, handle) = if live {
        let handle = rig.dispatcher.spawn();
        let t = Instant::now();
        let a = append(rig.store.clone(), n).await?;
        (t, a, handle)
    } else {
        let a = append(rig.store.clone(), n).await?;
        let t = Instant::now();
        (t, a, rig.dispatcher.spawn())
    };
    sink.wait(n * endpoints, name).await?;
    rig.dispatcher.settled().await;
    handle.abort();
    let receipts = sink.take();
    let paths: Vec<String> = (0..endpoints).map(|i| format!("/{name}/{i}")).collect();
    let (bad, last) = check(&receipts, &paths, n);
    cx.problems += bad + not_delivered_once(&rig, n)?;
    let elapsed = last.context("no receipt")?.saturating_duration_since(t);
    Ok(Delivered {
        rate: (n * endpoints) as f64 / elapsed.as_secs_f64(),
        elapsed,
        append: append_time,
    })
}

/// The bodies stored for `rig`'s first endpoint (the exact bytes the
/// dispatcher sends), oldest first.
fn stored_bodies(rig: &Rig, n: usize) -> anyhow::Result<Vec<String>> {
    let ep = rig.endpoints.first().context("no endpoint")?;
    let mut ds = rig.store.list_deliveries(ep, None, None, n)?;
    ds.reverse();
    Ok(ds.into_iter().map(|d| d.body).collect())
}

/// One baseline run: rate, p50, p99.
struct Raw {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

impl Raw {
    fn show(&self) -> String {
        format!(
            "{:.0} POST/s (p50 {}, p99 {})",
            self.rate,
            ms(self.p50),
            ms(self.p99)
        )
    }
}

/// `bodies` POSTed to `url` by a plain client from `par` concurrent tasks
/// (one request in flight each), answers checked to be 2xx.
async fn raw_posts(
    sink: &Sink,
    client: &reqwest::Client,
    url: &str,
    bodies: Arc<Vec<String>>,
    par: usize,
) -> anyhow::Result<Raw> {
    sink.take();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(par + 1));
    let mut tasks = Vec::with_capacity(par);
    for _ in 0..par {
        let (client, url, bodies, next, start) = (
            client.clone(),
            url.to_owned(),
            bodies.clone(),
            next.clone(),
            start.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            start.wait().await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let t = Instant::now();
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", format!("raw_{i}"))
                    .body(body.clone())
                    .send()
                    .await?
                    .error_for_status()?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    start.wait().await;
    let t = Instant::now();
    let mut all = Vec::with_capacity(bodies.len());
    for task in tasks {
        all.extend(task.await.context("baseline task")??);
    }
    let elapsed = t.elapsed();
    sink.wait(bodies.len(), "baseline").await?;
    sink.take();
    let mut lat = Lat(all);
    Ok(Raw {
        rate: lat.0.len() as f64 / elapsed.as_secs_f64(),
        p50: lat.pct(0.5),
        p99: lat.pct(0.99),
    })
}

/// Event → receipt latency: `n` events appended one at a time, each after
/// the previous one was received and its attempt settled (the dispatcher is
/// idle when each event is written). Returns (event → receipt, the
/// `append_event` call alone).
async fn latency(cx: &mut Cx, n: usize) -> anyhow::Result<(Lat, Lat)> {
    let sink = cx.sink.clone();
    let rig = rig(&cx.dir, "latency", &cx.base, 1).await?;
    let handle = rig.dispatcher.spawn();
    sink.take();
    let mut e2e = Vec::with_capacity(n);
    let mut appends = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let store = rig.store.clone();
        let (t, a) = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            store.append_event("message.received", None, event_data(i))?;
            anyhow::Ok((t, t.elapsed()))
        })
        .await
        .context("append task")??;
        appends.push(a);
        sink.wait(i + 1, "latency").await?;
        let at = sink
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .map(|r| r.at)
            .context("no receipt")?;
        e2e.push(at.saturating_duration_since(t));
        rig.dispatcher.settled().await;
    }
    handle.abort();
    let receipts = sink.take();
    cx.problems += check(&receipts, &["/latency/0".to_owned()], n).0;
    cx.problems += not_delivered_once(&rig, n)?;
    Ok((Lat(e2e), Lat(appends)))
}

/// Run the webhook benchmark with `events` events per throughput run and
/// print a Markdown table.
pub async fn webhooks(events: usize) -> anyhow::Result<()> {
    anyhow::ensure!(events > 0, "--events must be at least 1");
    let dir = std::env::temp_dir().join(format!("pincer-bench-wh-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let r = run(&dir, events).await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

async fn run(dir: &Path, n: usize) -> anyhow::Result<()> {
    let sink = Sink::new();
    let (base, server) = start_receiver(sink.clone()).await?;
    let raw_url = format!("{base}/raw");
    let mut cx = Cx {
        dir: dir.to_owned(),
        sink,
        base,
        problems: 0,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the baseline client")?;
    let per = WebhookConfig::default().concurrency_per_endpoint;
    let mut rows: Vec<[String; 4]> = Vec::new();

    // 1. The write path: append_event without endpoints vs with one (the
    //    event plus its delivery row, dispatcher stopped). The second
    //    database is then the backlog for 3.
    let plain = Arc::new(SqliteStore::open(&dir.join("plain.db"))?);
    let bare = append(plain, n).await?;
    let backlog = rig(dir, "backlog", &cx.base, 1).await?;
    let with_ep = append(backlog.store.clone(), n).await?;
    let bare_rate = n as f64 / bare.as_secs_f64();
    let ep_rate = n as f64 / with_ep.as_secs_f64();
    rows.push([
        format!("`append_event` + 1 delivery row, dispatcher stopped ({n} events)"),
        format!("{ep_rate:.0} events/s"),
        format!("no endpoint subscribed: {bare_rate:.0} events/s"),
        format!("{} of the rate", ratio(ep_rate, bare_rate)),
    ]);
    let bodies = Arc::new(stored_bodies(&backlog, n)?);
    anyhow::ensure!(bodies.len() == n, "{} stored bodies, not {n}", bodies.len());
    let body_len = bodies.iter().map(String::len).sum::<usize>() / n;

    // 2. Live delivery to one endpoint vs raw POSTs at the same concurrency.
    let raw = raw_posts(&cx.sink, &client, &raw_url, bodies.clone(), per).await?;
    let live = deliver(&mut cx, "live1", 1, n, true).await?;
    rows.push([
        format!("delivered/s, 1 endpoint, {n} events appended in a burst (dispatcher running)"),
        format!(
            "{:.0} deliveries/s (last received {} after the first append; appends took {})",
            live.rate,
            ms(live.elapsed),
            ms(live.append)
        ),
        format!("raw POST, {per} concurrent: {}", raw.show()),
        format!("{} of the rate", ratio(live.rate, raw.rate)),
    ]);

    // 3. Draining the backlog written in 1 (the dispatcher alone).
    cx.sink.take();
    let t = Instant::now();
    let handle = backlog.dispatcher.spawn();
    cx.sink.wait(n, "backlog").await?;
    backlog.dispatcher.settled().await;
    handle.abort();
    let receipts = cx.sink.take();
    let (bad, last) = check(&receipts, &["/backlog/0".to_owned()], n);
    cx.problems += bad + not_delivered_once(&backlog, n)?;
    let drained = last.context("no receipt")?.saturating_duration_since(t);
    let drain_rate = n as f64 / drained.as_secs_f64();
    rows.push([
        format!("delivered/s, 1 endpoint, backlog of {n} drained (dispatcher started after)"),
        format!(
            "{drain_rate:.0} deliveries/s (all received in {})",
            ms(drained)
        ),
        format!("raw POST, {per} concurrent: {:.0} POST/s", raw.rate),
        format!("{} of the rate", ratio(drain_rate, raw.rate)),
    ]);
    drop(backlog);

    // 4. Fan-out: 4 endpoints (each limited to `per` in flight) vs raw POSTs
    //    at 4 x `per` concurrency.
    let fan_bodies = Arc::new(
        bodies
            .iter()
            .flat_map(|b| std::iter::repeat_n(b.clone(), FANOUT))
            .collect::<Vec<_>>(),
    );
    let raw_fan = raw_posts(&cx.sink, &client, &raw_url, fan_bodies, per * FANOUT).await?;
    let fan = deliver(&mut cx, "fanout", FANOUT, n, true).await?;
    rows.push([
        format!(
            "delivered/s, {FANOUT} endpoints, {n} events appended in a burst ({} deliveries)",
            n * FANOUT
        ),
        format!(
            "{:.0} deliveries/s (last received {} after the first append; appends took {})",
            fan.rate,
            ms(fan.elapsed),
            ms(fan.append)
        ),
        format!("raw POST, {} concurrent: {}", per * FANOUT, raw_fan.show()),
        format!("{} of the rate", ratio(fan.rate, raw_fan.rate)),
    ]);

    // 5. Event → receipt latency vs one raw POST's latency.
    let seq_bodies = Arc::new(bodies[..LATENCY_EVENTS.min(n)].to_vec());
    let raw_seq = raw_posts(&cx.sink, &client, &raw_url, seq_bodies, 1).await?;
    let (mut e2e, mut appends) = latency(&mut cx, LATENCY_EVENTS).await?;
    rows.push([
        format!(
            "event → receipt, 1 endpoint, {LATENCY_EVENTS} events one at a time (dispatcher idle)"
        ),
        format!(
            "p50 {}, p99 {} (of which `append_event`: p50 {}, p99 {})",
            ms(e2e.pct(0.5)),
            ms(e2e.pct(0.99)),
            ms(appends.pct(0.5)),
            ms(appends.pct(0.99))
        ),
        format!(
            "raw POST, sequential: p50 {}, p99 {}",
            ms(raw_seq.p50),
            ms(raw_seq.p99)
        ),
        format!(
            "{} the p50",
            ratio(e2e.pct(0.5).as_secs_f64(), raw_seq.p50.as_secs_f64())
        ),
    ]);
    let problems = cx.problems;
    rows.push([
        "missing, duplicate or not-delivered-first-time deliveries".into(),
        problems.to_string(),
        "should be 0".into(),
        "n/a".into(),
    ]);
    server.abort();

    println!("| measure | value | baseline | ratio |");
    println!("|---|---|---|---|");
    for [a, b, c, d] in &rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
    println!();
    println!("Bodies: {body_len} bytes on average (`message.received`).");
    let flag = if n == DEFAULT_EVENTS {
        String::new()
    } else {
        format!(" --events {n}")
    };
    println!("Command: `RUST_LOG=warn ./target/release/pincer bench webhooks{flag}`");
    anyhow::ensure!(
        problems == 0,
        "{problems} deliveries missing, duplicated or not delivered on the first attempt"
    );
    Ok(())
}
