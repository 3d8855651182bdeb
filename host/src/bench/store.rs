//! `pincer bench store`: the same store workloads on SQLite and on
//! PostgreSQL in one run (a chat turn's writes, plugin key-value set and
//! get, a channel message through the inbox and outbox, chat turns from
//! four threads at once), with ops/s, p50 and p99 per backend and the
//! ratio. PostgreSQL is a throwaway local server (see [`super::pgserver`])
//! unless `--store postgres://...` names one; it is measured with
//! `synchronous_commit` off (commits not flushed one by one: the
//! durability class of SQLite's WAL with `synchronous=NORMAL`, which the
//! SQLite store uses) and on (every commit waits for its WAL flush).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Lat, ratio, us};
use crate::store::{InboxLink, NewInbound, NewMessage, NewOutbound, SharedStore, StoreConfig};

/// Operations per workload (per thread count, in total).
const DEFAULT_OPS: usize = 2000;

/// One workload's figures on one backend.
struct Figures {
    ops_per_s: f64,
    p50: Duration,
    p99: Duration,
}

/// Opens a fresh store for the named workload.
type OpenFn = Box<dyn Fn(&str) -> anyhow::Result<SharedStore> + Send + Sync>;

/// A store to measure, with its label.
struct Backend {
    label: String,
    open: OpenFn,
}

/// Run the store bench; `url` names a PostgreSQL database to use instead
/// of a throwaway server; `quick` runs a tenth of the operations.
pub async fn store(url: Option<String>, quick: bool) -> anyhow::Result<()> {
    let ops = if quick { DEFAULT_OPS / 10 } else { DEFAULT_OPS };
    tokio::task::spawn_blocking(move || run(url, ops)).await?
}

fn run(url: Option<String>, ops: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("pincer-bench-store-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    // A server with default (durable) settings; the `options` URL
    // parameter picks synchronous_commit per connection.
    let server = match &url {
        Some(_) => None,
        None => Some(super::pgserver::PgServer::start(&[])?),
    };
    let pg_db = |name: &str| -> anyhow::Result<String> {
        match (&server, &url) {
            (Some(s), _) => s.create_db(name),
            (None, Some(u)) => Ok(u.clone()),
            (None, None) => anyhow::bail!("no PostgreSQL"),
        }
    };
    let sqlite_dir = dir.clone();
    let mut backends = vec![Backend {
        label: "SQLite".into(),
        open: Box::new(move |name| {
            let config = StoreConfig {
                url: Some(
                    sqlite_dir
                        .join(format!("{name}.db"))
                        .display()
                        .to_string()
                        .into(),
                ),
                ..StoreConfig::default()
            };
            Ok(crate::store::open(&sqlite_dir, &config)?)
        }),
    }];
    for (label, sync) in [
        ("PostgreSQL (synchronous_commit=off)", "off"),
        ("PostgreSQL (synchronous_commit=on)", "on"),
    ] {
        let base = pg_db(&format!("bench_{sync}"))?;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20synchronous_commit%3D{sync}");
        backends.push(Backend {
            label: label.into(),
            open: Box::new(move |_| {
                let config = StoreConfig {
                    url: Some(url.clone().into()),
                    ..StoreConfig::default()
                };
                Ok(crate::store::open(std::path::Path::new("."), &config)?)
            }),
        });
    }
    type Workload = (
        &'static str,
        usize,
        fn(&SharedStore, usize, usize) -> anyhow::Result<()>,
    );
    let workloads: [Workload; 5] = [
        ("chat turn (2 messages, 2 events)", 1, chat_turn),
        ("chat turn, 4 threads", 4, chat_turn),
        ("kv set", 1, kv_set),
        ("kv get", 1, kv_get),
        ("channel message (inbox, outbox, sent)", 1, channel_message),
    ];
    let mut results: Vec<Vec<Figures>> = Vec::new();
    for (w, (name, threads, op)) in workloads.iter().enumerate() {
        let mut row = Vec::new();
        for b in &backends {
            let store = (b.open)(&format!("w{w}"))?;
            row.push(measure(&store, *threads, ops, *op)?);
            eprintln!("{name} on {}: done", b.label);
        }
        results.push(row);
    }
    println!("## Store: SQLite and PostgreSQL ({ops} operations per workload)\n");
    print!("| Workload |");
    for b in &backends {
        print!(" {} ops/s | p50 | p99 |", b.label);
    }
    println!(" SQLite / PG (sync off) ops/s |");
    print!("|---|");
    for _ in &backends {
        print!("---:|---:|---:|");
    }
    println!("---:|");
    for ((name, ..), row) in workloads.iter().zip(&results) {
        print!("| {name} |");
        for f in row {
            print!(" {:.0} | {} | {} |", f.ops_per_s, us(f.p50), us(f.p99));
        }
        println!(" {} |", ratio(row[0].ops_per_s, row[1].ops_per_s));
    }
    if let Some(s) = &server {
        println!(
            "\nPostgreSQL: a local server on 127.0.0.1:{} (defaults, fsync on).",
            s.port()
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Run `ops` operations `op(store, thread, i)` over `threads` threads
/// (after 100 warm-up operations, `i` below 100), timing each.
fn measure(
    store: &SharedStore,
    threads: usize,
    ops: usize,
    op: fn(&SharedStore, usize, usize) -> anyhow::Result<()>,
) -> anyhow::Result<Figures> {
    for i in 0..100 {
        op(store, 99, i)?;
    }
    let per = ops / threads;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(store);
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let t0 = Instant::now();
                    op(&store, t, 100 + i)?;
                    lat.push(t0.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(ops);
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("bench thread panicked"))??,
        );
    }
    let elapsed = start.elapsed();
    let n = all.len();
    let mut lat = Lat(all);
    Ok(Figures {
        ops_per_s: n as f64 / elapsed.as_secs_f64(),
        p50: lat.pct(0.5),
        p99: lat.pct(0.99),
    })
}

/// A user message and the assistant's reply, each with its event, on one
/// of 50 sessions of thread `t`.
fn chat_turn(s: &SharedStore, t: usize, i: usize) -> anyhow::Result<()> {
    let key = format!("agent:main:bench:{t}:{}", i % 50);
    let msg = |role: &str, event| NewMessage {
        role: role.into(),
        content: json!([{"type": "text", "text": format!("message {i} of a benchmark conversation")}]),
        event: Some(event),
        ..Default::default()
    };
    s.append_message(&key, msg("user", "message.received"))?;
    s.append_message(&key, msg("assistant", "message.sent"))?;
    Ok(())
}

fn kv_set(s: &SharedStore, t: usize, i: usize) -> anyhow::Result<()> {
    s.set("bench", &format!("k{t}/{}", i % 500), &[7u8; 256])?;
    Ok(())
}

fn kv_get(s: &SharedStore, _t: usize, i: usize) -> anyhow::Result<()> {
    let key = format!("g/{}", i % 100);
    if i < 100 {
        // The warm-up writes what is read.
        s.set("bench", &key, &[7u8; 256])?;
        return Ok(());
    }
    anyhow::ensure!(s.get("bench", &key)?.is_some(), "{key} missing");
    Ok(())
}

/// A channel message's store path: committed to the inbox with its
/// cursor, answered (outbox enqueue settling it), sent and delivered.
fn channel_message(s: &SharedStore, t: usize, i: usize) -> anyhow::Result<()> {
    let channel = format!("bench{t}");
    let conversation = format!("c{}", i % 20);
    s.commit_inbound(
        &channel,
        "default",
        &[NewInbound {
            platform_id: format!("m{i}"),
            conversation: conversation.clone(),
            payload: json!({"text": "hello"}).to_string(),
        }],
        Some(&i.to_string()),
    )?;
    let Some(item) = s.inbox_pending(&channel, 0, 1)?.into_iter().next() else {
        anyhow::bail!("the committed message is not pending");
    };
    let ids = s.outbox_enqueue(
        &channel,
        "default",
        InboxLink::Answers(item.seq),
        &[NewOutbound {
            conversation,
            message: json!({"text": "hi"}).to_string(),
            blobs: Vec::new(),
        }],
    )?;
    for id in ids {
        anyhow::ensure!(s.outbox_begin(id)?, "outbox {id} not waiting");
        s.outbox_delivered(id, &format!("p{i}"))?;
    }
    Ok(())
}
