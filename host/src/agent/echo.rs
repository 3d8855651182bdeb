//! The `echo` provider: offline and deterministic. It streams the user's
//! message back word by word; `/tool NAME {json}` calls tool plugin `NAME`
//! with the JSON arguments and answers with the result, emitting the tool
//! events, so tools can be tried with no model. Only operator clients may
//! use `/tool` ([`super::RunRequest::operator`]); a channel sender's
//! `/tool` is answered with [`TOOL_REFUSED`] and calls nothing. Files that
//! came with the message are described after the echoed text (one
//! `[kind: name, type, size bytes]` line each).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{AgentError, AgentEvent, ModelInfo, Provider, RunOutcome, RunRequest, ToolHost};

/// The echo provider.
#[derive(Debug, Clone)]
pub struct EchoProvider {
    word_delay: Duration,
}

impl EchoProvider {
    /// An echo provider pausing `word_delay_ms` between words.
    pub fn new(word_delay_ms: u64) -> Self {
        EchoProvider {
            word_delay: Duration::from_millis(word_delay_ms),
        }
    }
}

/// The answer to `/tool` from anyone but an operator client (no tool runs).
pub const TOOL_REFUSED: &str = "/tool is only available to operators";

/// Split `/tool NAME {json}` into name and arguments (`{}` when absent).
pub fn parse_tool_command(message: &str) -> Option<(&str, &str)> {
    let rest = message.trim().strip_prefix("/tool")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim_start();
    let (name, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    if name.is_empty() {
        return None;
    }
    Some((name, if args.is_empty() { "{}" } else { args }))
}

/// Split text into words keeping their trailing whitespace, so the deltas
/// concatenate back to the exact text.
fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            out.push(&text[start..i]);
            start = i;
            in_space = false;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

impl EchoProvider {
    async fn stream_text(
        &self,
        text: &str,
        events: &mpsc::UnboundedSender<AgentEvent>,
        cancel: &CancellationToken,
    ) -> Result<(), AgentError> {
        for (i, word) in words(text).into_iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(AgentError::Aborted);
            }
            if i > 0 && !self.word_delay.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return Err(AgentError::Aborted),
                    _ = tokio::time::sleep(self.word_delay) => {}
                }
            } else {
                // Let an abort or another task in between words.
                tokio::task::yield_now().await;
            }
            let _ = events.send(AgentEvent::TextDelta(word.to_string()));
        }
        if cancel.is_cancelled() {
            return Err(AgentError::Aborted);
        }
        Ok(())
    }
}

impl Provider for EchoProvider {
    fn name(&self) -> &str {
        "echo"
    }

    fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo {
            id: "echo".into(),
            name: "Echo (offline)".into(),
            provider: "echo".into(),
            context_window: None,
        }]
    }

    fn run<'a>(
        &'a self,
        req: RunRequest,
        tools: Arc<dyn ToolHost>,
        events: mpsc::UnboundedSender<AgentEvent>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<RunOutcome, AgentError>> {
        Box::pin(async move {
            let text = match parse_tool_command(&req.message) {
                Some((name, _)) if !req.operator => {
                    tracing::info!(session = %req.session_key, tool = %name, "/tool refused: not an operator");
                    TOOL_REFUSED.to_string()
                }
                Some((name, args)) => {
                    let call_id = format!("call_{}", uuid::Uuid::new_v4().simple());
                    super::call_tool(&*tools, &events, &cancel, &call_id, name, args)
                        .await?
                        .unwrap_or_else(|e| format!("tool {name} failed: {e}"))
                }
                // Files are described after the text, so tests see what came.
                None => super::files::message_text(&req.message, &req.files, false),
            };
            self.stream_text(&text, &events, &cancel).await?;
            Ok(RunOutcome {
                text,
                stop_reason: Some("stop".into()),
                usage: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_concatenate_back() {
        for t in ["hello world", "  lead", "trail  ", "one", "", "a\nb\tc"] {
            assert_eq!(words(t).concat(), t);
        }
        assert_eq!(words("hello big world"), vec!["hello ", "big ", "world"]);
    }

    #[test]
    fn tool_command() {
        assert_eq!(parse_tool_command("/tool clock"), Some(("clock", "{}")));
        assert_eq!(
            parse_tool_command(" /tool http-fetch {\"url\":\"x\"} "),
            Some(("http-fetch", "{\"url\":\"x\"}"))
        );
        assert_eq!(parse_tool_command("/toolbox"), None);
        assert_eq!(parse_tool_command("/tool "), None);
        assert_eq!(parse_tool_command("hello"), None);
    }
}
