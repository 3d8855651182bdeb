//! Helpers for the exactly-once tests of the durable channel path with
//! `testchan`: counting answers per token from the channel's `sent/`
//! records, naming the messages whose send was in doubt when a gateway was
//! killed, waiting with a diagnosis of every unfinished inbox and outbox row
//! on timeout, and the kill -9 loop itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use pincer::store::{InboxStore, KvStore, OutboxStore};

use crate::gateway::ChildGateway;

/// The test channel's name.
pub const CHANNEL: &str = "testchan";

/// Longest a test waits for the gateway to catch up (a hang guard, not a
/// timing assertion).
pub const HANG_GUARD: Duration = Duration::from_secs(600);

/// The token of message `i` (`q` and six digits).
pub fn token(i: usize) -> String {
    format!("q{i:06}")
}

/// The first token (`q` and six digits) in `text`.
pub fn token_in(text: &str) -> Option<String> {
    text.match_indices('q').find_map(|(i, _)| {
        let tok: String = text[i..].chars().take(7).collect();
        (tok.len() == 7 && tok[1..].bytes().all(|b| b.is_ascii_digit())).then_some(tok)
    })
}

/// `n` messages (ids `prefix<i>`, text the token of `i` and then `extra`)
/// over 40 conversations, as testchan's `inbox` wants them.
pub fn inbox(range: std::ops::Range<usize>, prefix: &str, extra: &str) -> String {
    let list: Vec<serde_json::Value> = range
        .map(|i| {
            serde_json::json!({
                "id": format!("{prefix}{i}"),
                "conversation": format!("c{}", i % 40),
                "text": format!("{}{extra}", token(i)),
            })
        })
        .collect();
    serde_json::Value::from(list).to_string()
}

/// How often each token was sent (from testchan's `sent/` records: every
/// `send` call the channel took, so a streamed reply counts its first
/// message and edits count nothing).
pub fn answers<K: KvStore + ?Sized>(kv: &K) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for key in kv.list_keys(CHANNEL, "sent/", 10_000_000).expect("list") {
        let Some(v) = kv.get(CHANNEL, &key).expect("get") else {
            continue;
        };
        if let Some(tok) = token_in(&String::from_utf8_lossy(&v)) {
            *out.entry(tok).or_insert(0) += 1;
        }
    }
    out
}

/// Tokens whose send was in flight in the store (after a kill: in doubt,
/// the platform may or may not have taken it): outbox rows marked in
/// flight, and streamed replies whose progress records a direct send.
pub fn in_doubt<S: InboxStore + OutboxStore + ?Sized>(store: &S) -> BTreeSet<String> {
    in_doubt_on(store, CHANNEL)
}

/// [`in_doubt`] for the messages of `channel`.
pub fn in_doubt_on<S: InboxStore + OutboxStore + ?Sized>(
    store: &S,
    channel: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for item in store.outbox_in_doubt(channel).expect("outbox in doubt") {
        if let Some(t) = token_in(&item.message) {
            out.insert(t);
        }
    }
    for item in store
        .inbox_pending(channel, 0, 100_000)
        .expect("inbox pending")
    {
        let sending = store
            .inbox_progress(item.seq)
            .expect("progress")
            .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
            .is_some_and(|p| p["sending"] == true);
        if sending && let Some(t) = token_in(&item.payload) {
            out.insert(t);
        }
    }
    out
}

/// Every inbox and outbox row of the channel that is not done, with its
/// state and next attempt (printed when a wait times out).
pub fn diagnose<S: InboxStore + OutboxStore + ?Sized>(store: &S) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut out = String::new();
    match store.inbox_pending(CHANNEL, 0, 1000) {
        Ok(rows) => {
            out += &format!("inbox: {} unsettled\n", rows.len());
            for r in rows.iter().take(50) {
                let progress = store.inbox_progress(r.seq).ok().flatten();
                out += &format!(
                    "  seq {} conversation {} token {:?} progress {:?}\n",
                    r.seq,
                    r.conversation,
                    token_in(&r.payload),
                    progress
                );
            }
        }
        Err(e) => out += &format!("inbox unreadable: {e}\n"),
    }
    match store.outbox_rows(CHANNEL, 1000) {
        Ok(rows) => {
            out += &format!("outbox: {} undelivered\n", rows.len());
            for r in rows.iter().take(50) {
                out += &format!(
                    "  id {} {} conversation {} token {:?} attempts {} next in {} ms in flight since {:?} error {:?}\n",
                    r.id,
                    r.status,
                    r.conversation,
                    token_in(&r.message),
                    r.attempts,
                    r.next_attempt_ms - now,
                    r.sending_since_ms.map(|t| now - t),
                    r.last_error
                );
            }
        }
        Err(e) => out += &format!("outbox unreadable: {e}\n"),
    }
    out
}

/// Wait (polling the store) until `f` holds; on the hang guard, fail with
/// [`diagnose`].
pub async fn until<S: InboxStore + OutboxStore + ?Sized>(
    store: &S,
    what: &str,
    mut f: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            diagnose(store)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a kill -9 run found.
#[derive(Debug, Default)]
pub struct KillReport {
    /// Kills.
    pub kills: usize,
    /// Tokens whose send was in doubt at a kill, with how many kills found
    /// them so.
    pub in_doubt: BTreeMap<String, usize>,
    /// Sends per token.
    pub answers: BTreeMap<String, usize>,
}

impl KillReport {
    /// Tokens sent more than once.
    pub fn doubled(&self) -> Vec<(&String, &usize)> {
        self.answers.iter().filter(|(_, n)| **n > 1).collect()
    }

    /// Check the design's guarantee: every message answered, exactly once
    /// unless its send was in doubt at a kill (then once more per such kill
    /// at most).
    pub fn assert_exactly_once_but_in_doubt(&self, n: usize) {
        assert_eq!(self.answers.len(), n, "every message answered");
        for (tok, count) in &self.answers {
            match self.in_doubt.get(tok) {
                Some(kills) => assert!(
                    *count <= 1 + kills,
                    "{tok} in doubt at {kills} kills, sent {count} times"
                ),
                None => assert_eq!(*count, 1, "{tok} sent {count} times, never in doubt"),
            }
        }
    }
}

/// Start the ignored test `child` (a gateway in a child process over
/// `dir`, env `dir_var` naming it), let it answer `n` messages written to
/// testchan's inbox (`extra` after each token), killing it with SIGKILL at
/// `kills` random points and restarting it; returns what happened once
/// every message is answered and the inbox and outbox are settled.
pub async fn kill_run(
    child: &str,
    dir_var: &str,
    dir: &Path,
    n: usize,
    extra: &str,
    kills: usize,
) -> KillReport {
    let env = [(dir_var, dir.to_str().expect("utf-8"))];
    let store = crate::test_store::open(dir);
    kill_run_on(child, &env, &*store, n, extra, kills).await
}

/// [`kill_run`] with the child's environment `env` and the `store` it
/// shares with the child (a SQLite file or a PostgreSQL database).
pub async fn kill_run_on<S: KvStore + InboxStore + OutboxStore + ?Sized>(
    child: &str,
    env: &[(&str, &str)],
    store: &S,
    n: usize,
    extra: &str,
    kills: usize,
) -> KillReport {
    let mut gw = ChildGateway::spawn(child, env);
    store
        .set(CHANNEL, "inbox", inbox(0..n, "k", extra).as_bytes())
        .expect("inbox");
    // Random kill points (clock-seeded), increasing.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(7);
    let mut points: Vec<usize> = (0..kills)
        .map(|k| 1 + (seed.rotate_right((k * 7) as u32)) % (n - n / 20))
        .collect();
    points.sort_unstable();
    let mut report = KillReport::default();
    for p in points {
        until(store, "answers before the kill point", || {
            answers(store).len() >= p
        })
        .await;
        gw.kill();
        report.kills += 1;
        for tok in in_doubt(store) {
            *report.in_doubt.entry(tok).or_insert(0) += 1;
        }
        gw = ChildGateway::spawn(child, env);
    }
    until(store, "every message answered", || {
        answers(store).len() == n
    })
    .await;
    until(store, "the inbox settled and the outbox drained", || {
        store.inbox_stats(CHANNEL).map(|s| s.pending).unwrap_or(1) == 0
            && store.outbox_stats(CHANNEL).map(|s| s.depth).unwrap_or(1) == 0
    })
    .await;
    gw.kill();
    report.answers = answers(store);
    eprintln!(
        "kills: {}, answered: {}, sends in doubt at a kill: {}, doubled: {}",
        report.kills,
        report.answers.len(),
        report.in_doubt.len(),
        report.doubled().len()
    );
    report
}

/// Replies paced by nothing: sends go out at once with quick retries and
/// the plugin's outbound budget (20 requests/s by default) lifted, so a
/// kill -9 run tests the delivery path, not the pacing.
pub fn unpaced(settings: &mut pincer::plugins::PluginSettings) {
    settings.queue = pincer::channels::QueueSettings {
        send_interval_ms: 1,
        send_burst: 1000,
        retry_base_ms: 20,
        retry_max_ms: 200,
        ..Default::default()
    };
    settings.http = Some(pincer::plugins::limits::HttpOverrides {
        rate_per_sec: Some(100_000),
        burst: Some(100_000),
        max_response_bytes: None,
    });
}

/// In a kill -9 test's child gateway: serve channel `name` with `settings`
/// from data directory `dir` (loopback fakes allowed, one sender as fast
/// as it likes, the echo agent streaming word by word), print the
/// `LISTENING` line [`ChildGateway`] waits for, and run until killed.
pub fn serve_kill_child(dir: &Path, name: &str, settings: pincer::plugins::PluginSettings) {
    crate::gateway::child_logging();
    let mut opts = pincer::gateway::launch::Options::new(dir);
    opts.gateway.listen = "127.0.0.1:0".parse().expect("addr");
    opts.watch_settle = Duration::from_millis(100);
    opts.allow_cidrs =
        pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").expect("loopback range");
    opts.plugins.insert(name.into(), settings);
    opts.gateway.runs.sender_per_minute = u32::MAX;
    opts.gateway.runs.sender_burst = u32::MAX;
    opts.agent.echo_word_delay_ms = 5;
    crate::gateway::child_runtime().block_on(async move {
        let running = crate::gateway::start(opts).await.expect("starts");
        println!("LISTENING {}", running.addr);
        std::future::pending::<()>().await;
    });
}
