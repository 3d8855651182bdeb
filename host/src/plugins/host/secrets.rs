//! Secrets factor: `pincer:plugin/secrets`. Values stay in the host; the guest
//! only sees names and placeholders (`{{secret:NAME}}`), which [`super::http`]
//! fills in on the way out, and only where the secret is bound: to which
//! hosts, in which places of a request (URL path, one named header, a JSON
//! body field, a `media.upload` form field). A placeholder anywhere else refuses the whole request.
//! Responses are scrubbed of every granted value before the guest sees them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::http::HostPattern;
use crate::plugins::bindings::v02::channel::pincer::plugin::secrets::Host;
use crate::plugins::manifest::{Manifest, SecretBinding, SecretSource};

/// A place in an outgoing request where a placeholder was found, or where a
/// binding allows one (only [`Place::Path`], [`Place::Header`],
/// [`Place::BodyField`] and [`Place::FormField`] can be allowed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Place {
    /// The URL path.
    Path,
    /// The URL query (never allowed: queries end up in access logs).
    Query,
    /// The value of the named header (lower case).
    Header(String),
    /// A string value under the named key of a JSON body, at any depth.
    BodyField(String),
    /// The value of the named form field of a `media.upload`.
    FormField(String),
    /// Anywhere else in a body (not JSON, or an object key).
    Body,
}

impl Place {
    /// Parse a binding place: `path`, `header:<name>`, `body:<field>` or
    /// `form:<field>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "path" {
            return Ok(Place::Path);
        }
        if let Some(h) = s.strip_prefix("header:") {
            let h = h.trim().to_ascii_lowercase();
            return match http::HeaderName::from_bytes(h.as_bytes()) {
                Ok(_) => Ok(Place::Header(h)),
                Err(_) => Err(format!("place `{s}`: bad header name")),
            };
        }
        if let Some(f) = s.strip_prefix("body:")
            && !f.is_empty()
        {
            return Ok(Place::BodyField(f.to_string()));
        }
        if let Some(f) = s.strip_prefix("form:")
            && !f.is_empty()
        {
            return Ok(Place::FormField(f.to_string()));
        }
        Err(format!(
            "place `{s}`: expected `path`, `header:<name>`, `body:<json field>` or `form:<upload form field>`"
        ))
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Path => f.write_str("the URL path"),
            Place::Query => f.write_str("the URL query"),
            Place::Header(h) => write!(f, "header `{h}`"),
            Place::BodyField(k) => write!(f, "body field `{k}`"),
            Place::FormField(k) => write!(f, "form field `{k}`"),
            Place::Body => f.write_str("the body outside a JSON string field"),
        }
    }
}

/// One constraint on a secret; `None` does not constrain that dimension.
#[derive(Debug, Clone, Default)]
struct Rule {
    hosts: Option<Vec<HostPattern>>,
    places: Option<Vec<Place>>,
}

impl Rule {
    fn parse(binding: &SecretBinding) -> Result<Self, String> {
        Ok(Rule {
            hosts: binding
                .hosts
                .as_ref()
                .map(|hs| hs.iter().map(|h| HostPattern::parse(h)).collect())
                .transpose()?,
            places: binding
                .places
                .as_ref()
                .map(|ps| ps.iter().map(|p| Place::parse(p)).collect())
                .transpose()?,
        })
    }

    fn allows(&self, dest: &Destination<'_>, place: &Place) -> bool {
        self.hosts.as_ref().is_none_or(|hs| {
            hs.iter()
                .any(|h| h.matches(dest.scheme, dest.host, dest.port))
        }) && self.places.as_ref().is_none_or(|ps| ps.contains(place))
    }
}

/// The places of the list form `secrets = ["x"]` and of a manifest binding
/// that names none.
pub const DEFAULT_PLACES: &[&str] = &["path", "header:authorization"];

/// Where a request goes (already checked against the allowed hosts).
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Lower-case host name or address.
    pub host: &'a str,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Destination<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// A placeholder found where its secret may not go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret `{secret}` may not be sent in {place} of a request to {destination}")]
pub struct Refused {
    /// The secret's name.
    pub secret: String,
    /// Where its placeholder was.
    pub place: Place,
    /// `scheme://host:port` of the request.
    pub destination: String,
}

struct Secret {
    value: String,
    /// Every rule must allow a fill (the manifest's, then the operator's).
    rules: Vec<Rule>,
}

/// The secrets granted to one plugin, with their bindings.
#[derive(Default)]
pub struct SecretValues {
    secrets: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print values.
        f.debug_list().entries(self.secrets.keys()).finish()
    }
}

impl SecretValues {
    /// The placeholder text for secret `name`.
    pub fn placeholder(name: &str) -> String {
        format!("{{{{secret:{name}}}}}")
    }

    /// The secrets the operator granted plugin `plugin`, each bound as its
    /// manifest declares (the list form and undeclared secrets: the
    /// manifest's allowed hosts, [`DEFAULT_PLACES`]) and narrowed by the
    /// operator's binding. An undeclared secret with an operator binding
    /// is bound by that binding alone (the operator is trusted).
    pub fn from_grants(
        plugin: &str,
        manifest: &Manifest,
        grants: &BTreeMap<String, SecretSource>,
    ) -> Result<Self, String> {
        let defaults = |b: &SecretBinding| SecretBinding {
            hosts: Some(
                b.hosts
                    .clone()
                    .unwrap_or_else(|| manifest.allowed_hosts.clone()),
            ),
            places: Some(
                b.places
                    .clone()
                    .unwrap_or_else(|| DEFAULT_PLACES.iter().map(|p| p.to_string()).collect()),
            ),
            generate: b.generate,
            optional: b.optional,
        };
        let mut out = SecretValues::default();
        for (name, source) in grants {
            let Some(value) = source.resolve() else {
                tracing::warn!(plugin, secret = %name, "granted secret has no value");
                continue;
            };
            let operator = source.binding();
            let bindings = match (manifest.secrets.get(name), operator) {
                (Some(declared), Some(narrowed)) => vec![defaults(declared), narrowed],
                (Some(declared), None) => vec![defaults(declared)],
                (None, Some(bound)) => vec![defaults(&bound)],
                (None, None) => {
                    tracing::warn!(
                        plugin,
                        secret = %name,
                        "secret not declared by the manifest: only the manifest's allowed hosts, URL path and authorization header"
                    );
                    vec![defaults(&SecretBinding::default())]
                }
            };
            out.grant(name, value, &bindings)?;
        }
        for (needed, binding) in &manifest.secrets {
            // Host-generated secrets are granted after this (see `super::generated`);
            // optional ones are the plugin's to ask for when its mode needs them.
            if !out.contains(needed) && !binding.generate && !binding.optional {
                // Info, not a warning: a bundled channel waits quietly, shown
                // as `unconfigured`, until the operator grants its secrets.
                tracing::info!(plugin, secret = %needed, "plugin needs a secret the operator has not granted");
            }
        }
        Ok(out)
    }

    /// Grant secret `name` with `value`, fillable only where every binding
    /// in `bindings` allows (an empty list allows everywhere: tests only).
    pub fn grant(
        &mut self,
        name: &str,
        value: String,
        bindings: &[SecretBinding],
    ) -> Result<(), String> {
        let rules = bindings
            .iter()
            .map(Rule::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("secret `{name}`: {e}"))?;
        self.secrets
            .insert(name.to_string(), Secret { value, rules });
        Ok(())
    }

    /// Grant a value the host generated for secret `name`, bound as the
    /// manifest declares it (see `super::generated`).
    pub fn grant_generated(
        &mut self,
        manifest: &Manifest,
        name: &str,
        value: String,
    ) -> Result<(), String> {
        let declared = manifest.secrets.get(name).cloned().unwrap_or_default();
        let binding = SecretBinding {
            hosts: Some(
                declared
                    .hosts
                    .unwrap_or_else(|| manifest.allowed_hosts.clone()),
            ),
            places: Some(
                declared
                    .places
                    .unwrap_or_else(|| DEFAULT_PLACES.iter().map(|p| p.to_string()).collect()),
            ),
            generate: true,
            optional: declared.optional,
        };
        self.grant(name, value, &[binding])
    }

    /// The value of secret `name`, for host-side use only (webhook
    /// verification); never handed to a guest.
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(|s| s.value.as_str())
    }

    /// Whether secret `name` was granted.
    pub fn contains(&self, name: &str) -> bool {
        self.secrets.contains_key(name)
    }

    /// Whether any secret was granted.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Fill the granted secrets' placeholders in `text`, found at `place` of
    /// a request to `dest`. `Ok(None)`: nothing to fill (no allocation).
    /// Placeholders of secrets that were not granted are left as they are.
    pub fn fill(
        &self,
        text: &str,
        place: &Place,
        dest: &Destination<'_>,
    ) -> Result<Option<String>, Refused> {
        if !text.contains("{{secret:") {
            return Ok(None);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut filled = false;
        while let Some(start) = rest.find("{{secret:") {
            let after = &rest[start + "{{secret:".len()..];
            let Some(end) = after.find("}}") else {
                break;
            };
            let name = &after[..end];
            out.push_str(&rest[..start]);
            match self.secrets.get(name) {
                Some(secret) => {
                    let allowable = matches!(
                        place,
                        Place::Path | Place::Header(_) | Place::BodyField(_) | Place::FormField(_)
                    );
                    if !allowable || !secret.rules.iter().all(|r| r.allows(dest, place)) {
                        return Err(Refused {
                            secret: name.to_string(),
                            place: place.clone(),
                            destination: dest.to_string(),
                        });
                    }
                    out.push_str(&secret.value);
                    filled = true;
                }
                None => out.push_str(&rest[start..start + "{{secret:".len() + end + 2]),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(filled.then_some(out))
    }

    /// Fill placeholders inside a JSON body: allowed only in string values
    /// whose key is a bound `body:<field>`. `Ok(None)`: nothing filled.
    pub fn fill_json(
        &self,
        body: &[u8],
        dest: &Destination<'_>,
    ) -> Result<Option<Vec<u8>>, Refused> {
        if memchr::memmem::find(body, b"{{secret:").is_none() {
            return Ok(None);
        }
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
            // Not JSON: a granted secret's placeholder is refused, others stay.
            self.fill(&String::from_utf8_lossy(body), &Place::Body, dest)?;
            return Ok(None);
        };
        let mut filled = false;
        self.fill_value(&mut value, None, dest, &mut filled)?;
        if !filled {
            return Ok(None);
        }
        Ok(serde_json::to_vec(&value).ok())
    }

    fn fill_value(
        &self,
        value: &mut serde_json::Value,
        key: Option<&str>,
        dest: &Destination<'_>,
        filled: &mut bool,
    ) -> Result<(), Refused> {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                let place = key.map_or(Place::Body, |k| Place::BodyField(k.to_string()));
                if let Some(new) = self.fill(s, &place, dest)? {
                    *s = new;
                    *filled = true;
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.fill_value(item, key, dest, filled)?;
                }
            }
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.fill(k, &Place::Body, dest)?;
                    self.fill_value(v, Some(k), dest, filled)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Replace secret values in `text` with `[secret:NAME]` (for logs and errors).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, s) in &self.secrets {
            if !s.value.is_empty() {
                out = out.replace(&s.value, &format!("[secret:{name}]"));
            }
        }
        out
    }

    /// Replace every granted value in `bytes` (as is, and percent-encoded)
    /// with its placeholder text, so a response that echoes a secret hands
    /// the guest only the placeholder. `None`: nothing replaced.
    pub fn scrub_response(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for (name, s) in &self.secrets {
            if s.value.is_empty() {
                continue;
            }
            let placeholder = Self::placeholder(name);
            let upper = percent_encode(&s.value);
            let lower = percent_encode_lower(&s.value);
            let mut needles = vec![s.value.as_str()];
            for form in [upper.as_str(), lower.as_str()] {
                if !needles.contains(&form) {
                    needles.push(form);
                }
            }
            for needle in needles {
                let hay = current.as_deref().unwrap_or(bytes);
                if let Some(replaced) = replace_all(hay, needle.as_bytes(), placeholder.as_bytes())
                {
                    current = Some(replaced);
                }
            }
        }
        current
    }
}

/// `hay` with every `needle` replaced by `with`, or `None` if there is none.
fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    let finder = memchr::memmem::Finder::new(needle);
    let mut found = finder.find_iter(hay).peekable();
    found.peek()?;
    let mut out = Vec::with_capacity(hay.len());
    let mut last = 0;
    for at in found {
        if at < last {
            continue;
        }
        out.extend_from_slice(&hay[last..at]);
        out.extend_from_slice(with);
        last = at + needle.len();
    }
    out.extend_from_slice(&hay[last..]);
    Some(out)
}

/// Percent-encode everything but unreserved characters (RFC 3986), with
/// upper-case hex digits.
fn percent_encode(s: &str) -> String {
    encode_with(s, |b| format!("%{b:02X}"))
}

/// The same with lower-case hex digits.
fn percent_encode_lower(s: &str) -> String {
    encode_with(s, |b| format!("%{b:02x}"))
}

fn encode_with(s: &str, escape: impl Fn(u8) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&escape(b));
        }
    }
    out
}

/// Per-instance handle.
#[derive(Clone, Default)]
pub struct PluginSecrets(pub Arc<SecretValues>);

impl Host for super::HostState {
    async fn exists(&mut self, name: String) -> bool {
        self.secrets.0.contains(&name)
    }
    async fn placeholder(&mut self, name: String) -> String {
        SecretValues::placeholder(&name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(hosts: &[&str], places: &[&str]) -> SecretBinding {
        SecretBinding {
            hosts: Some(hosts.iter().map(|s| s.to_string()).collect()),
            places: Some(places.iter().map(|s| s.to_string()).collect()),
            generate: false,
            optional: false,
        }
    }

    const TG: Destination<'static> = Destination {
        scheme: "https",
        host: "api.telegram.org",
        port: 443,
    };

    #[test]
    fn fills_only_where_bound() {
        let mut s = SecretValues::default();
        s.grant(
            "token",
            "s3:cr3t".into(),
            &[bound(&["https://api.telegram.org"], DEFAULT_PLACES)],
        )
        .unwrap();
        assert_eq!(
            s.fill("/bot{{secret:token}}/getMe", &Place::Path, &TG)
                .unwrap()
                .as_deref(),
            Some("/bots3:cr3t/getMe")
        );
        assert_eq!(s.fill("no placeholder", &Place::Path, &TG), Ok(None));
        // Not granted: left as is.
        assert_eq!(s.fill("{{secret:other}}", &Place::Query, &TG), Ok(None));
        let e = s
            .fill("a={{secret:token}}", &Place::Query, &TG)
            .unwrap_err();
        assert_eq!(e.secret, "token");
        assert!(e.to_string().contains("URL query"), "{e}");
        let e = s
            .fill("{{secret:token}}", &Place::Header("cookie".into()), &TG)
            .unwrap_err();
        assert!(e.to_string().contains("header `cookie`"), "{e}");
        let other = Destination {
            host: "evil.org",
            ..TG
        };
        assert!(s.fill("/{{secret:token}}", &Place::Path, &other).is_err());
        assert_eq!(s.scrub("bad token s3:cr3t"), "bad token [secret:token]");
        assert_eq!(
            s.scrub_response(b"x s3:cr3t y s3%3Acr3t z s3%3acr3t")
                .unwrap(),
            b"x {{secret:token}} y {{secret:token}} z {{secret:token}}"
        );
        assert_eq!(s.scrub_response(b"nothing"), None);
    }

    #[test]
    fn operator_narrows_manifest() {
        let mut s = SecretValues::default();
        s.grant(
            "k",
            "v".into(),
            &[
                bound(
                    &["https://api.telegram.org"],
                    &["path", "body:secret_token"],
                ),
                SecretBinding {
                    hosts: None,
                    places: Some(vec!["body:secret_token".into()]),
                    generate: false,
                    optional: false,
                },
            ],
        )
        .unwrap();
        assert!(s.fill("/{{secret:k}}", &Place::Path, &TG).is_err());
        let body = br#"{"url":"https://x","secret_token":"{{secret:k}}"}"#;
        let filled = s.fill_json(body, &TG).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&filled).unwrap();
        assert_eq!(v["secret_token"], "v");
        let e = s.fill_json(br#"{"text":"{{secret:k}}"}"#, &TG).unwrap_err();
        assert_eq!(e.place, Place::BodyField("text".into()));
        let e = s.fill_json(b"k={{secret:k}}", &TG).unwrap_err();
        assert_eq!(e.place, Place::Body);
        assert!(Place::parse("query").is_err());
        assert!(Place::parse("header:bad name").is_err());
    }

    #[test]
    fn form_fields_are_a_bindable_place() {
        let mut s = SecretValues::default();
        s.grant(
            "t",
            "v".into(),
            &[bound(&["https://api.telegram.org"], &["form:token"])],
        )
        .unwrap();
        assert_eq!(
            Place::parse("form:token"),
            Ok(Place::FormField("token".into()))
        );
        assert!(Place::parse("form:").is_err());
        assert_eq!(
            s.fill("{{secret:t}}", &Place::FormField("token".into()), &TG)
                .unwrap()
                .as_deref(),
            Some("v")
        );
        let e = s
            .fill("{{secret:t}}", &Place::FormField("caption".into()), &TG)
            .unwrap_err();
        assert!(e.to_string().contains("form field `caption`"), "{e}");
    }
}
