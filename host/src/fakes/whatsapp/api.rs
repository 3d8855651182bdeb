//! The WhatsApp fake's Graph surface: routing, the bearer check,
//! recording, fault injection, and the endpoints (`messages`, `media`
//! upload, media lookup, and the lookaside download).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::super::multipart::{self, Part};
use super::super::recorder::{Call, header_pairs};
use super::graph_error::GraphError;
use super::{MediaUpload, ReadReceipt, SentMessage, Shared, WINDOW, WaFault, normalise};

/// The largest request body accepted (Graph: documents up to 100 MB).
const BODY_LIMIT: usize = 101 * 1024 * 1024;
/// `text.body` limit.
const TEXT_LIMIT: usize = 4096;
/// Message types the fake accepts.
const TYPES: &[&str] = &[
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "template",
    "reaction",
    "interactive",
    "location",
    "contacts",
];
const MEDIA_TYPES: &[&str] = &["image", "audio", "video", "document", "sticker"];

/// The path the media lookup's `url` points at (Meta: lookaside.fbsbx.com).
const LOOKASIDE: &str = "/whatsapp_business/attachments/";

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

enum Reply {
    Json(u16, Value),
    Bytes(String, Bytes),
}

impl From<GraphError> for Reply {
    fn from(e: GraphError) -> Reply {
        Reply::Json(e.status, e.body())
    }
}

impl Reply {
    fn record_view(&self) -> (u16, Value) {
        match self {
            Reply::Json(s, v) => (*s, v.clone()),
            Reply::Bytes(_, b) => (200, json!({"bytes": b.len()})),
        }
    }

    fn into_response(self) -> Response {
        match self {
            Reply::Json(s, v) => (
                StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                [(header::CONTENT_TYPE, "application/json")],
                v.to_string(),
            )
                .into_response(),
            Reply::Bytes(mime, b) => {
                (StatusCode::OK, [(header::CONTENT_TYPE, mime)], b).into_response()
            }
        }
    }
}

/// Which endpoint a path is.
enum Route {
    Messages(String),
    Upload(String),
    Media(String),
    Download,
}

impl Route {
    fn name(&self) -> &'static str {
        match self {
            Route::Messages(_) => "messages",
            Route::Upload(_) => "media_upload",
            Route::Media(_) => "media",
            Route::Download => "media_download",
        }
    }
}

fn is_version(s: &str) -> bool {
    s.strip_prefix('v').is_some_and(|v| {
        !v.is_empty()
            && v.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn route(method: &http::Method, path: &str) -> Option<Route> {
    if path == LOOKASIDE || path == LOOKASIDE.trim_end_matches('/') {
        return (method == http::Method::GET).then_some(Route::Download);
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("POST", [v, id, "messages"]) if is_version(v) => Some(Route::Messages(id.to_string())),
        ("POST", [v, id, "media"]) if is_version(v) => Some(Route::Upload(id.to_string())),
        ("GET", [v, id]) if is_version(v) => Some(Route::Media(id.to_string())),
        _ => None,
    }
}

fn bearer_ok(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| {
            subtle::ConstantTimeEq::ct_eq(t.as_bytes(), shared.cfg.access_token.as_bytes()).into()
        })
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(route) = route(&parts.method, parts.uri.path()) else {
        return Reply::from(GraphError {
            status: 400,
            code: 2500,
            kind: "OAuthException",
            message: format!("Unknown path components: {}", parts.uri.path()),
            details: None,
            subcode: None,
        })
        .into_response();
    };
    let body = match axum::body::to_bytes(Body::new(body), BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return Reply::from(GraphError::param("(#100) Request body is too large"))
                .into_response();
        }
    };
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut mp_parts = Vec::new();
    let mut mp_error = None;
    let mut params = match &route {
        Route::Messages(_) => serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        _ => {
            let mut m = serde_json::Map::new();
            if let Some(q) = parts.uri.query() {
                for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                    m.insert(k.into_owned(), json!(v));
                }
            }
            Value::Object(m)
        }
    };
    if matches!(route, Route::Upload(_)) {
        match multipart::parse(&ct, body.clone()).await {
            Ok(p) => {
                for f in p.iter().filter(|f| !f.is_file()) {
                    params[&f.name] = json!(f.text());
                }
                mp_parts = p;
            }
            Err(e) => mp_error = Some(e.to_string()),
        }
    }
    // Read receipts (and typing) share the messages endpoint but are their
    // own kind of call: recorded and faulted as `read`, so `messages`
    // means sends.
    let name = match &route {
        Route::Messages(_) if params["status"] == "read" => "read",
        r => r.name(),
    };
    let ix = shared.cfg.record_calls.then(|| {
        shared.recorder.begin(
            Call {
                method: name.into(),
                http_method: parts.method.to_string(),
                params: params.clone(),
                headers: header_pairs(&parts.headers),
                parts: mp_parts.clone(),
                status: None,
                response: Value::Null,
                at: Instant::now(),
            },
            &shared.changes,
        )
    });
    shared.faults.pass_gate(&shared.changes).await;
    let reply = if !bearer_ok(&shared, &parts.headers) {
        GraphError::bad_token().into()
    } else {
        match shared.faults.take(name) {
            Some(WaFault::Code(c)) => GraphError::for_code(c).into(),
            Some(WaFault::Status(s)) => GraphError::server(s).into(),
            Some(WaFault::Hang) => {
                shared.faults.hang_once(&shared.changes).await;
                serve(&shared, &route, &mut params, &mp_parts, mp_error)
            }
            None => serve(&shared, &route, &mut params, &mp_parts, mp_error),
        }
    };
    if let Some(ix) = ix {
        let (status, body) = reply.record_view();
        shared.recorder.answer(ix, status, body, &shared.changes);
    }
    reply.into_response()
}

fn serve(
    shared: &Shared,
    route: &Route,
    params: &mut Value,
    parts: &[Part],
    mp_error: Option<String>,
) -> Reply {
    let r = match route {
        Route::Messages(id) => messages(shared, id, params),
        Route::Upload(id) => upload(shared, id, params, parts, mp_error),
        Route::Media(id) => media(shared, id),
        Route::Download => download(shared, params),
    };
    r.unwrap_or_else(Reply::from)
}

fn check_phone(shared: &Shared, id: &str) -> Result<(), GraphError> {
    if id == shared.cfg.phone_number_id {
        Ok(())
    } else {
        Err(GraphError::no_object(id))
    }
}

/// `POST /{v}/{phone_number_id}/messages`.
fn messages(shared: &Shared, phone: &str, body: &Value) -> Result<Reply, GraphError> {
    check_phone(shared, phone)?;
    if !body.is_object() {
        return Err(GraphError::param("(#100) Invalid parameter"));
    }
    if body["messaging_product"] != "whatsapp" {
        return Err(GraphError::param(
            "(#100) The parameter messaging_product is required.",
        ));
    }
    if body["status"] == "read" {
        return read(shared, body);
    }
    let Some(to) = body["to"].as_str().filter(|t| !t.is_empty()) else {
        return Err(GraphError::param("(#100) The parameter to is required."));
    };
    let kind = body["type"].as_str().unwrap_or("text");
    if !TYPES.contains(&kind) {
        return Err(GraphError::param(format!(
            "(#100) Param type must be one of {{{}}} - got \"{kind}\".",
            TYPES.join(", ")
        )));
    }
    match kind {
        "text" => {
            let Some(text) = body["text"]["body"].as_str().filter(|t| !t.is_empty()) else {
                return Err(GraphError::param(
                    "(#100) The parameter text['body'] is required.",
                ));
            };
            if text.chars().count() > TEXT_LIMIT {
                return Err(GraphError::param(
                    "(#100) Param text['body'] must be at most 4096 characters long.",
                ));
            }
        }
        k if MEDIA_TYPES.contains(&k) => {
            let obj = &body[k];
            match (obj["id"].as_str(), obj["link"].as_str()) {
                (Some(id), _) => {
                    if !shared.state.lock().media.contains_key(id) {
                        return Err(GraphError::param(format!(
                            "(#100) Param {k}['id'] is not a valid media id"
                        )));
                    }
                }
                (None, Some(link)) if link.starts_with("http") => {}
                _ => {
                    return Err(GraphError::param(format!(
                        "(#100) The parameter {k}['id'] or {k}['link'] is required."
                    )));
                }
            }
        }
        "template"
            if body["template"]["name"].as_str().is_none()
                || body["template"]["language"]["code"].as_str().is_none() =>
        {
            return Err(GraphError::param(
                "(#100) The parameter template['name'] and template['language']['code'] are required.",
            ));
        }
        "reaction" if body["reaction"]["message_id"].as_str().is_none() => {
            return Err(GraphError::param(
                "(#100) The parameter reaction['message_id'] is required.",
            ));
        }
        _ => {}
    }
    let wa_id = normalise(to);
    if shared.cfg.enforce_window && kind != "template" {
        let open = shared
            .state
            .lock()
            .last_inbound
            .get(&wa_id)
            .is_some_and(|t| t.elapsed() < WINDOW);
        if !open {
            return Err(GraphError::for_code(131047));
        }
    }
    let n = shared.next();
    let id = format!("wamid.HBgL{wa_id}FQIAERgSOUFG{n:012X}");
    {
        let mut s = shared.state.lock();
        s.sent.push(SentMessage {
            id: id.clone(),
            to: wa_id.clone(),
            kind: kind.into(),
            body: body.clone(),
        });
        *s.sent_per.entry(wa_id.clone()).or_default() += 1;
    }
    shared.changes.bump();
    let mut message = json!({"id": id});
    if kind == "template" {
        message["message_status"] = json!("accepted");
    }
    Ok(Reply::Json(
        200,
        json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": wa_id}],
            "messages": [message],
        }),
    ))
}

/// The read (+ typing) form of `messages`.
fn read(shared: &Shared, body: &Value) -> Result<Reply, GraphError> {
    let Some(id) = body["message_id"].as_str() else {
        return Err(GraphError::param(
            "(#100) The parameter message_id is required.",
        ));
    };
    if !shared.state.lock().inbound.contains_key(id) {
        return Err(GraphError::param(format!(
            "(#100) Invalid parameter: message_id {id} is not a received message"
        )));
    }
    let typing = match &body["typing_indicator"] {
        Value::Null => false,
        t if t["type"] == "text" => true,
        _ => {
            return Err(GraphError::param(
                "(#100) Param typing_indicator['type'] must be one of {text}",
            ));
        }
    };
    shared.state.lock().reads.push(ReadReceipt {
        message_id: id.into(),
        typing,
    });
    shared.changes.bump();
    Ok(Reply::Json(200, json!({"success": true})))
}

/// `POST /{v}/{phone_number_id}/media` (multipart).
fn upload(
    shared: &Shared,
    phone: &str,
    params: &Value,
    parts: &[Part],
    mp_error: Option<String>,
) -> Result<Reply, GraphError> {
    check_phone(shared, phone)?;
    if let Some(e) = mp_error {
        return Err(GraphError::param(format!(
            "(#100) Invalid multipart body: {e}"
        )));
    }
    if params["messaging_product"] != "whatsapp" {
        return Err(GraphError::param(
            "(#100) The parameter messaging_product is required.",
        ));
    }
    let Some(file) = parts.iter().find(|p| p.name == "file" && p.is_file()) else {
        return Err(GraphError::param("(#100) The parameter file is required."));
    };
    let Some(kind) = params["type"].as_str().filter(|t| !t.is_empty()) else {
        return Err(GraphError::param("(#100) The parameter type is required."));
    };
    let m = shared.add_media(
        file.data.clone(),
        kind,
        file.file_name.as_deref().unwrap_or("file"),
    );
    shared.state.lock().uploads.push(MediaUpload {
        id: m.id.clone(),
        kind: kind.into(),
        file_name: file.file_name.clone(),
        content_type: file.content_type.clone(),
        data: file.data.clone(),
    });
    shared.changes.bump();
    Ok(Reply::Json(200, json!({"id": m.id})))
}

/// `GET /{v}/{media_id}`.
fn media(shared: &Shared, id: &str) -> Result<Reply, GraphError> {
    let Some((m, _)) = shared.state.lock().media.get(id).cloned() else {
        return Err(GraphError::no_object(id));
    };
    let ext = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let url = format!(
        "{}{LOOKASIDE}?mid={}&ext={ext}&hash=ATu{}",
        shared.base_url,
        m.id,
        hex::encode(&m.sha256[..6])
    );
    Ok(Reply::Json(
        200,
        json!({
            "messaging_product": "whatsapp",
            "url": url,
            "mime_type": m.mime_type,
            "sha256": hex::encode(m.sha256),
            "file_size": m.size,
            "id": m.id,
        }),
    ))
}

/// `GET {LOOKASIDE}?mid=...` (bearer checked by the caller).
fn download(shared: &Shared, params: &Value) -> Result<Reply, GraphError> {
    let mid = params["mid"].as_str().unwrap_or_default();
    match shared.state.lock().media.get(mid) {
        Some((m, b)) => Ok(Reply::Bytes(m.mime_type.clone(), b.clone())),
        None => Err(GraphError {
            status: 404,
            code: 100,
            kind: "OAuthException",
            message: "(#100) Media not found".into(),
            details: None,
            subcode: None,
        }),
    }
}
