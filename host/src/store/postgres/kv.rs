//! [`KvStore`] on PostgreSQL (`plugin_kv`), with the same limits as SQLite.

use super::{PgStore, limit};
use crate::store::{KvStore, KvUsage, StoreError, check_kv_sizes};

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
        check_kv_sizes(key, value)?;
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

    fn compare_and_swap(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        if let Some(v) = new {
            check_kv_sizes(key, v)?;
        }
        self.write(|db| {
            let now = db.now;
            // One conditional statement per case, atomic at any isolation
            // level: the row lock an UPDATE or DELETE takes re-checks the
            // value, and a concurrent INSERT of the key conflicts.
            let changed = match (expected, new) {
                (Some(e), Some(n)) => db.exec(
                    "UPDATE plugin_kv SET value = $3, updated_ms = $4
                     WHERE plugin = $1 AND key = $2 AND value = $5",
                    &[&plugin, &key, &n, &now, &e],
                )?,
                (Some(e), None) => db.exec(
                    "DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2 AND value = $3",
                    &[&plugin, &key, &e],
                )?,
                (None, Some(n)) => db.exec(
                    "INSERT INTO plugin_kv (plugin, key, value, updated_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (plugin, key) DO NOTHING",
                    &[&plugin, &key, &n, &now],
                )?,
                (None, None) => u64::from(
                    db.opt(
                        "SELECT 1 FROM plugin_kv WHERE plugin = $1 AND key = $2",
                        &[&plugin, &key],
                    )?
                    .is_none(),
                ),
            };
            Ok(changed == 1)
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
