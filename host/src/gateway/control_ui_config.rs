//! `/control-ui-config.json`: the runtime settings OpenClaw's Control UI
//! fetches on start, in the shape OpenClaw 2026.9.6 serves there. Only
//! when the gateway serves a Control UI (`--control-ui DIR`); 404
//! otherwise.
//!
//! Not behind the token, unlike OpenClaw's: OpenClaw gates it because its
//! document carries avatar URLs and plugin frame grants; Pincer's carries
//! neither (constants and feature flags, no version), like the UI's own
//! files. Gating it would also lock operators out: the UI tries its device
//! token as a bearer first, which Pincer's HTTP auth does not accept, and
//! each refusal counts toward the per-address auth-failure limit (five
//! page loads were enough to get `429` on every secured route).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::Gateway;
use super::methods::system::AGENT_NAME;

/// The paths OpenClaw answers with the config: the canonical one, the
/// pre-2026.6 alias and the default-namespace alias (Pincer serves the UI
/// at `/`, base path empty).
pub const PATHS: &[&str] = &[
    "/control-ui-config.json",
    "/__openclaw/control-ui-config.json",
    "/__openclaw__/control-ui-config.json",
];

/// The routes, one per path in [`PATHS`].
pub fn routes() -> Router<Arc<Gateway>> {
    PATHS
        .iter()
        .fold(Router::new(), |r, path| r.route(path, get(serve)))
}

/// The config document. The server version is left out (the UI reads it
/// from `hello-ok` once connected); Pincer renders no embeds and has no
/// terminal, CLI agents or plugin UI frames.
pub fn document() -> Value {
    json!({
        "basePath": "",
        "assistantName": AGENT_NAME,
        "assistantAvatar": null,
        "assistantAgentId": "main",
        "serverVersion": null,
        "embedSandbox": "strict",
        "allowExternalEmbedUrls": false,
        "automaticallyFetchFavicons": false,
        "communityInvite": false,
        "terminalEnabled": false,
        "cliAgentsEnabled": false,
        "pluginAssetsRequireAuth": true,
        "pluginFrameGrants": [],
    })
}

/// The handler: the document, or 404 when no Control UI is served.
async fn serve(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.config.control_ui.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut resp = Json(document()).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
