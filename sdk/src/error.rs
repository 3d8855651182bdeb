//! The plugin's error type and its mapping to the contract's `error` variant.

use crate::bindings::host::types::{Error as WitError, RateLimit};

/// A typed plugin error: the host treats each kind differently (retry, give up,
/// back off, resend as plain text), so pick the one that says what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Configuration missing or invalid; retrying will not help.
    Config(String),
    /// Credentials rejected by the platform; retrying will not help.
    Auth(String),
    /// Temporary failure (network, 5xx, timeout); the host retries with backoff.
    Transient(String),
    /// Rate-limited: the host retries after `retry_after_ms`.
    RateLimited {
        /// Milliseconds to wait before the next attempt.
        retry_after_ms: u64,
        /// The platform's detail.
        message: String,
    },
    /// Can never succeed (bad input, unknown chat, closed window); not retried.
    Permanent(String),
    /// Not supported by this plugin (the SDK's default for optional operations).
    Unsupported(String),
    /// The platform rejected the message's formatting (for example Telegram's
    /// "can't parse entities"); the host sends the same text again as plain text.
    Formatting(String),
}

impl Error {
    /// An [`Error::Permanent`] from anything printable.
    pub fn permanent(msg: impl std::fmt::Display) -> Self {
        Error::Permanent(msg.to_string())
    }
    /// An [`Error::Transient`] from anything printable.
    pub fn transient(msg: impl std::fmt::Display) -> Self {
        Error::Transient(msg.to_string())
    }
    /// An [`Error::Config`] from anything printable.
    pub fn config(msg: impl std::fmt::Display) -> Self {
        Error::Config(msg.to_string())
    }
    /// An [`Error::Auth`] from anything printable.
    pub fn auth(msg: impl std::fmt::Display) -> Self {
        Error::Auth(msg.to_string())
    }
    /// An [`Error::Unsupported`] naming the operation.
    pub fn unsupported(operation: impl std::fmt::Display) -> Self {
        Error::Unsupported(operation.to_string())
    }
    /// An [`Error::Formatting`] from the platform's complaint.
    pub fn formatting(msg: impl std::fmt::Display) -> Self {
        Error::Formatting(msg.to_string())
    }
    /// An [`Error::RateLimited`] asking the host to wait `retry_after_ms`.
    pub fn rate_limited(retry_after_ms: u64, msg: impl std::fmt::Display) -> Self {
        Error::RateLimited {
            retry_after_ms,
            message: msg.to_string(),
        }
    }
    /// Whether the host retries this error (transient and rate-limited ones).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Transient(_) | Error::RateLimited { .. })
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(m) => write!(f, "config: {m}"),
            Error::Auth(m) => write!(f, "auth: {m}"),
            Error::Transient(m) => write!(f, "transient: {m}"),
            Error::RateLimited {
                retry_after_ms,
                message,
            } => {
                write!(
                    f,
                    "rate limited (retry after {retry_after_ms} ms): {message}"
                )
            }
            Error::Permanent(m) => write!(f, "permanent: {m}"),
            Error::Unsupported(m) => write!(f, "unsupported: {m}"),
            Error::Formatting(m) => write!(f, "formatting: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for WitError {
    fn from(e: Error) -> Self {
        match e {
            Error::Config(m) => WitError::Config(m),
            Error::Auth(m) => WitError::Auth(m),
            Error::Transient(m) => WitError::Transient(m),
            Error::RateLimited {
                retry_after_ms,
                message,
            } => WitError::RateLimited(RateLimit {
                retry_after_ms,
                message,
            }),
            Error::Permanent(m) => WitError::Permanent(m),
            Error::Unsupported(m) => WitError::Unsupported(m),
            Error::Formatting(m) => WitError::Formatting(m),
        }
    }
}

impl From<WitError> for Error {
    fn from(e: WitError) -> Self {
        match e {
            WitError::Config(m) => Error::Config(m),
            WitError::Auth(m) => Error::Auth(m),
            WitError::Transient(m) => Error::Transient(m),
            WitError::RateLimited(r) => Error::RateLimited {
                retry_after_ms: r.retry_after_ms,
                message: r.message,
            },
            WitError::Permanent(m) => Error::Permanent(m),
            WitError::Unsupported(m) => Error::Unsupported(m),
            WitError::Formatting(m) => Error::Formatting(m),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Permanent(format!("json: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_the_contract() {
        let all = [
            Error::config("c"),
            Error::auth("a"),
            Error::transient("t"),
            Error::rate_limited(1500, "slow down"),
            Error::permanent("p"),
            Error::unsupported("draft"),
            Error::formatting("can't parse entities"),
        ];
        for e in all {
            let back: Error = WitError::from(e.clone()).into();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn only_transient_and_rate_limited_are_retryable() {
        assert!(Error::transient("x").is_retryable());
        assert!(Error::rate_limited(1, "x").is_retryable());
        assert!(!Error::formatting("x").is_retryable());
        assert!(!Error::permanent("x").is_retryable());
    }
}
