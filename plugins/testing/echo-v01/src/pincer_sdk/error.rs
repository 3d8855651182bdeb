use crate::pincer_sdk::bindings::host::types::{Error as WitError, RateLimit};

/// A typed plugin error: the host treats each kind differently (retry, give up,
/// back off), so pick the one that says what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Configuration missing or invalid; retrying will not help.
    Config(String),
    /// Credentials rejected.
    Auth(String),
    /// Temporary failure; the host may retry.
    Transient(String),
    /// Rate-limited: retry after this many milliseconds.
    RateLimited {
        retry_after_ms: u64,
        message: String,
    },
    /// Can never succeed.
    Permanent(String),
    /// Not supported by this plugin.
    Unsupported(String),
}

impl Error {
    /// A [`Error::Permanent`] from anything printable.
    pub fn permanent(msg: impl std::fmt::Display) -> Self {
        Error::Permanent(msg.to_string())
    }
    /// A [`Error::Transient`] from anything printable.
    pub fn transient(msg: impl std::fmt::Display) -> Self {
        Error::Transient(msg.to_string())
    }
    /// A [`Error::Config`] from anything printable.
    pub fn config(msg: impl std::fmt::Display) -> Self {
        Error::Config(msg.to_string())
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
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Permanent(format!("json: {e}"))
    }
}
