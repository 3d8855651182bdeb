//! Which store a gateway uses: [`Store`] bundles every store trait, and
//! [`open`] picks SQLite (the default, `<data-dir>/pincer.db`) or
//! PostgreSQL (a `postgres://` URL in [`StoreConfig::url`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{
    ClusterStore, InboxStore, KvStore, OutboxStore, PairingStore, PgStore, SessionStore,
    SharedLeases, SqliteStore, StoreConfig, StoreError, WebhookStore, is_postgres_url,
};

/// Every store trait in one object: what a gateway runs on.
pub trait Store:
    KvStore + SessionStore + WebhookStore + PairingStore + InboxStore + OutboxStore
{
    /// Where the data lives, for logs and status: a file path, or
    /// `postgres://user@host:port/db` (never a password).
    fn location(&self) -> String;
    /// The store's cluster side, if it is shared by several gateways
    /// (PostgreSQL); `None` for a single-node store (SQLite).
    fn cluster(self: Arc<Self>) -> Option<Arc<dyn ClusterStore>> {
        None
    }

    /// Channel account leases, if the store is shared by several nodes
    /// (PostgreSQL); `None` for a single-node store (SQLite), where this
    /// node trivially holds every lease.
    fn leases(self: Arc<Self>) -> Option<SharedLeases> {
        None
    }
}

/// A shared store; upcasts to each trait's shared handle
/// (`SharedSessions`, `SharedKv`, ...).
pub type SharedStore = Arc<dyn Store>;

impl Store for SqliteStore {
    fn location(&self) -> String {
        self.location.clone()
    }
}

impl Store for PgStore {
    fn location(&self) -> String {
        format!("postgres://{}", self.target())
    }
    fn cluster(self: Arc<Self>) -> Option<Arc<dyn ClusterStore>> {
        Some(self)
    }

    fn leases(self: Arc<Self>) -> Option<SharedLeases> {
        Some(self)
    }
}

/// Open the store `config` names: PostgreSQL for a `postgres://` URL, else
/// SQLite at the URL's path or `<data_dir>/pincer.db`. Errors name the
/// file or the server (never a password).
pub fn open(data_dir: &Path, config: &StoreConfig) -> Result<SharedStore, StoreError> {
    match (config.url.as_deref(), sqlite_path(data_dir, config)) {
        (_, Some(path)) => Ok(Arc::new(SqliteStore::open_with(&path, config)?)),
        (Some(url), None) => Ok(Arc::new(PgStore::connect(url, config)?)),
        (None, None) => unreachable!("no URL is SQLite"),
    }
}

/// The SQLite file `config` names for a gateway on `data_dir` (the URL's
/// path, or `<data_dir>/pincer.db`); `None` for a PostgreSQL URL.
pub fn sqlite_path(data_dir: &Path, config: &StoreConfig) -> Option<PathBuf> {
    match config.url.as_deref() {
        Some(url) if is_postgres_url(url) => None,
        Some(p) if !p.is_empty() => {
            Some(Path::new(p.strip_prefix("sqlite://").unwrap_or(p)).to_path_buf())
        }
        _ => Some(data_dir.join(super::DB_FILE)),
    }
}

/// `[store]` in the configuration file: the table ([`StoreConfig`]), or
/// just the URL as a string (`store = "postgres://..."`).
pub fn deserialize_store_config<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<StoreConfig, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = StoreConfig;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a store URL or a [store] table")
        }
        fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<StoreConfig, E> {
            Ok(StoreConfig {
                url: Some(url.into()),
                ..StoreConfig::default()
            })
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<StoreConfig, A::Error> {
            StoreConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use crate::config::FileConfig;

    #[test]
    fn the_config_file_names_the_store_as_a_url_or_in_the_table() -> anyhow::Result<()> {
        let url = "postgres://alice:hunter2@db:5432/pincer";
        let short: FileConfig = toml::from_str(&format!("store = \"{url}\""))?;
        assert_eq!(short.store.url.as_deref(), Some(url));
        assert_eq!(short.store.pool, 8);
        let table: FileConfig = toml::from_str(&format!("[store]\nurl = \"{url}\"\npool = 3"))?;
        assert_eq!(table.store.url.as_deref(), Some(url));
        assert_eq!(table.store.pool, 3);
        let default: FileConfig = toml::from_str("")?;
        assert_eq!(default.store.url, None);
        // The cluster's safety-net poll: 5 s unless set.
        assert_eq!(default.store.safety_poll_ms, 5_000);
        let polled: FileConfig = toml::from_str("[store]\nsafety_poll_ms = 250")?;
        assert_eq!(polled.store.safety_poll_ms, 250);
        // Unknown keys are still refused, with their name.
        let bad = toml::from_str::<FileConfig>("[store]\nurll = \"x\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(bad.contains("urll"), "{bad}");
        // The URL is a secret: Debug never shows the password.
        assert!(!format!("{:?}", short.store).contains("hunter2"));
        Ok(())
    }
}
