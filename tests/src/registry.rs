//! Helpers for the plugin registry hardening tests: installing a built
//! plugin under another registry name with extra manifest lines, a runtime
//! over an existing data directory (to restart a gateway on the same files),
//! and a tracing layer that counts the bytes plugins log.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pincer::events::LocalBus;
use pincer::health::HealthConfig;
use pincer::plugins::RuntimeConfig;
use pincer::runtime::{Runtime, RuntimeOptions};

use crate::built_plugin;

/// Copy built plugin `plugin` into `dir` as `<name>.wasm` with its manifest
/// renamed to `name` and `extra` TOML lines added at the top level.
pub fn install_named(dir: &Path, plugin: &str, name: &str, extra: &str) {
    let wasm = built_plugin(plugin);
    std::fs::copy(&wasm, dir.join(format!("{name}.wasm"))).expect("copy wasm");
    let manifest = std::fs::read_to_string(wasm.with_extension("toml")).expect("manifest");
    let mut out = format!("name = \"{name}\"\n{extra}\n");
    for line in manifest.lines() {
        if !line.trim_start().starts_with("name ") && !line.trim_start().starts_with("name=") {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(dir.join(format!("{name}.toml")), out).expect("write manifest");
}

/// A runtime over `data_dir` (database, compile cache, plugin data) with
/// plugins in `<data_dir>/plugins`, as a restarted gateway would have it.
pub fn runtime_at(data_dir: &Path, config: RuntimeConfig) -> Arc<Runtime> {
    std::fs::create_dir_all(data_dir.join("plugins")).expect("plugins dir");
    let store = crate::test_store::open(data_dir);
    Runtime::new(RuntimeOptions {
        plugins_dir: data_dir.join("plugins"),
        runtime: RuntimeConfig {
            data_dir: Some(data_dir.to_path_buf()),
            ..config
        },
        health: HealthConfig::default(),
        kv: store.clone(),
        pairing: store.clone(),
        inbox: store.clone(),
        outbox: store,
        events: Arc::new(LocalBus::new(1024)),
    })
    .expect("runtime")
}

/// Bytes of plugin log output (message plus fields) seen per plugin name.
#[derive(Default)]
pub struct LogBytes {
    counts: std::sync::Mutex<std::collections::HashMap<String, Arc<AtomicU64>>>,
}

impl LogBytes {
    fn counter(&self, plugin: &str) -> Arc<AtomicU64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(plugin.to_string())
            .or_default()
            .clone()
    }

    /// Bytes logged by `plugin` so far.
    pub fn get(&self, plugin: &str) -> u64 {
        self.counter(plugin).load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Visit {
    plugin: String,
    bytes: u64,
}

impl tracing::field::Visit for Visit {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = value.to_string(),
            _ => self.bytes += value.len() as u64,
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "plugin" => self.plugin = text.trim_matches('"').to_string(),
            _ => self.bytes += text.len() as u64,
        }
    }
}

struct CountLayer(Arc<LogBytes>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "plugin" {
            return;
        }
        let mut v = Visit::default();
        event.record(&mut v);
        self.0
            .counter(&v.plugin)
            .fetch_add(v.bytes, Ordering::Relaxed);
    }
}

/// Install (once per test binary) a global subscriber counting plugin log
/// bytes; plugin calls run on other threads, so it must be global.
pub fn count_plugin_logs() -> Arc<LogBytes> {
    static COUNTS: std::sync::OnceLock<Arc<LogBytes>> = std::sync::OnceLock::new();
    COUNTS
        .get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let counts = Arc::new(LogBytes::default());
            let subscriber = tracing_subscriber::registry().with(CountLayer(counts.clone()));
            tracing::subscriber::set_global_default(subscriber).expect("global subscriber");
            counts
        })
        .clone()
}
