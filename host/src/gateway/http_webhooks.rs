//! `/v1/webhooks`: the webhook registry over HTTP (bearer token, like the
//! rest of `/v1`), the same operations as the `webhooks.*` methods.
//!
//! | Method and path                         | Does                          |
//! |-----------------------------------------|-------------------------------|
//! | `GET /v1/webhooks`                      | list                          |
//! | `POST /v1/webhooks`                     | add (201, secret shown once)  |
//! | `GET /v1/webhooks/{id}`                 | get                           |
//! | `DELETE /v1/webhooks/{id}`              | delete                        |
//! | `POST /v1/webhooks/{id}/toggle`         | `{enabled?}`; absent flips     |
//! | `POST /v1/webhooks/{id}/rotate`         | `{graceSeconds?}`             |
//! | `GET /v1/webhooks/{id}/deliveries`      | `?status=&before=&limit=`     |
//! | `POST /v1/webhooks/{id}/replay`         | `{deliveryId}` or `{since}`   |

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::Gateway;
use super::methods::webhooks::{DeliveriesParams, ReplayParams, deliveries_json, replay_json};
use crate::webhooks::registry::endpoint_json;
use crate::webhooks::{NewWebhook, WebhookError};

type Gw = State<Arc<Gateway>>;

/// The `/v1/webhooks` routes (the caller puts them behind the bearer
/// check, with the rest of `/v1`).
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/webhooks", get(list).post(add))
        .route("/v1/webhooks/{id}", get(get_one).delete(delete))
        .route("/v1/webhooks/{id}/toggle", post(toggle))
        .route("/v1/webhooks/{id}/rotate", post(rotate))
        .route("/v1/webhooks/{id}/deliveries", get(deliveries))
        .route("/v1/webhooks/{id}/replay", post(replay))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"message": message.into()}}))).into_response()
}

fn registry_error(e: WebhookError) -> Response {
    let status = match e {
        WebhookError::NotFound(_) => StatusCode::NOT_FOUND,
        WebhookError::Store(_) => {
            // Store detail stays in the log, under the reference returned.
            let reference = super::public_error::new_ref();
            tracing::error!(reference = %reference, error = %e, "webhook registry");
            return super::public_error::response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
                &reference,
            );
        }
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

/// Parse a JSON body (empty = `{}`) with a clear 400 on failure.
#[allow(clippy::result_large_err)] // the error is the response to send
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn list(State(gw): Gw) -> Response {
    match gw.webhooks.list() {
        Ok(list) => Json(json!({"webhooks": list.iter().map(endpoint_json).collect::<Vec<_>>()}))
            .into_response(),
        Err(e) => registry_error(e),
    }
}

async fn add(State(gw): Gw, bytes: Bytes) -> Response {
    let req: NewWebhook = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match gw.webhooks.add(req).await {
        Ok(created) => (StatusCode::CREATED, Json(created.to_json())).into_response(),
        Err(e) => registry_error(e),
    }
}

async fn get_one(State(gw): Gw, Path(id): Path<String>) -> Response {
    match gw.webhooks.get(&id) {
        Ok(ep) => Json(endpoint_json(&ep)).into_response(),
        Err(e) => registry_error(e),
    }
}

async fn delete(State(gw): Gw, Path(id): Path<String>) -> Response {
    match gw.webhooks.delete(&id) {
        Ok(()) => Json(json!({"deleted": true, "id": id})).into_response(),
        Err(e) => registry_error(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ToggleBody {
    #[serde(default)]
    enabled: Option<bool>,
}

async fn toggle(State(gw): Gw, Path(id): Path<String>, bytes: Bytes) -> Response {
    let t: ToggleBody = match body(&bytes) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match gw.webhooks.toggle(&id, t.enabled) {
        Ok(ep) => Json(endpoint_json(&ep)).into_response(),
        Err(e) => registry_error(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_seconds: Option<u64>,
}

async fn rotate(State(gw): Gw, Path(id): Path<String>, bytes: Bytes) -> Response {
    let r: RotateBody = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match gw
        .webhooks
        .rotate(&id, r.grace_seconds.map(Duration::from_secs))
    {
        Ok(rotated) => Json(rotated.to_json()).into_response(),
        Err(e) => registry_error(e),
    }
}

async fn deliveries(
    State(gw): Gw,
    Path(id): Path<String>,
    Query(mut q): Query<DeliveriesParams>,
) -> Response {
    q.id = id;
    match deliveries_json(&gw.webhooks, q) {
        Ok(v) => Json(v).into_response(),
        Err(e) => registry_error(e),
    }
}

async fn replay(State(gw): Gw, Path(id): Path<String>, bytes: Bytes) -> Response {
    let mut r: ReplayParams = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    r.id = id;
    match replay_json(&gw.webhooks, r) {
        Ok(v) => Json(v).into_response(),
        Err(e) => registry_error(e),
    }
}
