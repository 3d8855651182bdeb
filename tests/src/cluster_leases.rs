//! Cluster tests' helpers (tests/tests/cluster_leases.rs): several real
//! gateway processes on one real PostgreSQL database, each a
//! [`ChildGateway`] with its own data directory and node id, serving the
//! Telegram plugin (built from source) against the local fake Bot API
//! and delivering webhooks. The child reads its settings from the
//! environment ([`run_child`]); the test signals it (`SIGKILL`, `SIGSTOP`,
//! `SIGCONT`) and reads its `/metrics`.

use std::path::Path;
use std::time::Duration;

use pincer::channels::access::DmPolicy;
use pincer::fakes::telegram::DEFAULT_TOKEN;
use pincer::gateway::launch::Options;
use pincer::plugins::manifest::SecretSource;
use pincer::plugins::{Limits, PluginSettings};
use pincer::store::StoreConfig;

use crate::gateway::ChildGateway;

/// Env: the database URL.
pub const ENV_URL: &str = "PINCER_CLUSTER_TEST_URL";
/// Env: the node's data directory.
pub const ENV_DIR: &str = "PINCER_CLUSTER_TEST_DIR";
/// Env: the node id.
pub const ENV_NODE: &str = "PINCER_CLUSTER_TEST_NODE";
/// Env: the fake Bot API's base URL (empty: no Telegram channel).
pub const ENV_TELEGRAM: &str = "PINCER_CLUSTER_TEST_TELEGRAM";
/// Env: the lease time, ms.
pub const ENV_LEASE: &str = "PINCER_CLUSTER_TEST_LEASE_MS";
/// Env: the webhook request timeout, ms.
pub const ENV_HOOK_TIMEOUT: &str = "PINCER_CLUSTER_TEST_HOOK_TIMEOUT_MS";

/// The gateway token of every node.
pub const TOKEN: &str = "secret";
/// The channel key of the Telegram account.
pub const CHANNEL: &str = "telegram";

/// One node: a gateway process with its node id.
pub struct Node {
    /// The process.
    pub gw: ChildGateway,
    /// Its node id (the lease owner it writes).
    pub id: String,
    /// Its data directory.
    pub dir: tempfile::TempDir,
}

impl Node {
    /// Start node `id` on database `url` (the ignored test `child` runs
    /// [`run_child`]), with the Telegram channel at `telegram` (the fake's
    /// base URL) if given.
    pub fn start(
        child: &str,
        url: &str,
        id: &str,
        telegram: Option<&str>,
        lease_ms: u64,
        hook_timeout_ms: u64,
    ) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins dir");
        if telegram.is_some() {
            install_telegram(&plugins);
        }
        let lease = lease_ms.to_string();
        let timeout = hook_timeout_ms.to_string();
        let env = [
            (ENV_URL, url),
            (ENV_DIR, dir.path().to_str().expect("utf-8 path")),
            (ENV_NODE, id),
            (ENV_TELEGRAM, telegram.unwrap_or("")),
            (ENV_LEASE, lease.as_str()),
            (ENV_HOOK_TIMEOUT, timeout.as_str()),
        ];
        Node {
            gw: ChildGateway::spawn(child, &env),
            id: id.to_string(),
            dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.gw.child.id()
    }

    /// Send `signal` (`STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// The value of counter `name` whose labels mention `label` in the
    /// node's `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str, label: &str) -> f64 {
        let text = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.gw.addr))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Install the telegram plugin built from source into `plugins`, its
/// manifest widened to the fake on loopback.
pub fn install_telegram(plugins: &Path) {
    let wasm = crate::built_plugin("telegram");
    std::fs::copy(&wasm, plugins.join("telegram.wasm")).expect("copy telegram.wasm");
    let manifest = std::fs::read_to_string(wasm.with_extension("toml")).expect("manifest");
    let widened = manifest.replace(
        r#"allowed_hosts = ["https://api.telegram.org"]"#,
        r#"allowed_hosts = ["https://api.telegram.org", "http://127.0.0.1:*"]"#,
    );
    assert_ne!(manifest, widened, "the manifest's allowed_hosts line moved");
    std::fs::write(plugins.join("telegram.toml"), widened).expect("write manifest");
}

/// The gateway options of a node, from the environment [`Node::start`]
/// sets; `None` outside a child.
pub fn child_options() -> Option<Options> {
    let var = |k: &str| std::env::var(k).ok();
    let (url, dir, node) = (var(ENV_URL)?, var(ENV_DIR)?, var(ENV_NODE)?);
    let lease_ms: u64 = var(ENV_LEASE)?.parse().ok()?;
    let hook_timeout: u64 = var(ENV_HOOK_TIMEOUT)?.parse().ok()?;
    let telegram = var(ENV_TELEGRAM).filter(|a| !a.is_empty());
    Some(node_options(
        Path::new(&dir),
        &url,
        &node,
        telegram.as_deref(),
        lease_ms,
        hook_timeout,
    ))
}

/// The options of node `node` over data directory `dir` (plugins
/// installed there) on database `url`: the Telegram channel at
/// `telegram` (the fake's base URL) if given, leases of `lease_ms`,
/// webhooks to loopback with `hook_timeout` ms per request.
pub fn node_options(
    dir: &Path,
    url: &str,
    node: &str,
    telegram: Option<&str>,
    lease_ms: u64,
    hook_timeout: u64,
) -> Options {
    let mut opts = Options::new(dir);
    opts.gateway.listen = "127.0.0.1:0".parse().expect("addr");
    opts.gateway.token = Some(TOKEN.into());
    opts.watch_settle = Duration::from_millis(100);
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").expect("cidrs");
    opts.gateway.runs.sender_per_minute = u32::MAX;
    opts.gateway.runs.sender_burst = u32::MAX;
    opts.store = StoreConfig {
        url: Some(url.into()),
        pool: 4,
        lease_ms,
        node_id: Some(node.into()),
        ..StoreConfig::default()
    };
    opts.webhooks.allow_cidrs = vec!["127.0.0.0/8".into()];
    opts.webhooks.request_timeout_ms = hook_timeout;
    opts.webhooks.retry_schedule_secs = vec![1, 1, 1, 1, 1, 1, 1, 1];
    opts.webhooks.jitter = 0.0;
    if let Some(api) = telegram {
        let mut s = PluginSettings {
            allowed_hosts: Some(vec![
                "https://api.telegram.org".into(),
                "http://127.0.0.1:*".into(),
            ]),
            secrets: [(
                "bot_token".to_string(),
                SecretSource::Value(DEFAULT_TOKEN.into()),
            )]
            .into(),
            config: [("api_base".to_string(), api.to_string())].into(),
            dm_policy: DmPolicy::Open,
            limits: Some(Limits {
                poll_wait_ms: 2_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        // One send at a time: a kill cuts at most one send in flight.
        s.queue.send_concurrency = 1;
        s.queue.send_interval_ms = 1;
        s.queue.send_burst = 1000;
        s.queue.retry_base_ms = 20;
        s.queue.retry_max_ms = 500;
        opts.plugins.insert("telegram".into(), s);
    }
    opts
}

/// Run a node (the body of the test binary's ignored child test): start
/// the gateway from [`child_options`], print `LISTENING <addr>`, and serve
/// until killed. Outside a child it returns at once.
pub fn run_child() {
    let Some(opts) = child_options() else {
        return;
    };
    let rt = crate::gateway::child_runtime();
    rt.block_on(async move {
        let running = pincer::gateway::launch::start(opts)
            .await
            .expect("gateway starts");
        println!("LISTENING {}", running.addr);
        std::future::pending::<()>().await;
    });
}

/// Tokens whose send was in flight (see [`crate::exactly_once::in_doubt_on`]).
pub use crate::exactly_once::in_doubt_on as in_doubt;

/// Wait (polling observable state, with a generous hang guard) until
/// `check` returns `Some`; panics with `what()` after `guard`.
pub async fn until<T>(
    what: impl Fn() -> String,
    guard: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + guard;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
