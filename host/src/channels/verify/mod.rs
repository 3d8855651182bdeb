//! Host-side verification of platform pushes to `/channels/{name}/webhook`.
//!
//! No plugin holds a verification secret: the plugin's manifest declares
//! how its platform signs a push (`[webhook.verify]`, see [`config`]), the
//! operator grants the secret by name (`secrets = { app_secret = "env:X" }`),
//! and the host checks every push against the exact raw bytes before the
//! plugin is instantiated or called. Meta's GET handshake
//! (`[webhook.handshake]`) is answered by the host itself.
//!
//! Shaped like a Spin factor: its config ([`config`]: the manifest section,
//! validated at load), its wiring ([`keys`]: how `(channel, account)` finds
//! its secrets; [`ChannelRunner`](super::ChannelRunner) calls [`check`]
//! before `handle-webhook`), and its state ([`state`]: rejections counted
//! per channel and reason). One file per scheme: [`shared_header`],
//! [`hmac`], [`ed25519`], [`handshake`]; [`signed`] holds what the two
//! signature schemes share (base string, timestamp window, decoding).
//!
//! Answers: a missing signature, token or timestamp is 401; a wrong one,
//! a stale or future timestamp or a wrong handshake token is 403; a scheme
//! whose secret or key the operator has not provided is 503 (the channel
//! never runs unverified). Bodies are short and constant.

pub mod config;
pub mod ed25519;
pub mod handshake;
pub mod hmac;
pub mod keys;
pub mod shared_header;
pub mod signed;
pub mod state;

pub use config::{SchemeName, WebhookSpec};
pub use keys::{VersionKeys, WebhookKeys};
pub use state::{VerifyStats, WebhookStatus};

use config::{KeyRef, Scheme};

/// A push as the verifier sees it: the exact bytes received.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Raw query string (without `?`).
    pub query: &'a str,
    /// Headers as received (names in any case).
    pub headers: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
}

impl<'a> Push<'a> {
    /// The value of header `name` (lower case). A header sent twice is
    /// refused: which copy was signed is ambiguous.
    pub fn header(&self, name: &str) -> Result<Option<&'a str>, Rejection> {
        let mut found = None;
        for (k, v) in self.headers {
            if k.eq_ignore_ascii_case(name) {
                if found.is_some() {
                    return Err(Rejection::new(
                        Reason::Invalid,
                        format!("header `{name}` sent more than once"),
                    ));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }

    /// Header `name`, or a 401 rejection naming it.
    pub fn required(&self, name: &str) -> Result<&'a str, Rejection> {
        self.header(name)?
            .ok_or_else(|| Rejection::new(Reason::Missing, format!("no `{name}` header")))
    }
}

/// Why a push was refused; the label of the rejection counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No signature, token or timestamp header (401).
    Missing,
    /// Wrong or undecodable signature or token (403).
    Invalid,
    /// Timestamp outside the tolerance window (403).
    Stale,
    /// The handshake's mode or token was wrong (403).
    Handshake,
    /// The operator has not provided the secret or key (503).
    NotGranted,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 5] = [
        Reason::Missing,
        Reason::Invalid,
        Reason::Stale,
        Reason::Handshake,
        Reason::NotGranted,
    ];

    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Invalid => "invalid",
            Reason::Stale => "stale",
            Reason::Handshake => "handshake",
            Reason::NotGranted => "not-granted",
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Reason::Missing => 401,
            Reason::Invalid | Reason::Stale | Reason::Handshake => 403,
            Reason::NotGranted => 503,
        }
    }

    /// The short constant body text.
    pub fn public_message(&self) -> &'static str {
        match self {
            Reason::Missing => "unauthorized",
            Reason::Invalid | Reason::Stale | Reason::Handshake => "forbidden",
            Reason::NotGranted => "webhook verification is not configured",
        }
    }
}

/// A refused push: the reason, and a detail for the log (never a secret,
/// never the signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Rejection {
    /// Why.
    pub reason: Reason,
    /// What exactly (for operators' logs and the channel status).
    pub detail: String,
}

impl Rejection {
    /// A rejection for `reason`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// Proof that a push passed verification, to hand to the guest (contract
/// 0.2.0 tells the plugin which scheme verified a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The scheme that verified it (`None`: the manifest declares none).
    pub scheme: SchemeName,
}

/// A handshake the host answered itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `text/plain` body.
    pub body: String,
}

/// What to do with a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Verified: hand it to the plugin.
    Pass(Verified),
    /// A handshake: answer it without calling the plugin.
    Answer(Answer),
}

/// The key material a scheme needs, looked up for one push.
enum Resolved {
    None,
    Secret(String),
    PublicKey(ed25519_dalek::VerifyingKey),
}

fn not_granted(name: &str) -> Rejection {
    Rejection::new(
        Reason::NotGranted,
        format!("webhook secret `{name}` not granted"),
    )
}

fn resolve(
    scheme: &Scheme,
    keys: &dyn WebhookKeys,
    channel: &str,
    account: Option<&str>,
) -> Result<Resolved, Rejection> {
    match scheme {
        Scheme::None => Ok(Resolved::None),
        Scheme::SharedHeader { secret, .. } | Scheme::HmacSha256 { secret, .. } => keys
            .secret(channel, account, secret)
            .filter(|v| !v.is_empty())
            .map(Resolved::Secret)
            .ok_or_else(|| not_granted(secret)),
        Scheme::Ed25519 { key, .. } => {
            let text = match key {
                KeyRef::Config(k) => keys.config(channel, account, k),
                KeyRef::Secret(s) => keys.secret(channel, account, s),
            }
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                Rejection::new(
                    Reason::NotGranted,
                    format!("webhook public key `{key}` not set"),
                )
            })?;
            ed25519::public_key(&text)
                .map(Resolved::PublicKey)
                .map_err(|e| {
                    Rejection::new(
                        Reason::NotGranted,
                        format!("webhook public key `{key}` {e}"),
                    )
                })
        }
    }
}

/// Whether the operator has set the secret or key `scheme` needs (set,
/// not necessarily valid).
fn provided(scheme: &Scheme, keys: &dyn WebhookKeys, channel: &str, account: Option<&str>) -> bool {
    match scheme {
        Scheme::None => true,
        Scheme::SharedHeader { secret, .. } | Scheme::HmacSha256 { secret, .. } => keys
            .secret(channel, account, secret)
            .is_some_and(|v| !v.is_empty()),
        Scheme::Ed25519 { key, .. } => match key {
            KeyRef::Config(k) => keys.config(channel, account, k),
            KeyRef::Secret(s) => keys.secret(channel, account, s),
        }
        .is_some_and(|v| !v.trim().is_empty()),
    }
}

/// What keeps the channel's pushes from being verified, if anything (for
/// the channel's status): a secret or key not provided (unless the
/// manifest marks the endpoint `optional`), or a key that is no key.
pub fn problem(
    spec: &WebhookSpec,
    keys: &dyn WebhookKeys,
    channel: &str,
    account: Option<&str>,
) -> Option<String> {
    let scheme = spec.scheme();
    let skipped = spec.verify.optional && !provided(&scheme, keys, channel, account);
    if !skipped && let Err(r) = resolve(&scheme, keys, channel, account) {
        return Some(r.detail);
    }
    let h = spec.handshake.as_ref()?;
    keys.secret(channel, account, &h.secret)
        .filter(|v| !v.is_empty())
        .is_none()
        .then(|| not_granted(&h.secret).detail)
}

/// Verify `push` for `(channel, account)` as `spec` declares, at host time
/// `now_ms`: answer a declared handshake, or pass a push whose signature
/// checks, or say why not.
pub fn check(
    spec: &WebhookSpec,
    keys: &dyn WebhookKeys,
    channel: &str,
    account: Option<&str>,
    push: &Push<'_>,
    now_ms: u64,
) -> Result<Outcome, Rejection> {
    if let Some(h) = &spec.handshake
        && push.method.eq_ignore_ascii_case("GET")
    {
        let token = keys
            .secret(channel, account, &h.secret)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| not_granted(&h.secret))?;
        return handshake::answer(push.query, &token).map(Outcome::Answer);
    }
    let scheme = spec.scheme();
    let now_s = now_ms / 1000;
    match (&scheme, resolve(&scheme, keys, channel, account)?) {
        (Scheme::None, _) => {}
        (Scheme::SharedHeader { header, .. }, Resolved::Secret(s)) => {
            shared_header::verify(push, header, &s)?
        }
        (Scheme::HmacSha256 { signature, .. }, Resolved::Secret(s)) => {
            hmac::verify(push, signature, s.as_bytes(), now_s)?
        }
        (Scheme::Ed25519 { signature, .. }, Resolved::PublicKey(k)) => {
            ed25519::verify(push, signature, &k, now_s)?
        }
        // `resolve` gives each scheme its own kind of key.
        _ => {
            return Err(Rejection::new(
                Reason::NotGranted,
                "webhook key of the wrong kind",
            ));
        }
    }
    Ok(Outcome::Pass(Verified {
        scheme: scheme.name(),
    }))
}

/// Hide from the guest what verification used that is itself a secret:
/// the shared-header token (Telegram echoes the secret as is) becomes the
/// secret's placeholder, so the plugin still sees that the header came.
pub fn redact(spec: &WebhookSpec, headers: &mut [(String, String)]) {
    if let Scheme::SharedHeader { header, secret } = spec.scheme() {
        for (k, v) in headers.iter_mut() {
            if k.eq_ignore_ascii_case(&header) {
                *v = crate::plugins::host::secrets::SecretValues::placeholder(&secret);
            }
        }
    }
}

#[cfg(test)]
mod tests;
