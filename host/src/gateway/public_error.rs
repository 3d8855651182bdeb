//! What errors look like from outside: a stable code, a short message and
//! a reference id; the detail (plugin or provider text, endpoint URLs,
//! store errors) goes to the log under the same reference, for operators.
//! Used by unauthenticated HTTP routes and by runs whose provider failed
//! (the `error` chat event, `agent.wait`, and the reply a channel sender
//! gets).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::agent::AgentError;

/// A fresh reference id (12 hex digits) that ties an outward error to its
/// log line.
pub fn new_ref() -> String {
    let bytes: [u8; 6] = rand::random();
    hex::encode(bytes)
}

/// `{"error": {"code", "message", "ref"}}` with `status`.
pub fn response(status: StatusCode, code: &str, message: &str, reference: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message, "ref": reference}})),
    )
        .into_response()
}

/// The message a failed run shows its chat and its channel sender:
/// the kind of failure and the reference, never the provider's text or
/// endpoint.
pub fn run_failure(e: &AgentError, reference: &str) -> String {
    let what = match e {
        AgentError::Aborted => "aborted",
        AgentError::Timeout => "timed out",
        AgentError::RateLimited(_) => "the model provider is rate limiting; try again later",
        AgentError::Config(_) => "the model provider is not configured correctly",
        AgentError::Provider(_) => "the model provider failed",
        AgentError::Internal => "internal error in the model provider",
    };
    format!("{what} (ref {reference})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_failures_hide_the_detail() {
        let e = AgentError::Provider("http://10.0.0.5/v1 answered 500: SECRET BODY".into());
        let m = run_failure(&e, "abc123");
        assert_eq!(m, "the model provider failed (ref abc123)");
        assert_ne!(new_ref(), new_ref());
        assert_eq!(new_ref().len(), 12);
    }
}
