//! Helpers for the end-to-end tests: a runtime over a temporary directory
//! with plugins built from source by `host/build.rs`, and a scriptable fake
//! OpenAI-compatible server ([`fake_openai`]), and a scriptable webhook
//! receiver ([`webhook_receiver`]).

pub mod browser;
pub mod cluster;
pub mod cluster_claims;
pub mod cluster_leases;
pub mod discord;
pub mod exactly_once;
pub mod fake_openai;
pub mod fake_slack;

pub mod gateway;
pub mod guests;
/// Python and JS/TS guests built by the SDKs' build scripts.
pub mod script_guests;

pub mod http_surface;

pub mod openclaw_cli;
pub mod postgres;

pub mod registry;

pub mod runs;

pub mod sandbox;

/// A throwaway Synapse homeserver and a Matrix client for the Matrix tests.
pub mod synapse;
pub mod telegram;

pub mod test_store;

pub mod webhook_receiver;

pub mod whatsapp;

pub mod ws;

pub mod ws_server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pincer::events::{Event, EventBus, LocalBus};
use pincer::health::HealthConfig;
use pincer::plugins::RuntimeConfig;
use pincer::runtime::{Runtime, RuntimeOptions};
use tokio::sync::broadcast;

/// The component built from source for plugin `name` (fails loudly if missing).
pub fn built_plugin(name: &str) -> PathBuf {
    let p = Path::new(pincer::bundled::BUILD_PLUGIN_DIR).join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "plugin {name} was not built: {} missing",
        p.display()
    );
    p
}

/// Copy built plugin `name` (and its manifest) into `dir` as `<as_name>.wasm`.
pub fn install_plugin(dir: &Path, name: &str, as_name: &str) {
    let wasm = built_plugin(name);
    std::fs::copy(&wasm, dir.join(format!("{as_name}.wasm"))).expect("copy wasm");
    std::fs::copy(
        wasm.with_extension("toml"),
        dir.join(format!("{as_name}.toml")),
    )
    .expect("copy manifest");
}

/// A runtime over temporary directories.
pub struct TestRuntime {
    pub runtime: Arc<Runtime>,
    pub events: Arc<LocalBus>,
    pub dir: tempfile::TempDir,
}

impl TestRuntime {
    /// A runtime whose plugins directory is `<tmp>/plugins`.
    pub fn new(config: RuntimeConfig, health: HealthConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins dir");
        // The suite's store (SQLite, or PostgreSQL in that pass).
        let store = test_store::open(dir.path());
        let events = Arc::new(LocalBus::new(4096));
        let runtime = Runtime::new(RuntimeOptions {
            plugins_dir: dir.path().join("plugins"),
            runtime: RuntimeConfig {
                data_dir: Some(dir.path().to_path_buf()),
                ..config
            },
            health,
            kv: store.clone(),
            pairing: store.clone(),
            inbox: store.clone(),
            outbox: store,
            events: events.clone(),
        })
        .expect("runtime");
        TestRuntime {
            runtime,
            events,
            dir,
        }
    }

    /// The plugins directory.
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Subscribe to runtime events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// Wait for the first event matching `pred` (the timeout only guards
/// against a hung test; the wait itself is event-driven).
pub async fn wait_event(
    rx: &mut broadcast::Receiver<Event>,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("event bus closed: {e}"),
            }
        }
    })
    .await
    .expect("expected event did not arrive")
}

/// A loopback HTTP server that answers every request with `status` and
/// `body`, and reports each request line and headers it received.
pub async fn http_server(
    status: u16,
    body: &'static str,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        while buf.len() < end + 4 + len {
                            let Ok(n) = sock.read(&mut chunk).await else {
                                return;
                            };
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let body_in = String::from_utf8_lossy(&buf[end + 4..]).to_string();
                        let _ = tx.send(format!("{head}\r\n\r\n{body_in}"));
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Channel `name`'s health, as the monitor reports it.
pub async fn channel_health(runtime: &Runtime, name: &str) -> pincer::health::ChannelHealth {
    runtime
        .health
        .snapshot()
        .await
        .into_iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no channel {name}"))
}

/// Wait until channel `name`'s health satisfies `f` (it changes when a
/// poll returns or fails, with no event to await); `guard` is a hang
/// guard, not a timing assertion.
pub async fn until_health(
    runtime: &Runtime,
    name: &str,
    what: &str,
    guard: Duration,
    f: impl Fn(&pincer::health::ChannelHealth) -> bool,
) -> pincer::health::ChannelHealth {
    let deadline = tokio::time::Instant::now() + guard;
    loop {
        let h = channel_health(runtime, name).await;
        if f(&h) {
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
