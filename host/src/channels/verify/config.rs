//! The manifest's `[webhook]` section (what the plugin author declares about
//! the platform) and its compiled, validated form.
//!
//! ```toml
//! [webhook.verify]                 # at most one scheme per plugin
//! scheme = "hmac-sha256"           # none (default) | shared-header | hmac-sha256 | ed25519
//! header = "X-Hub-Signature-256"   # where the signature or token is
//! secret = "app_secret"            # secret name (shared-header, hmac-sha256)
//! public_key = "config:public_key" # ed25519: a config key holding the hex public key
//! prefix = "sha256="               # optional text before the signature
//! encoding = "hex"                 # hex (default) | base64
//! signed = "{body}"                # the signed base string: {body}, {timestamp}
//! timestamp_header = "X-Slack-Request-Timestamp"  # needed when `signed` uses {timestamp}
//! tolerance_s = 300                # largest clock difference accepted (default 300)
//! optional = false                 # true: the endpoint is an extra (Discord's
//!                                  # interactions beside its gateway); unset key =
//!                                  # pushes refused (503) but the channel configured
//!
//! [webhook.handshake]              # optional GET handshake answered by the host
//! scheme = "hub-challenge"         # Meta: hub.mode=subscribe & hub.verify_token == secret
//! secret = "verify_token"
//! ```

use serde::{Deserialize, Serialize};

/// Default largest distance between a push's timestamp and the host's clock.
pub const DEFAULT_TOLERANCE_S: u64 = 300;

/// The `[webhook]` section of a manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// How every push is verified before the plugin sees it.
    #[serde(default)]
    pub verify: VerifySpec,
    /// A GET handshake the host answers itself.
    #[serde(default)]
    pub handshake: Option<HandshakeSpec>,
}

/// A verification scheme's name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeName {
    /// No verification (the default; test channels, platforms we pull from).
    #[default]
    None,
    /// A header equal to a secret (Telegram's `X-Telegram-Bot-Api-Secret-Token`).
    SharedHeader,
    /// HMAC-SHA256 over a signed base string (Meta, Slack).
    HmacSha256,
    /// Ed25519 over timestamp and body with a public key (Discord).
    Ed25519,
    /// The GET handshake (Meta's `hub.challenge`), answered by the host.
    HubChallenge,
}

impl SchemeName {
    /// The manifest spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            SchemeName::None => "none",
            SchemeName::SharedHeader => "shared-header",
            SchemeName::HmacSha256 => "hmac-sha256",
            SchemeName::Ed25519 => "ed25519",
            SchemeName::HubChallenge => "hub-challenge",
        }
    }
}

/// How a signature is written in its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Hexadecimal, either case.
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// `[webhook.verify]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySpec {
    /// The scheme.
    pub scheme: SchemeName,
    /// The header carrying the signature or token.
    pub header: Option<String>,
    /// The secret's name (shared-header, hmac-sha256).
    pub secret: Option<String>,
    /// Ed25519: `config:<key>` naming the plugin config entry with the hex
    /// public key (or `secret:<name>`).
    pub public_key: Option<String>,
    /// Text before the encoded signature (`sha256=`, `v0=`).
    pub prefix: String,
    /// How the signature is encoded.
    pub encoding: Encoding,
    /// The signed base string (`{body}`, `{timestamp}` and literal text).
    pub signed: Option<String>,
    /// The header with the Unix-seconds timestamp used by `{timestamp}`.
    pub timestamp_header: Option<String>,
    /// Largest accepted distance from the host's clock, in seconds.
    pub tolerance_s: u64,
    /// The pushes are an optional extra of the channel (Discord's
    /// interactions endpoint beside its gateway): while the operator has
    /// not set the secret or key, pushes are still refused (503), but the
    /// channel is not reported as unconfigured for it.
    pub optional: bool,
}

impl Default for VerifySpec {
    fn default() -> Self {
        VerifySpec {
            scheme: SchemeName::None,
            header: None,
            secret: None,
            public_key: None,
            prefix: String::new(),
            encoding: Encoding::Hex,
            signed: None,
            timestamp_header: None,
            tolerance_s: DEFAULT_TOLERANCE_S,
            optional: false,
        }
    }
}

/// `[webhook.handshake]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandshakeSpec {
    /// Only `hub-challenge`.
    pub scheme: SchemeName,
    /// The verify token's secret name.
    pub secret: String,
}

/// One piece of a signed base string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// The raw request body.
    Body,
    /// The timestamp header's value.
    Timestamp,
}

/// Where an Ed25519 public key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A plugin config entry (`[plugins.<name>] config = { .. }`).
    Config(String),
    /// A granted secret.
    Secret(String),
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyRef::Config(k) => write!(f, "config:{k}"),
            KeyRef::Secret(k) => write!(f, "secret:{k}"),
        }
    }
}

/// A signature over a base string, with its optional timestamp window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Lower-case header name with the signature.
    pub header: String,
    /// Text before the encoded signature.
    pub prefix: String,
    /// Encoding of the signature.
    pub encoding: Encoding,
    /// The signed base string.
    pub signed: Vec<Part>,
    /// Lower-case timestamp header, when `signed` uses `{timestamp}`.
    pub timestamp_header: Option<String>,
    /// Window around the host's clock, in seconds.
    pub tolerance_s: u64,
}

/// A validated verification scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Nothing to check.
    None,
    /// Header `header` must equal secret `secret` (constant time).
    SharedHeader {
        /// Lower-case header name.
        header: String,
        /// Secret name.
        secret: String,
    },
    /// HMAC-SHA256 keyed with secret `secret`.
    HmacSha256 {
        /// Secret name.
        secret: String,
        /// Where the signature is and what it covers.
        signature: Signature,
    },
    /// Ed25519 with the public key at `key`.
    Ed25519 {
        /// Where the public key comes from.
        key: KeyRef,
        /// Where the signature is and what it covers.
        signature: Signature,
    },
}

impl Scheme {
    /// Its name.
    pub fn name(&self) -> SchemeName {
        match self {
            Scheme::None => SchemeName::None,
            Scheme::SharedHeader { .. } => SchemeName::SharedHeader,
            Scheme::HmacSha256 { .. } => SchemeName::HmacSha256,
            Scheme::Ed25519 { .. } => SchemeName::Ed25519,
        }
    }
}

fn header_name(field: &str, h: Option<&String>) -> Result<String, String> {
    let h = h.ok_or_else(|| format!("`{field}` is required for this scheme"))?;
    let lower = h.trim().to_ascii_lowercase();
    http::HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| format!("`{field}`: bad header name {h:?}"))?;
    Ok(lower)
}

fn parse_signed(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    let mut bodies = 0;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("`signed`: unclosed `{{` in {text:?}"))?;
        match &rest[open + 1..open + close] {
            "body" => {
                bodies += 1;
                parts.push(Part::Body);
            }
            "timestamp" => parts.push(Part::Timestamp),
            other => {
                return Err(format!(
                    "`signed`: unknown field `{{{other}}}` (use {{body}} and {{timestamp}})"
                ));
            }
        }
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    if bodies != 1 {
        return Err("`signed` must contain `{body}` exactly once".into());
    }
    Ok(parts)
}

impl VerifySpec {
    /// Validate and compile; errors name the field.
    pub fn compile(&self) -> Result<Scheme, String> {
        let unused = |field: &str, set: bool| {
            if set {
                Err(format!(
                    "`{field}` does not apply to scheme `{}`",
                    self.scheme.as_str()
                ))
            } else {
                Ok(())
            }
        };
        let secret = || {
            self.secret
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| "`secret` (a secret name) is required for this scheme".to_string())
        };
        let signature = |default: &str| -> Result<Signature, String> {
            let signed = parse_signed(self.signed.as_deref().unwrap_or(default))?;
            let uses_ts = signed.contains(&Part::Timestamp);
            let timestamp_header = match (uses_ts, &self.timestamp_header) {
                (true, h @ Some(_)) => Some(header_name("timestamp_header", h.as_ref())?),
                (true, None) => {
                    return Err("`signed` uses {timestamp}: `timestamp_header` is required".into());
                }
                (false, Some(_)) => {
                    return Err("`timestamp_header` is set but `signed` has no {timestamp}".into());
                }
                (false, None) => None,
            };
            if uses_ts && self.tolerance_s == 0 {
                return Err("`tolerance_s` must be at least 1".into());
            }
            Ok(Signature {
                header: header_name("header", self.header.as_ref())?,
                prefix: self.prefix.clone(),
                encoding: self.encoding,
                signed,
                timestamp_header,
                tolerance_s: self.tolerance_s,
            })
        };
        match self.scheme {
            SchemeName::None => {
                let any = self.header.is_some()
                    || self.secret.is_some()
                    || self.public_key.is_some()
                    || self.signed.is_some()
                    || self.timestamp_header.is_some()
                    || !self.prefix.is_empty();
                unused("header/secret/public_key/signed", any)?;
                Ok(Scheme::None)
            }
            SchemeName::SharedHeader => {
                unused("public_key", self.public_key.is_some())?;
                unused("signed", self.signed.is_some())?;
                unused("timestamp_header", self.timestamp_header.is_some())?;
                unused("prefix", !self.prefix.is_empty())?;
                Ok(Scheme::SharedHeader {
                    header: header_name("header", self.header.as_ref())?,
                    secret: secret()?,
                })
            }
            SchemeName::HmacSha256 => {
                unused("public_key", self.public_key.is_some())?;
                Ok(Scheme::HmacSha256 {
                    secret: secret()?,
                    signature: signature("{body}")?,
                })
            }
            SchemeName::Ed25519 => {
                unused("secret", self.secret.is_some())?;
                let key = self
                    .public_key
                    .as_deref()
                    .ok_or("`public_key` (\"config:<key>\") is required for ed25519")?;
                let key = match key.split_once(':') {
                    Some(("config", k)) if !k.is_empty() => KeyRef::Config(k.to_string()),
                    Some(("secret", k)) if !k.is_empty() => KeyRef::Secret(k.to_string()),
                    _ => {
                        return Err(format!(
                            "`public_key`: expected \"config:<key>\" or \"secret:<name>\", got {key:?}"
                        ));
                    }
                };
                Ok(Scheme::Ed25519 {
                    key,
                    signature: signature("{timestamp}{body}")?,
                })
            }
            SchemeName::HubChallenge => {
                Err("`hub-challenge` is a handshake: declare it under [webhook.handshake]".into())
            }
        }
    }
}

impl WebhookSpec {
    /// Check the section; errors name the table and field.
    pub fn check(&self) -> Result<(), String> {
        self.verify
            .compile()
            .map_err(|e| format!("[webhook.verify]: {e}"))?;
        if let Some(h) = &self.handshake {
            if h.scheme != SchemeName::HubChallenge {
                return Err(format!(
                    "[webhook.handshake]: unknown scheme `{}` (only `hub-challenge`)",
                    h.scheme.as_str()
                ));
            }
            if h.secret.is_empty() {
                return Err("[webhook.handshake]: `secret` must name a secret".into());
            }
        }
        Ok(())
    }

    /// The compiled scheme (`Scheme::None` if the section does not check;
    /// manifests are checked at parse time, so that does not happen).
    pub fn scheme(&self) -> Scheme {
        self.verify.compile().unwrap_or(Scheme::None)
    }

    /// Names of the secrets the section uses (verification and handshake).
    pub fn secret_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        match self.scheme() {
            Scheme::SharedHeader { secret, .. } | Scheme::HmacSha256 { secret, .. } => {
                names.push(secret)
            }
            Scheme::Ed25519 {
                key: KeyRef::Secret(s),
                ..
            } => names.push(s),
            _ => {}
        }
        if let Some(h) = &self.handshake {
            names.push(h.secret.clone());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> Result<Scheme, String> {
        let w: WebhookSpec = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        w.check()?;
        Ok(w.scheme())
    }

    #[test]
    fn compiles_each_scheme_and_names_what_is_wrong() {
        assert_eq!(spec("").unwrap(), Scheme::None);
        let s = spec(
            "[verify]\nscheme = \"hmac-sha256\"\nheader = \"X-Slack-Signature\"\nsecret = \"s\"\nprefix = \"v0=\"\nsigned = \"v0:{timestamp}:{body}\"\ntimestamp_header = \"X-Slack-Request-Timestamp\"",
        )
        .unwrap();
        let Scheme::HmacSha256 { signature, .. } = s else {
            panic!("{s:?}")
        };
        assert_eq!(
            signature.signed,
            vec![
                Part::Text("v0:".into()),
                Part::Timestamp,
                Part::Text(":".into()),
                Part::Body
            ]
        );
        assert_eq!(signature.header, "x-slack-signature");
        assert_eq!(signature.tolerance_s, 300);
        let s = spec("[verify]\nscheme = \"ed25519\"\nheader = \"X-Signature-Ed25519\"\npublic_key = \"config:public_key\"\ntimestamp_header = \"X-Signature-Timestamp\"").unwrap();
        assert!(
            matches!(s, Scheme::Ed25519 { key: KeyRef::Config(ref k), .. } if k == "public_key")
        );

        for (bad, says) in [
            (
                "[verify]\nscheme = \"hmac-sha256\"\nheader = \"X\"",
                "`secret`",
            ),
            (
                "[verify]\nscheme = \"hmac-sha256\"\nsecret = \"s\"",
                "`header`",
            ),
            (
                "[verify]\nscheme = \"hmac-sha256\"\nheader = \"X\"\nsecret = \"s\"\nsigned = \"{timestamp}{body}\"",
                "timestamp_header",
            ),
            (
                "[verify]\nscheme = \"hmac-sha256\"\nheader = \"X\"\nsecret = \"s\"\nsigned = \"{ts}{body}\"",
                "unknown field",
            ),
            (
                "[verify]\nscheme = \"hmac-sha256\"\nheader = \"X\"\nsecret = \"s\"\nsigned = \"abc\"",
                "{body}",
            ),
            (
                "[verify]\nscheme = \"shared-header\"\nheader = \"X\"\nsecret = \"s\"\nprefix = \"p\"",
                "`prefix`",
            ),
            (
                "[verify]\nscheme = \"ed25519\"\nheader = \"X\"\npublic_key = \"abc\"",
                "config:",
            ),
            (
                "[verify]\nscheme = \"none\"\nsecret = \"s\"",
                "does not apply",
            ),
            ("[verify]\nscheme = \"hub-challenge\"", "handshake"),
            (
                "[handshake]\nscheme = \"ed25519\"\nsecret = \"s\"",
                "only `hub-challenge`",
            ),
            ("[verify]\nscheme = \"rot13\"", "unknown variant"),
            ("[verify]\nschema = \"none\"", "unknown field"),
        ] {
            let e = spec(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
