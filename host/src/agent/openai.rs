//! The `openai` provider: any OpenAI-compatible Chat Completions endpoint
//! (OpenAI, Ollama, llama.cpp's server, vLLM), streamed, with tool calls.
//!
//! A run is a series of rounds. Each round POSTs the conversation to
//! `{base_url}/chat/completions` with `stream: true` and reads the
//! server-sent events: `delta.content` becomes [`AgentEvent::TextDelta`],
//! `delta.tool_calls` fragments are put together by `index`. A round that
//! ends with tool calls runs them through the [`ToolHost`] (emitting
//! [`AgentEvent::ToolStart`]/[`AgentEvent::ToolResult`]), appends the
//! assistant's `tool_calls` message and one `tool` message per call, and
//! starts the next round; at most `max_rounds` rounds.
//!
//! Every wait (response headers, each chunk, each tool) is raced against
//! the run's cancellation token; returning drops the response, which closes
//! the HTTP stream. `request_timeout_ms` bounds the wait for the response
//! headers and each gap between chunks, not the whole stream. The API key
//! is only ever put in the `Authorization` header (marked sensitive); it is
//! never logged and never part of an error message.

mod sse;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use reqwest::header::{self, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{AgentError, AgentEvent, ModelInfo, Provider, RunOutcome, RunRequest, ToolHost, Usage};

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// At most this much of an error response's body is read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// At most this many characters of a body or chunk are quoted in an error.
const QUOTE_CHARS: usize = 300;

/// `[agent.openai]` settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiConfig {
    /// Base URL up to and including `/v1` (default `https://api.openai.com/v1`;
    /// env `PINCER_OPENAI_BASE_URL`).
    pub base_url: String,
    /// Model id (default `gpt-4o-mini`; env `PINCER_OPENAI_MODEL`).
    pub model: String,
    /// API key; when absent, env `PINCER_OPENAI_API_KEY` then `OPENAI_API_KEY`.
    /// With none at all no `Authorization` header is sent (local servers).
    pub api_key: Option<String>,
    /// Per-request timeout, ms (default 120 000): for the response headers,
    /// then for each gap between stream chunks. Must be positive.
    pub request_timeout_ms: u64,
    /// The model takes image input (default true): images that come with a
    /// message are sent as `image_url` parts with a `data:` URL; when false
    /// they are described in the text like other files.
    pub image_input: bool,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: DEFAULT_BASE_URL.into(),
            model: DEFAULT_MODEL.into(),
            api_key: None,
            request_timeout_ms: 120_000,
            image_input: true,
        }
    }
}

/// Hand-written so that the API key never reaches a log line.
impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("image_input", &self.image_input)
            .finish()
    }
}

impl OpenAiConfig {
    /// Fill in from the environment (`lookup` is `std::env::var` in
    /// production): the API key when none is configured
    /// (`PINCER_OPENAI_API_KEY`, then `OPENAI_API_KEY`); the base URL and
    /// model (`PINCER_OPENAI_BASE_URL`, `PINCER_OPENAI_MODEL`) only where
    /// the configured value is the default. Empty variables are ignored.
    pub fn apply_env(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if self.api_key.is_none() {
            self.api_key = var("PINCER_OPENAI_API_KEY").or_else(|| var("OPENAI_API_KEY"));
        }
        if self.base_url == DEFAULT_BASE_URL
            && let Some(url) = var("PINCER_OPENAI_BASE_URL")
        {
            self.base_url = url;
        }
        if self.model == DEFAULT_MODEL
            && let Some(model) = var("PINCER_OPENAI_MODEL")
        {
            self.model = model;
        }
        self
    }
}

/// The OpenAI-compatible provider.
#[derive(Debug)]
pub struct OpenAiProvider {
    config: OpenAiConfig,
    /// `{base_url}/chat/completions`.
    endpoint: reqwest::Url,
    /// The endpoint as shown in logs and errors (no user or password).
    shown: String,
    /// `Bearer <key>`, marked sensitive.
    authorization: Option<HeaderValue>,
    timeout: Duration,
    max_rounds: u32,
    client: reqwest::Client,
}

impl OpenAiProvider {
    /// A provider for `config` completed from the environment (see
    /// [`OpenAiConfig::apply_env`]), with at most `max_rounds` model round
    /// trips per run.
    pub fn new(config: OpenAiConfig, max_rounds: u32) -> Result<Self, AgentError> {
        Self::with_config(config.apply_env(|k| std::env::var(k).ok()), max_rounds)
    }

    /// A provider for exactly `config` (no environment lookups), with at
    /// most `max_rounds` (at least 1) model round trips per run.
    pub fn with_config(config: OpenAiConfig, max_rounds: u32) -> Result<Self, AgentError> {
        let base = config.base_url.trim().trim_end_matches('/');
        let endpoint = reqwest::Url::parse(&format!("{base}/chat/completions")).map_err(|e| {
            AgentError::Config(format!(
                "agent.openai.base_url {:?} is not a valid URL: {e}",
                config.base_url
            ))
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(AgentError::Config(format!(
                "agent.openai.base_url {:?} must be an http or https URL",
                config.base_url
            )));
        }
        let mut shown = endpoint.clone();
        // Only fails for URLs that cannot have credentials, which then have none.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        if config.request_timeout_ms == 0 {
            return Err(AgentError::Config(
                "agent.openai.request_timeout_ms must be positive".into(),
            ));
        }
        let authorization = match config.api_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => {
                let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    AgentError::Config(
                        "the OpenAI API key contains characters not allowed in an HTTP header"
                            .into(),
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        };
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .map_err(|e| AgentError::Config(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(OpenAiProvider {
            shown: shown.to_string(),
            endpoint,
            authorization,
            timeout,
            max_rounds: max_rounds.max(1),
            client,
            config,
        })
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        "openai"
    }

    fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo {
            id: self.config.model.clone(),
            name: self.config.model.clone(),
            provider: "openai".into(),
            context_window: None,
        }]
    }

    fn takes_images(&self) -> bool {
        self.config.image_input
    }

    fn run<'a>(
        &'a self,
        req: RunRequest,
        tools: Arc<dyn ToolHost>,
        events: mpsc::UnboundedSender<AgentEvent>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<RunOutcome, AgentError>> {
        let model = req
            .model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| self.config.model.clone());
        let span = tracing::info_span!("openai", session = %req.session_key, model = %model);
        Box::pin(
            async move {
                let run = Run {
                    provider: self,
                    tools,
                    events,
                    cancel,
                };
                let result = run.execute(&req, &model).await;
                match &result {
                    Ok(o) => tracing::info!(stop_reason = ?o.stop_reason, usage = ?o.usage, "run finished"),
                    Err(AgentError::Aborted) => tracing::info!("run aborted"),
                    Err(e) => tracing::warn!(error = %e, "run failed"),
                }
                result
            }
            .instrument(span),
        )
    }
}

/// One run's context.
struct Run<'r> {
    provider: &'r OpenAiProvider,
    tools: Arc<dyn ToolHost>,
    events: mpsc::UnboundedSender<AgentEvent>,
    cancel: CancellationToken,
}

/// A tool call put together from a round's fragments.
#[derive(Debug, Default, Clone, PartialEq)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

/// What one round produced.
#[derive(Debug, Default)]
struct Round {
    text: String,
    finish_reason: Option<String>,
    /// By the model's `index`.
    calls: BTreeMap<u32, ToolCall>,
    usage: Option<Usage>,
    /// `data: [DONE]` was seen.
    done: bool,
}

impl Run<'_> {
    async fn execute(&self, req: &RunRequest, model: &str) -> Result<RunOutcome, AgentError> {
        let tool_defs: Vec<Value> = self
            .tools
            .tools()
            .into_iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters,
                }})
            })
            .collect();
        let mut messages = initial_messages(req);
        if let Some(last) = messages.last_mut() {
            *last = self.user_message(req).await;
        }
        let mut usage: Option<Usage> = None;
        let mut round_no = 1;
        loop {
            let mut body = json!({
                "model": model,
                "messages": messages,
                "stream": true,
                "stream_options": {"include_usage": true},
            });
            if !tool_defs.is_empty() {
                body["tools"] = Value::Array(tool_defs.clone());
            }
            tracing::debug!(
                round = round_no,
                messages = messages.len(),
                url = %self.provider.shown,
                "chat completion request"
            );
            let round = self.round(&body).await?;
            if let Some(u) = &round.usage {
                let total = usage.get_or_insert_with(Usage::default);
                total.input_tokens += u.input_tokens;
                total.output_tokens += u.output_tokens;
            }
            // A reply cut off by the length limit may hold half an argument
            // list: it ends the run rather than calling anything.
            if round.calls.is_empty() || round.finish_reason.as_deref() == Some("length") {
                return Ok(RunOutcome {
                    text: round.text,
                    stop_reason: round.finish_reason,
                    usage,
                });
            }
            if round_no >= self.provider.max_rounds {
                tracing::warn!(
                    rounds = round_no,
                    "the model still asks for tools after the last allowed round"
                );
                return Ok(RunOutcome {
                    text: round.text,
                    stop_reason: Some("tool_rounds".into()),
                    usage,
                });
            }
            let calls: Vec<ToolCall> = round
                .calls
                .into_values()
                .map(|mut c| {
                    if c.id.is_empty() {
                        c.id = format!("call_{}", uuid::Uuid::new_v4().simple());
                    }
                    if c.arguments.trim().is_empty() {
                        c.arguments = "{}".into();
                    }
                    c
                })
                .collect();
            messages.push(json!({
                "role": "assistant",
                "content": if round.text.is_empty() { Value::Null } else { Value::String(round.text) },
                "tool_calls": calls.iter().map(|c| json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })).collect::<Vec<_>>(),
            }));
            for call in &calls {
                let content = self.call_tool(call).await?;
                messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": content}));
            }
            round_no += 1;
        }
    }

    /// Await `fut`, failing with `Aborted` as soon as the run is cancelled
    /// and with a `Provider` error after the request timeout.
    async fn guard<F: Future>(&self, fut: F, waiting_for: &str) -> Result<F::Output, AgentError> {
        let p = self.provider;
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(AgentError::Aborted),
            r = tokio::time::timeout(p.timeout, fut) => r.map_err(|_| AgentError::Provider(format!(
                "{} sent nothing for {} ms (waiting for {waiting_for})",
                p.shown, p.config.request_timeout_ms
            ))),
        }
    }

    /// One request and its streamed answer.
    async fn round(&self, body: &Value) -> Result<Round, AgentError> {
        let p = self.provider;
        let mut request = p
            .client
            .post(p.endpoint.clone())
            .header(header::ACCEPT, "text/event-stream")
            .json(body);
        if let Some(auth) = &p.authorization {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        let response = self
            .guard(request.send(), "the response headers")
            .await?
            .map_err(|e| {
                AgentError::Provider(format!(
                    "cannot reach {}: {}",
                    p.shown,
                    error_chain(&e.without_url())
                ))
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.http_error(response).await);
        }
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if is_json {
            let body = self.read_capped(response).await?;
            return Err(AgentError::Provider(format!(
                "{} answered {status} with JSON instead of an event stream: {}",
                p.shown,
                error_message(&body)
            )));
        }

        let mut stream = response.bytes_stream();
        let mut parser = sse::SseParser::default();
        let mut round = Round::default();
        loop {
            let next = self.guard(stream.next(), "the next chunk").await?;
            let ended = next.is_none();
            let datas = match next {
                Some(Ok(bytes)) => parser.push(&bytes).map_err(|len| {
                    AgentError::Provider(format!(
                        "{} sent a {len}-byte line in its event stream",
                        p.shown
                    ))
                })?,
                Some(Err(e)) => {
                    return Err(AgentError::Provider(format!(
                        "reading the stream from {}: {}",
                        p.shown,
                        error_chain(&e.without_url())
                    )));
                }
                None => parser.finish(),
            };
            for data in datas {
                self.on_event(&data, &mut round)?;
                if round.done {
                    return Ok(round);
                }
            }
            if ended {
                if round.finish_reason.is_none() {
                    return Err(AgentError::Provider(format!(
                        "the stream from {} ended before the model finished",
                        p.shown
                    )));
                }
                return Ok(round);
            }
        }
    }

    /// Handle one event's data.
    fn on_event(&self, data: &str, round: &mut Round) -> Result<(), AgentError> {
        if data.trim() == "[DONE]" {
            round.done = true;
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            AgentError::Provider(format!(
                "malformed chunk in the stream from {} ({e}): {}",
                self.provider.shown,
                quote(data)
            ))
        })?;
        if let Some(error) = chunk.error {
            return Err(AgentError::Provider(format!(
                "{} reported an error in the stream: {}",
                self.provider.shown,
                error_value_message(&error).unwrap_or_else(|| quote(&error.to_string()))
            )));
        }
        if let Some(u) = chunk.usage {
            round.usage = Some(Usage {
                input_tokens: u.prompt_tokens.unwrap_or(0),
                output_tokens: u.completion_tokens.unwrap_or(0),
            });
        }
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(reason) = choice.finish_reason {
                round.finish_reason = Some(reason);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                round.text.push_str(&text);
                let _ = self.events.send(AgentEvent::TextDelta(text));
            }
            for (pos, fragment) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                merge_tool_call(&mut round.calls, pos, fragment);
            }
        }
        Ok(())
    }

    /// Run one tool call; returns the content of its `tool` message.
    async fn call_tool(&self, call: &ToolCall) -> Result<String, AgentError> {
        let result = super::call_tool(
            &*self.tools,
            &self.events,
            &self.cancel,
            &call.id,
            &call.name,
            &call.arguments,
        )
        .await?;
        Ok(result.unwrap_or_else(|e| format!("error: {e}")))
    }

    /// Turn a non-2xx response into the error for it.
    async fn http_error(&self, response: reqwest::Response) -> AgentError {
        let p = self.provider;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match self.read_capped(response).await {
            Ok(b) => b,
            Err(AgentError::Aborted) => return AgentError::Aborted,
            // The status says enough without the body.
            Err(_) => Vec::new(),
        };
        let message = error_message(&body);
        let message = if message.is_empty() {
            status.canonical_reason().unwrap_or("").to_string()
        } else {
            message
        };
        match status.as_u16() {
            401 | 403 => AgentError::Config(format!(
                "{} answered {status} ({message}): check the API key ({})",
                p.shown,
                if p.authorization.is_some() {
                    "agent.openai.api_key, PINCER_OPENAI_API_KEY or OPENAI_API_KEY"
                } else {
                    "none is configured: set agent.openai.api_key, PINCER_OPENAI_API_KEY or OPENAI_API_KEY"
                }
            )),
            429 => AgentError::RateLimited(match retry_after {
                Some(after) => format!("{message} (Retry-After: {after})"),
                None => message,
            }),
            _ => AgentError::Provider(format!("{} answered {status}: {message}", p.shown)),
        }
    }

    /// Read at most [`MAX_ERROR_BODY`] bytes of a body.
    async fn read_capped(&self, mut response: reqwest::Response) -> Result<Vec<u8>, AgentError> {
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match self.guard(response.chunk(), "the response body").await? {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return Err(AgentError::Provider(format!(
                        "reading the response from {}: {}",
                        self.provider.shown,
                        error_chain(&e.without_url())
                    )));
                }
            }
        }
        body.truncate(MAX_ERROR_BODY);
        Ok(body)
    }
}

impl Run<'_> {
    /// The new user message: its text (with the files it does not get as
    /// data described), and each image as an `image_url` part when the
    /// model takes image input. An image that cannot be read is described.
    async fn user_message(&self, req: &RunRequest) -> Value {
        let inline = self.provider.config.image_input;
        let mut parts = Vec::new();
        let mut unread = Vec::new();
        if inline {
            for f in req.files.iter().filter(|f| f.is_image()) {
                match f.data_url().await {
                    Ok(url) => parts.push(json!({"type": "image_url", "image_url": {"url": url}})),
                    Err(e) => {
                        tracing::warn!(session = %req.session_key, error = %e, "reading an image for the model");
                        unread.push(f.clone());
                    }
                }
            }
        }
        let mut text = super::files::message_text(&req.message, &req.files, inline);
        if !unread.is_empty() {
            text = super::files::message_text(&text, &unread, false);
        }
        if parts.is_empty() {
            return json!({"role": "user", "content": text});
        }
        parts.insert(0, json!({"type": "text", "text": text}));
        json!({"role": "user", "content": parts})
    }
}

/// The conversation so far in Chat Completions form. The transcript's
/// `tool` messages carry no call id (which a `tool` message needs), so they
/// are replayed as assistant text.
fn initial_messages(req: &RunRequest) -> Vec<Value> {
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.history {
        match m.role.as_str() {
            "assistant" if !m.tool_rounds.is_empty() => replay_tool_rounds(m, &mut messages),
            "user" | "assistant" | "system" => {
                messages.push(json!({"role": m.role, "content": m.text}));
            }
            "tool" => messages
                .push(json!({"role": "assistant", "content": format!("[tool result] {}", m.text)})),
            _ => messages.push(json!({"role": "user", "content": m.text})),
        }
    }
    messages.push(json!({"role": "user", "content": req.message}));
    messages
}

/// An earlier assistant turn that called tools, as the model saw it: per
/// round, the assistant's `tool_calls` message and one `tool` message per
/// call; then the final answer.
fn replay_tool_rounds(m: &super::ContextMessage, messages: &mut Vec<Value>) {
    let mut before = String::new();
    for round in &m.tool_rounds {
        before.push_str(&round.text);
        messages.push(json!({
            "role": "assistant",
            "content": if round.text.is_empty() { Value::Null } else { Value::String(round.text.clone()) },
            "tool_calls": round.calls.iter().map(|c| json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            })).collect::<Vec<_>>(),
        }));
        for c in &round.calls {
            let content = if c.is_error {
                format!("error: {}", c.result)
            } else {
                c.result.clone()
            };
            messages.push(json!({"role": "tool", "tool_call_id": c.id, "content": content}));
        }
    }
    let answer = m.text.strip_prefix(before.as_str()).unwrap_or(&m.text);
    messages.push(json!({"role": "assistant", "content": answer}));
}

/// Add one `delta.tool_calls[]` fragment to the round's calls. The first
/// fragment of a call brings its id and name, later ones more `arguments`
/// (strings are appended, as OpenAI's own client library does, except the
/// id). A server that omits `index` sends each call whole with its id.
fn merge_tool_call(calls: &mut BTreeMap<u32, ToolCall>, pos: usize, fragment: DeltaToolCall) {
    let id = fragment.id.filter(|id| !id.is_empty());
    let index = match (fragment.index, &id) {
        (Some(i), _) => i,
        (None, Some(id)) => calls
            .iter()
            .find(|(_, c)| &c.id == id)
            .map(|(i, _)| *i)
            .unwrap_or_else(|| calls.keys().next_back().map_or(0, |i| i + 1)),
        (None, None) => calls
            .keys()
            .next_back()
            .copied()
            .unwrap_or(u32::try_from(pos).unwrap_or(u32::MAX)),
    };
    let call = calls.entry(index).or_default();
    if let Some(id) = id {
        call.id = id;
    }
    if let Some(function) = fragment.function {
        if let Some(name) = function.name {
            call.name.push_str(&name);
        }
        if let Some(arguments) = function.arguments {
            call.arguments.push_str(&arguments);
        }
    }
}

/// The error message of an error body: OpenAI's `{"error":{"message"}}`,
/// `{"error":"..."}` (Ollama's native form), else the start of the body.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(error_value_message))
        .unwrap_or_else(|| quote(String::from_utf8_lossy(body).trim()))
}

/// The message in an `error` value (an object with `message`, or a string).
fn error_value_message(error: &Value) -> Option<String> {
    match error {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("message")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The start of `text`, for an error message.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// An error and its causes, `: `-separated (reqwest's own `Display` leaves
/// out the cause, such as "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A `chat.completion.chunk`, as leniently as servers differ.
#[derive(Debug, Deserialize)]
struct Chunk {
    choices: Option<Vec<ChunkChoice>>,
    usage: Option<ChunkUsage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    index: Option<u32>,
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<DeltaToolCall>>,
}

#[derive(Debug, Deserialize)]
struct DeltaToolCall {
    index: Option<u32>,
    id: Option<String>,
    function: Option<DeltaFunction>,
}

#[derive(Debug, Deserialize)]
struct DeltaFunction {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    #[test]
    fn env_fills_only_what_the_config_leaves_unset() {
        let c = OpenAiConfig::default().apply_env(env(&[
            ("OPENAI_API_KEY", "sk-two"),
            ("PINCER_OPENAI_API_KEY", "sk-one"),
            ("PINCER_OPENAI_BASE_URL", "http://localhost:11434/v1"),
            ("PINCER_OPENAI_MODEL", "llama3.2"),
        ]));
        assert_eq!(c.api_key.as_deref(), Some("sk-one"));
        assert_eq!(c.base_url, "http://localhost:11434/v1");
        assert_eq!(c.model, "llama3.2");

        let c = OpenAiConfig::default().apply_env(env(&[
            ("OPENAI_API_KEY", "sk-two"),
            ("PINCER_OPENAI_API_KEY", " "),
        ]));
        assert_eq!(c.api_key.as_deref(), Some("sk-two"));

        let configured = OpenAiConfig {
            base_url: "http://vllm:8000/v1".into(),
            model: "qwen".into(),
            api_key: Some("sk-config".into()),
            request_timeout_ms: 5,
            image_input: true,
        };
        let c = configured.apply_env(env(&[
            ("PINCER_OPENAI_API_KEY", "sk-env"),
            ("PINCER_OPENAI_BASE_URL", "http://other/v1"),
            ("PINCER_OPENAI_MODEL", "other"),
        ]));
        assert_eq!(c.api_key.as_deref(), Some("sk-config"));
        assert_eq!(c.base_url, "http://vllm:8000/v1");
        assert_eq!(c.model, "qwen");

        assert_eq!(OpenAiConfig::default().apply_env(env(&[])).api_key, None);
    }

    #[test]
    fn debug_output_hides_the_key() {
        let p = OpenAiProvider::with_config(
            OpenAiConfig {
                api_key: Some("sk-secret-123".into()),
                ..OpenAiConfig::default()
            },
            4,
        )
        .expect("provider");
        let shown = format!("{p:?}");
        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn bad_settings_are_config_errors() {
        for (base_url, timeout) in [
            ("not a url", 1000),
            ("ftp://host/v1", 1000),
            ("http://h/v1", 0),
        ] {
            let r = OpenAiProvider::with_config(
                OpenAiConfig {
                    base_url: base_url.into(),
                    request_timeout_ms: timeout,
                    ..OpenAiConfig::default()
                },
                4,
            );
            assert!(matches!(r, Err(AgentError::Config(_))), "{base_url}: {r:?}");
        }
        let p = OpenAiProvider::with_config(
            OpenAiConfig {
                base_url: "http://user:pw@localhost:8080/v1/".into(),
                ..OpenAiConfig::default()
            },
            0,
        )
        .expect("provider");
        assert_eq!(
            p.endpoint.as_str(),
            "http://user:pw@localhost:8080/v1/chat/completions"
        );
        assert_eq!(p.shown, "http://localhost:8080/v1/chat/completions");
        assert_eq!(p.max_rounds, 1);
    }

    fn fragment(v: Value) -> DeltaToolCall {
        serde_json::from_value(v).expect("fragment")
    }

    #[test]
    fn tool_call_fragments_are_put_together_by_index() {
        let mut calls = BTreeMap::new();
        let parts = [
            json!({"index": 0, "id": "call_a", "type": "function", "function": {"name": "clock", "arguments": ""}}),
            json!({"index": 1, "id": "call_b", "type": "function", "function": {"name": "fetch", "arguments": "{\"u"}}),
            json!({"index": 0, "function": {"arguments": "{\"tz\":"}}),
            json!({"index": 1, "function": {"arguments": "rl\":\"x\"}"}}),
            json!({"index": 0, "function": {"arguments": "\"UTC\"}"}}),
        ];
        for p in parts {
            merge_tool_call(&mut calls, 0, fragment(p));
        }
        let calls: Vec<_> = calls.into_values().collect();
        assert_eq!(
            calls,
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "clock".into(),
                    arguments: "{\"tz\":\"UTC\"}".into()
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "fetch".into(),
                    arguments: "{\"url\":\"x\"}".into()
                },
            ]
        );
    }

    #[test]
    fn whole_tool_calls_without_index_stay_apart() {
        let mut calls = BTreeMap::new();
        merge_tool_call(
            &mut calls,
            0,
            fragment(json!({"id": "c1", "function": {"name": "a", "arguments": "{}"}})),
        );
        merge_tool_call(
            &mut calls,
            0,
            fragment(json!({"id": "c2", "function": {"name": "b", "arguments": "{}"}})),
        );
        let names: Vec<_> = calls.values().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#),
            "Incorrect API key provided"
        );
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(b"  Bad Gateway\n"), "Bad Gateway");
        let long = "x".repeat(1000);
        assert_eq!(error_message(long.as_bytes()).len(), QUOTE_CHARS + 3);
    }

    #[test]
    fn history_roles() {
        let req = RunRequest {
            session_key: "s".into(),
            history: vec![
                super::super::ContextMessage {
                    role: "system".into(),
                    text: "be brief".into(),
                    ..Default::default()
                },
                super::super::ContextMessage {
                    role: "tool".into(),
                    text: "{\"t\":1}".into(),
                    ..Default::default()
                },
            ],
            message: "hi".into(),
            files: Vec::new(),
            model: None,
            operator: true,
        };
        assert_eq!(
            initial_messages(&req),
            vec![
                json!({"role": "system", "content": "be brief"}),
                json!({"role": "assistant", "content": "[tool result] {\"t\":1}"}),
                json!({"role": "user", "content": "hi"}),
            ]
        );
    }
}
