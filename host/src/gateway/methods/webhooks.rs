//! `webhooks.add/list/get/delete/toggle/rotate/deliveries/replay` (admin
//! scope), over [`crate::webhooks::Webhooks`]. The same operations back the
//! `/v1/webhooks` HTTP API.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Ctx, params};
use crate::protocol::errors::ErrorShape;
use crate::webhooks::registry::{delivery_json, endpoint_json};
use crate::webhooks::{NewWebhook, WebhookError};

/// A registry error as a protocol error.
pub fn error_shape(e: WebhookError) -> ErrorShape {
    match e {
        WebhookError::Store(e) => ErrorShape::unavailable(format!("store: {e}")),
        e @ WebhookError::NotFound(_) => {
            ErrorShape::invalid(e.to_string()).with_details(json!({"code": "NOT_FOUND"}))
        }
        other => ErrorShape::invalid(other.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdParams {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ToggleParams {
    id: String,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateParams {
    id: String,
    /// How long the old secret keeps signing, seconds.
    #[serde(default)]
    grace_seconds: Option<u64>,
}

/// Parameters of `webhooks.deliveries` (also the HTTP query).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveriesParams {
    /// The endpoint (absent in the HTTP query, where it is in the path).
    #[serde(default)]
    pub id: String,
    /// Only deliveries with this status.
    #[serde(default)]
    pub status: Option<String>,
    /// Only deliveries with a smaller id (paging).
    #[serde(default)]
    pub before: Option<i64>,
    /// At most this many (default 50, at most 500).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Parameters of `webhooks.replay` (also the HTTP body).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayParams {
    /// The endpoint (absent in the HTTP body, where it is in the path).
    #[serde(default)]
    pub id: String,
    /// One delivery to send again.
    #[serde(default)]
    pub delivery_id: Option<i64>,
    /// Every failed delivery created at or after this Unix ms.
    #[serde(default)]
    pub since: Option<i64>,
}

/// Run one `webhooks.*` method.
pub async fn handle(ctx: &Ctx, method: &str, p: &Value) -> Result<Value, ErrorShape> {
    let hooks = &ctx.gw.webhooks;
    match method {
        "webhooks.add" => {
            let req: NewWebhook = params(method, p)?;
            let created = hooks.add(req).await.map_err(error_shape)?;
            Ok(json!({"webhook": created.to_json()}))
        }
        "webhooks.list" => {
            let list = hooks.list().map_err(error_shape)?;
            Ok(json!({"webhooks": list.iter().map(endpoint_json).collect::<Vec<_>>()}))
        }
        "webhooks.get" => {
            let IdParams { id } = params(method, p)?;
            Ok(json!({"webhook": endpoint_json(&hooks.get(&id).map_err(error_shape)?)}))
        }
        "webhooks.delete" => {
            let IdParams { id } = params(method, p)?;
            hooks.delete(&id).map_err(error_shape)?;
            Ok(json!({"ok": true, "id": id}))
        }
        "webhooks.toggle" => {
            let t: ToggleParams = params(method, p)?;
            let ep = hooks.toggle(&t.id, t.enabled).map_err(error_shape)?;
            Ok(json!({"webhook": endpoint_json(&ep)}))
        }
        "webhooks.rotate" => {
            let r: RotateParams = params(method, p)?;
            let rotated = hooks
                .rotate(&r.id, r.grace_seconds.map(Duration::from_secs))
                .map_err(error_shape)?;
            Ok(json!({"webhook": rotated.to_json()}))
        }
        "webhooks.deliveries" => deliveries(ctx, params(method, p)?),
        "webhooks.replay" => replay(ctx, params(method, p)?),
        other => Err(ErrorShape::unknown_method(other)),
    }
}

/// `webhooks.deliveries`.
pub fn deliveries(ctx: &Ctx, d: DeliveriesParams) -> Result<Value, ErrorShape> {
    deliveries_json(&ctx.gw.webhooks, d).map_err(error_shape)
}

/// The delivery log as JSON (shared with the HTTP API).
pub fn deliveries_json(
    hooks: &crate::webhooks::Webhooks,
    d: DeliveriesParams,
) -> Result<Value, WebhookError> {
    let list = hooks.deliveries(&d.id, d.status.as_deref(), d.before, d.limit.unwrap_or(50))?;
    Ok(json!({
        "deliveries": list.iter().map(|(d, a)| delivery_json(d, a)).collect::<Vec<_>>(),
    }))
}

/// `webhooks.replay`.
pub fn replay(ctx: &Ctx, r: ReplayParams) -> Result<Value, ErrorShape> {
    replay_json(&ctx.gw.webhooks, r).map_err(error_shape)
}

/// Replay and answer with the count (shared with the HTTP API).
pub fn replay_json(
    hooks: &crate::webhooks::Webhooks,
    r: ReplayParams,
) -> Result<Value, WebhookError> {
    let queued = hooks.replay(&r.id, r.delivery_id, r.since)?;
    Ok(json!({"queued": queued}))
}
