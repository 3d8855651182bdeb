//! [`KvStore`] on PostgreSQL (`plugin_kv`), with the same limits as SQLite.

use super::{PgStore, limit};
use crate::store::sqlite::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::store::{KvStore, KvUsage, StoreError};

impl KvStore for PgStore {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|db| {
            db.opt(
                "SELECT value FROM plugin_kv WHERE plugin = $1 AND key = $2",
                &[&plugin, &key],
            )?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(Into::into)
        })
    }

    fn set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(StoreError::Limit(format!(
                "key longer than {MAX_KEY_BYTES} bytes"
            )));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::Limit(format!(
                "value larger than {MAX_VALUE_BYTES} bytes"
            )));
        }
        self.write(|db| {
            let now = db.now;
            db.exec(
                "INSERT INTO plugin_kv (plugin, key, value, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (plugin, key) DO UPDATE
                 SET value = excluded.value, updated_ms = excluded.updated_ms",
                &[&plugin, &key, &value, &now],
            )?;
            Ok(())
        })
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2",
                &[&plugin, &key],
            )?;
            Ok(())
        })
    }

    fn list_keys(&self, plugin: &str, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        self.read(|db| {
            // Byte-wise prefix and order (COLLATE "C"), as in SQLite.
            db.query(
                "SELECT key FROM plugin_kv
                 WHERE plugin = $1 AND left(key, length($2::text)) = $2::text
                 ORDER BY key COLLATE \"C\" LIMIT $3",
                &[&plugin, &prefix, &limit(max)],
            )?
            .iter()
            .map(|r| r.try_get(0).map_err(Into::into))
            .collect()
        })
    }

    fn usage(&self, plugin: &str) -> Result<KvUsage, StoreError> {
        let (keys, bytes): (i64, i64) = self.read(|db| {
            let r = db.one(
                "SELECT count(*), COALESCE(sum(octet_length(key) + octet_length(value)), 0)::bigint
                 FROM plugin_kv WHERE plugin = $1",
                &[&plugin],
            )?;
            Ok((r.try_get(0)?, r.try_get(1)?))
        })?;
        Ok(KvUsage {
            keys: keys.max(0) as u64,
            bytes: bytes.max(0) as u64,
        })
    }
}
