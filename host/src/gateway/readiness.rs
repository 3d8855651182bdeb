//! Readiness, one answer for every surface that reports it: `GET /readyz`,
//! the `health` method (and `health` events, which OpenClaw's Control UI
//! shows) and the `status` method. Ready when the initial plugin load is
//! done and the store answers and takes writes (a write probe, see
//! `SqliteStore::check_writable`).

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::Gateway;

/// The gateway's readiness now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Ready to serve: the store writes and the plugins are loaded.
    pub ready: bool,
    /// The store answers and takes writes.
    pub store: bool,
    /// The initial plugin load is done.
    pub plugins: bool,
    /// Why not ready (`None` when ready).
    pub reason: Option<String>,
    /// The configuration file's reload history, when the gateway runs
    /// from one (a refused reload shows here; it never makes the gateway
    /// unready).
    pub config: Option<Value>,
}

impl Readiness {
    /// `{ready, store, plugins, reason?, config?}`, as `/readyz` answers.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"ready": self.ready, "store": self.store, "plugins": self.plugins});
        if let Some(r) = &self.reason {
            v["reason"] = json!(r);
        }
        if let Some(c) = &self.config {
            v["config"] = c.clone();
        }
        v
    }
}

/// Check the store (a write probe) and the plugin load.
pub fn check(gw: &Gateway) -> Readiness {
    let store = gw
        .sessions
        .count_sessions()
        .and_then(|_| gw.sessions.check_writable());
    let plugins = gw.ready.load(Ordering::Relaxed);
    let reason = match &store {
        Err(e) => {
            tracing::debug!(error = %e, "not ready: the store cannot write");
            Some(format!("store cannot write: {}", e.reason()))
        }
        Ok(()) if !plugins => Some("plugins are still loading".to_owned()),
        Ok(()) => None,
    };
    Readiness {
        ready: reason.is_none(),
        store: store.is_ok(),
        plugins,
        reason,
        config: gw
            .config_reload
            .get()
            .and_then(|r| serde_json::to_value(r.status()).ok()),
    }
}
