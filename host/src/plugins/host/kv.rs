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
    /// Serializes this process's writes of the plugin, so the quota check
    /// and the write cannot race here (`increment` and `compare-and-swap`
    /// are atomic in the database itself, across processes too). In a
    /// cluster each node counts the usage it has seen, so the quota is
    /// approximate by what other nodes wrote since it last read it.
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
        let old = store.get(plugin, key)?;
        let next = self.admit(&mut guard, usage, key, old.as_deref(), value)?;
        store.set(plugin, key, value)?;
        *guard = Some(next);
        Ok(())
    }

    /// The usage after replacing `old` with `value` under `key`, or the
    /// quota error (keeping `usage` as the known figure).
    fn admit(
        &self,
        guard: &mut Option<KvUsage>,
        usage: KvUsage,
        key: &str,
        old: Option<&[u8]>,
        value: &[u8],
    ) -> Result<KvUsage, StoreError> {
        let old = old.map(|v| (key.len() + v.len()) as u64);
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
        Ok(KvUsage { keys, bytes })
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
    /// and return the new value. Atomic against every writer of the store,
    /// other processes (cluster nodes) included: a compare-and-swap in the
    /// database, retried while the value keeps changing under it.
    fn increment(
        &self,
        store: &SharedKv,
        plugin: &str,
        key: &str,
        delta: i64,
    ) -> Result<i64, StoreError> {
        let _writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..ATOMIC_ATTEMPTS {
            let old = store.get(plugin, key)?;
            let current = match &old {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .ok_or_else(|| {
                        StoreError::Limit(format!("key `{key}` does not hold a decimal counter"))
                    })?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| StoreError::Limit(format!("counter `{key}` would overflow")))?;
            if self.swap_locked(
                store,
                plugin,
                key,
                old.as_deref(),
                Some(next.to_string().as_bytes()),
            )? {
                return Ok(next);
            }
        }
        Err(StoreError::Contended(format!(
            "counter `{key}` kept changing: gave up after {ATOMIC_ATTEMPTS} attempts"
        )))
    }

    /// Replace the value under `key` with `new` (`None`: delete) if it equals
    /// `expected` (`None`: absent). Atomic in the database, so it also holds
    /// against other processes sharing the store.
    fn compare_and_swap(
        &self,
        store: &SharedKv,
        plugin: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let _writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.swap_locked(store, plugin, key, expected, new)
    }

    /// [`Self::compare_and_swap`] with the write lock held: the quota is
    /// checked against `expected` (what the key holds if the swap happens)
    /// and the usage moves only if it did.
    fn swap_locked(
        &self,
        store: &SharedKv,
        plugin: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let mut guard = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let usage = match *guard {
            Some(u) => u,
            None => store.usage(plugin)?,
        };
        let next = match new {
            Some(v) => self.admit(&mut guard, usage, key, expected, v)?,
            None => match expected {
                Some(e) => KvUsage {
                    keys: usage.keys.saturating_sub(1),
                    bytes: usage.bytes.saturating_sub((key.len() + e.len()) as u64),
                },
                None => usage,
            },
        };
        let swapped = store.compare_and_swap(plugin, key, expected, new)?;
        *guard = Some(if swapped { next } else { usage });
        Ok(swapped)
    }
}

/// How often `increment` retries a compare-and-swap that lost to another
/// writer before giving up with a transient error.
const ATOMIC_ATTEMPTS: usize = 64;

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
            Ok(Err(StoreError::Contended(m))) => {
                tracing::warn!(plugin = &*self.plugin, error = %m, "plugin kv update contended");
                Err(WitError::Transient(m))
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
