//! One WebSocket connection: the `connect.challenge` handshake (protocol
//! negotiation, origin check, shared and device auth, pairing), then the
//! request loop, with a writer task draining the connection's queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, warn};

use super::auth::{self, AuthMode};
use super::frame_guard::{self, Lift};
use super::hub::{Broadcast, Conn, ConnLimits, ConnReceiver, Outgoing};
use super::methods::{self, Ctx};
use super::ping_barrier::PingBarriers;
use super::preauth::PreauthSlot;
use super::{Gateway, now_ms};
use crate::protocol::connect::{
    ConnectParams, Features, HelloAuth, HelloOk, Policy, ServerInfo, Snapshot, client_meta,
};
use crate::protocol::errors::{ErrorShape, code};
use crate::protocol::frames::{ClientFrame, EventFrame, FrameError, Response};
use crate::protocol::{self, MAX_PREAUTH_PAYLOAD, close_reason, device, negotiate, scopes};
use crate::store::{DeviceRecord, PairRequest};

/// What the HTTP upgrade saw.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Remote address.
    pub remote: SocketAddr,
    /// `Origin` header (browsers).
    pub origin: Option<String>,
    /// `Host` header.
    pub host: Option<String>,
}

/// What a socket holds until its handshake succeeds: its pre-auth slot
/// (released when it joins the hub) and the switch that lifts the 64 KiB
/// frame limit (at `hello-ok`).
#[derive(Debug)]
pub struct Preauth {
    /// The slot counted toward `max_preauth` and `max_connections`.
    pub slot: PreauthSlot,
    /// Lifts the pre-auth frame guard.
    pub lift: Lift,
}

type Ws<S> = super::ws_stream::WsStream<S>;

/// How a read error closes the socket: 1009 for a frame or message over
/// the limit, 1007 for invalid UTF-8 text, 1002 for other protocol
/// violations; `None` when the peer simply went away.
fn read_error_close(gw: &Gateway, e: &WsError) -> Option<(u16, &'static str)> {
    if frame_guard::is_too_large(e) || matches!(e, WsError::Capacity(_)) {
        gw.counters.frames_too_large.fetch_add(1, Ordering::Relaxed);
        return Some((1009, "payload too large"));
    }
    match e {
        WsError::Utf8(_) => {
            gw.counters
                .frames_invalid_utf8
                .fetch_add(1, Ordering::Relaxed);
            Some((1007, "invalid utf-8"))
        }
        WsError::Protocol(p)
            if !matches!(
                p,
                tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
            ) =>
        {
            Some((1002, "protocol error"))
        }
        _ => None,
    }
}

/// After closing on a read error: read and discard what the peer still
/// sends (bounded in time and bytes, never buffered), so the socket ends
/// with a FIN rather than a reset that could destroy our close frame. The
/// bound is small: a flood of refused sockets must not buy reading work
/// (`pincer bench attack`: 4 MiB per refusal cost the healthy client).
async fn drain_raw<S: AsyncRead + Unpin>(io: &mut S) {
    // On the heap, only while draining: an array here would be part of
    // every connection task's state for its whole life.
    let mut scratch = vec![0u8; 8 * 1024];
    let mut left: usize = 256 << 10;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: close_reason(reason).into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(Some(frame))).await;
}

async fn send_text<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>, text: String) -> bool {
    tokio::time::timeout(Duration::from_secs(10), ws.send(Message::Text(text.into())))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// A handshake failure: the response to send (if any) and the close.
struct Refusal {
    response: Option<Response>,
    code: u16,
    reason: String,
    /// The refusal came from a read error: drain before dropping.
    drain: bool,
    /// A protocol violation counted toward the address's block
    /// ([`Gateway::record_violation`]).
    violation: Option<&'static str>,
    /// After the close, the socket may linger to drain what the peer still
    /// sends ([`NotAdmitted::Closed`]); otherwise it is closed at once
    /// ([`NotAdmitted::Violation`]).
    linger: bool,
}

impl Refusal {
    /// A refused request: its error response, then the close; the socket
    /// lingers.
    fn reply(id: &str, error: ErrorShape, code: u16) -> Self {
        let reason = error.message.clone();
        Refusal {
            response: Some(Response::err(id, error)),
            code,
            reason,
            drain: false,
            violation: None,
            linger: true,
        }
    }

    /// A protocol violation (`what`, counted toward the address's block):
    /// the close, a bounded drain first if `drain`, and no lingering.
    fn violation(code: u16, reason: impl Into<String>, what: &'static str, drain: bool) -> Self {
        Refusal {
            response: None,
            code,
            reason: reason.into(),
            drain,
            violation: Some(what),
            linger: false,
        }
    }

    /// Evicted from a full pre-auth table for a newer socket: closed with
    /// 1013 (try again later) and no lingering (in a flood, that would be
    /// the flood's work); not a violation.
    fn evicted() -> Self {
        Refusal {
            response: None,
            code: EVICTED,
            reason: "too many unauthenticated connections".into(),
            drain: false,
            violation: None,
            linger: false,
        }
    }
}

/// The outcome of a successful handshake.
struct Admitted {
    conn: Arc<Conn>,
    rx: ConnReceiver,
    /// The cluster cursor to resume after, if the client gave one.
    resume: Option<i64>,
}

/// The first frame's outcome before it is parsed.
enum FirstFrame {
    Text(String),
    Gone,
}

/// A connection whose handshake succeeded (its `hello-ok` is queued), not
/// yet serving requests: [`Authenticated::serve`] runs it, on whichever
/// runtime the caller chooses (the hand-over to the control runtime
/// happens in between, [`super::handover`]).
pub struct Authenticated {
    gw: Arc<Gateway>,
    admitted: Admitted,
    slot: PreauthSlot,
}

impl Authenticated {
    /// The connection's id.
    pub fn conn_id(&self) -> &str {
        &self.admitted.conn.id
    }

    /// The connected phase: requests in, queue out, until the socket
    /// closes. `ws` is the handshake's stream, or the same connection
    /// rebuilt from its parts over another socket object.
    pub async fn serve<S>(self, ws: Ws<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        run(self.gw, ws, self.admitted, self.slot).await
    }
}

/// How a handshake ended without a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// The peer went away, or was refused (auth, origin, a bad first
    /// request): its socket may linger to drain what the peer still sends.
    Closed,
    /// Refused for a pre-auth protocol violation (an oversize or broken
    /// frame, the handshake deadline) or evicted from a full pre-auth table
    /// for a newer socket: what was to be read is drained
    /// (bounded) and the socket is closed without lingering, so a flood of
    /// violators buys no more reading work.
    Violation,
}

/// Run the handshake of one upgraded WebSocket: the challenge, the
/// `connect` frame, auth and `hello-ok`. `Ok` when it succeeded (the
/// `hello-ok` is queued, not yet written; nothing after the `connect`
/// frame has been handled, though it may be buffered in `ws`); otherwise
/// the socket was refused (and sent its close) or went away. `preauth` is released
/// when the connection joins the hub; the handshake has one absolute
/// deadline (`handshake_timeout_ms` from now).
pub async fn authenticate<S>(
    gw: Arc<Gateway>,
    ws: &mut Ws<S>,
    peer: &Peer,
    preauth: Preauth,
) -> Result<Authenticated, NotAdmitted>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    gw.counters
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_millis(gw.config.handshake_timeout_ms);
    let nonce = uuid::Uuid::new_v4().to_string();
    let challenge = json!({ "nonce": nonce, "ts": now_ms() });
    let text = EventFrame::new("connect.challenge", Some(&challenge), None, None).to_text();
    let sent = tokio::time::timeout_at(deadline, ws.send(Message::Text(text.into()))).await;
    if !sent.is_ok_and(|r| r.is_ok()) {
        return Err(NotAdmitted::Closed);
    }
    let admitted = match handshake(&gw, ws, peer, &nonce, deadline, &preauth).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(NotAdmitted::Closed),
        Err(r) => {
            gw.counters
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            debug!(remote = %peer.remote, reason = %r.reason, "handshake refused");
            // A now-blocked address gets its close frame but no drain: what
            // it still sends is not read (its close may end in a reset).
            let blocked = r
                .violation
                .is_some_and(|what| gw.record_violation(peer.remote.ip(), what));
            if let Some(resp) = r.response {
                send_text(ws, resp.to_text()).await;
            }
            close(ws, r.code, &r.reason).await;
            if r.drain && !blocked {
                drain_raw(ws.get_mut()).await;
            }
            return Err(if r.linger {
                NotAdmitted::Closed
            } else {
                NotAdmitted::Violation
            });
        }
    };
    gw.counters.handshakes.fetch_add(1, Ordering::Relaxed);
    Ok(Authenticated {
        gw,
        admitted,
        slot: preauth.slot,
    })
}

/// The close code of a pre-auth socket evicted for a newer one: 1013, "try
/// again later" (RFC 6455 registry).
const EVICTED: u16 = 1013;

/// Read the first text frame before `deadline` (pings and pongs are
/// answered but do not extend it), unless the socket's pre-auth slot is
/// evicted for a newer socket first (closed with 1013, try again later).
async fn first_frame<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    ws: &mut Ws<S>,
    peer: &Peer,
    deadline: Instant,
    slot: &PreauthSlot,
) -> Result<FirstFrame, Refusal> {
    loop {
        let next = tokio::select! {
            biased;
            r = tokio::time::timeout_at(deadline, ws.next()) => r,
            _ = slot.evicted() => {
                debug!(remote = %peer.remote, "pre-auth socket evicted for a newer one");
                return Err(Refusal::evicted());
            }
        };
        let msg = match next {
            Err(_) => {
                gw.counters
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                debug!(remote = %peer.remote, "handshake timeout");
                // The reference closes a handshake timeout with 1000 and no
                // reason.
                return Err(Refusal::violation(
                    1000,
                    String::new(),
                    "handshake timeout",
                    false,
                ));
            }
            Ok(None) => return Ok(FirstFrame::Gone),
            Ok(Some(Err(e))) => {
                return match read_error_close(gw, &e) {
                    Some((1009, _)) => Err(too_large()),
                    Some((code, reason)) => {
                        Err(Refusal::violation(code, reason, "broken frame", true))
                    }
                    None => Ok(FirstFrame::Gone),
                };
            }
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(t) => {
                if t.len() > MAX_PREAUTH_PAYLOAD {
                    return Err(too_large());
                }
                return Ok(FirstFrame::Text(t.to_string()));
            }
            Message::Binary(b) => {
                if b.len() > MAX_PREAUTH_PAYLOAD {
                    return Err(too_large());
                }
                return Err(invalid_frame());
            }
            Message::Close(_) => return Ok(FirstFrame::Gone),
            _ => continue,
        }
    }
}

/// Read and check the first frame; `Ok(None)` when the peer went away.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Arc<Gateway>,
    ws: &mut Ws<S>,
    peer: &Peer,
    nonce: &str,
    deadline: Instant,
    preauth: &Preauth,
) -> Result<Option<Admitted>, Refusal> {
    let lift = &preauth.lift;
    let text = match first_frame(gw, ws, peer, deadline, &preauth.slot).await? {
        FirstFrame::Text(t) => t,
        FirstFrame::Gone => return Ok(None),
    };
    gw.counters.frames_in.fetch_add(1, Ordering::Relaxed);
    let req = match ClientFrame::parse(&text) {
        Ok(ClientFrame::Req(r)) => r,
        Ok(ClientFrame::Cancel { .. }) | Err(FrameError::Json(_)) => return Err(invalid_frame()),
        Err(FrameError::Invalid {
            id: Some(id),
            reason,
        }) => {
            return Err(Refusal::reply(
                &id,
                ErrorShape::invalid(format!("invalid request frame: {reason}")),
                1008,
            ));
        }
        Err(FrameError::Invalid { id: None, .. }) => return Err(invalid_frame()),
    };
    if req.method != "connect" {
        return Err(Refusal::reply(
            &req.id,
            ErrorShape::invalid("invalid handshake: first request must be connect"),
            1008,
        ));
    }
    let params = ConnectParams::parse(&req.params).map_err(|e| {
        Refusal::reply(
            &req.id,
            ErrorShape::invalid(format!("invalid connect params: {e}")),
            1008,
        )
    })?;
    let Some(protocol) = negotiate(params.min_protocol, params.max_protocol) else {
        let error = ErrorShape::invalid("protocol mismatch").with_details(json!({
            "code": "PROTOCOL_MISMATCH",
            "clientMinProtocol": params.min_protocol,
            "clientMaxProtocol": params.max_protocol,
            "expectedProtocol": protocol::SUPPORTED_PROTOCOLS[1],
            "minimumProbeProtocol": protocol::SUPPORTED_PROTOCOLS[0],
        }));
        return Err(Refusal::reply(&req.id, error, 1002));
    };
    let role = params.role().to_string();
    if role != "operator" && role != "node" {
        return Err(Refusal::reply(
            &req.id,
            ErrorShape::invalid("invalid role"),
            1008,
        ));
    }
    check_origin(gw, peer).map_err(|e| Refusal::reply(&req.id, e, 1008))?;

    // A blocked address gets no secret check at all (no oracle).
    let ip = peer.remote.ip();
    if let Err(limited) = gw.auth_limiter.check(ip) {
        debug!(remote = %peer.remote, retry_after_ms = limited.retry_after_ms(), "connect refused: address blocked after auth failures");
        return Err(Refusal::reply(&req.id, rate_limited(limited), 1008));
    }

    // Shared secret first, then a device token.
    let supplied = params.auth.clone().unwrap_or_default();
    let shared_ok = match gw.config.auth_mode() {
        AuthMode::None => true,
        AuthMode::Token(t) => supplied
            .token
            .as_deref()
            .is_some_and(|s| auth::secret_eq(s, &t)),
        AuthMode::Password(p) => supplied
            .password
            .as_deref()
            .is_some_and(|s| auth::secret_eq(s, &p)),
    };
    let now = now_ms();
    let mut device_scopes: Option<Vec<String>> = None;
    let mut device_key: Option<Vec<u8>> = None;
    if params.device.is_some() {
        let key = device::verify(&params, nonce, now).map_err(|e| {
            Refusal::reply(
                &req.id,
                ErrorShape::device_auth(e.code, e.reason, e.message),
                1008,
            )
        })?;
        device_key = Some(key);
        if !shared_ok {
            let dev = params
                .device
                .as_ref()
                .map(|d| d.id.clone())
                .unwrap_or_default();
            for candidate in [&supplied.device_token, &supplied.token]
                .into_iter()
                .flatten()
            {
                if let Ok(Some(s)) =
                    gw.sessions
                        .check_device_token(&dev, &role, &auth::token_hash(candidate))
                {
                    device_scopes = Some(s);
                    break;
                }
            }
        }
    }
    if !shared_ok && device_scopes.is_none() {
        gw.auth_limiter.record_failure(ip, "ws-connect");
        return Err(Refusal::reply(
            &req.id,
            auth_error(&gw.config.auth_mode(), &supplied),
            1008,
        ));
    }
    let granted: Vec<String> = match &device_scopes {
        None => params.scopes.clone(),
        Some(allowed) if params.scopes.is_empty() => allowed.clone(),
        Some(allowed) => params
            .scopes
            .iter()
            .filter(|s| allowed.contains(s) || allowed.iter().any(|a| a == scopes::ADMIN))
            .cloned()
            .collect(),
    };

    // Pairing: a verified device is approved when the connection proved the
    // shared secret or comes from loopback; otherwise it waits for an
    // operator's `device.pair.approve`.
    let mut hello_auth = HelloAuth {
        role: role.clone(),
        scopes: granted.clone(),
        device_token: None,
        issued_at_ms: None,
    };
    if let (Some(d), Some(_key)) = (&params.device, &device_key) {
        let paired = gw.sessions.get_device(&d.id).ok().flatten();
        if paired.is_none() {
            if shared_ok || peer.remote.ip().is_loopback() {
                let rec = DeviceRecord {
                    device_id: d.id.clone(),
                    public_key: d.public_key.clone(),
                    roles: vec![role.clone()],
                    scopes: granted.clone(),
                    meta: client_meta(&params),
                    approved_ms: now,
                };
                if let Err(e) = gw.sessions.put_device(&rec) {
                    warn!(error = %e, "storing paired device");
                }
            } else {
                let request_id = uuid::Uuid::new_v4().to_string();
                let mut meta = client_meta(&params);
                meta.insert("remoteIp".into(), json!(peer.remote.ip().to_string()));
                let pr = PairRequest {
                    request_id: request_id.clone(),
                    device_id: d.id.clone(),
                    public_key: d.public_key.clone(),
                    role: role.clone(),
                    scopes: params.scopes.clone(),
                    meta,
                    ts: now,
                };
                let _ = gw.sessions.put_pair_request(&pr);
                gw.broadcast(&Broadcast {
                    name: "device.pair.requested",
                    payload: methods::devices::pair_request_json(&pr),
                    scope: Some(scopes::PAIRING),
                    droppable: false,
                    audience: super::hub::Audience::All,
                    state_version: None,
                });
                let error = ErrorShape::new(code::NOT_PAIRED, "pairing required").with_details(
                    json!({"code":"PAIRING_REQUIRED","requestId":request_id,"reason":"not-paired"}),
                );
                return Err(Refusal::reply(&req.id, error, 1008));
            }
        }
        let token = auth::new_token();
        if gw
            .sessions
            .put_device_token(&d.id, &role, &auth::token_hash(&token), &granted, now)
            .is_ok()
        {
            hello_auth.device_token = Some(token);
            hello_auth.issued_at_ms = Some(now);
        }
    }

    let conn_id = uuid::Uuid::new_v4().to_string();
    let presence = (params.client.mode != "cli" && params.client.mode != "probe").then(|| {
        let mut p = client_meta(&params);
        p.remove("clientId");
        p.remove("clientMode");
        p.insert("mode".into(), json!(params.client.mode));
        p.insert(
            "host".into(),
            json!(
                params
                    .client
                    .display_name
                    .clone()
                    .unwrap_or_else(|| params.client.id.clone())
            ),
        );
        p.insert("ip".into(), json!(peer.remote.ip().to_string()));
        p.insert("roles".into(), json!([role]));
        p.insert("scopes".into(), json!(granted));
        p.insert("reason".into(), json!("connect"));
        p.insert("ts".into(), json!(now));
        if let Some(d) = &params.device {
            p.insert("deviceId".into(), json!(d.id));
        }
        if let Some(i) = &params.client.instance_id {
            p.insert("instanceId".into(), json!(i));
        }
        Value::Object(p)
    });
    let is_admin = granted.iter().any(|s| s == scopes::ADMIN);
    let (conn, rx) = Conn::new(
        conn_id.clone(),
        protocol,
        role,
        granted,
        params.caps.iter().any(|c| c == "tool-events"),
        presence,
        peer.remote,
        ConnLimits {
            max_buffered: gw.config.max_buffered_bytes,
            max_inflight: gw.config.max_inflight_requests,
        },
        gw.hub.queues.clone(),
    );
    let hello = HelloOk {
        kind: "hello-ok",
        protocol,
        server: ServerInfo {
            version: super::VERSION.to_string(),
            conn_id,
        },
        features: Features {
            methods: methods::METHODS.to_vec(),
            events: methods::EVENTS.to_vec(),
        },
        snapshot: Snapshot {
            presence: {
                let mut p = gw.presence();
                if let Some(me) = &conn.presence {
                    p.push(me.clone());
                }
                p
            },
            health: gw.snapshot_health().await,
            state_version: gw.state_version(),
            uptime_ms: gw.uptime_ms(),
            session_defaults: gw.session_defaults(),
            auth_mode: is_admin.then(|| gw.config.auth_mode().name()),
        },
        auth: hello_auth,
        policy: Policy {
            max_payload: gw.config.max_payload,
            max_buffered_bytes: gw.config.max_buffered_bytes,
            tick_interval_ms: gw.config.tick_interval_ms,
        },
    };
    let payload = serde_json::to_value(&hello).unwrap_or(Value::Null);
    // Authenticated: frames up to `max_payload` from here on.
    lift.lift();
    conn.respond(Response::ok(&req.id, payload).to_text());
    debug!(conn = %conn.id, client = %params.client.id, mode = %params.client.mode, protocol, remote = %peer.remote, "connected");
    let resume = params.resume.as_ref().map(|r| r.after);
    conn.set_cursors(resume.is_some() || params.caps.iter().any(|c| c == "event-cursor"));
    Ok(Some(Admitted { conn, rx, resume }))
}

/// A frame over the pre-auth limit: a violation, drained.
fn too_large() -> Refusal {
    Refusal::violation(1009, "preauth payload too large", "oversize frame", true)
}

/// A first frame that is not a request: refused like a bad request (not a
/// violation; the socket lingers).
fn invalid_frame() -> Refusal {
    Refusal {
        response: None,
        code: 1008,
        reason: "invalid request frame".into(),
        drain: false,
        violation: None,
        linger: true,
    }
}

/// The `connect` answer while the address is blocked after auth failures.
fn rate_limited(limited: super::auth_limit::Limited) -> ErrorShape {
    let secs = limited.retry_after_secs();
    let mut e = ErrorShape::auth(
        "AUTH_RATE_LIMITED",
        &format!("too many failed authentication attempts; retry after {secs}s"),
        "wait_then_retry",
    )
    .retry_after(limited.retry_after_ms());
    if let Some(d) = e.details.as_mut() {
        d["retryAfterMs"] = json!(limited.retry_after_ms());
    }
    e
}

fn auth_error(mode: &AuthMode, supplied: &crate::protocol::connect::ConnectAuth) -> ErrorShape {
    match mode {
        AuthMode::Password(_) if supplied.password.is_none() => ErrorShape::auth(
            "AUTH_PASSWORD_MISSING",
            "gateway password missing (set auth.password)",
            "update_auth_configuration",
        ),
        AuthMode::Password(_) => ErrorShape::auth(
            "AUTH_PASSWORD_MISMATCH",
            "gateway password mismatch",
            "update_auth_credentials",
        ),
        _ if supplied.token.is_none() && supplied.device_token.is_none() => ErrorShape::auth(
            "AUTH_TOKEN_MISSING",
            "gateway token missing (set auth.token)",
            "update_auth_configuration",
        ),
        _ => ErrorShape::auth(
            "AUTH_TOKEN_MISMATCH",
            "gateway token mismatch",
            "update_auth_credentials",
        ),
    }
}

/// Browsers send `Origin`: check it against the gateway's one origin policy.
fn check_origin(gw: &Gateway, peer: &Peer) -> Result<(), ErrorShape> {
    let Some(origin) = peer.origin.as_deref() else {
        return Ok(());
    };
    // The same policy as the upgrade's check (`http_guard`), kept here as a
    // second layer with the OpenClaw error shape.
    let host = peer.host.as_deref().unwrap_or("");
    if super::http_guard::origin_allowed(&gw.config, host, origin) {
        return Ok(());
    }
    Err(
        ErrorShape::invalid(format!("origin not allowed ({origin})"))
            .with_details(json!({"code": "CONTROL_UI_ORIGIN_NOT_ALLOWED"})),
    )
}

/// The connected phase: requests in, queue out.
async fn run<S>(gw: Arc<Gateway>, ws: Ws<S>, admitted: Admitted, slot: PreauthSlot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Admitted { conn, rx, resume } = admitted;
    let (sink, mut stream) = ws.split();
    gw.join(conn.clone(), resume);
    drop(slot);
    if conn.presence.is_some() {
        gw.presence_changed();
    }
    let writer = tokio::spawn(write_loop(gw.clone(), conn.clone(), rx, sink));
    let ctx = Ctx {
        gw: gw.clone(),
        conn: conn.clone(),
    };
    let mut read_failed = false;
    loop {
        let msg = tokio::select! {
            _ = conn.kill.cancelled() => break,
            m = stream.next() => m,
        };
        let text = match msg {
            Some(Err(e)) => {
                if let Some((code, reason)) = read_error_close(&gw, &e) {
                    debug!(conn = %conn.id, remote = %conn.remote, code, error = %e, "closing on a bad frame");
                    conn.close(code, reason);
                    read_failed = true;
                }
                break;
            }
            None => break,
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Pong(payload))) => {
                conn.pong(&payload, &gw.counters.pong_barriers);
                continue;
            }
            Some(Ok(_)) => continue,
        };
        gw.counters.frames_in.fetch_add(1, Ordering::Relaxed);
        match ClientFrame::parse(&text) {
            // Boxed: the handlers' state is allocated while a request is
            // handled, not held in this task while the connection idles.
            Ok(ClientFrame::Req(req)) => Box::pin(methods::handle(&ctx, req)).await,
            Ok(ClientFrame::Cancel { id }) => {
                let run = conn
                    .pending_runs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .cloned();
                if let Some(run_id) = run {
                    gw.runs.abort(&run_id, "rpc");
                }
            }
            // Not JSON: logged and ignored, the socket stays open.
            Err(FrameError::Json(e)) => {
                debug!(conn = %conn.id, error = %e, "ignoring non-JSON frame")
            }
            Err(FrameError::Invalid { id, reason }) => {
                conn.respond(
                    Response::err(
                        id.unwrap_or_else(|| "invalid".into()),
                        ErrorShape::invalid(format!("invalid request frame: {reason}")),
                    )
                    .to_text(),
                );
            }
        }
    }
    let was_listed = gw.hub.remove(&conn.id);
    if conn.close_reason().is_none() {
        conn.close(1000, "");
    }
    if conn.presence.is_some() && was_listed {
        gw.presence_changed();
    }
    // The writer sends the close frame (with a bound) and ends.
    let sink = writer.await.ok().flatten();
    if read_failed {
        // tungstenite stops reading after an error: drain the raw socket.
        if let Some(Ok(mut ws)) = sink.map(|s| stream.reunite(s)) {
            drain_raw(ws.get_mut()).await;
        }
    } else {
        // Drain what the peer still sends after our close until it closes
        // too.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }
    debug!(conn = %conn.id, "disconnected");
}

/// Drain the queue into the socket until the connection is killed, then
/// send the close frame; returns the sink unless it failed.
async fn write_loop<S>(
    gw: Arc<Gateway>,
    conn: Arc<Conn>,
    mut rx: ConnReceiver,
    mut sink: futures::stream::SplitSink<Ws<S>, Message>,
) -> Option<futures::stream::SplitSink<Ws<S>, Message>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut seq: u64 = 0;
    // An item taken from the queue but not handed to the sink when the
    // connection was killed; it goes first in the final flush.
    let mut unsent = None;
    loop {
        let item = tokio::select! {
            biased;
            _ = conn.kill.cancelled() => break,
            item = rx.recv() => match item { Some(i) => i, None => break },
        };
        // Wait for room without handing anything over, so a kill while a
        // slow peer blocks us leaves the item unrendered: a `seq` is only
        // stamped on a frame that is really sent.
        let ready = tokio::select! {
            _ = conn.kill.cancelled() => {
                unsent = Some(item);
                break;
            }
            r = futures::future::poll_fn(|cx| sink.poll_ready_unpin(cx)) => r.is_ok(),
        };
        if !ready {
            return None;
        }
        let message = match &item {
            Outgoing::Ping(id) => Message::Ping(PingBarriers::payload(*id).into()),
            other => Message::Text(other.render(&mut seq).into()),
        };
        if sink.start_send_unpin(message).is_err() {
            return None;
        }
        // A kill now leaves the frame in the sink; the close below
        // flushes it.
        let sent = tokio::select! {
            _ = conn.kill.cancelled() => break,
            r = futures::future::poll_fn(|cx| sink.poll_flush_unpin(cx)) => r.is_ok(),
        };
        conn.written(&item);
        conn.seq.store(seq, Ordering::Relaxed);
        gw.counters.frames_out.fetch_add(1, Ordering::Relaxed);
        if !sent {
            return None;
        }
    }
    // Flush what is already queued when closing normally (e.g. shutdown:
    // the `shutdown` event precedes the close), bounded.
    let (code, reason) = conn.close_reason().unwrap_or((1000, String::new()));
    if code != 1008 {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let queued = std::iter::from_fn(|| rx.try_recv());
            for item in unsent.into_iter().chain(queued) {
                // No Pong will be read any more: a barrier's waiter sees
                // its sender dropped with the connection.
                if let Outgoing::Ping(_) = item {
                    continue;
                }
                let text = item.render(&mut seq);
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: close_reason(&reason).into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    Some(sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_and_evictions_close_without_lingering_other_refusals_linger() {
        let timeout = Refusal::violation(1000, String::new(), "handshake timeout", false);
        for (what, r) in [
            ("oversize", too_large()),
            ("timeout", timeout),
            ("evicted", Refusal::evicted()),
        ] {
            assert!(!r.linger, "{what} lingers");
        }
        let evicted = Refusal::evicted();
        assert_eq!(evicted.code, EVICTED);
        assert!(evicted.violation.is_none(), "an eviction is no violation");
        let bad_request = Refusal::reply("1", ErrorShape::invalid("invalid role"), 1008);
        for (what, r) in [("invalid frame", invalid_frame()), ("reply", bad_request)] {
            assert!(r.linger, "{what} does not linger");
            assert!(r.violation.is_none(), "{what} is counted as a violation");
        }
    }
}
