//! The `openai` provider: any OpenAI-compatible Chat Completions endpoint.
//! (Being written: see issue 3.)

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{AgentError, AgentEvent, ModelInfo, Provider, RunOutcome, RunRequest, ToolHost};

/// `[agent.openai]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiConfig {
    /// Base URL up to and including `/v1` (default `https://api.openai.com/v1`;
    /// env `PINCER_OPENAI_BASE_URL`).
    pub base_url: String,
    /// Model id (default `gpt-4o-mini`; env `PINCER_OPENAI_MODEL`).
    pub model: String,
    /// API key; when absent, env `PINCER_OPENAI_API_KEY` then `OPENAI_API_KEY`.
    pub api_key: Option<String>,
    /// Per-request timeout, ms (default 120 000).
    pub request_timeout_ms: u64,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key: None,
            request_timeout_ms: 120_000,
        }
    }
}

/// The OpenAI-compatible provider.
#[derive(Debug)]
pub struct OpenAiProvider {
    config: OpenAiConfig,
    max_rounds: u32,
}

impl OpenAiProvider {
    /// A provider for `config`, with at most `max_rounds` model round trips.
    pub fn new(config: OpenAiConfig, max_rounds: u32) -> Result<Self, AgentError> {
        Ok(OpenAiProvider { config, max_rounds })
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
    fn run<'a>(
        &'a self,
        _req: RunRequest,
        _tools: Arc<dyn ToolHost>,
        _events: mpsc::UnboundedSender<AgentEvent>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<RunOutcome, AgentError>> {
        let _ = self.max_rounds;
        Box::pin(async { Err(AgentError::Config("openai provider not built yet".into())) })
    }
}
