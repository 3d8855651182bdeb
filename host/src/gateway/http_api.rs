//! The HTTP side of the gateway port:
//! - `GET /healthz` (alive), `GET /readyz` (plugins loaded, store open);
//! - `GET /metrics` (Prometheus text);
//! - `/v1/…`: sessions, channels and plugins as JSON (bearer token or
//!   password when the gateway has one); `/v1/webhooks` is in
//!   [`super::http_webhooks`];
//! - `/channels/{name}/webhook[/…]`: inbound webhooks for push-mode
//!   channel plugins (503 with `Retry-After` while the plugin reloads).
//!
//! The API is described in `docs/openapi.json` (OpenAPI 3.1).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, AuthMode};
use super::listener::BodyTimeout;
use super::{Gateway, canonical_key, methods, public_error};
use crate::channels::ChannelError;
use crate::plugins::bindings::WebhookRequest;

/// Largest webhook body accepted.
pub const MAX_WEBHOOK_BODY: usize = 1 << 20;

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program);
        // then this handle renders only what is set on it below.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    // Everything under /v1 and /metrics needs the bearer token (when the
    // gateway has one), checked once here before any extractor runs.
    let secured = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/v1/sessions", get(list_sessions))
        .route(
            "/v1/sessions/{key}",
            get(get_session).delete(delete_session),
        )
        .route("/v1/sessions/{key}/messages", get(session_messages))
        .route("/v1/channels", get(list_channels))
        .route("/v1/channels/{name}/{action}", post(channel_action))
        .route("/v1/plugins", get(list_plugins))
        .route("/v1/plugins/reload", post(reload_plugins))
        .merge(super::http_webhooks::routes())
        .route_layer(middleware::from_fn_with_state(gw.clone(), require_auth));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route("/readyz", get(readyz))
        .route("/channels/{name}/webhook", any(channel_webhook))
        .route("/channels/{name}/webhook/{*rest}", any(channel_webhook))
        .merge(secured)
        .with_state(gw)
}

/// The bearer check as middleware (see [`authorized`]).
async fn require_auth(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    match authorized(&gw, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => r,
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"message": message.into()}}))).into_response()
}

/// Bearer token / password check for `/v1` and `/metrics`.
#[allow(clippy::result_large_err)] // the error is the response to send
fn authorized(gw: &Gateway, headers: &HeaderMap) -> Result<(), Response> {
    let secret = match gw.config.auth_mode() {
        AuthMode::None => return Ok(()),
        AuthMode::Token(s) | AuthMode::Password(s) => s,
    };
    let supplied = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if auth::secret_eq(supplied, &secret) {
        Ok(())
    } else {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(r)
    }
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let store_ok = gw.sessions.count_sessions().is_ok();
    let plugins_ok = gw.ready.load(Ordering::Relaxed);
    let body = json!({"ready": store_ok && plugins_ok, "store": store_ok, "plugins": plugins_ok});
    let status = if store_ok && plugins_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(gw): State<Arc<Gateway>>) -> Response {
    let handle = prometheus();
    let c = &gw.counters;
    metrics::gauge!("pincer_connections").set(gw.hub.len() as f64);
    for (name, v) in [
        ("pincer_connections_total", &c.connections_total),
        ("pincer_connections_refused_total", &c.connections_refused),
        ("pincer_frames_in_total", &c.frames_in),
        ("pincer_frames_out_total", &c.frames_out),
        ("pincer_handshakes_total", &c.handshakes),
        ("pincer_handshake_failures_total", &c.handshake_failures),
    ] {
        metrics::counter!(name).absolute(v.load(Ordering::Relaxed));
    }
    metrics::counter!("pincer_events_dropped_total")
        .absolute(gw.hub.dropped.load(Ordering::Relaxed));
    metrics::counter!("pincer_slow_consumers_total")
        .absolute(gw.hub.slow_closed.load(Ordering::Relaxed));
    for p in gw.runtime.plugins.list() {
        let name = p.name.clone();
        metrics::counter!("pincer_plugin_calls_total", "plugin" => name.clone()).absolute(p.calls);
        metrics::counter!("pincer_plugin_failures_total", "plugin" => name.clone())
            .absolute(p.failures);
        let loaded = matches!(p.state, crate::plugins::PluginState::Loaded);
        metrics::gauge!("pincer_plugin_loaded", "plugin" => name).set(if loaded {
            1.0
        } else {
            0.0
        });
    }
    for ch in gw.runtime.health.snapshot().await {
        let name = ch.name.clone();
        metrics::gauge!("pincer_channel_healthy", "channel" => name.clone()).set(if ch.healthy {
            1.0
        } else {
            0.0
        });
        metrics::counter!("pincer_channel_restarts_total", "channel" => name)
            .absolute(ch.restarts_total);
    }
    metrics::gauge!("pincer_runs_active").set(gw.runs.active_count() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn list_sessions(State(gw): State<Arc<Gateway>>, Query(q): Query<LimitQuery>) -> Response {
    match gw.sessions.list_sessions(q.limit.unwrap_or(100).min(1000)) {
        Ok(list) => Json(json!({"sessions": list})).into_response(),
        Err(e) => internal("listing sessions", &e),
    }
}

async fn get_session(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    match gw.sessions.get_session(&canonical_key(&key)) {
        Ok(Some(s)) => Json(s).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no session {key:?}")),
        Err(e) => internal("reading a session", &e),
    }
}

async fn delete_session(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    match gw.sessions.delete_session(&canonical_key(&key), true) {
        Ok(true) => Json(json!({"deleted": true})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no session {key:?}")),
        Err(e) => internal("deleting a session", &e),
    }
}

async fn session_messages(
    State(gw): State<Arc<Gateway>>,
    Path(key): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Response {
    match gw
        .sessions
        .history(&canonical_key(&key), q.limit.unwrap_or(200).min(1000))
    {
        Ok(msgs) => Json(json!({"messages": msgs})).into_response(),
        Err(e) => internal("reading session messages", &e),
    }
}

async fn list_channels(State(gw): State<Arc<Gateway>>) -> Response {
    Json(methods::plugins::channels_status(&gw).await).into_response()
}

async fn channel_action(
    State(gw): State<Arc<Gateway>>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    match methods::plugins::channel_action(&gw, &name, &action).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.message),
    }
}

async fn list_plugins(State(gw): State<Arc<Gateway>>) -> Response {
    Json(json!({"plugins": gw.runtime.plugins.list()})).into_response()
}

async fn reload_plugins(State(gw): State<Arc<Gateway>>) -> Response {
    Json(methods::plugins::reload(&gw, None).await).into_response()
}

async fn channel_webhook(
    State(gw): State<Arc<Gateway>>,
    Path(params): Path<Vec<(String, String)>>,
    method: Method,
    req: Request,
) -> Response {
    let name = params
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let rest = params
        .iter()
        .find(|(k, _)| k == "rest")
        .map(|(_, v)| format!("/{v}"))
        .unwrap_or_else(|| "/".into());
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let body: Bytes = match axum::body::to_bytes(req.into_body(), MAX_WEBHOOK_BODY).await {
        Ok(b) => b,
        Err(e) if caused_by::<BodyTimeout>(&e) => {
            return error(StatusCode::REQUEST_TIMEOUT, "webhook body too slow");
        }
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "webhook body too large"),
    };
    let request = WebhookRequest {
        method: method.as_str().to_string(),
        path: rest,
        query,
        headers,
        body: body.to_vec(),
    };
    match gw.runtime.channels.webhook(&name, request).await {
        Ok(resp) => {
            let mut r = Response::new(Body::from(resp.body));
            *r.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::OK);
            for (k, v) in resp.headers {
                if let (Ok(k), Ok(v)) = (
                    header::HeaderName::try_from(k.as_str()),
                    HeaderValue::from_str(&v),
                ) {
                    r.headers_mut().append(k, v);
                }
            }
            r
        }
        Err(ChannelError::Unknown(_)) if gw.runtime.plugins.info(&name).is_none() => {
            error(StatusCode::NOT_FOUND, "no such channel")
        }
        // Unauthenticated callers get a stable code, a short message and a
        // reference; the channel's own error text goes to the log only.
        Err(e @ (ChannelError::Unknown(_) | ChannelError::Unavailable(_))) => {
            let reference = public_error::new_ref();
            tracing::info!(channel = %name, reference = %reference, error = %e, "webhook for an unavailable channel");
            let mut r = public_error::response(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "channel unavailable; retry later",
                &reference,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Err(e) => {
            let reference = public_error::new_ref();
            tracing::warn!(channel = %name, reference = %reference, error = %e, "webhook failed");
            let mut r = public_error::response(
                StatusCode::SERVICE_UNAVAILABLE,
                "CHANNEL_ERROR",
                "the channel could not handle this request",
                &reference,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// Whether `e` or one of its causes is an `E`.
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

/// A store failure on an API route: logged with a reference, answered
/// with the reference only.
fn internal(what: &str, e: &dyn std::fmt::Display) -> Response {
    let reference = public_error::new_ref();
    tracing::error!(reference = %reference, error = %e, "{what}");
    public_error::response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "internal error",
        &reference,
    )
}

/// Turn a JSON value into a response (used by tests and handlers).
pub fn json_response(v: Value) -> Response {
    Json(v).into_response()
}
