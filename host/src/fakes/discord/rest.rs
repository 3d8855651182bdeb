//! The Discord fake's REST surface: routing, the `Bot` token check,
//! recording, scripted faults, rate-limit headers and the endpoints.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::multipart::{self, Part};
use super::super::recorder::{Call, header_pairs};
use super::{CONTENT_LIMIT, RestFault, SentMessage, Shared};

/// The largest request body accepted (Discord: 25 MiB of files by default).
const BODY_LIMIT: usize = 26 * 1024 * 1024;
/// Calls per bucket window the headers announce.
const BUCKET_LIMIT: u32 = 5;
/// The window the headers announce, seconds.
const BUCKET_RESET_AFTER: f64 = 5.0;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// Which endpoint a request is.
enum Route {
    Me,
    Create(String),
    Edit(String, String),
    Typing(String),
    /// `PATCH /webhooks/{app}/{token}/messages/@original`.
    EditOriginal(String, String),
    /// `POST /webhooks/{app}/{token}`.
    Followup(String, String),
    /// `PATCH /webhooks/{app}/{token}/messages/{id}`.
    EditFollowup(String, String, String),
}

impl Route {
    fn name(&self) -> &'static str {
        match self {
            Route::Me => "get_me",
            Route::Create(_) => "create_message",
            Route::Edit(..) => "edit_message",
            Route::Typing(_) => "typing",
            Route::EditOriginal(..) => "edit_original",
            Route::Followup(..) => "followup",
            Route::EditFollowup(..) => "edit_followup",
        }
    }

    /// The interaction token of a follow-up webhook route (authorised by
    /// it, not by the bot token), with its application id.
    fn webhook(&self) -> Option<(&str, &str)> {
        match self {
            Route::EditOriginal(a, t) | Route::Followup(a, t) | Route::EditFollowup(a, t, _) => {
                Some((a, t))
            }
            _ => None,
        }
    }
}

fn route(method: &http::Method, path: &str) -> Option<Route> {
    let path = path.strip_prefix("/api/v10")?;
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["users", "@me"]) => Some(Route::Me),
        ("POST", ["channels", c, "messages"]) => Some(Route::Create(c.to_string())),
        ("PATCH", ["channels", c, "messages", m]) => {
            Some(Route::Edit(c.to_string(), m.to_string()))
        }
        ("POST", ["channels", c, "typing"]) => Some(Route::Typing(c.to_string())),
        ("PATCH", ["webhooks", a, t, "messages", "@original"]) => {
            Some(Route::EditOriginal(a.to_string(), t.to_string()))
        }
        ("POST", ["webhooks", a, t]) => Some(Route::Followup(a.to_string(), t.to_string())),
        ("PATCH", ["webhooks", a, t, "messages", m]) => Some(Route::EditFollowup(
            a.to_string(),
            t.to_string(),
            m.to_string(),
        )),
        _ => None,
    }
}

fn json_reply(status: u16, body: &Value, headers: &[(&str, String)]) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        if status == 204 {
            String::new()
        } else {
            body.to_string()
        },
    )
        .into_response();
    for (k, v) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

fn token_ok(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bot "))
        .is_some_and(|t| {
            subtle::ConstantTimeEq::ct_eq(t.as_bytes(), shared.cfg.token.as_bytes()).into()
        })
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(route) = route(&parts.method, parts.uri.path()) else {
        return json_reply(404, &json!({"message": "404: Not Found", "code": 0}), &[]);
    };
    let Ok(body) = axum::body::to_bytes(Body::new(body), BODY_LIMIT).await else {
        return json_reply(
            413,
            &json!({"message": "Request entity too large", "code": 40005}),
            &[],
        );
    };
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut files: Vec<Part> = Vec::new();
    let params = if ct.starts_with("multipart/form-data") {
        match multipart::parse(&ct, body.clone()).await {
            Ok(p) => {
                let payload = p
                    .iter()
                    .find(|f| f.name == "payload_json")
                    .map(|f| serde_json::from_str(&f.text()).unwrap_or(Value::Null))
                    .unwrap_or(Value::Null);
                files = p.into_iter().filter(Part::is_file).collect();
                payload
            }
            Err(_) => Value::Null,
        }
    } else {
        serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)
    };
    let name = route.name();
    let ix = shared.cfg.record_calls.then(|| {
        shared.recorder.begin(
            Call {
                method: name.into(),
                http_method: parts.method.to_string(),
                params: params.clone(),
                headers: header_pairs(&parts.headers),
                parts: files.clone(),
                status: None,
                response: Value::Null,
                at: Instant::now(),
            },
            &shared.changes,
        )
    });
    let bucket = format!("fake-bucket-{name}");
    let mut headers = vec![
        ("x-ratelimit-limit", BUCKET_LIMIT.to_string()),
        ("x-ratelimit-remaining", (BUCKET_LIMIT - 1).to_string()),
        (
            "x-ratelimit-reset-after",
            format!("{BUCKET_RESET_AFTER:.3}"),
        ),
        ("x-ratelimit-bucket", bucket),
    ];
    let fault = shared
        .state
        .lock()
        .faults
        .get_mut(name)
        .and_then(|q| q.pop_front());
    let authorised = match route.webhook() {
        Some((app, token)) => shared
            .state
            .lock()
            .interactions
            .get(token)
            .is_some_and(|i| i.app_id == app),
        None => token_ok(&shared, &parts.headers),
    };
    let (status, reply) = if route.webhook().is_some() && !authorised {
        (404, json!({"message": "Unknown Webhook", "code": 10015}))
    } else if !authorised {
        (401, json!({"message": "401: Unauthorized", "code": 0}))
    } else {
        match fault {
            Some(RestFault::RateLimited(secs)) | Some(RestFault::GlobalRateLimited(secs)) => {
                let global = matches!(fault, Some(RestFault::GlobalRateLimited(_)));
                headers[1].1 = "0".into();
                headers[2].1 = format!("{secs:.3}");
                headers.push(("retry-after", format!("{}", secs.ceil() as u64)));
                headers.push((
                    "x-ratelimit-scope",
                    if global { "global" } else { "user" }.into(),
                ));
                if global {
                    headers.push(("x-ratelimit-global", "true".into()));
                }
                (
                    429,
                    json!({"message": "You are being rate limited.", "retry_after": secs, "global": global}),
                )
            }
            Some(RestFault::Status(s)) => (s, json!({"message": format!("{s}: fault"), "code": 0})),
            Some(RestFault::LostAnswer) => {
                serve(&shared, &route, &params, &files);
                (502, json!({"message": "502: Bad Gateway", "code": 0}))
            }
            None => serve(&shared, &route, &params, &files),
        }
    };
    if let Some(ix) = ix {
        shared
            .recorder
            .answer(ix, status, reply.clone(), &shared.changes);
    } else {
        shared.changes.bump();
    }
    json_reply(status, &reply, &headers)
}

fn invalid_form(field: &str, message: &str) -> (u16, Value) {
    (
        400,
        json!({"message": "Invalid Form Body", "code": 50035,
            "errors": {field: {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH", "message": message}]}}}),
    )
}

fn serve(shared: &Shared, route: &Route, params: &Value, files: &[Part]) -> (u16, Value) {
    match route {
        Route::Me => (
            200,
            json!({"id": shared.cfg.bot_id, "username": "pincer", "bot": true, "discriminator": "0"}),
        ),
        Route::Typing(channel) => {
            shared.state.lock().typing.push(channel.clone());
            (204, Value::Null)
        }
        Route::Create(channel) => {
            let content = params["content"].as_str().unwrap_or_default().to_string();
            if content.chars().count() > CONTENT_LIMIT {
                return invalid_form("content", "Must be 2000 or fewer in length.");
            }
            if content.is_empty() && files.is_empty() {
                return (
                    400,
                    json!({"message": "Cannot send an empty message", "code": 50006}),
                );
            }
            let nonce = match &params["nonce"] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            if nonce.as_ref().is_some_and(|n| n.len() > 25) {
                return invalid_form("nonce", "Must be 25 or fewer in length.");
            }
            let mut st = shared.state.lock();
            let enforce = params["enforce_nonce"].as_bool() == Some(true);
            if let (Some(n), true) = (&nonce, enforce)
                && let Some(id) = st.nonces.get(&(channel.clone(), n.clone())).cloned()
                && let Some(m) = st.sent.iter().find(|m| m.id == id)
            {
                return (200, message_json(m));
            }
            let id = st.next_id();
            let m = SentMessage {
                id: id.clone(),
                channel_id: channel.clone(),
                content,
                reply_to: params["message_reference"]["message_id"]
                    .as_str()
                    .map(str::to_string),
                nonce: nonce.clone(),
                edits: 0,
                files: files.iter().filter_map(|f| f.file_name.clone()).collect(),
            };
            if let (Some(n), true) = (nonce, enforce) {
                st.nonces.insert((channel.clone(), n), id);
            }
            let body = message_json(&m);
            st.sent.push(m);
            (200, body)
        }
        Route::EditOriginal(_, token) => {
            let content = params["content"].as_str().unwrap_or_default().to_string();
            if content.chars().count() > CONTENT_LIMIT {
                return invalid_form("content", "Must be 2000 or fewer in length.");
            }
            let mut st = shared.state.lock();
            let Some(i) = st.interactions.get_mut(token) else {
                return (404, json!({"message": "Unknown Webhook", "code": 10015}));
            };
            if i.original.is_some() {
                i.original_edits += 1;
            }
            i.original = Some(content.clone());
            let id = i.id.clone();
            (
                200,
                json!({"id": id, "content": content, "type": 20, "webhook_id": i.app_id}),
            )
        }
        Route::Followup(_, token) => {
            let content = params["content"].as_str().unwrap_or_default().to_string();
            if content.chars().count() > CONTENT_LIMIT {
                return invalid_form("content", "Must be 2000 or fewer in length.");
            }
            let mut st = shared.state.lock();
            let id = st.next_id();
            let Some(i) = st.interactions.get_mut(token) else {
                return (404, json!({"message": "Unknown Webhook", "code": 10015}));
            };
            i.followups.push((id.clone(), content.clone()));
            (
                200,
                json!({"id": id, "content": content, "type": 0, "webhook_id": i.app_id}),
            )
        }
        Route::EditFollowup(_, token, id) => {
            let content = params["content"].as_str().unwrap_or_default().to_string();
            let mut st = shared.state.lock();
            let Some(m) = st
                .interactions
                .get_mut(token)
                .and_then(|i| i.followups.iter_mut().find(|(m, _)| m == id))
            else {
                return (404, json!({"message": "Unknown Message", "code": 10008}));
            };
            m.1 = content.clone();
            (200, json!({"id": id, "content": content, "type": 0}))
        }
        Route::Edit(channel, id) => {
            let content = params["content"].as_str().unwrap_or_default().to_string();
            if content.chars().count() > CONTENT_LIMIT {
                return invalid_form("content", "Must be 2000 or fewer in length.");
            }
            let mut st = shared.state.lock();
            match st
                .sent
                .iter_mut()
                .find(|m| &m.id == id && &m.channel_id == channel)
            {
                Some(m) => {
                    m.content = content;
                    m.edits += 1;
                    (200, message_json(m))
                }
                None => (404, json!({"message": "Unknown Message", "code": 10008})),
            }
        }
    }
}

fn message_json(m: &SentMessage) -> Value {
    json!({
        "id": m.id, "channel_id": m.channel_id, "content": m.content, "type": 0,
        "author": {"id": super::DEFAULT_BOT_ID, "username": "pincer", "bot": true},
        "nonce": m.nonce,
        "message_reference": m.reply_to.as_ref().map(|r| json!({"message_id": r})),
        "attachments": m.files.iter().map(|f| json!({"filename": f})).collect::<Vec<_>>(),
    })
}
