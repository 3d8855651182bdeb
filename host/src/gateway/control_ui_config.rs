//! `/control-ui-config.json`: the runtime settings OpenClaw's Control UI
//! fetches on start (with the gateway token as a bearer), in the shape
//! OpenClaw 2026.9.6 serves there. Only when the gateway serves a Control
//! UI (`--control-ui DIR`); 404 otherwise. Behind the same bearer check as
//! `/v1` (the route sits in the secured router), as OpenClaw gates it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::methods::system::AGENT_NAME;
use super::{AuthMode, Gateway, VERSION};

/// The paths OpenClaw answers with the config: the canonical one, the
/// pre-2026.6 alias and the default-namespace alias (Pincer serves the UI
/// at `/`, base path empty).
pub const PATHS: &[&str] = &[
    "/control-ui-config.json",
    "/__openclaw/control-ui-config.json",
    "/__openclaw__/control-ui-config.json",
];

/// The config document for a gateway serving a Control UI.
pub fn document(gw: &Gateway) -> Value {
    json!({
        "basePath": "",
        "assistantName": AGENT_NAME,
        "assistantAvatar": null,
        "assistantAgentId": "main",
        "serverVersion": VERSION,
        // Pincer renders no embeds and has no terminal, CLI agents or
        // plugin UI frames.
        "embedSandbox": "strict",
        "allowExternalEmbedUrls": false,
        "automaticallyFetchFavicons": false,
        "communityInvite": false,
        "terminalEnabled": false,
        "cliAgentsEnabled": false,
        "pluginAssetsRequireAuth": !matches!(gw.config.auth_mode(), AuthMode::None),
        "pluginFrameGrants": [],
    })
}

/// The handler: the document, or 404 when no Control UI is served.
pub async fn serve(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.config.control_ui.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut resp = Json(document(&gw)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
