//! `/v1/channels/{name}/pairing`: channel sender pairing over HTTP (bearer
//! token, like the rest of `/v1`; routed in [`super::http_api`]), the same
//! operations as the `channels.pairing.*` methods.
//!
//! | Method and path                                  | Does                      |
//! |--------------------------------------------------|---------------------------|
//! | `GET /v1/channels/{name}/pairing`                | `?accountId=`: list       |
//! | `POST /v1/channels/{name}/pairing/approve`       | `{code, accountId?}`      |
//! | `POST /v1/channels/{name}/pairing/dismiss`       | `{code, accountId?}`      |

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Gateway;
use super::methods::pairing::{self, PairingFailure, PairingParams};
use crate::channels::pairing::PairingError;

type Gw = State<Arc<Gateway>>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"message": message.into()}}))).into_response()
}

fn failure(e: PairingFailure) -> Response {
    let status = match &e {
        PairingFailure::NoChannel(_)
        | PairingFailure::NoAccount { .. }
        | PairingFailure::Pairing(PairingError::UnknownCode { .. }) => StatusCode::NOT_FOUND,
        PairingFailure::Pairing(PairingError::Expired(_)) => StatusCode::GONE,
        PairingFailure::Pairing(PairingError::Store(err)) => {
            tracing::warn!(error = %err, "pairing store failed");
            return error(StatusCode::SERVICE_UNAVAILABLE, "pairing store unavailable");
        }
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

fn answer(r: Result<Value, PairingFailure>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => failure(e),
    }
}

/// `?accountId=` of the list route.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// Only this channel account.
    pub account_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CodeBody {
    code: String,
    #[serde(default)]
    account_id: Option<String>,
}

/// Parse `{code, accountId?}` with a clear 400 on failure.
#[allow(clippy::result_large_err)] // the error is the response to send
fn code_params(name: String, bytes: &Bytes) -> Result<PairingParams, Response> {
    let b: CodeBody = serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    Ok(PairingParams {
        channel: name,
        account_id: b.account_id,
        code: Some(b.code),
    })
}

/// `GET /v1/channels/{name}/pairing?accountId=`.
pub async fn list(State(gw): Gw, Path(name): Path<String>, Query(q): Query<ListQuery>) -> Response {
    let p = PairingParams {
        channel: name,
        account_id: q.account_id,
        code: None,
    };
    answer(pairing::list(&gw, &p))
}

/// `POST /v1/channels/{name}/pairing/approve` `{code, accountId?}`.
pub async fn approve(State(gw): Gw, Path(name): Path<String>, bytes: Bytes) -> Response {
    match code_params(name, &bytes) {
        Ok(p) => answer(pairing::approve(&gw, &p)),
        Err(r) => r,
    }
}

/// `POST /v1/channels/{name}/pairing/dismiss` `{code, accountId?}`.
pub async fn dismiss(State(gw): Gw, Path(name): Path<String>, bytes: Bytes) -> Response {
    match code_params(name, &bytes) {
        Ok(p) => answer(pairing::dismiss(&gw, &p)),
        Err(r) => r,
    }
}
