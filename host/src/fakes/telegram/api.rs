//! The Telegram fake's HTTP surface: routing `/bot{token}/{method}` and
//! `/file/bot{token}/{path}`, the token check, merging parameters from the
//! query string and any body format, recording, fault injection, and the
//! `{ok, result}` / `{ok:false, error_code, description}` envelope.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::super::multipart::{self, Part};
use super::super::recorder::{Call, header_pairs};
use super::{BotCore, Shared, TgFault, messages, polling};

/// The largest request body accepted (Telegram: 50 MB per uploaded file).
const BODY_LIMIT: usize = 52 * 1024 * 1024;

/// Methods the fake implements, by canonical name (Telegram matches method
/// names case-insensitively).
const METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "editMessageText",
    "sendChatAction",
    "sendMessageDraft",
    "getFile",
    "sendPhoto",
    "sendDocument",
];

/// A Bot API error answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) description: String,
    pub(crate) parameters: Option<Value>,
}

impl ApiError {
    /// `400 Bad Request: {what}`.
    pub(crate) fn bad(what: impl std::fmt::Display) -> ApiError {
        ApiError {
            code: 400,
            description: format!("Bad Request: {what}"),
            parameters: None,
        }
    }

    fn new(code: u16, description: &str) -> ApiError {
        ApiError {
            code,
            description: description.into(),
            parameters: None,
        }
    }

    /// 409 for a poller overtaken by a newer `getUpdates`.
    pub(crate) fn conflict_poller() -> ApiError {
        ApiError::new(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
        )
    }

    /// 409 for `getUpdates` while a webhook is set.
    pub(crate) fn conflict_webhook() -> ApiError {
        ApiError::new(
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
        )
    }

    fn body(&self) -> Value {
        let mut v = json!({"ok": false, "error_code": self.code, "description": self.description});
        if let Some(p) = &self.parameters {
            v["parameters"] = p.clone();
        }
        v
    }
}

impl From<&TgFault> for ApiError {
    fn from(f: &TgFault) -> ApiError {
        match f {
            TgFault::RetryAfter(s) => ApiError {
                code: 429,
                description: format!("Too Many Requests: retry after {s}"),
                parameters: Some(json!({"retry_after": s})),
            },
            TgFault::Conflict => ApiError::conflict_poller(),
            TgFault::Status(code) => ApiError::new(
                *code,
                StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Internal Server Error"),
            ),
            TgFault::Error { code, description } => ApiError::new(*code, description),
            TgFault::Hang => ApiError::new(500, "Internal Server Error"),
        }
    }
}

/// `{"ok":true,"result":...}`.
pub(crate) fn ok(result: Value) -> Value {
    json!({"ok": true, "result": result})
}

/// One parsed Bot API request.
pub(crate) struct ApiRequest {
    /// Every parameter (query, JSON, form fields, multipart text fields).
    pub(crate) params: Map<String, Value>,
    /// The multipart parts (text and file).
    pub(crate) parts: Vec<Part>,
}

impl ApiRequest {
    /// Parameter `k` as text (strings as they are, numbers and booleans
    /// printed), `None` if absent or null.
    pub(crate) fn str(&self, k: &str) -> Option<String> {
        match self.params.get(k)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            v => Some(v.to_string()),
        }
    }

    /// Parameter `k` as an integer (a JSON number or a numeric string).
    pub(crate) fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.params.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::bad(format!("invalid {k} specified"))),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad(format!("invalid {k} specified"))),
            Some(_) => Err(ApiError::bad(format!("invalid {k} specified"))),
        }
    }

    /// Parameter `k` as a boolean (`true`, `"true"`, `"1"`).
    pub(crate) fn flag(&self, k: &str) -> bool {
        match self.params.get(k) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => matches!(s.as_str(), "true" | "True" | "1"),
            Some(Value::Number(n)) => n.as_i64() == Some(1),
            _ => false,
        }
    }

    /// Parameter `k` as a JSON value: given as JSON, or (in query strings
    /// and forms) as a JSON-serialised string.
    pub(crate) fn json(&self, k: &str) -> Result<Option<Value>, ApiError> {
        match self.params.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s)
                .map(Some)
                .map_err(|_| ApiError::bad(format!("can't parse {k} JSON object"))),
            Some(v) => Ok(Some(v.clone())),
        }
    }

    /// The required `chat_id` as an integer.
    pub(crate) fn chat_id(&self) -> Result<i64, ApiError> {
        match self.params.get("chat_id") {
            None | Some(Value::Null) => Err(ApiError::bad("chat_id is empty")),
            Some(Value::String(s)) if s.is_empty() => Err(ApiError::bad("chat_id is empty")),
            // `@channelusername` and other non-numeric ids: no such chat here.
            _ => self
                .int("chat_id")
                .ok()
                .flatten()
                .ok_or_else(|| ApiError::bad("chat not found")),
        }
    }

    /// The multipart part named `name`.
    pub(crate) fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }
}

/// The fake's router (every path goes through [`handle`]).
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.body())
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if let Some(rest) = path.strip_prefix("/file/bot") {
        return download(&shared, rest);
    }
    let Some((token, method)) = path
        .strip_prefix("/bot")
        .and_then(|rest| rest.split_once('/'))
    else {
        return error_response(&ApiError::new(404, "Not Found"));
    };
    let Some(bot) = shared.bot(token) else {
        return error_response(&ApiError::new(401, "Unauthorized"));
    };
    let method = METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .map(|m| m.to_string())
        .unwrap_or_else(|| method.to_string());
    let body = match axum::body::to_bytes(Body::new(body), BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return error_response(&ApiError::new(413, "Request Entity Too Large")),
    };
    let parsed = parse_request(parts.uri.query(), &parts.headers, body).await;
    let (request, parse_error) = match parsed {
        Ok(r) => (r, None),
        Err(e) => (
            ApiRequest {
                params: Map::new(),
                parts: Vec::new(),
            },
            Some(e),
        ),
    };
    let ix = shared.cfg.record_calls.then(|| {
        bot.recorder.begin(
            Call {
                method: method.clone(),
                http_method: parts.method.to_string(),
                params: Value::Object(request.params.clone()),
                headers: header_pairs(&parts.headers),
                parts: request.parts.clone(),
                status: None,
                response: Value::Null,
                at: Instant::now(),
            },
            &bot.changes,
        )
    });
    bot.faults.pass_gate(&bot.changes).await;
    let result = match (parse_error, bot.faults.take(&method)) {
        (Some(e), _) => Err(e),
        (None, Some(TgFault::Hang)) => {
            bot.faults.hang_once(&bot.changes).await;
            dispatch(&shared, &bot, &method, &request).await
        }
        (None, Some(f)) => Err(ApiError::from(&f)),
        (None, None) => dispatch(&shared, &bot, &method, &request).await,
    };
    let (status, body) = match result {
        Ok(v) => (200, v),
        Err(e) => (e.code, e.body()),
    };
    if let Some(ix) = ix {
        bot.recorder.answer(ix, status, body.clone(), &bot.changes);
    }
    json_response(status, &body)
}

async fn dispatch(
    shared: &Arc<Shared>,
    bot: &Arc<BotCore>,
    method: &str,
    req: &ApiRequest,
) -> Result<Value, ApiError> {
    match method {
        "getMe" => Ok(ok(json!({
            "id": bot.id, "is_bot": true, "first_name": bot.first_name,
            "username": bot.username, "can_join_groups": true,
            "can_read_all_group_messages": false, "supports_inline_queries": false,
            "can_connect_to_business": false, "has_main_web_app": false,
        }))),
        "getUpdates" => polling::get_updates(bot, req).await,
        "setWebhook" => polling::set_webhook(shared, bot, req),
        "deleteWebhook" => polling::delete_webhook(bot, req),
        "getWebhookInfo" => Ok(polling::webhook_info(bot)),
        "sendMessage" => messages::send_message(bot, req),
        "editMessageText" => messages::edit_message_text(bot, req),
        "sendChatAction" => messages::send_chat_action(bot, req),
        "sendMessageDraft" => messages::send_message_draft(bot, req),
        "getFile" => messages::get_file(shared, req),
        "sendPhoto" | "sendDocument" => messages::send_file(shared, bot, method, req),
        _ => Err(ApiError::new(404, "Not Found")),
    }
}

/// Merge the query string and the body (JSON object, urlencoded form or
/// multipart) into one parameter map; body values win.
async fn parse_request(
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<ApiRequest, ApiError> {
    let mut params = Map::new();
    if let Some(q) = query {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            params.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let mut parts = Vec::new();
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if body.is_empty() {
    } else if ct.starts_with("application/json") {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(o)) => params.extend(o),
            _ => return Err(ApiError::bad("can't parse JSON request body")),
        }
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        for (k, v) in url::form_urlencoded::parse(&body) {
            params.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    } else if ct.starts_with("multipart/form-data") {
        let raw_ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        parts = multipart::parse(raw_ct, body)
            .await
            .map_err(|e| ApiError::bad(format!("can't parse multipart request: {e}")))?;
        for p in parts.iter().filter(|p| !p.is_file()) {
            params.insert(p.name.clone(), Value::String(p.text()));
        }
    }
    Ok(ApiRequest { params, parts })
}

/// `GET /file/bot{token}/{file_path}`.
fn download(shared: &Shared, rest: &str) -> Response {
    let Some((token, file_path)) = rest.split_once('/') else {
        return error_response(&ApiError::new(404, "Not Found"));
    };
    if shared.bot(token).is_none() {
        return error_response(&ApiError::new(401, "Unauthorized"));
    }
    let found = shared
        .files
        .lock()
        .values()
        .find(|(f, _)| f.file_path == file_path)
        .map(|(f, b)| (f.mime_type.clone(), b.clone()));
    match found {
        Some((_, bytes)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        None => error_response(&ApiError::new(404, "Not Found")),
    }
}
