//! Key-value factor: `pincer:plugin/kv`, a durable store private to each
//! plugin (namespaced by plugin name) persisted by the host's [`KvStore`].
//! Database work runs on the blocking pool so a slow disk never stalls tokio,
//! at most [`KV_CONCURRENCY`] calls at a time across plugins: SQLite takes
//! one writer at a time anyway, and unbounded, a thousand socket accounts
//! saving their state at each heartbeat kept dozens of blocking threads
//! waiting on its lock (each with its stack and malloc arena).
//! Each plugin has a [`KvQuota`] (bytes and keys) shared by all its instances
//! and versions; a `set` past it fails with `error.permanent` and stores
//! nothing, and the plugin's other data and every other plugin are untouched.

use std::sync::{Arc, Mutex};

use crate::plugins::bindings::WitError;
use crate::plugins::bindings::v02::channel::pincer::plugin::kv::Host;
use crate::store::{KvUsage, SharedKv, StoreError};

/// Key-value calls (all plugins) on the blocking pool at once; more wait
/// for a slot without holding a thread.
pub const KV_CONCURRENCY: usize = 4;

/// The slots of [`KV_CONCURRENCY`].
static KV_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(KV_CONCURRENCY);

/// One plugin's key-value quota and its usage (read from the store on the
/// first write, then kept current by every write through it).
#[derive(Debug)]
pub struct KvQuota {
    max_bytes: u64,
    max_keys: u64,
    usage: Mutex<Option<KvUsage>>,
    /// Serializes every write of the plugin, so `increment` and
    /// `compare-and-swap` are atomic (held across the read and the write).
    writes: Mutex<()>,
}

impl KvQuota {
    /// A quota of `max_bytes` (keys plus values) and `max_keys`.
    pub fn new(max_bytes: u64, max_keys: u64) -> Arc<Self> {
        Arc::new(KvQuota {
            max_bytes,
            max_keys,
            usage: Mutex::new(None),
            writes: Mutex::new(()),
        })
    }

    /// Set `key` if the quota allows it. Writes of one plugin are serialized
    /// here so the check and the write cannot race.
    fn set(
        &self,
        store: &SharedKv,
        plugin: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let _writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.set_locked(store, plugin, key, value)
    }

    /// [`Self::set`] with the write lock already held.
    fn set_locked(
        &self,
        store: &SharedKv,
        plugin: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let mut guard = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let usage = match *guard {
            Some(u) => u,
            None => store.usage(plugin)?,
        };
        let old = store
            .get(plugin, key)?
            .map(|v| (key.len() + v.len()) as u64);
        let keys = usage.keys + u64::from(old.is_none());
        let bytes =
            usage.bytes - old.unwrap_or(0).min(usage.bytes) + (key.len() + value.len()) as u64;
        if keys > self.max_keys {
            *guard = Some(usage);
            return Err(StoreError::Limit(format!(
                "key-value quota reached: at most {} keys",
                self.max_keys
            )));
        }
        if bytes > self.max_bytes && bytes > usage.bytes {
            *guard = Some(usage);
            return Err(StoreError::Limit(format!(
                "key-value quota reached: at most {} bytes of keys and values",
                self.max_bytes
            )));
        }
        store.set(plugin, key, value)?;
        *guard = Some(KvUsage { keys, bytes });
        Ok(())
    }

    /// Delete `key`, keeping the usage current.
    fn delete(&self, store: &SharedKv, plugin: &str, key: &str) -> Result<(), StoreError> {
        let _writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.delete_locked(store, plugin, key)
    }

    /// [`Self::delete`] with the write lock already held.
    fn delete_locked(&self, store: &SharedKv, plugin: &str, key: &str) -> Result<(), StoreError> {
        let mut guard = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let old = match *guard {
            Some(_) => store
                .get(plugin, key)?
                .map(|v| (key.len() + v.len()) as u64),
            None => None,
        };
        store.delete(plugin, key)?;
        if let (Some(u), Some(old)) = (guard.as_mut(), old) {
            u.keys = u.keys.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(old);
        }
        Ok(())
    }
}

impl KvQuota {
    /// Add `delta` to the decimal counter under `key` (missing counts as 0)
    /// and return the new value. Atomic with every other write of the plugin
    /// (all of them take this quota's lock).
    fn increment(
        &self,
        store: &SharedKv,
        plugin: &str,
        key: &str,
        delta: i64,
    ) -> Result<i64, StoreError> {
        let _writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let current = match store.get(plugin, key)? {
            None => 0,
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    StoreError::Limit(format!("key `{key}` does not hold a decimal counter"))
                })?,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| StoreError::Limit(format!("counter `{key}` would overflow")))?;
        self.set_locked(store, plugin, key, next.to_string().as_bytes())?;
        Ok(next)
    }

    /// Replace the value under `key` with `new` (`None`: delete) if it equals
    /// `expected` (`None`: absent). Atomic with every other write of the plugin.
    fn compare_and_swap(
        &self,
        store: &SharedKv,
        plugin: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let _writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let current = store.get(plugin, key)?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        match new {
            Some(v) => self.set_locked(store, plugin, key, v)?,
            None => self.delete_locked(store, plugin, key)?,
        }
        Ok(true)
    }
}

/// Most keys `list-keys` returns.
pub const MAX_LIST: usize = 10_000;

/// The key-value namespace of one plugin.
#[derive(Clone)]
pub struct PluginKv {
    plugin: Arc<str>,
    store: SharedKv,
    quota: Arc<KvQuota>,
}

impl PluginKv {
    /// `plugin`'s namespace in `store`, limited by `quota`.
    pub fn new(plugin: Arc<str>, store: SharedKv, quota: Arc<KvQuota>) -> Self {
        PluginKv {
            plugin,
            store,
            quota,
        }
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&str, &SharedKv, &KvQuota) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, WitError> {
        let plugin = self.plugin.clone();
        let store = self.store.clone();
        let quota = self.quota.clone();
        let _slot = KV_SLOTS
            .acquire()
            .await
            .map_err(|_| WitError::Transient("the key-value store is closed".into()))?;
        match tokio::task::spawn_blocking(move || f(&plugin, &store, &quota)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(StoreError::Limit(m))) => {
                tracing::warn!(plugin = &*self.plugin, error = %m, "plugin kv write refused");
                Err(WitError::Permanent(m))
            }
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
        self.kv.run(move |p, s, _| s.get(p, &key)).await
    }
    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        self.kv.run(move |p, s, q| q.set(s, p, &key, &value)).await
    }
    async fn delete(&mut self, key: String) -> Result<(), WitError> {
        self.kv.run(move |p, s, q| q.delete(s, p, &key)).await
    }
    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, WitError> {
        self.kv
            .run(move |p, s, _| s.list_keys(p, &prefix, MAX_LIST))
            .await
    }
    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, WitError> {
        self.kv
            .run(move |p, s, q| q.increment(s, p, &key, delta))
            .await
    }
    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, WitError> {
        self.kv
            .run(move |p, s, q| q.compare_and_swap(s, p, &key, expected.as_deref(), new.as_deref()))
            .await
    }
}
