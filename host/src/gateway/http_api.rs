//! The HTTP side of the gateway port:
//! - `GET /healthz` (alive), `GET /readyz` (plugins loaded, store open);
//! - `GET /metrics` (Prometheus text);
//! - `GET /console`: the operator console ([`super::console`]);
//! - `PUT /v1/plugins/{name}`: plugin upload, `DELETE` its removal
//!   ([`super::http_plugins`]);
//! - `/v1/…`: sessions, channels and plugins as JSON (bearer token or
//!   password when the gateway has one); `/v1/webhooks` is in
//!   [`super::http_webhooks`], `/v1/channels/{name}/pairing…` in
//!   [`super::http_pairing`];
//! - `/channels/{name}/webhook[/…]`: inbound webhooks for push-mode
//!   channel plugins (503 with `Retry-After` while the plugin reloads; 403
//!   for a test channel pushed to from a non-loopback peer; 401/403/503
//!   when host-side verification refuses the push, see
//!   `crate::channels::verify`).
//!
//! - anything else: the Control UI build, when one is configured
//!   ([`super::control_ui`]), else 404.
//!
//! The API is described in `docs/openapi.json` (OpenAPI 3.1).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, AuthMode};
use super::listener::BodyTimeout;
use super::{Gateway, canonical_key, http_pairing, methods, public_error};
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
        .route("/v1/channels/{name}/send", post(super::http_send::send))
        .route("/v1/channels/{name}/{action}", post(channel_action))
        .route("/v1/plugins", get(list_plugins))
        .route("/v1/plugins/reload", post(reload_plugins))
        .route("/v1/config/reload", post(reload_config))
        .route(
            "/v1/plugins/{name}",
            put(super::http_plugins::upload).delete(super::http_plugins::remove),
        )
        .route("/v1/channels/{name}/pairing", get(http_pairing::list))
        .route(
            "/v1/channels/{name}/pairing/approve",
            post(http_pairing::approve),
        )
        .route(
            "/v1/channels/{name}/pairing/dismiss",
            post(http_pairing::dismiss),
        )
        .merge(super::http_webhooks::routes())
        .route_layer(middleware::from_fn_with_state(gw.clone(), require_auth));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route("/readyz", get(readyz))
        .route("/console", get(super::console::page))
        .route("/console/console.js", get(super::console::script))
        .route("/console/console.css", get(super::console::style))
        .route("/channels/{name}/webhook", any(channel_webhook))
        .route("/channels/{name}/webhook/{*rest}", any(channel_webhook))
        .route("/channels/{name}/{account}/webhook", any(channel_webhook))
        .route(
            "/channels/{name}/{account}/webhook/{*rest}",
            any(channel_webhook),
        )
        .merge(secured)
        .merge(super::control_ui_config::routes())
        .fallback(super::control_ui::serve)
        .layer(middleware::map_response(close_after_refused_body))
        .with_state(gw)
}

/// A request refused for its body (too large, too slow) may leave the body
/// unread, and the connection then closes after the answer: the answer says
/// so (`Connection: close`), or a client would send its next request on a
/// pooled connection that is closing and see it fail.
async fn close_after_refused_body(mut r: Response) -> Response {
    if matches!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    r
}

/// The bearer check as middleware (see [`authorized`]), behind the per-IP
/// auth-failure limiter: a blocked address gets 429 with `Retry-After`
/// without its secret being checked, and every failure is counted.
async fn require_auth(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(gw.config.auth_mode(), AuthMode::None) {
        return next.run(req).await;
    }
    let ip = remote.ip();
    if let Err(limited) = gw.auth_limiter.check(ip) {
        tracing::debug!(%remote, path = %req.uri().path(), "bearer auth refused: address blocked after auth failures");
        return auth_rate_limited(limited);
    }
    match authorized(&gw, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => {
            gw.auth_limiter.record_failure(ip, "http-bearer");
            r
        }
    }
}

/// 429 with `Retry-After` for an address blocked after auth failures.
fn auth_rate_limited(limited: super::auth_limit::Limited) -> Response {
    let secs = limited.retry_after_secs();
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"error": {
            "code": "AUTH_RATE_LIMITED",
            "message": format!("too many failed authentication attempts; retry after {secs}s"),
            "retryAfterMs": limited.retry_after_ms(),
        }})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
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

/// `/readyz`: [`super::readiness::check`]; a 503 names the reason.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let r = super::readiness::check(&gw);
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r.to_json())).into_response()
}

async fn metrics_text(State(gw): State<Arc<Gateway>>) -> Response {
    let handle = prometheus();
    let c = &gw.counters;
    metrics::gauge!("pincer_connections").set(gw.hub.len() as f64);
    metrics::gauge!("pincer_connections_preauth").set(gw.preauth.count() as f64);
    metrics::counter!("pincer_preauth_evicted_total").absolute(gw.preauth.evicted());
    let q = &gw.hub.queues;
    metrics::gauge!("pincer_ws_buffered_bytes").set(q.buffered.load(Ordering::Relaxed) as f64);
    metrics::gauge!("pincer_ws_buffered_bytes_high_water")
        .set(q.buffered_high_water.load(Ordering::Relaxed) as f64);
    metrics::gauge!("pincer_ws_frame_buffer_bytes")
        .set(c.ws_frame_buffers.load(Ordering::Relaxed) as f64);
    metrics::gauge!("pincer_ws_inflight_requests").set(q.inflight.load(Ordering::Relaxed) as f64);
    metrics::gauge!("pincer_ws_inflight_requests_high_water")
        .set(q.inflight_high_water.load(Ordering::Relaxed) as f64);
    for (name, v) in [
        ("pincer_connections_total", &c.connections_total),
        ("pincer_connections_refused_total", &c.connections_refused),
        ("pincer_frames_in_total", &c.frames_in),
        ("pincer_frames_out_total", &c.frames_out),
        ("pincer_handshakes_total", &c.handshakes),
        ("pincer_handshake_failures_total", &c.handshake_failures),
        ("pincer_ws_handovers_total", &c.handovers),
        ("pincer_ws_handovers_skipped_total", &c.handovers_skipped),
        ("pincer_handshake_timeouts_total", &c.handshake_timeouts),
        ("pincer_frames_too_large_total", &c.frames_too_large),
        ("pincer_frames_invalid_utf8_total", &c.frames_invalid_utf8),
        ("pincer_pong_barriers_total", &c.pong_barriers),
        (
            "pincer_pong_barrier_timeouts_total",
            &c.pong_barrier_timeouts,
        ),
        ("pincer_auth_failures_total", &gw.auth_limiter.failures),
        ("pincer_auth_rate_limited_total", &gw.auth_limiter.limited),
        (
            "pincer_response_overflows_total",
            &gw.hub.queues.response_overflows,
        ),
    ] {
        metrics::counter!(name).absolute(v.load(Ordering::Relaxed));
    }
    if let Some(cl) = gw.cluster.get() {
        let st = &cl.stats;
        metrics::gauge!("pincer_cluster_events_pending").set(cl.pending() as f64);
        for (name, v) in [
            ("pincer_cluster_events_published_total", &st.published),
            ("pincer_cluster_events_dropped_total", &st.dropped),
            ("pincer_cluster_events_written_total", &st.written),
            ("pincer_cluster_log_appends_total", &st.batches),
            ("pincer_cluster_events_delivered_total", &st.delivered),
        ] {
            metrics::counter!(name).absolute(v.load(Ordering::Relaxed));
        }
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
        if let Some(o) = p.outbound {
            for (metric, v) in [
                ("pincer_plugin_http_requests_total", o.requests),
                ("pincer_plugin_http_rate_limited_total", o.rate_limited),
                (
                    "pincer_plugin_http_secrets_refused_total",
                    o.secrets_refused,
                ),
                ("pincer_plugin_http_too_large_total", o.responses_too_large),
            ] {
                metrics::counter!(metric, "plugin" => name.clone()).absolute(v);
            }
        }
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
    for (code, n) in gw.runtime.channels.sockets().closes_by_code() {
        metrics::counter!("pincer_socket_closes_total", "code" => code.to_string()).absolute(n);
    }
    for runner in gw.runtime.channels.all() {
        let sockets = runner.sockets().totals();
        let channel = runner.name().to_string();
        metrics::gauge!("pincer_socket_sessions", "channel" => channel.clone())
            .set(sockets.sessions as f64);
        metrics::counter!("pincer_socket_frames_in_total", "channel" => channel.clone())
            .absolute(sockets.frames_in);
        metrics::counter!("pincer_socket_frames_out_total", "channel" => channel)
            .absolute(sockets.frames_out);
        let stats = runner.verify_stats();
        for reason in crate::channels::verify::Reason::ALL {
            metrics::counter!(
                "pincer_channel_webhook_rejected_total",
                "channel" => runner.name().to_string(),
                "reason" => reason.as_str()
            )
            .absolute(stats.get(reason));
        }
    }
    metrics::gauge!("pincer_runs_active").set(gw.runs.active_count() as f64);
    let runs = gw.runs.counts();
    metrics::gauge!("pincer_runs_running").set(runs.running as f64);
    metrics::gauge!("pincer_runs_queued").set((runs.queued + runs.waiting) as f64);
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

/// `?accountId=` of the `/v1/channels/{name}/...` routes (alias `account`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountQuery {
    /// The channel account (default: `default`).
    #[serde(default, alias = "account")]
    pub account_id: Option<String>,
}

async fn channel_action(
    State(gw): State<Arc<Gateway>>,
    Path((name, action)): Path<(String, String)>,
    Query(q): Query<AccountQuery>,
) -> Response {
    match methods::plugins::channel_action(&gw, &name, q.account_id.as_deref(), &action).await {
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

/// `POST /v1/config/reload`: 200 with what changed; 422 naming what is
/// wrong when the file is refused (nothing changed); 409 without a file.
async fn reload_config(State(gw): State<Arc<Gateway>>) -> Response {
    use methods::config::{ReloadRefused, error_shape, reload};
    match reload(&gw).await {
        Ok(report) => Json(report).into_response(),
        Err(refused) => {
            let status = match refused {
                ReloadRefused::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                ReloadRefused::NoFile => StatusCode::CONFLICT,
            };
            error(status, error_shape(&refused).message)
        }
    }
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
    let account = params
        .iter()
        .find(|(k, _)| k == "account")
        .map(|(_, v)| v.clone());
    // Another account's route: `/channels/{name}/{account}/webhook`.
    let key = match &account {
        None => name.clone(),
        Some(a) if crate::channels::account::valid_id(a) => {
            crate::channels::account::key(&name, Some(a))
        }
        Some(_) => return error(StatusCode::NOT_FOUND, "no such channel account"),
    };
    if account.is_some()
        && gw.runtime.channels.get(&key).is_none()
        && gw.runtime.plugins.info(&name).is_some()
    {
        return error(StatusCode::NOT_FOUND, "no such channel account");
    }
    let rest = params
        .iter()
        .find(|(k, _)| k == "rest")
        .map(|(_, v)| format!("/{v}"))
        .unwrap_or_else(|| "/".into());
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    if !gw
        .runtime
        .channels
        .push_allowed(&name, peer.map(|p| p.ip()))
    {
        tracing::warn!(channel = %name, remote = ?peer, "push to a test channel from a non-loopback peer refused");
        return error(
            StatusCode::FORBIDDEN,
            format!("channel {name:?} is a test channel and accepts pushes only from loopback"),
        );
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    // A declared length over the cap is refused before a byte of the body
    // is read (as the framework's body limit does on `/v1`).
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_WEBHOOK_BODY as u64) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "webhook body too large");
    }
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
        verified: None,
    };
    match gw.runtime.channels.webhook_from(&key, request, peer).await {
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
        // Refused by host-side verification (already counted and logged
        // with the reason): a short constant body, no detail.
        Err(ChannelError::Rejected { rejection, .. }) => {
            let reason = rejection.reason;
            let status = StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::FORBIDDEN);
            let mut r = error(status, reason.public_message());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
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
            tracing::info!(channel = %key, reference = %reference, error = %e, "webhook for an unavailable channel");
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
        // The plugin refused the request itself as permanently bad (not
        // its payload shape, say): a 4xx, so the platform does not retry
        // it for ever.
        Err(
            e @ ChannelError::Call {
                error:
                    crate::plugins::CallError::Plugin {
                        error:
                            crate::plugins::PluginError::Permanent { .. }
                            | crate::plugins::PluginError::Unsupported { .. },
                        ..
                    },
                ..
            },
        ) => {
            let reference = public_error::new_ref();
            tracing::info!(channel = %key, reference = %reference, error = %e, "webhook refused by the channel");
            public_error::response(
                StatusCode::BAD_REQUEST,
                "REFUSED",
                "the channel refused this request",
                &reference,
            )
        }
        Err(e) => {
            let reference = public_error::new_ref();
            tracing::warn!(channel = %key, reference = %reference, error = %e, "webhook failed");
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
