//! The agent runtime: model providers that turn a session's transcript and
//! a new message into a streamed answer, calling tool plugins on the way.
//!
//! A [`Provider`] streams [`AgentEvent`]s into a channel while it runs and
//! returns the [`RunOutcome`]. The gateway's run manager (in
//! `gateway::runs`) owns everything protocol-shaped: it turns these events
//! into OpenClaw `agent`/`chat` events, throttles deltas, persists the
//! transcript and answers channels. Providers:
//! - [`echo::EchoProvider`] (default, offline, deterministic): streams the
//!   message back word by word; `/tool NAME {json}` calls a tool plugin;
//! - [`openai::OpenAiProvider`]: any OpenAI-compatible Chat Completions
//!   endpoint, with streaming and tool calls.

pub mod echo;
pub mod files;
pub mod openai;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One message of context given to a provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextMessage {
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    /// Its text (for an assistant message: all the text of its run).
    pub text: String,
    /// For an assistant message, the tool rounds of its run, in order:
    /// `text` starts with their texts, and the rest is the final answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_rounds: Vec<ToolRound>,
}

/// The text a model wrote before asking for tools, and those calls with
/// their results (kept in the transcript so a later turn can replay them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolRound {
    /// Text before the calls.
    pub text: String,
    /// The calls, in order.
    pub calls: Vec<ToolCallRecord>,
}

/// One tool call and its result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallRecord {
    /// The call id (from the model).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model sent them (JSON text).
    pub arguments: String,
    /// The result (or the error message).
    pub result: String,
    /// Whether the call failed.
    pub is_error: bool,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The tool's name as the model sees it (from the plugin's `describe`).
    pub name: String,
    /// The plugin that implements it.
    pub plugin: String,
    /// What it does.
    pub description: String,
    /// JSON schema of its arguments.
    pub parameters: Value,
}

/// Runs tools for a provider (the gateway implements it over the plugin
/// registry; tests can use anything).
pub trait ToolHost: Send + Sync {
    /// The tools available now.
    fn tools(&self) -> Vec<ToolSpec>;
    /// Invoke tool `name` (a tool name or plugin name) with JSON arguments.
    /// `Ok` is the JSON result; `Err` a message for the model and the user.
    fn invoke<'a>(&'a self, name: &'a str, args: &'a str) -> BoxFuture<'a, Result<String, String>>;
}

/// What a provider reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// More assistant text (an increment, not the whole text).
    TextDelta(String),
    /// A tool call is starting.
    ToolStart {
        /// Call id (from the model, or generated).
        call_id: String,
        /// Tool name.
        name: String,
        /// Parsed arguments (or the raw string as a JSON string if invalid).
        args: Value,
    },
    /// A tool call finished.
    ToolResult {
        /// Call id.
        call_id: String,
        /// Tool name.
        name: String,
        /// Its result (parsed JSON if possible) or error message.
        result: Value,
        /// Whether it failed.
        is_error: bool,
    },
}

/// Token usage, if the provider reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// How a run ended successfully.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOutcome {
    /// The whole final assistant text (of the last round).
    pub text: String,
    /// Why the model stopped (`stop`, `length`, `tool_rounds`, ...).
    pub stop_reason: Option<String>,
    /// Usage summed over rounds, when reported.
    pub usage: Option<Usage>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The run was cancelled (`chat.abort`, shutdown).
    #[error("aborted")]
    Aborted,
    /// The provider is misconfigured (no API key, bad URL).
    #[error("provider configuration: {0}")]
    Config(String),
    /// The provider's HTTP endpoint failed or answered an error.
    #[error("provider error: {0}")]
    Provider(String),
    /// The provider took longer than the run's timeout.
    #[error("timed out")]
    Timeout,
    /// The provider rate-limited us.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// The provider failed in a way it did not report (it panicked); the
    /// details are in the gateway log only.
    #[error("internal error in the model provider")]
    Internal,
}

impl AgentError {
    /// OpenClaw's `errorKind` for a chat `error` event.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::Timeout => "timeout",
            AgentError::RateLimited(_) => "rate_limit",
            _ => "unknown",
        }
    }
}

/// A run request.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The session it belongs to.
    pub session_key: String,
    /// Earlier messages, oldest first (not including `message`).
    pub history: Vec<ContextMessage>,
    /// The new user message.
    pub message: String,
    /// Model override from the session settings, if any.
    pub model: Option<String>,
    /// Whether the message comes from an operator client (`chat.send`,
    /// `agent`: operator.write or admin). Direct commands that bypass the
    /// model, such as the echo provider's `/tool`, are refused otherwise
    /// (channel senders never get them).
    pub operator: bool,
    /// Files that came with the message (see [`files`]).
    pub files: Vec<files::AgentFile>,
}

/// A model provider.
pub trait Provider: Send + Sync {
    /// `echo`, `openai`, ...
    fn name(&self) -> &str;
    /// The models it offers (for `models.list`).
    fn models(&self) -> Vec<ModelInfo>;
    /// Whether it takes images as input (they are described in the text
    /// otherwise; see [`files`]).
    fn takes_images(&self) -> bool {
        false
    }
    /// Run one request to completion, sending events to `events` as they
    /// happen. Must return [`AgentError::Aborted`] promptly once `cancel`
    /// fires (dropping any HTTP stream). A closed `events` receiver is not
    /// an error.
    fn run<'a>(
        &'a self,
        req: RunRequest,
        tools: Arc<dyn ToolHost>,
        events: mpsc::UnboundedSender<AgentEvent>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<RunOutcome, AgentError>>;
}

/// One tool call as every provider makes it: announced with
/// [`AgentEvent::ToolStart`], run through `tools` (abandoned with
/// [`AgentError::Aborted`] when `cancel` fires) and reported with
/// [`AgentEvent::ToolResult`]. A call with no name or with arguments that
/// are not JSON is refused without reaching the tool, so the model (which
/// can correct itself) gets the reason. Returns the tool's output, or the
/// error as `Err`.
pub async fn call_tool(
    tools: &dyn ToolHost,
    events: &mpsc::UnboundedSender<AgentEvent>,
    cancel: &CancellationToken,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> Result<Result<String, String>, AgentError> {
    let parsed: Result<Value, _> = serde_json::from_str(arguments);
    let _ = events.send(AgentEvent::ToolStart {
        call_id: call_id.to_owned(),
        name: name.to_owned(),
        args: parsed
            .as_ref()
            .cloned()
            .unwrap_or_else(|_| Value::String(arguments.to_owned())),
    });
    let result = if name.is_empty() {
        Err("the tool call has no function name".to_string())
    } else if let Err(e) = &parsed {
        Err(format!("the arguments are not valid JSON: {e}"))
    } else {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(AgentError::Aborted),
            r = tools.invoke(name, arguments) => r,
        }
    };
    tracing::info!(tool = %name, call_id, ok = result.is_ok(), "tool call");
    let (value, is_error) = match &result {
        Ok(out) => (
            serde_json::from_str(out).unwrap_or_else(|_| Value::String(out.clone())),
            false,
        ),
        Err(e) => (Value::String(e.clone()), true),
    };
    let _ = events.send(AgentEvent::ToolResult {
        call_id: call_id.to_owned(),
        name: name.to_owned(),
        result: value,
        is_error,
    });
    Ok(result)
}

/// A model offered by a provider (`models.list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// Model id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Provider name.
    pub provider: String,
    /// Context window, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
}

/// Agent settings (`[agent]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `echo` (default) or `openai`.
    pub provider: String,
    /// Delay between echoed words, ms (default 0; the bench and demos may
    /// slow it down to watch streaming).
    pub echo_word_delay_ms: u64,
    /// OpenAI-compatible endpoint settings.
    pub openai: openai::OpenAiConfig,
    /// At most this many model/tool round trips per run (default 8).
    pub max_tool_rounds: u32,
    /// A run is failed with `timeout` after this long (default 600 000 ms).
    pub run_timeout_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            provider: "echo".into(),
            echo_word_delay_ms: 0,
            openai: openai::OpenAiConfig::default(),
            max_tool_rounds: 8,
            run_timeout_ms: 600_000,
        }
    }
}

/// Build the configured provider.
pub fn build_provider(config: &AgentConfig) -> Result<Arc<dyn Provider>, AgentError> {
    match config.provider.as_str() {
        "echo" => Ok(Arc::new(echo::EchoProvider::new(config.echo_word_delay_ms))),
        "openai" => Ok(Arc::new(openai::OpenAiProvider::new(
            config.openai.clone(),
            config.max_tool_rounds,
        )?)),
        other => Err(AgentError::Config(format!(
            "unknown provider {other:?} (expected \"echo\" or \"openai\")"
        ))),
    }
}
