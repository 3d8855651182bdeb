//! The `ErrorShape` and the standard errors, with the reference's exact
//! codes and messages (clients match on some of them by regex).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `error` in a failed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorShape {
    /// `INVALID_REQUEST`, `UNAVAILABLE`, `FORBIDDEN`, `NOT_PAIRED`, ...
    pub code: String,
    /// Human-readable, non-empty.
    pub message: String,
    /// Structured details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// Whether retrying may succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// When to retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Error codes.
pub mod code {
    /// Bad frame, params, method or auth.
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    /// The server could not do it now.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// Missing scope (v4).
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// Device not paired.
    pub const NOT_PAIRED: &str = "NOT_PAIRED";
    /// `agent.wait` ran out of time.
    pub const AGENT_TIMEOUT: &str = "AGENT_TIMEOUT";
}

impl ErrorShape {
    /// An error with a code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.is_empty() {
            message = code.to_lowercase();
        }
        ErrorShape {
            code: code.to_string(),
            message,
            details: None,
            retryable: None,
            retry_after_ms: None,
        }
    }

    /// `INVALID_REQUEST` with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_REQUEST, message)
    }

    /// `UNAVAILABLE` with `message`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(code::UNAVAILABLE, message)
    }

    /// Add details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Mark retryable after `ms`.
    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retryable = Some(true);
        self.retry_after_ms = Some(ms);
        self
    }

    /// `unknown method: X`.
    pub fn unknown_method(method: &str) -> Self {
        Self::invalid(format!("unknown method: {method}"))
    }

    /// `invalid <method> params: <why>`.
    pub fn bad_params(method: &str, why: impl std::fmt::Display) -> Self {
        Self::invalid(format!("invalid {method} params: {why}"))
    }

    /// Missing scope: v3 says `INVALID_REQUEST`, v4 `FORBIDDEN` with
    /// details; the message is the same (`missing scope: X`).
    pub fn missing_scope(protocol: u32, scope: &str) -> Self {
        let message = format!("missing scope: {scope}");
        if protocol >= 4 {
            Self::new(code::FORBIDDEN, message).with_details(json!({
                "code": "MISSING_SCOPE",
                "missingScope": scope,
                "requiredScopes": [scope],
            }))
        } else {
            Self::invalid(message)
        }
    }

    /// `unauthorized role: X`.
    pub fn unauthorized_role(role: &str) -> Self {
        Self::invalid(format!("unauthorized role: {role}"))
    }

    /// A connect-time auth failure with the reference's detail fields.
    pub fn auth(detail_code: &str, message: &str, next_step: &str) -> Self {
        Self::invalid(format!("unauthorized: {message}")).with_details(json!({
            "code": detail_code,
            "authReason": message,
            "canRetryWithDeviceToken": false,
            "recommendedNextStep": next_step,
        }))
    }

    /// A device-auth failure.
    pub fn device_auth(detail_code: &str, reason: &str, message: &str) -> Self {
        Self::invalid(message.to_string()).with_details(json!({
            "code": detail_code,
            "reason": reason,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_scope_per_version() {
        let v3 = ErrorShape::missing_scope(3, "operator.admin");
        assert_eq!(v3.code, "INVALID_REQUEST");
        assert_eq!(v3.message, "missing scope: operator.admin");
        assert!(v3.details.is_none());
        let v4 = serde_json::to_value(ErrorShape::missing_scope(4, "operator.admin")).unwrap();
        assert_eq!(
            v4,
            json!({"code":"FORBIDDEN","message":"missing scope: operator.admin","details":{"code":"MISSING_SCOPE","missingScope":"operator.admin","requiredScopes":["operator.admin"]}})
        );
    }
}
