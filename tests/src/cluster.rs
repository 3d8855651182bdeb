//! Several real gateways on one real PostgreSQL database for the cluster
//! tests: each node is a child process (the test binary re-run with its
//! `#[ignore]`d child test selected, see [`node_main`]), so a node can be
//! killed with SIGKILL; clients speak the protocol to any of them.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::gateway::{ALL, ChildGateway, Client, connect_params};
use crate::postgres::TestPostgres;

/// Env var naming the node's data directory.
pub const DIR_ENV: &str = "PINCER_CLUSTER_TEST_DIR";
/// Env var with the store URL.
pub const STORE_ENV: &str = "PINCER_CLUSTER_TEST_STORE";
/// Env var with the node name.
pub const NAME_ENV: &str = "PINCER_CLUSTER_TEST_NAME";

/// Delay between echoed words in the nodes, ms: a run of `n` words
/// streams for about `n * 5` ms.
pub const WORD_DELAY_MS: u64 = 5;
/// The nodes' heartbeat, ms.
pub const HEARTBEAT_MS: u64 = 200;
/// After this long without a heartbeat a node is gone, ms.
pub const NODE_TIMEOUT_MS: u64 = 2_000;

/// The body of a child test: start a node from the env vars and serve
/// until killed. Returns at once when the vars are absent (the child test
/// run as an ordinary ignored test).
pub fn node_main() {
    let (Ok(dir), Ok(url), Ok(name)) = (
        std::env::var(DIR_ENV),
        std::env::var(STORE_ENV),
        std::env::var(NAME_ENV),
    ) else {
        return;
    };
    let rt = crate::gateway::child_runtime();
    rt.block_on(async move {
        let opts = node_options(Path::new(&dir), &url, &name);
        let running = pincer::gateway::launch::start(opts)
            .await
            .expect("cluster node starts");
        println!("LISTENING {}", running.addr);
        std::future::pending::<()>().await;
    });
}

/// Options of a test node: token `secret`, no bundled plugins (nothing to
/// compile), the echo provider slowed to [`WORD_DELAY_MS`], fast
/// heartbeats.
pub fn node_options(dir: &Path, url: &str, name: &str) -> pincer::gateway::launch::Options {
    let mut opts = pincer::gateway::launch::Options::new(dir);
    opts.gateway.listen = "127.0.0.1:0".parse().expect("addr");
    opts.gateway.token = Some("secret".into());
    opts.install_bundled = false;
    opts.store = TestPostgres::config(url);
    opts.agent.echo_word_delay_ms = WORD_DELAY_MS;
    opts.gateway.cluster.node_name = Some(name.into());
    opts.gateway.cluster.heartbeat_ms = HEARTBEAT_MS;
    opts.gateway.cluster.node_timeout_ms = NODE_TIMEOUT_MS;
    opts.gateway.cluster.poll_ms = 500;
    opts
}

/// Nodes on one database.
pub struct TestCluster {
    /// The server.
    pub pg: TestPostgres,
    /// The database URL.
    pub url: String,
    /// The nodes, in start order.
    pub nodes: Vec<ChildGateway>,
    dirs: Vec<tempfile::TempDir>,
}

impl TestCluster {
    /// Start PostgreSQL and `names.len()` nodes named `names`, each run by
    /// the child test `child` of the current test binary.
    pub fn start(child: &str, names: &[&str]) -> TestCluster {
        let pg = TestPostgres::start();
        let url = pg.database(child);
        let mut c = TestCluster {
            pg,
            url,
            nodes: Vec::new(),
            dirs: Vec::new(),
        };
        for name in names {
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path().display().to_string();
            let env = [
                (DIR_ENV, d.as_str()),
                (STORE_ENV, c.url.as_str()),
                (NAME_ENV, *name),
            ];
            c.nodes.push(ChildGateway::spawn(child, &env));
            c.dirs.push(dir);
        }
        c
    }

    /// `ws://` URL of node `i`.
    pub fn url(&self, i: usize) -> &str {
        &self.nodes[i].url
    }

    /// The plugins directory of node `i`.
    pub fn plugins_dir(&self, i: usize) -> std::path::PathBuf {
        self.dirs[i].path().join("plugins")
    }
}

/// Connect params of an admin client that asks for event cursors
/// (`event-cursor`), optionally resuming after `resume`.
pub fn cursor_params(resume: Option<i64>) -> Value {
    let mut p = connect_params(3, 4, Some("secret"), ALL);
    p["caps"] = json!(["tool-events", "event-cursor"]);
    if let Some(after) = resume {
        p["resume"] = json!({ "after": after });
    }
    p
}

/// An admin client with event cursors on `url`.
pub async fn cursor_client(url: &str) -> Client {
    cursor_client_at(url, None).await
}

/// An admin client with event cursors on `url`, resuming after `resume`.
pub async fn cursor_client_at(url: &str, resume: Option<i64>) -> Client {
    Client::connect(url, cursor_params(resume)).await
}

/// Whether `e` is a `chat` or `agent` event of run `run_id`.
pub fn of_run(e: &Value, run_id: &str) -> bool {
    (e["event"] == "chat" || e["event"] == "agent") && e["payload"]["runId"] == run_id
}

/// Whether `e` is the terminal `chat` event of run `run_id`.
pub fn run_end(e: &Value, run_id: &str) -> bool {
    e["event"] == "chat" && e["payload"]["runId"] == run_id && e["payload"]["state"] != "delta"
}

/// Every `chat`/`agent` event of `run_id` up to and including its
/// terminal `chat` event (other events are kept for later).
pub async fn run_events(c: &mut Client, run_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let id = run_id.to_string();
        let e = c.event(move |e| of_run(e, &id)).await;
        let end = run_end(&e, run_id);
        out.push(e);
        if end {
            return out;
        }
    }
}

/// The number of gateway nodes in `system-presence`.
pub async fn presence_nodes(c: &mut Client) -> Vec<String> {
    let p = c.call("system-presence", json!({})).await;
    p.as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["mode"] == "gateway")
                .filter_map(|e| e["host"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Wait (on `presence` events, never on a clock) until `system-presence`
/// lists exactly `names` as gateway nodes; returns them sorted.
pub async fn await_presence(c: &mut Client, names: &[&str]) -> Vec<String> {
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    loop {
        let mut got = presence_nodes(c).await;
        got.sort();
        if got == want {
            return got;
        }
        c.event(|e| e["event"] == "presence").await;
    }
}

/// A message of `n` words (`w1 w2 ...`).
pub fn words(n: usize) -> String {
    (1..=n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The hang guard for one cluster step (a run across nodes, a node's
/// heartbeat expiring): generous, never a timing assertion.
pub const STEP_GUARD: Duration = Duration::from_secs(120);
