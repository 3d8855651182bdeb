//! The Slack fake's HTTP surface: the Web API methods under `/api/`, the
//! upload URLs `files.getUploadURLExternal` hands out (`/upload/{id}`),
//! and user files' downloads (`/files-pri/{team}-{id}/download/{name}`);
//! with the bearer check, recording and scripted faults.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::super::multipart::{self, Part};
use super::super::recorder::{Call, header_pairs};
use super::{FileShare, Inner, Posted, SlackFault};

/// The largest request body accepted (Slack: files up to 1 GB; enough here).
const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Slack truncates `text` past 40,000 characters; the fake refuses it.
const TEXT_LIMIT: usize = 40_000;

pub(super) fn router(inner: Arc<Inner>) -> Router {
    Router::new().fallback(handle).with_state(inner)
}

enum Reply {
    /// HTTP 200 with this JSON.
    Ok(Value),
    /// `{"ok": false, "error": code}` (HTTP 200, as Slack answers).
    Err(String),
    /// Another status with a JSON body and extra headers.
    Status(u16, Value, Vec<(&'static str, String)>),
    /// File bytes.
    Bytes(String, Bytes),
}

impl Reply {
    fn err(code: &str) -> Reply {
        Reply::Err(code.to_string())
    }

    fn record_view(&self) -> (u16, Value) {
        match self {
            Reply::Ok(v) => (200, v.clone()),
            Reply::Err(code) => (200, json!({"ok": false, "error": code})),
            Reply::Status(s, v, _) => (*s, v.clone()),
            Reply::Bytes(_, b) => (200, json!({"bytes": b.len()})),
        }
    }

    fn into_response(self) -> Response {
        let json_ct = [(header::CONTENT_TYPE, "application/json; charset=utf-8")];
        match self {
            Reply::Ok(v) => (StatusCode::OK, json_ct, v.to_string()).into_response(),
            Reply::Err(code) => (
                StatusCode::OK,
                json_ct,
                json!({"ok": false, "error": code}).to_string(),
            )
                .into_response(),
            Reply::Status(s, v, extra) => {
                let mut r = (
                    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    json_ct,
                    v.to_string(),
                )
                    .into_response();
                for (k, v) in extra {
                    if let Ok(v) = v.parse() {
                        r.headers_mut().insert(k, v);
                    }
                }
                r
            }
            Reply::Bytes(mime, b) => {
                (StatusCode::OK, [(header::CONTENT_TYPE, mime)], b).into_response()
            }
        }
    }
}

/// Which endpoint a request is.
enum Route {
    /// A Web API method.
    Method(String),
    /// An upload URL.
    Upload(String),
    /// A user file's download.
    Download(String),
}

fn route(method: &http::Method, path: &str) -> Option<Route> {
    if let Some(m) = path.strip_prefix("/api/") {
        return (!m.is_empty() && !m.contains('/')).then(|| Route::Method(m.to_string()));
    }
    if let Some(id) = path.strip_prefix("/upload/") {
        return (method == http::Method::POST).then(|| Route::Upload(id.to_string()));
    }
    let rest = path.strip_prefix("/files-pri/")?;
    let (team_file, _) = rest.split_once("/download/")?;
    let (_, id) = team_file.split_once('-')?;
    (method == http::Method::GET).then(|| Route::Download(id.to_string()))
}

impl Route {
    fn name(&self) -> String {
        match self {
            Route::Method(m) => m.clone(),
            Route::Upload(_) => "file_upload".into(),
            Route::Download(_) => "file_download".into(),
        }
    }
}

/// `Some(true)` for the right bearer, `Some(false)` for a wrong one,
/// `None` for none.
fn bearer(headers: &HeaderMap, want: &str) -> Option<bool> {
    let t = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?
        .strip_prefix("Bearer ")?;
    Some(subtle::ConstantTimeEq::ct_eq(t.as_bytes(), want.as_bytes()).into())
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(route) = route(&parts.method, parts.uri.path()) else {
        return (StatusCode::NOT_FOUND, "not a Slack endpoint").into_response();
    };
    let body = match axum::body::to_bytes(Body::new(body), BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return Reply::err("request_too_large").into_response(),
    };
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut params = serde_json::Map::new();
    if let Some(q) = parts.uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            params.insert(k.into_owned(), json!(v));
        }
    }
    let mut mp_parts = Vec::new();
    if ct.starts_with("application/json") {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&body) {
            params.extend(m);
        }
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        for (k, v) in url::form_urlencoded::parse(&body) {
            params.insert(k.into_owned(), json!(v));
        }
    } else if ct.starts_with("multipart/form-data")
        && let Ok(p) = multipart::parse(&ct, body.clone()).await
    {
        for f in p.iter().filter(|f| !f.is_file()) {
            params.insert(f.name.clone(), json!(f.text()));
        }
        mp_parts = p;
    }
    let params = Value::Object(params);
    let name = route.name();
    let ix = inner.cfg.record_calls.then(|| {
        inner.recorder.begin(
            Call {
                method: name.clone(),
                http_method: parts.method.to_string(),
                params: params.clone(),
                headers: header_pairs(&parts.headers),
                parts: mp_parts.clone(),
                status: None,
                response: Value::Null,
                at: Instant::now(),
            },
            &inner.changes,
        )
    });
    inner.faults.pass_gate(&inner.changes).await;
    let reply = match inner.faults.take(&name) {
        Some(SlackFault::RateLimited(s)) => Reply::Status(
            429,
            json!({"ok": false, "error": "ratelimited"}),
            vec![("retry-after", s.to_string())],
        ),
        Some(SlackFault::Error(code)) => Reply::Err(code),
        Some(SlackFault::Status(s)) => {
            Reply::Status(s, json!({"ok": false, "error": "fatal_error"}), vec![])
        }
        Some(SlackFault::Hang) => {
            inner.faults.hang_once(&inner.changes).await;
            serve(&inner, &route, &parts.headers, &params, &mp_parts, &body)
        }
        None => serve(&inner, &route, &parts.headers, &params, &mp_parts, &body),
    };
    if let Some(ix) = ix {
        let (status, body) = reply.record_view();
        inner.recorder.answer(ix, status, body, &inner.changes);
    } else {
        inner.changes.bump();
    }
    reply.into_response()
}

fn serve(
    inner: &Inner,
    route: &Route,
    headers: &HeaderMap,
    params: &Value,
    parts: &[Part],
    body: &Bytes,
) -> Reply {
    match route {
        Route::Upload(id) => upload(inner, id, parts, body),
        Route::Download(id) => match bearer(headers, &inner.cfg.bot_token) {
            Some(true) => download(inner, id),
            // Slack answers a download without the token with its login page.
            _ => Reply::Status(
                302,
                json!({"redirect": "login"}),
                vec![("location", "/signin".into())],
            ),
        },
        Route::Method(m) => {
            let token = if m == "apps.connections.open" {
                &inner.cfg.app_token
            } else {
                &inner.cfg.bot_token
            };
            match bearer(headers, token) {
                None => Reply::err("not_authed"),
                Some(false) => Reply::err("invalid_auth"),
                Some(true) => method(inner, m, params),
            }
        }
    }
}

fn method(inner: &Inner, m: &str, p: &Value) -> Reply {
    let c = &inner.cfg;
    match m {
        "auth.test" => Reply::Ok(json!({
            "ok": true, "url": "https://pincer-test.slack.com/", "team": "Pincer Test",
            "user": "pincer", "team_id": c.team_id, "user_id": c.bot_user_id,
            "bot_id": c.bot_id, "is_enterprise_install": false,
        })),
        "chat.postMessage" => post_message(inner, p),
        "chat.update" => update(inner, p),
        "files.getUploadURLExternal" => {
            let (Some(name), Some(len)) = (
                p["filename"].as_str().filter(|n| !n.is_empty()),
                p["length"]
                    .as_str()
                    .and_then(|l| l.parse::<u64>().ok())
                    .or_else(|| p["length"].as_u64()),
            ) else {
                return Reply::err("invalid_arguments");
            };
            let id = format!("F0BOT{:05}", inner.next());
            inner
                .state
                .lock()
                .pending
                .insert(id.clone(), (name.to_string(), len));
            Reply::Ok(json!({
                "ok": true,
                "upload_url": format!("{}/upload/{id}", inner.base_url),
                "file_id": id,
            }))
        }
        "files.completeUploadExternal" => complete(inner, p),
        "apps.connections.open" => Reply::Ok(json!({"ok": true, "url": inner.socket.new_url()})),
        _ => Reply::err("unknown_method"),
    }
}

fn post_message(inner: &Inner, p: &Value) -> Reply {
    let Some(channel) = p["channel"].as_str().filter(|c| !c.is_empty()) else {
        return Reply::err("channel_not_found");
    };
    if !(channel.starts_with('C') || channel.starts_with('D') || channel.starts_with('G')) {
        return Reply::err("channel_not_found");
    }
    let Some(text) = p["text"].as_str().filter(|t| !t.is_empty()) else {
        return Reply::err("no_text");
    };
    if text.chars().count() > TEXT_LIMIT {
        return Reply::err("msg_too_long");
    }
    let ts = inner.next_ts();
    let thread_ts = p["thread_ts"].as_str().map(str::to_string);
    {
        let mut s = inner.state.lock();
        let i = s.posted.len();
        s.posted.push(Posted {
            ts: ts.clone(),
            channel: channel.to_string(),
            thread_ts: thread_ts.clone(),
            text: text.to_string(),
            current: text.to_string(),
            updates: 0,
            body: p.clone(),
        });
        s.by_ts.insert((channel.to_string(), ts.clone()), i);
        *s.per_channel.entry(channel.to_string()).or_default() += 1;
    }
    Reply::Ok(json!({
        "ok": true, "channel": channel, "ts": ts,
        "message": {"type": "message", "user": inner.cfg.bot_user_id, "bot_id": inner.cfg.bot_id,
            "text": text, "ts": ts, "thread_ts": thread_ts},
    }))
}

fn update(inner: &Inner, p: &Value) -> Reply {
    let (Some(channel), Some(ts)) = (p["channel"].as_str(), p["ts"].as_str()) else {
        return Reply::err("invalid_arguments");
    };
    let Some(text) = p["text"].as_str().filter(|t| !t.is_empty()) else {
        return Reply::err("no_text");
    };
    let mut s = inner.state.lock();
    let Some(&i) = s.by_ts.get(&(channel.to_string(), ts.to_string())) else {
        return Reply::err("message_not_found");
    };
    let m = &mut s.posted[i];
    m.current = text.to_string();
    m.updates += 1;
    Reply::Ok(json!({"ok": true, "channel": channel, "ts": ts, "text": text}))
}

fn upload(inner: &Inner, id: &str, parts: &[Part], body: &Bytes) -> Reply {
    let mut s = inner.state.lock();
    let Some((name, len)) = s.pending.get(id).cloned() else {
        return Reply::Status(404, json!({"error": "unknown upload"}), vec![]);
    };
    // Slack takes the bytes raw or as a multipart form's file part.
    let data = parts
        .iter()
        .find(|p| p.is_file())
        .map(|p| p.data.clone())
        .unwrap_or_else(|| body.clone());
    if data.len() as u64 != len {
        return Reply::Status(
            400,
            json!({"error": format!("expected {len} bytes, got {}", data.len())}),
            vec![],
        );
    }
    s.uploaded.insert(id.to_string(), (name, data));
    Reply::Ok(json!({"ok": true}))
}

fn complete(inner: &Inner, p: &Value) -> Reply {
    let files: Vec<Value> = match &p["files"] {
        Value::Array(a) => a.clone(),
        // Form callers send the list as a JSON string.
        Value::String(s) => serde_json::from_str(s).unwrap_or_default(),
        _ => Vec::new(),
    };
    if files.is_empty() {
        return Reply::err("invalid_arguments");
    }
    let mut s = inner.state.lock();
    let mut shared = Vec::new();
    for f in &files {
        let id = f["id"].as_str().unwrap_or("");
        let Some((name, data)) = s.uploaded.get(id).cloned() else {
            return Reply::err("file_not_found");
        };
        let title = f["title"].as_str().unwrap_or(&name).to_string();
        shared.push((id.to_string(), title, name, data));
    }
    for (id, ..) in &shared {
        s.pending.remove(id);
    }
    let channel = p["channel_id"].as_str().unwrap_or("").to_string();
    let answer: Vec<Value> = shared
        .iter()
        .map(|(id, title, ..)| json!({"id": id, "title": title}))
        .collect();
    if !channel.is_empty() {
        s.shares.push(FileShare {
            channel,
            thread_ts: p["thread_ts"].as_str().map(str::to_string),
            initial_comment: p["initial_comment"].as_str().map(str::to_string),
            files: shared,
        });
    }
    Reply::Ok(json!({"ok": true, "files": answer}))
}

fn download(inner: &Inner, id: &str) -> Reply {
    match inner.state.lock().user_files.get(id) {
        Some((_, mime, data)) => Reply::Bytes(mime.clone(), data.clone()),
        None => Reply::Status(404, json!({"error": "file_not_found"}), vec![]),
    }
}
