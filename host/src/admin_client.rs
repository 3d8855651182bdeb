//! An operator's client for a running gateway's HTTP API, behind
//! `pincer plugins install FILE` and `pincer plugins remove NAME`: the
//! commands go through the same routes as the console's upload
//! (`PUT /v1/plugins/{name}`, `DELETE /v1/plugins/{name}`), so a plugin
//! installed on one node of a cluster is stored once and loaded by every
//! node, exactly as an upload from the console is.
//!
//! ```no_run
//! # async fn f() -> Result<(), pincer::admin_client::AdminError> {
//! use pincer::admin_client::AdminClient;
//! let client = AdminClient::new("http://127.0.0.1:18789", Some("TOKEN".into()))?;
//! let bytes = std::fs::read("clock.wasm").map_err(|e| pincer::admin_client::AdminError::Read {
//!     path: "clock.wasm".into(),
//!     source: e,
//! })?;
//! let answer = client.install("clock", bytes).await?;
//! println!("{answer}");
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The gateway URL is not usable.
    #[error("invalid gateway URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the plugin file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The gateway could not be reached or did not answer.
    #[error("no answer from the gateway at {url} (is `pincer serve` running there?): {source}")]
    Unreachable {
        /// The request URL.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The gateway refused the request.
    #[error("the gateway refused: {status} {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error code of the answer (`UNAUTHORIZED`, `NOT_WASM`, ...).
        code: String,
        /// The answer's message.
        message: String,
    },
}

/// A client for one gateway (base URL and optional bearer token).
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the gateway at `base` (`http://host:port`), sending
    /// `token` as the bearer token when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, AdminError> {
        let parsed = url::Url::parse(base).map_err(|e| AdminError::BadUrl {
            url: base.to_string(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AdminError::BadUrl {
                url: base.to_string(),
                reason: "use http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| AdminError::BadUrl {
                url: base.to_string(),
                reason: e.to_string(),
            })?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// Upload `bytes` as plugin `name` (`PUT /v1/plugins/{name}`); the
    /// gateway's answer (`{ok, name, bytes, sha256, replaced}`).
    pub async fn install(&self, name: &str, bytes: Vec<u8>) -> Result<Value, AdminError> {
        let req = self
            .http
            .put(self.plugin_url(name))
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(bytes);
        self.send(req, name).await
    }

    /// Remove plugin `name` (`DELETE /v1/plugins/{name}`); the gateway's
    /// answer (`{ok, name, removed}`).
    pub async fn remove(&self, name: &str) -> Result<Value, AdminError> {
        let req = self.http.delete(self.plugin_url(name));
        self.send(req, name).await
    }

    fn plugin_url(&self, name: &str) -> String {
        // Names are checked by the gateway; escape anything odd so it is
        // refused there rather than routed elsewhere.
        let escaped: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        format!("{}/v1/plugins/{escaped}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value, AdminError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let url = format!("{}/v1/plugins/{what}", self.base);
        let resp = req.send().await.map_err(|source| AdminError::Unreachable {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_else(|_| serde_json::json!({}));
        if status.is_success() {
            return Ok(body);
        }
        let field = |k: &str| {
            body.pointer(&format!("/error/{k}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Err(AdminError::Refused {
            status: status.as_u16(),
            code: field("code"),
            message: field("message"),
        })
    }
}

/// The plugin name a component file installs as: its file stem
/// (`clock.wasm` → `clock`).
pub fn name_from_path(path: &Path) -> Option<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
}

/// The token an admin command uses when none is given: the gateway's
/// generated token in `<data_dir>/gateway-token`, if that file exists
/// (it is never created here).
pub fn token_from_data_dir(data_dir: &Path) -> Option<String> {
    let text =
        std::fs::read_to_string(data_dir.join(crate::gateway::token_file::FILE_NAME)).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_file_stems() {
        assert_eq!(
            name_from_path(Path::new("/x/clock.wasm")).as_deref(),
            Some("clock")
        );
        assert_eq!(name_from_path(Path::new("echo")).as_deref(), Some("echo"));
    }

    #[test]
    fn urls_are_checked() {
        assert!(AdminClient::new("ftp://x", None).is_err());
        assert!(AdminClient::new("not a url", None).is_err());
        let c = AdminClient::new("http://127.0.0.1:1/", None).unwrap();
        assert_eq!(c.plugin_url("a/b"), "http://127.0.0.1:1/v1/plugins/a%2Fb");
    }
}
