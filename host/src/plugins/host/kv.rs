//! Key-value factor: `pincer:plugin/kv`, a durable store private to each
//! plugin (namespaced by plugin name) persisted by the host's [`KvStore`].
//! Database work runs on the blocking pool so a slow disk never stalls tokio.

use std::sync::Arc;

use crate::plugins::bindings::WitError;
use crate::plugins::bindings::channel::pincer::plugin::kv::Host;
use crate::store::{SharedKv, StoreError};

/// Most keys `list-keys` returns.
pub const MAX_LIST: usize = 10_000;

/// The key-value namespace of one plugin.
#[derive(Clone)]
pub struct PluginKv {
    plugin: Arc<str>,
    store: SharedKv,
}

impl PluginKv {
    /// `plugin`'s namespace in `store`.
    pub fn new(plugin: Arc<str>, store: SharedKv) -> Self {
        PluginKv { plugin, store }
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&str, &SharedKv) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, WitError> {
        let plugin = self.plugin.clone();
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&plugin, &store)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(StoreError::Limit(m))) => Err(WitError::Permanent(m)),
            Ok(Err(e)) => {
                tracing::error!(plugin = &*self.plugin, error = %e, "plugin kv store failed");
                Err(WitError::Transient(format!("store unavailable: {e}")))
            }
            Err(e) => Err(WitError::Transient(format!("store task failed: {e}"))),
        }
    }
}

impl Host for super::HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        self.kv.run(move |p, s| s.get(p, &key)).await
    }
    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        self.kv.run(move |p, s| s.set(p, &key, &value)).await
    }
    async fn delete(&mut self, key: String) -> Result<(), WitError> {
        self.kv.run(move |p, s| s.delete(p, &key)).await
    }
    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, WitError> {
        self.kv
            .run(move |p, s| s.list_keys(p, &prefix, MAX_LIST))
            .await
    }
}
