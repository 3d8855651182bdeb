//! `pincer bench cluster`, failover part: how long a polling channel is
//! unanswered after `kill -9` of the node that polls it. Three `pincer
//! serve` processes (this binary) on one PostgreSQL database serve the
//! bundled Telegram plugin against the local fake Bot API
//! ([`crate::fakes::telegram`], in this process); each trial waits until
//! the lease holder answers a message, kills the holder with SIGKILL,
//! sends one more message, and measures from the kill until another node
//! holds the lease (its row in the store carries a newer fencing token)
//! and until that message is answered; the killed node is then started
//! again on its data directory (same node id). p50 and p99 over the trials.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::fakes::telegram::{Chat, DEFAULT_TOKEN, FakeTelegram, User, UserMessage};
use crate::store::{LeaseRow, LeaseStore, PgStore, StoreConfig};

/// The channel key of the bot.
const CHANNEL: &str = "telegram";
/// The chat every message is sent in.
const CHAT: i64 = 5_000;
/// Longest any one wait may take (a hang guard, not a measurement).
const WAIT_GUARD: Duration = Duration::from_secs(180);
/// How often the lease row and the fake's answers are looked at.
const LOOK_EVERY: Duration = Duration::from_millis(20);
/// The shipped Telegram manifest's host list, and the one the nodes get.
const TG_HOSTS: &str = r#"allowed_hosts = ["https://api.telegram.org"]"#;
const TG_HOSTS_LOOPBACK: &str =
    r#"allowed_hosts = ["https://api.telegram.org", "http://127.0.0.1:*"]"#;

/// The figures of a failover run.
pub(super) struct Failover {
    /// Trials run.
    pub trials: usize,
    /// The lease time, ms.
    pub lease_ms: u64,
    /// From the kill until another node held the lease.
    pub takeover: super::Lat,
    /// From the kill until the message sent after it was answered.
    pub answered: super::Lat,
}

/// A node: a `pincer serve` process over its own data directory.
struct Node {
    child: Child,
    dir: PathBuf,
    id: String,
}

impl Node {
    /// Start `pincer serve` over `dir` (its config written there by
    /// [`prepare`]).
    fn start(dir: &Path, url: &str) -> anyhow::Result<Node> {
        let exe = std::env::current_exe().context("the pincer binary")?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--no-bundled")
            .arg("--data-dir")
            .arg(dir)
            .arg("--plugins-dir")
            .arg(dir.join("plugins"))
            .arg("--config")
            .arg(dir.join("pincer.toml"))
            .args([
                "--store",
                url,
                "--listen",
                "127.0.0.1:0",
                "--token",
                "bench",
            ])
            .args(["--allow-cidrs", "127.0.0.0/8"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a pincer node")?;
        let id = std::fs::read_to_string(dir.join("node-id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Ok(Node {
            child,
            dir: dir.to_path_buf(),
            id,
        })
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Write node directory `dir`: the bundled telegram plugin (its manifest
/// widened to loopback) and a configuration serving the fake's bot.
fn prepare(dir: &Path, fake: &FakeTelegram, lease_ms: u64) -> anyhow::Result<()> {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).with_context(|| format!("creating {}", plugins.display()))?;
    let (_, wasm, toml) = crate::bundled::BUNDLED
        .iter()
        .find(|(n, _, _)| *n == CHANNEL)
        .context("the telegram plugin is not bundled")?;
    anyhow::ensure!(
        toml.contains(TG_HOSTS),
        "the bundled telegram manifest no longer contains `{TG_HOSTS}`"
    );
    let manifest = toml.replacen(TG_HOSTS, TG_HOSTS_LOOPBACK, 1);
    crate::atomic_file::write(&plugins.join("telegram.toml"), manifest.as_bytes())?;
    crate::atomic_file::write(&plugins.join("telegram.wasm"), wasm)?;
    let config = format!(
        r#"[store]
lease_ms = {lease_ms}

[plugins.telegram]
allowed_hosts = ["https://api.telegram.org", "http://127.0.0.1:*"]
secrets = {{ bot_token = {token:?} }}
config = {{ api_base = {api:?} }}
dm_policy = "open"
"#,
        token = DEFAULT_TOKEN,
        api = fake.base_url(),
    );
    std::fs::write(dir.join("pincer.toml"), config).context("writing a node's config")?;
    Ok(())
}

/// The bot's live lease (not released).
fn lease(store: &PgStore) -> Option<LeaseRow> {
    store
        .lease_row(CHANNEL)
        .ok()
        .flatten()
        .filter(|r| r.expires_ms > 0)
}

/// Wait (looking every [`LOOK_EVERY`]) until `check` gives a value.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + WAIT_GUARD;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "failover bench: gave up waiting for {what}"
        );
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// Run `trials` failovers of a polling bot over three nodes on database
/// `url`, with leases of `lease_ms`; the nodes' directories go under `dir`.
pub(super) async fn failover(
    dir: &Path,
    url: &str,
    trials: usize,
    lease_ms: u64,
) -> anyhow::Result<Failover> {
    let fake = FakeTelegram::start().await;
    let (chat, user) = (Chat::private(CHAT, "Bench"), User::new(CHAT, "Bench"));
    let mut nodes = Vec::new();
    for i in 0..3 {
        let d = dir.join(format!("failover{i}"));
        prepare(&d, &fake, lease_ms)?;
        nodes.push(Node::start(&d, url)?);
    }
    let store = {
        let url = url.to_string();
        tokio::task::spawn_blocking(move || PgStore::connect(&url, &StoreConfig::default()))
            .await
            .context("connecting task")??
    };
    let answers = || fake.sent_texts(CHAT).len();
    let mut sent = 0usize;
    let (mut takeover, mut answered) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        let held = until("a lease holder", || lease(&store)).await?;
        // Warm: the holder answers.
        fake.push(UserMessage::text(&chat, &user, &format!("warm {trial}")));
        sent += 1;
        until("the warm answer", || (answers() >= sent).then_some(())).await?;
        // The node-id file is written at the node's first start.
        for n in nodes.iter_mut().filter(|n| n.id.is_empty()) {
            n.id = std::fs::read_to_string(n.dir.join("node-id"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
        }
        let victim = nodes
            .iter()
            .position(|n| n.id == held.owner)
            .with_context(|| format!("the holder {} is none of the nodes", held.owner))?;
        nodes[victim].kill();
        let t0 = Instant::now();
        fake.push(UserMessage::text(
            &chat,
            &user,
            &format!("after kill {trial}"),
        ));
        sent += 1;
        until("another node's lease", || {
            lease(&store).filter(|l| l.token > held.token)
        })
        .await?;
        takeover.push(t0.elapsed());
        until("the answer after the kill", || {
            (answers() >= sent).then_some(())
        })
        .await?;
        answered.push(t0.elapsed());
        let d = nodes[victim].dir.clone();
        nodes[victim] = Node::start(&d, url)?;
        eprintln!(
            "failover trial {}/{trials}: lease taken over after {:.2} s, answered after {:.2} s",
            trial + 1,
            takeover.last().map_or(0.0, Duration::as_secs_f64),
            answered.last().map_or(0.0, Duration::as_secs_f64),
        );
    }
    anyhow::ensure!(
        fake.overlapping_polls() == 0,
        "two nodes long-polled the bot at once"
    );
    drop(nodes);
    Ok(Failover {
        trials,
        lease_ms,
        takeover: super::Lat(takeover),
        answered: super::Lat(answered),
    })
}

/// Print the failover table.
pub(super) fn print(f: &mut Failover) {
    println!(
        "\n| Polling channel failover after kill -9 (3 nodes, lease {:.0} s) | trials | p50 | p99 |",
        f.lease_ms as f64 / 1000.0
    );
    println!("|---|---:|---:|---:|");
    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    println!(
        "| another node holds the lease | {} | {} | {} |",
        f.trials,
        s(f.takeover.pct(0.5)),
        s(f.takeover.pct(0.99))
    );
    println!(
        "| the message sent after the kill is answered | {} | {} | {} |",
        f.trials,
        s(f.answered.pct(0.5)),
        s(f.answered.pct(0.99))
    );
}
