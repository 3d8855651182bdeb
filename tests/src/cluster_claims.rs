//! Nodes for the cluster claims tests (tests/tests/cluster_claims.rs):
//! real gateway processes on one real PostgreSQL database, as in
//! [`crate::cluster_leases`], with fast heartbeats, the echo provider
//! slowed down (runs last long enough to overlap), the Telegram channel
//! (when given) in webhook mode with a known push secret, a per-endpoint
//! webhook limit of [`PER_ENDPOINT`], and every safety-net poll set to
//! [`SAFETY_POLL_MS`] (minutes): what happens within a test happens
//! through wake-ups. Also a slow webhook receiver that records how many
//! requests it holds at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use pincer::gateway::launch::Options;
use pincer::plugins::manifest::SecretSource;

use crate::gateway::ChildGateway;

/// Env: the database URL.
pub const ENV_URL: &str = "PINCER_CLAIMS_TEST_URL";
/// Env: the node's data directory.
pub const ENV_DIR: &str = "PINCER_CLAIMS_TEST_DIR";
/// Env: the node's name (also its lease owner id).
pub const ENV_NODE: &str = "PINCER_CLAIMS_TEST_NODE";
/// Env: the fake Bot API's base URL (empty: no Telegram channel).
pub const ENV_TELEGRAM: &str = "PINCER_CLAIMS_TEST_TELEGRAM";

/// The safety-net period of the channel inbox, outbox and webhook outbox
/// on the test nodes, ms: ten minutes, longer than any test.
pub const SAFETY_POLL_MS: u64 = 600_000;
/// Attempts in flight to one webhook endpoint, cluster-wide.
pub const PER_ENDPOINT: usize = 2;
/// The secret Telegram echoes in `X-Telegram-Bot-Api-Secret-Token`.
pub const PUSH_SECRET: &str = "claims-test-push-secret";
/// The channel lease time, ms.
pub const LEASE_MS: u64 = 4_000;

/// One node: a gateway process.
pub struct Node {
    /// The process.
    pub gw: ChildGateway,
    /// Its name (and lease owner id).
    pub name: String,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Start node `name` on database `url` (the ignored test `child` runs
    /// [`run_child`]), with the Telegram channel against the fake at
    /// `telegram` if given.
    pub fn start(child: &str, url: &str, name: &str, telegram: Option<&str>) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins dir");
        if telegram.is_some() {
            crate::cluster_leases::install_telegram(&plugins);
        }
        let env = [
            (ENV_URL, url),
            (ENV_DIR, dir.path().to_str().expect("utf-8 path")),
            (ENV_NODE, name),
            (ENV_TELEGRAM, telegram.unwrap_or("")),
        ];
        Node {
            gw: ChildGateway::spawn(child, &env),
            name: name.to_string(),
            _dir: dir,
        }
    }

    /// `http://addr`.
    pub fn http(&self) -> String {
        format!("http://{}", self.gw.addr)
    }
}

/// The options of node `node` (see the module comment).
pub fn node_options(dir: &Path, url: &str, node: &str, telegram: Option<&str>) -> Options {
    let mut opts = crate::cluster_leases::node_options(dir, url, node, telegram, LEASE_MS, 30_000);
    opts.install_bundled = false;
    opts.store.safety_poll_ms = SAFETY_POLL_MS;
    opts.agent.echo_word_delay_ms = crate::cluster::WORD_DELAY_MS;
    opts.gateway.cluster.node_name = Some(node.into());
    opts.gateway.cluster.heartbeat_ms = crate::cluster::HEARTBEAT_MS;
    opts.gateway.cluster.node_timeout_ms = crate::cluster::NODE_TIMEOUT_MS;
    opts.gateway.cluster.poll_ms = 500;
    opts.webhooks.concurrency_per_endpoint = PER_ENDPOINT;
    if let Some(s) = opts.plugins.get_mut("telegram") {
        s.config.insert("mode".into(), "webhook".into());
        s.config.insert(
            "webhook_url".into(),
            "http://127.0.0.1:9/channels/telegram/webhook".into(),
        );
        s.secrets.insert(
            "webhook_secret".into(),
            SecretSource::Value(PUSH_SECRET.into()),
        );
    }
    opts
}

/// Run a node (the body of the test binary's ignored child test): start
/// the gateway from the environment [`Node::start`] sets, print
/// `LISTENING <addr>`, and serve until killed. Outside a child it returns
/// at once.
pub fn run_child() {
    let var = |k: &str| std::env::var(k).ok();
    let (Some(url), Some(dir), Some(node)) = (var(ENV_URL), var(ENV_DIR), var(ENV_NODE)) else {
        return;
    };
    let telegram = var(ENV_TELEGRAM).filter(|a| !a.is_empty());
    let opts = node_options(Path::new(&dir), &url, &node, telegram.as_deref());
    let rt = crate::gateway::child_runtime();
    rt.block_on(async move {
        let running = pincer::gateway::launch::start(opts)
            .await
            .expect("gateway starts");
        println!("LISTENING {}", running.addr);
        std::future::pending::<()>().await;
    });
}

/// What a [`SlowReceiver`] saw.
#[derive(Debug, Default, Clone)]
pub struct SlowStats {
    /// Requests being answered now.
    pub now: usize,
    /// The most answered at once.
    pub max: usize,
    /// Requests by `webhook-id`, with their `webhook-attempt`s.
    pub by_msg: BTreeMap<String, Vec<u32>>,
}

/// A webhook receiver that answers every request 200 after `delay`,
/// recording how many it holds at once.
pub struct SlowReceiver {
    addr: std::net::SocketAddr,
    stats: Arc<Mutex<SlowStats>>,
    changed: Arc<tokio::sync::Notify>,
    _task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Slow {
    delay: Duration,
    stats: Arc<Mutex<SlowStats>>,
    changed: Arc<tokio::sync::Notify>,
}

async fn slow_handle(State(s): State<Slow>, headers: HeaderMap) -> StatusCode {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    {
        let mut st = s.stats.lock().expect("stats");
        st.now += 1;
        st.max = st.max.max(st.now);
        st.by_msg
            .entry(header("webhook-id"))
            .or_default()
            .push(header("webhook-attempt").parse().unwrap_or(0));
    }
    // The delay only makes attempts overlap; nothing waits on it.
    tokio::time::sleep(s.delay).await;
    s.stats.lock().expect("stats").now -= 1;
    s.changed.notify_waiters();
    StatusCode::OK
}

impl SlowReceiver {
    /// Listen on 127.0.0.1 (a free port), answering after `delay`.
    pub async fn start(delay: Duration) -> SlowReceiver {
        let stats = Arc::new(Mutex::new(SlowStats::default()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let state = Slow {
            delay,
            stats: stats.clone(),
            changed: changed.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(slow_handle).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlowReceiver {
            addr,
            stats,
            changed,
            _task: task,
        }
    }

    /// The URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// What it saw so far.
    pub fn stats(&self) -> SlowStats {
        self.stats.lock().expect("stats").clone()
    }

    /// Wait until `n` distinct messages were answered (none in progress).
    pub async fn wait_answered(&self, n: usize) -> SlowStats {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let st = self.stats();
            if st.by_msg.len() >= n && st.now == 0 {
                return st;
            }
            changed.await;
        }
    }
}
