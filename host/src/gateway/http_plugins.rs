//! `PUT /v1/plugins/{name}`: an operator uploads a plugin component
//! (`Content-Type: application/wasm`, the raw file as the body) and it is
//! written into the plugins directory as `<name>.wasm`, where the watcher
//! hot-loads it like any other new or changed file (`plugin.loaded` or
//! `plugin.failed` follows on the event bus). `DELETE /v1/plugins/{name}`
//! removes `<name>.wasm` and its manifest `<name>.toml`, and the watcher
//! unloads the plugin (`plugin.unloaded`).
//!
//! The bearer check runs before this handler (see `http_api`). The name is
//! checked, the body is capped (`gateway.plugin_upload_max_bytes`) and must
//! start with the WebAssembly magic; anything refused leaves the directory
//! untouched. The file is written to a hidden temporary name the watcher
//! ignores, synced, then renamed over `<name>.wasm`, so the watcher only
//! ever sees a complete file. In a cluster the file is first stored for
//! every node (see `cluster::plugins`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::Gateway;
use super::listener::BodyTimeout;

/// The first four bytes of every WebAssembly module or component.
pub const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Why an upload or a removal was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginFileError {
    /// No plugin file of that name is in the plugins directory (nor in the
    /// cluster).
    #[error("no plugin file named {0:?} in the plugins directory")]
    NotFound(String),
    /// The plugin name is not usable as a file name.
    #[error(
        "invalid plugin name {0:?}: use 1 to 64 letters, digits, `-` or `_`, starting with a letter or digit"
    )]
    BadName(String),
    /// The body is larger than the cap.
    #[error("the plugin file is larger than the upload limit of {limit} bytes")]
    TooLarge {
        /// `gateway.plugin_upload_max_bytes`.
        limit: usize,
    },
    /// The body is not a WebAssembly file.
    #[error("the body is not a WebAssembly file (it must start with \\0asm)")]
    NotWasm,
    /// The content type is not `application/wasm`.
    #[error("plugin uploads must be sent as Content-Type: application/wasm")]
    ContentType,
    /// The client sent the body too slowly.
    #[error("the upload body arrived too slowly")]
    Slow,
    /// Storing the plugin for the cluster failed (nothing was written).
    #[error("storing the plugin for the cluster: {0}")]
    Store(crate::store::StoreError),
    /// Writing into (or removing from) the plugins directory failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl PluginFileError {
    fn status(&self) -> StatusCode {
        match self {
            PluginFileError::BadName(_) | PluginFileError::NotWasm => StatusCode::BAD_REQUEST,
            PluginFileError::NotFound(_) => StatusCode::NOT_FOUND,
            PluginFileError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PluginFileError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PluginFileError::Slow => StatusCode::REQUEST_TIMEOUT,
            PluginFileError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            PluginFileError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            PluginFileError::BadName(_) => "INVALID_NAME",
            PluginFileError::NotFound(_) => "NOT_FOUND",
            PluginFileError::TooLarge { .. } => "TOO_LARGE",
            PluginFileError::NotWasm => "NOT_WASM",
            PluginFileError::ContentType => "UNSUPPORTED_MEDIA_TYPE",
            PluginFileError::Slow => "BODY_TIMEOUT",
            PluginFileError::Write { .. } => "WRITE_FAILED",
            PluginFileError::Store(_) => "UNAVAILABLE",
        }
    }
}

impl IntoResponse for PluginFileError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // The path stays in the log; the client learns only the cause.
            PluginFileError::Write { source, .. } => {
                format!("writing the plugin file failed: {source}")
            }
            other => other.to_string(),
        };
        (
            status,
            Json(json!({"error": {"code": self.code(), "message": message}})),
        )
            .into_response()
    }
}

/// Whether `name` is a plugin name an upload may use: 1 to 64 ASCII
/// letters, digits, `-` or `_`, starting with a letter or digit (so never
/// hidden, never a path).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether `bytes` starts like a WebAssembly module or component.
pub fn is_wasm(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes.starts_with(WASM_MAGIC)
}

/// The handler (see the module comment). Answers `201` for a new plugin,
/// `200` for a replaced one, with `{ok, name, bytes, sha256, replaced}`.
pub async fn upload(
    State(gw): State<Arc<Gateway>>,
    UrlPath(name): UrlPath<String>,
    req: Request,
) -> Response {
    match receive(&gw, &name, req).await {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(e) => {
            match &e {
                PluginFileError::Write { path, source } => {
                    tracing::error!(plugin = %name, path = %path.display(), error = %source, "plugin upload not written");
                }
                other => tracing::info!(plugin = %name, error = %other, "plugin upload refused"),
            }
            e.into_response()
        }
    }
}

async fn receive(
    gw: &Gateway,
    name: &str,
    req: Request,
) -> Result<(StatusCode, serde_json::Value), PluginFileError> {
    if !valid_name(name) {
        return Err(PluginFileError::BadName(name.to_string()));
    }
    let wasm_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/wasm"));
    if !wasm_type {
        return Err(PluginFileError::ContentType);
    }
    let limit = gw.config.plugin_upload_max_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(PluginFileError::TooLarge { limit });
    }
    let bytes = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(b) => b,
        Err(e) if caused_by::<BodyTimeout>(&e) => return Err(PluginFileError::Slow),
        Err(_) => return Err(PluginFileError::TooLarge { limit }),
    };
    if !is_wasm(&bytes) {
        return Err(PluginFileError::NotWasm);
    }
    let dir = gw.runtime.plugins_dir().to_path_buf();
    let target = dir.join(format!("{name}.wasm"));
    let replaced = target.exists();
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let len = bytes.len();
    if let Some(cluster) = gw.cluster.get() {
        // Stored once for every node before this one writes it: a failure
        // leaves every node as it was.
        cluster
            .publish_plugin(name, &sha256, &bytes)
            .map_err(PluginFileError::Store)?;
    }
    let target2 = target.clone();
    tokio::task::spawn_blocking(move || write_atomically(&target2, &bytes))
        .await
        .map_err(|e| PluginFileError::Write {
            path: target.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
    tracing::info!(plugin = %name, bytes = len, %sha256, replaced, "plugin uploaded; the watcher loads it");
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        json!({"ok": true, "name": name, "bytes": len, "sha256": sha256, "replaced": replaced}),
    ))
}

/// `DELETE /v1/plugins/{name}` (see the module comment). Answers `200`
/// with `{ok, name, removed}` (the files removed), `404` when there is no
/// such plugin file. In a cluster the removal is stored first, so every
/// node removes its copy.
pub async fn remove(State(gw): State<Arc<Gateway>>, UrlPath(name): UrlPath<String>) -> Response {
    match remove_files(&gw, &name).await {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(e) => {
            match &e {
                PluginFileError::Write { path, source } => {
                    tracing::error!(plugin = %name, path = %path.display(), error = %source, "plugin file not removed");
                }
                other => tracing::info!(plugin = %name, error = %other, "plugin removal refused"),
            }
            e.into_response()
        }
    }
}

async fn remove_files(gw: &Gateway, name: &str) -> Result<serde_json::Value, PluginFileError> {
    if !valid_name(name) {
        return Err(PluginFileError::BadName(name.to_string()));
    }
    let dir = gw.runtime.plugins_dir().to_path_buf();
    let mut in_cluster = false;
    if let Some(cluster) = gw.cluster.get() {
        in_cluster = cluster
            .withdraw_plugin(name)
            .map_err(PluginFileError::Store)?;
    }
    let n = name.to_string();
    let removed = tokio::task::spawn_blocking(move || remove_plugin_files(&dir, &n))
        .await
        .map_err(|e| PluginFileError::Write {
            path: PathBuf::from(name),
            source: std::io::Error::other(e.to_string()),
        })??;
    if removed.is_empty() && !in_cluster {
        return Err(PluginFileError::NotFound(name.to_string()));
    }
    tracing::info!(plugin = %name, files = ?removed, "plugin removed; the watcher unloads it");
    Ok(json!({"ok": true, "name": name, "removed": removed}))
}

/// Remove plugin `name`'s files (`<name>.wasm`, then its manifest
/// `<name>.toml`) from `dir`, returning the names of those that existed.
pub(crate) fn remove_plugin_files(dir: &Path, name: &str) -> Result<Vec<String>, PluginFileError> {
    let mut removed = Vec::new();
    for file in [format!("{name}.wasm"), format!("{name}.toml")] {
        let path = dir.join(&file);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(PluginFileError::Write { path, source }),
        }
    }
    Ok(removed)
}

/// Write an uploaded file atomically ([`crate::atomic_file::write`]), with
/// the error naming the target.
pub(crate) fn write_atomically(target: &Path, bytes: &[u8]) -> Result<(), PluginFileError> {
    crate::atomic_file::write(target, bytes).map_err(|source| PluginFileError::Write {
        path: target.to_path_buf(),
        source,
    })
}

fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<E>() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["echo", "clock2", "my-tool_1", "A"] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "a.wasm",
            "a b",
            long.as_str(),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn magic() {
        assert!(is_wasm(b"\0asm\x0d\0\x01\0rest"));
        assert!(!is_wasm(b"\0asm"));
        assert!(!is_wasm(b"MZ\x90\0\0\0\0\0\0"));
    }

    #[test]
    fn removal_takes_the_component_and_its_manifest_only() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["p.wasm", "p.toml", "q.wasm"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let removed = remove_plugin_files(dir.path(), "p").unwrap();
        assert_eq!(removed, vec!["p.wasm".to_string(), "p.toml".to_string()]);
        assert!(dir.path().join("q.wasm").exists());
        assert!(remove_plugin_files(dir.path(), "p").unwrap().is_empty());
    }
}
