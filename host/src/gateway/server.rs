//! The listener: one port for HTTP (axum routes served by
//! [`super::listener`], behind [`super::http_guard`]) and the WebSocket
//! protocol (any path with an `Upgrade: websocket` header), plus the
//! gateway's periodic tasks (`tick`, health refresh) and the channel
//! inbound handler (installed before the first task).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{info, warn};

use super::conn::{self, Peer};
use super::frame_guard::FrameGuard;
use super::hub::{Audience, Broadcast};
use super::listener::{self, HttpLimits};
use super::ws_stream::{WsLimits, WsStream};
use super::{Gateway, fdlimit, handover, http_api, http_guard, inbound, now_ms, runtime_events};
use crate::protocol::MAX_PREAUTH_PAYLOAD;

/// Serve `gw` on `listener` until `shutdown` resolves; then run the
/// gateway's shutdown (the `shutdown` event, in-flight runs finished or
/// persisted, sockets closed with 1012) and return.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    // Install the metrics recorder before the first request is timed.
    let _ = http_api::prometheus();
    let fd_limit = fdlimit::current();
    let max_sockets = fdlimit::socket_cap(fd_limit, gw.config.reserved_fds, gw.config.max_sockets);
    info!(%addr, auth = gw.config.auth_mode().name(), max_sockets, fd_limit, "gateway listening");
    let background = spawn_background(&gw);
    // The guard runs first (outermost), before the upgrade and the routes.
    let app = http_api::router(gw.clone())
        .layer(middleware::from_fn_with_state(gw.clone(), upgrade_any_path))
        .layer(middleware::from_fn_with_state(
            gw.clone(),
            http_guard::guard,
        ));
    let ms = |v: u64| Duration::from_millis(v.max(1));
    let limits = HttpLimits {
        header_timeout: ms(gw.config.http_header_timeout_ms),
        body_timeout: ms(gw.config.http_body_timeout_ms),
        idle_timeout: ms(gw.config.http_idle_timeout_ms),
        max_sockets,
    };
    let open = Arc::new(Semaphore::new(max_sockets));
    let gate: Arc<dyn listener::AcceptGate> = Arc::new(AcceptByIp(gw.clone()));
    let _ = gw.control.set(tokio::runtime::Handle::current());
    let edge = EdgeRuntime(Some(edge_runtime(&gw)?));
    let edge_handle = edge.handle();
    // Accepting runs on the edge runtime: the listening socket and every
    // accepted one are registered with the edge runtime's I/O driver, and
    // refusals at accept are decided there. Authenticated WebSockets move
    // back here with their socket (`handover`).
    let listener = listener.into_std()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = edge_handle.clone();
    let accepting = edge_handle.spawn(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return Err(anyhow::anyhow!("registering the listener: {e}")),
        };
        listener::serve(listener, app, limits, open, gate, handle, async move {
            let _ = stop_rx.await;
        })
        .await;
        Ok(())
    });
    // The gateway's shutdown runs here, on the control runtime, while the
    // edge runtime still accepts (new sockets are refused by the shutting
    // down gateway); then accepting stops and the open HTTP connections
    // finish.
    let mut accepting = std::pin::pin!(accepting);
    let result = tokio::select! {
        _ = shutdown => {
            gw.shutdown("service restart").await;
            let _ = stop_tx.send(());
            accepting.await
        }
        r = &mut accepting => r,
    };
    drop(edge);
    for t in background {
        t.abort();
    }
    match result {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("the accept loop failed: {e}")),
    }
}

/// The edge runtime: accepting, HTTP requests and WebSocket handshakes, at
/// lower OS priority (`edge_nice`) than the runtime authenticated
/// connections run on, so a flood of unauthenticated work yields the CPU
/// (and the control runtime's I/O driver) to operators.
fn edge_runtime(gw: &Gateway) -> anyhow::Result<tokio::runtime::Runtime> {
    let nice = gw.config.edge_nice;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(gw.config.edge_threads.max(1))
        .thread_name("pincer-edge")
        .on_thread_start(move || crate::plugins::nice::lower_current_thread_or_warn(nice))
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the edge runtime: {e}"))
}

/// The edge runtime, shut down without waiting for its tasks when dropped
/// (also when [`serve`] is cancelled: dropping a runtime inside an async
/// context would panic).
struct EdgeRuntime(Option<tokio::runtime::Runtime>);

impl EdgeRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for EdgeRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The gateway's per-address limits, checked at accept.
struct AcceptByIp(Arc<Gateway>);

impl listener::AcceptGate for AcceptByIp {
    fn refusal(&self, ip: std::net::IpAddr) -> Option<Duration> {
        self.0.accept_refusal(ip)
    }
}

fn spawn_background(gw: &Arc<Gateway>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let g = gw.clone();
    tasks.push(tokio::spawn(async move {
        let period = Duration::from_millis(g.config.tick_interval_ms.max(10));
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            g.broadcast(&Broadcast {
                name: "tick",
                payload: json!({ "ts": now_ms() }),
                scope: None,
                droppable: false,
                audience: Audience::All,
                state_version: None,
            });
        }
    }));
    let g = gw.clone();
    tasks.push(tokio::spawn(async move {
        let period = Duration::from_secs(60);
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            every.tick().await;
            g.health_changed().await;
        }
    }));
    tasks.push(runtime_events::spawn(gw));
    inbound::install(gw);
    tasks
}

fn is_upgrade(req: &Request) -> bool {
    let has = |name: header::HeaderName, want: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(want)))
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// The HTTP answer to an upgrade that admission control refused: 429 for
/// per-address limits, 503 otherwise, both with `Retry-After`.
fn refuse_upgrade(gw: &Gateway, remote: SocketAddr, why: &'static str) -> Response {
    gw.counters
        .connections_refused
        .fetch_add(1, Ordering::Relaxed);
    warn!(%remote, why, "refusing WebSocket connection");
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    if why.contains("rate") || why.contains("this address") {
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    }
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// Route WebSocket upgrades on any path to the protocol; everything else
/// to the HTTP API.
async fn upgrade_any_path(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    if !is_upgrade(&req) {
        return next.run(req).await;
    }
    let slot = match gw.admit(remote.ip()) {
        Ok(slot) => slot,
        Err(why) => return refuse_upgrade(&gw, remote, why),
    };
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key").into_response();
    };
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v != "13")
    {
        return (StatusCode::BAD_REQUEST, "unsupported WebSocket version").into_response();
    }
    let header_str = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let peer = Peer {
        remote,
        origin: header_str(header::ORIGIN),
        host: header_str(header::HOST),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max_payload = gw.config.max_payload;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                warn!(%remote, error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        // No buffer is held while the connection idles (`ws_stream`).
        // `max_payload` limits frames and messages; until `hello-ok` the
        // frame guard below enforces the 64 KiB pre-auth limit on frame
        // headers, before any payload is buffered.
        let limits = WsLimits {
            max_frame: max_payload,
            max_message: max_payload,
        };
        let (guarded, lift) = FrameGuard::new(TokioIo::new(upgraded), MAX_PREAUTH_PAYLOAD);
        let mut ws = WsStream::with_gauge(guarded, limits, gw.counters.ws_frame_buffers.clone());
        let preauth = conn::Preauth { slot, lift };
        let authed = match conn::authenticate(gw.clone(), &mut ws, &peer, preauth).await {
            Ok(a) => a,
            Err(conn::NotAdmitted::Violation) => return handover::close_without_linger(ws),
            Err(conn::NotAdmitted::Closed) => return,
        };
        // Authenticated: continue on the control runtime with the socket,
        // apart from the edge runtime's unauthenticated work. The
        // handshake's task ends here: its state is not kept for the
        // connection's life.
        handover::continue_on_control(gw, ws, authed).await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}
