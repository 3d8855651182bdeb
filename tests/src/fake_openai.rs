//! A scriptable fake of an OpenAI-compatible Chat Completions server, for
//! tests of the `openai` provider and of the gateway on top of it.
//!
//! It listens on `127.0.0.1` (port 0) and answers each
//! `POST /v1/chat/completions` with the next [`Script`] of its queue, in
//! the documented streaming format: `data: {chat.completion.chunk}\n\n`
//! events ending with `data: [DONE]\n\n` (usage in a last chunk with empty
//! `choices` when the script has usage and the request asked for it with
//! `stream_options.include_usage`). It records every request (headers and
//! JSON body) and counts streamed responses the client stopped reading
//! before their end (their connection closed). Waiting is event-driven
//! ([`FakeOpenAi::wait_requests`], [`FakeOpenAi::wait_disconnect`]); the
//! waits have no timeout of their own.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Token counts reported by a scripted response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FakeUsage {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: u64,
    /// `usage.completion_tokens`.
    pub completion_tokens: u64,
}

/// A tool call a scripted response makes.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeToolCall {
    /// `id` (sent in the call's first fragment, with the name).
    pub id: String,
    /// `function.name`.
    pub name: String,
    /// `function.arguments`, one fragment per chunk (their concatenation
    /// is the arguments).
    pub argument_fragments: Vec<String>,
}

impl FakeToolCall {
    /// A call `id` of tool `name` whose arguments arrive as `fragments`.
    pub fn new(id: &str, name: &str, fragments: &[&str]) -> Self {
        FakeToolCall {
            id: id.into(),
            name: name.into(),
            argument_fragments: fragments.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// One scripted response.
#[derive(Debug, Clone, PartialEq)]
pub enum Script {
    /// Stream `chunks` as `delta.content`, then `finish_reason: "stop"`.
    Text {
        /// The content deltas, in order.
        chunks: Vec<String>,
        /// Usage to report, if any.
        usage: Option<FakeUsage>,
    },
    /// Stream optional `text`, then `calls` (each call's id and name
    /// first, then its argument fragments, one chunk each), then
    /// `finish_reason: "tool_calls"`.
    ToolCalls {
        /// Content deltas before the calls.
        text: Vec<String>,
        /// The calls, indexed in order from 0.
        calls: Vec<FakeToolCall>,
        /// Usage to report, if any.
        usage: Option<FakeUsage>,
    },
    /// Answer `status` with `{"error":{"message":..}}` (and `Retry-After`).
    Error {
        /// HTTP status.
        status: u16,
        /// `error.message`.
        message: String,
        /// `Retry-After` header value, if any.
        retry_after: Option<String>,
    },
    /// Stream `chunks` as content deltas, then never send anything more
    /// nor end the response (until the client goes away).
    Hang {
        /// The content deltas sent before hanging.
        chunks: Vec<String>,
    },
    /// A 200 `text/event-stream` response whose body is exactly these
    /// pieces (for malformed or unusual streams).
    Raw {
        /// Body pieces, sent in order.
        body: Vec<String>,
    },
}

impl Script {
    /// [`Script::Text`] without usage.
    pub fn text(chunks: &[&str]) -> Self {
        Script::Text {
            chunks: strings(chunks),
            usage: None,
        }
    }

    /// [`Script::Text`] reporting `prompt_tokens` and `completion_tokens`.
    pub fn text_with_usage(chunks: &[&str], prompt_tokens: u64, completion_tokens: u64) -> Self {
        Script::Text {
            chunks: strings(chunks),
            usage: Some(FakeUsage {
                prompt_tokens,
                completion_tokens,
            }),
        }
    }

    /// [`Script::ToolCalls`] with no text and no usage.
    pub fn tool_calls(calls: Vec<FakeToolCall>) -> Self {
        Script::ToolCalls {
            text: Vec::new(),
            calls,
            usage: None,
        }
    }

    /// [`Script::Error`] without `Retry-After`.
    pub fn error(status: u16, message: &str) -> Self {
        Script::Error {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// [`Script::Hang`].
    pub fn hang(chunks: &[&str]) -> Self {
        Script::Hang {
            chunks: strings(chunks),
        }
    }

    /// [`Script::Raw`].
    pub fn raw(body: &[&str]) -> Self {
        Script::Raw {
            body: strings(body),
        }
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: Method,
    /// Request path (`/v1/chat/completions`).
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The body as JSON (a JSON string holding the raw text if it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// The `Authorization` header, if sent.
    pub fn authorization(&self) -> Option<String> {
        self.headers
            .get(header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

struct Shared {
    script: Mutex<VecDeque<Script>>,
    recorded: Mutex<Vec<RecordedRequest>>,
    /// Number of requests recorded.
    requests: watch::Sender<usize>,
    /// Number of streamed responses dropped before their end.
    disconnects: Arc<watch::Sender<usize>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake server (stopped when dropped).
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    /// Start a server answering requests with `script`, in order. A request
    /// beyond the script gets a 500 saying so.
    pub async fn start(script: Vec<Script>) -> FakeOpenAi {
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            recorded: Mutex::new(Vec::new()),
            requests: watch::Sender::new(0),
            disconnects: Arc::new(watch::Sender::new(0)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake openai server");
        let addr = listener.local_addr().expect("fake openai address");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOpenAi {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT/v1`, the provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queue one more scripted response.
    pub fn push(&self, script: Script) {
        lock(&self.shared.script).push_back(script);
    }

    /// The JSON bodies of the requests received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.recorded)
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    /// The requests received so far, in order, with their headers.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded).clone()
    }

    /// Wait until at least `n` requests have been received.
    pub async fn wait_requests(&self, n: usize) {
        let mut rx = self.shared.requests.subscribe();
        let _ = rx.wait_for(|seen| *seen >= n).await;
    }

    /// How many streamed responses the client stopped reading before
    /// their end (by closing the connection).
    pub fn disconnects(&self) -> usize {
        *self.shared.disconnects.borrow()
    }

    /// Wait until a streamed response was closed by the client before its
    /// end (at least once since the server started).
    pub async fn wait_disconnect(&self) {
        let mut rx = self.shared.disconnects.subscribe();
        let _ = rx.wait_for(|n| *n >= 1).await;
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let path = uri.path().to_string();
    let request = RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        headers,
        body: body.clone(),
    };
    lock(&shared.recorded).push(request);
    shared.requests.send_modify(|n| *n += 1);

    if method != Method::POST || path != "/v1/chat/completions" {
        return error_response(404, &format!("fake openai: no route {method} {path}"), None);
    }
    let Some(script) = lock(&shared.script).pop_front() else {
        return error_response(500, "fake openai: no scripted response left", None);
    };
    let chunks = Chunks {
        id: format!("chatcmpl-fake-{}", *shared.requests.borrow()),
        model: body["model"].as_str().unwrap_or("fake-model").to_string(),
        include_usage: body["stream_options"]["include_usage"] == Value::Bool(true),
    };
    let (frames, hang) = match script {
        Script::Error {
            status,
            message,
            retry_after,
        } => return error_response(status, &message, retry_after.as_deref()),
        Script::Text {
            chunks: text,
            usage,
        } => {
            let mut f = vec![chunks.role(json!(""))];
            f.extend(
                text.iter()
                    .map(|t| chunks.delta(json!({"content": t}), None)),
            );
            f.push(chunks.delta(json!({}), Some("stop")));
            f.extend(chunks.end(usage));
            (f, false)
        }
        Script::ToolCalls { text, calls, usage } => {
            let mut f = vec![chunks.role(if text.is_empty() {
                Value::Null
            } else {
                json!("")
            })];
            f.extend(
                text.iter()
                    .map(|t| chunks.delta(json!({"content": t}), None)),
            );
            for (i, call) in calls.iter().enumerate() {
                f.push(chunks.delta(
                    json!({"tool_calls": [{
                        "index": i, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }]}),
                    None,
                ));
                for fragment in &call.argument_fragments {
                    f.push(chunks.delta(
                        json!({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}),
                        None,
                    ));
                }
            }
            f.push(chunks.delta(json!({}), Some("tool_calls")));
            f.extend(chunks.end(usage));
            (f, false)
        }
        Script::Hang { chunks: text } => {
            let mut f = vec![chunks.role(json!(""))];
            f.extend(
                text.iter()
                    .map(|t| chunks.delta(json!({"content": t}), None)),
            );
            (f, true)
        }
        Script::Raw { body } => (body.into_iter().map(Bytes::from).collect(), false),
    };
    let stream = SseBody {
        frames: frames.into(),
        hang,
        finished: false,
        disconnects: shared.disconnects.clone(),
    };
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn error_response(status: u16, message: &str, retry_after: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {
        "message": message,
        "type": if status == StatusCode::TOO_MANY_REQUESTS { "requests" } else { "invalid_request_error" },
        "param": null,
        "code": null,
    }});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(after) = retry_after.and_then(|a| HeaderValue::from_str(a).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, after);
    }
    response
}

/// Builds the `chat.completion.chunk` events of one response.
struct Chunks {
    id: String,
    model: String,
    include_usage: bool,
}

impl Chunks {
    fn event(&self, mut chunk: Value) -> Bytes {
        if self.include_usage && chunk.get("usage").is_none() {
            chunk["usage"] = Value::Null;
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    /// One choice's delta.
    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        self.event(json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        }))
    }

    /// The first delta: the role, and `content` (`""`, or `null` before
    /// tool calls, as OpenAI sends them).
    fn role(&self, content: Value) -> Bytes {
        self.delta(
            json!({"role": "assistant", "content": content, "refusal": null}),
            None,
        )
    }

    /// The usage chunk (when asked for and scripted) and `[DONE]`.
    fn end(&self, usage: Option<FakeUsage>) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let (true, Some(u)) = (self.include_usage, usage) {
            out.push(self.event(json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": self.model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": {
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "total_tokens": u.prompt_tokens + u.completion_tokens,
                },
            })));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }
}

/// A response body that counts itself in `disconnects` when dropped before
/// its end: the server drops it when the client closes the connection.
struct SseBody {
    frames: VecDeque<Bytes>,
    /// After the frames, stay pending forever instead of ending.
    hang: bool,
    finished: bool,
    disconnects: Arc<watch::Sender<usize>>,
}

impl futures::Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if self.hang {
            // Never woken: only the client's going away ends this body.
            return Poll::Pending;
        }
        self.finished = true;
        Poll::Ready(None)
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        if !self.finished {
            self.disconnects.send_modify(|n| *n += 1);
        }
    }
}
