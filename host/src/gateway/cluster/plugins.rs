//! Plugins cluster-wide: a component uploaded to one node
//! (`PUT /v1/plugins/{name}`, the console's upload) is stored once in the
//! shared store ([`Cluster::publish_plugin`]), and every node writes the
//! cluster's current version of each plugin into its own plugins directory
//! ([`sync`], on every heartbeat), where the watcher hot-loads it as it
//! would a file an operator copied there. A file that fails to load fails
//! on every node the same way: each keeps serving its previous version and
//! reports `plugin.failed`. A removal (`DELETE /v1/plugins/{name}`) is
//! stored the same way, as a version with no hash, and every node removes
//! its files.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Cluster, lock};
use crate::gateway::Gateway;
use crate::gateway::http_plugins::{is_wasm, remove_plugin_files, valid_name, write_atomically};
use crate::store::StoreError;

impl Cluster {
    /// Store `bytes` (hex SHA-256 `sha256`) as the cluster's version of
    /// plugin `name`; the caller writes it into this node's directory.
    pub fn publish_plugin(&self, name: &str, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.store
            .publish_plugin(name, sha256, bytes, &self.node_id)?;
        lock(&self.plugins).insert(name.to_string(), sha256.to_string());
        tracing::info!(plugin = name, %sha256, bytes = bytes.len(), "plugin stored for the cluster");
        Ok(())
    }

    /// Store the removal of plugin `name` for every node; answers whether
    /// the cluster held a version of it. The caller removes this node's
    /// files.
    pub fn withdraw_plugin(&self, name: &str) -> Result<bool, StoreError> {
        let held = self.store.withdraw_plugin(name, &self.node_id)?;
        lock(&self.plugins).insert(name.to_string(), String::new());
        tracing::info!(plugin = name, "plugin removal stored for the cluster");
        Ok(held)
    }
}

/// The hex SHA-256 of the file at `path`, if it can be read.
fn file_sha256(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)))
}

/// Bring this node's plugins directory up to the cluster's plugin files:
/// each one whose version this node has not written (or found there) yet
/// is fetched, checked against its hash and written atomically.
pub(super) fn sync(cluster: &Cluster, gw: &Gateway) {
    let list = match cluster.store.cluster_plugins() {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "reading the cluster's plugins");
            return;
        }
    };
    let dir = gw.runtime.plugins_dir().to_path_buf();
    for p in list {
        if lock(&cluster.plugins).get(&p.name) == Some(&p.sha256) {
            continue;
        }
        if !valid_name(&p.name) {
            tracing::warn!(plugin = %p.name, "a cluster plugin with an unusable name was skipped");
            lock(&cluster.plugins).insert(p.name, p.sha256);
            continue;
        }
        let target = dir.join(format!("{}.wasm", p.name));
        if p.sha256.is_empty() {
            match remove_plugin_files(&dir, &p.name) {
                Ok(removed) => {
                    if !removed.is_empty() {
                        tracing::info!(plugin = %p.name, files = ?removed, from_node = %p.node_id, "plugin removed by the cluster; the watcher unloads it");
                    }
                    lock(&cluster.plugins).insert(p.name, p.sha256);
                }
                Err(e) => {
                    tracing::warn!(plugin = %p.name, error = %e, "removing a cluster plugin failed; trying again")
                }
            }
            continue;
        }
        if file_sha256(&target).as_deref() == Some(p.sha256.as_str()) {
            lock(&cluster.plugins).insert(p.name, p.sha256);
            continue;
        }
        let bytes = match cluster.store.cluster_plugin_bytes(&p.name, &p.sha256) {
            Ok(Some(b)) => b,
            // Replaced meanwhile: the next round takes the newer one.
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(plugin = %p.name, error = %e, "fetching a cluster plugin");
                continue;
            }
        };
        if hex::encode(Sha256::digest(&bytes)) != p.sha256 || !is_wasm(&bytes) {
            tracing::error!(plugin = %p.name, sha256 = %p.sha256, "a cluster plugin's bytes do not match its hash; not written");
            lock(&cluster.plugins).insert(p.name, p.sha256);
            continue;
        }
        match write_atomically(&target, &bytes) {
            Ok(()) => {
                tracing::info!(plugin = %p.name, sha256 = %p.sha256, from_node = %p.node_id, "plugin from the cluster written; the watcher loads it");
                lock(&cluster.plugins).insert(p.name, p.sha256);
            }
            Err(e) => {
                tracing::warn!(plugin = %p.name, error = %e, "writing a cluster plugin failed; trying again")
            }
        }
    }
}
