//! Socket factor: `pincer:socket/websocket` and `pincer:socket/timer`
//! (`wit/socket/socket.wit`), host-managed WebSocket sessions and timers of
//! a socket channel's account.
//!
//! This factor owns the *policy* of a session, checked while the guest's
//! call runs: the name, the URL (`wss://`, or `ws://` only for a host the
//! operator's own `allowed_hosts` lists with `ws://`; the host allowed like
//! outbound HTTP), secret placeholders filled where they are bound (URL
//! path, named headers; JSON fields of outgoing text frames), inbound
//! frames scrubbed of granted values, and the [`SocketLimits`]. The
//! sessions themselves (sockets, reader tasks, timers, event delivery)
//! belong to the account, not the instance, and live behind
//! [`SocketControl`], implemented by `crate::channels::socket`; a tool
//! plugin or a host without channels has none, and its calls are refused.

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::HostState;
use super::http::HostPattern;
use super::pool::{self, Io};
use super::secrets::{Destination, Place, SecretValues};
use crate::netguard::NetGuard;
use crate::plugins::bindings::socket::pincer::socket::{timer, websocket};
use crate::plugins::bindings::{RateLimit, WitError};
use crate::plugins::limits::SocketLimits;

pub use websocket::{ConnectRequest, SessionInfo, SessionState};

/// Longest time to connect (TCP, TLS and upgrade).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest session or timer name.
const MAX_NAME: usize = 64;

/// The sessions and timers of one channel account, as the factor drives
/// them (implemented by `crate::channels::socket`). Every method returns at
/// once: no guest call waits for the network.
pub trait SocketControl: Send + Sync {
    /// Start connecting `dial` (already checked against the policy).
    fn open(&self, dial: Dial) -> Result<(), WitError>;
    /// Queue a text frame (placeholders still in it; the session fills
    /// them for its own destination).
    fn send_text(&self, name: &str, text: String) -> Result<(), WitError>;
    /// Close session `name` with `code` and `reason` (unknown: nothing).
    fn close(&self, name: &str, code: u16, reason: String);
    /// What the host knows about session `name`.
    fn info(&self, name: &str) -> Option<SessionInfo>;
    /// Set (or replace) timer `name`.
    fn set_timer(&self, name: &str, delay: Duration, repeat: Option<Duration>);
    /// Cancel timer `name` (unknown: nothing).
    fn cancel_timer(&self, name: &str);
    /// Timers set now (for the per-account cap).
    fn timers(&self) -> usize;
    /// Whether timer `name` is set now.
    fn has_timer(&self, name: &str) -> bool;
}

/// Where an account's [`SocketControl`] comes from: the channel manager
/// installs one in the plugin registry, so instances of every version of a
/// channel reach the same sessions.
pub trait SocketHub: Send + Sync {
    /// The sessions and timers of channel key `key` (created on first use;
    /// the same for every later call).
    fn account(&self, key: &str) -> Arc<dyn SocketControl>;
}

/// What the instances of one plugin version (or one channel account) may
/// do with sockets; part of [`super::Capabilities`].
#[derive(Clone, Default)]
pub struct SocketCaps {
    /// Rules a session's URL must match: the `ws`/`wss` rules of the
    /// plugin's allowed hosts (`ws` ones only when the operator listed them).
    pub hosts: Arc<[HostPattern]>,
    /// The account's limits.
    pub limits: SocketLimits,
    /// The account's sessions (`None`: a tool plugin, or no channel manager).
    pub control: Option<Arc<dyn SocketControl>>,
}

impl SocketCaps {
    /// Socket rules from a plugin's allowed hosts: every `wss` rule, and
    /// `ws` rules only if `operator` (the operator's `allowed_hosts`, not
    /// the manifest's, listed them).
    pub fn hosts_from(allowed: &[HostPattern], operator: bool) -> Arc<[HostPattern]> {
        allowed
            .iter()
            .filter(|p| p.scheme() == "wss" || (operator && p.scheme() == "ws"))
            .cloned()
            .collect()
    }
}

impl std::fmt::Debug for SocketCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketCaps")
            .field("hosts", &self.hosts)
            .field("limits", &self.limits)
            .field("control", &self.control.is_some())
            .finish()
    }
}

/// A session the policy allowed: where to connect, the upgrade request
/// with its placeholders filled, and what its frames are checked with.
pub struct Dial {
    /// The plugin (for logs).
    pub plugin: Arc<str>,
    /// The session's name.
    pub name: String,
    /// The URL as the guest wrote it (placeholders unfilled): opening the
    /// same name with the same URL again is a no-op.
    pub url: String,
    /// The upgrade request (URL and headers filled).
    request: http::Request<()>,
    key: pool::Key,
    guard: NetGuard,
    /// The session's frame policy.
    pub frames: Frames,
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the filled request.
        f.debug_struct("Dial")
            .field("plugin", &self.plugin)
            .field("name", &self.name)
            .field("host", &self.key.host)
            .field("port", &self.key.port)
            .finish_non_exhaustive()
    }
}

/// The WebSocket stream of an open session.
pub(crate) type Socket = WebSocketStream<Box<dyn Io>>;

impl Dial {
    /// Connect: resolve, check the address with the guard, TCP, TLS for
    /// `wss`, and the upgrade. The error is the reason `WS-CLOSE` 1006
    /// reports (secret values scrubbed).
    pub(crate) async fn connect(&self) -> Result<Socket, String> {
        let scrub = |e: String| self.frames.secrets.scrub(&e);
        let stream = pool::dial(&self.plugin, &self.key, &self.guard, CONNECT_TIMEOUT)
            .await
            .map_err(|e| scrub(format!("connect: {e}")))?;
        let config = session_config(self.frames.limits.max_frame_bytes as usize);
        let upgrade =
            tokio_tungstenite::client_async_with_config(self.request.clone(), stream, Some(config));
        match tokio::time::timeout(CONNECT_TIMEOUT, upgrade).await {
            Err(_) => Err("connect: upgrade timed out".to_string()),
            Ok(Err(e)) => Err(scrub(format!("upgrade: {e}"))),
            Ok(Ok((socket, _response))) => Ok(socket),
        }
    }
}

/// What a session's frames are checked and filled with.
#[derive(Clone)]
pub struct Frames {
    secrets: Arc<SecretValues>,
    scheme: &'static str,
    host: String,
    port: u16,
    /// The account's limits when the session was opened.
    pub limits: SocketLimits,
}

impl Frames {
    /// `text` with the granted secrets' placeholders filled where bound for
    /// this session's host: only in string fields of a JSON frame whose key
    /// is a bound `body:<field>` (Discord's Identify `token`). A placeholder
    /// anywhere else is `error.permanent`.
    pub fn fill(&self, text: String) -> Result<String, WitError> {
        let dest = Destination {
            scheme: self.scheme,
            host: &self.host,
            port: self.port,
        };
        match self.secrets.fill_json(text.as_bytes(), &dest) {
            Ok(None) => Ok(text),
            Ok(Some(filled)) => String::from_utf8(filled)
                .map_err(|_| WitError::Permanent("filled frame is not UTF-8".into())),
            Err(refused) => Err(WitError::Permanent(format!("denied: {refused}"))),
        }
    }

    /// `bytes` with every granted secret value replaced by its placeholder,
    /// so the plugin never sees one.
    pub fn scrub(&self, bytes: Vec<u8>) -> Vec<u8> {
        if self.secrets.is_empty() {
            return bytes;
        }
        self.secrets.scrub_response(&bytes).unwrap_or(bytes)
    }

    /// Secret values in `text` replaced for logs and close reasons.
    pub fn scrub_text(&self, text: &str) -> String {
        self.secrets.scrub(text)
    }
}

/// Read buffer of a session (tungstenite's default, 128 KiB, is made for
/// throughput; a gateway holds thousands of mostly idle sessions).
pub const READ_BUFFER: usize = 4096;

/// The tungstenite configuration of a session whose frames may be up to
/// `max_frame` bytes: a small read buffer (grown for big frames), frames
/// written as they are sent.
pub fn session_config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

/// Whether `name` can name a session or timer: 1-64 of `[a-z0-9_-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The per-instance part: the account's sessions and what this plugin's
/// policy allows.
pub struct PluginSockets {
    plugin: Arc<str>,
    caps: SocketCaps,
    secrets: Arc<SecretValues>,
    guard: NetGuard,
}

fn permanent(message: impl Into<String>) -> WitError {
    WitError::Permanent(message.into())
}

impl PluginSockets {
    /// The sockets of an instance of `plugin` with `caps`, filling `secrets`
    /// and connecting where `guard` allows.
    pub fn new(
        plugin: Arc<str>,
        caps: SocketCaps,
        secrets: Arc<SecretValues>,
        guard: NetGuard,
    ) -> Self {
        PluginSockets {
            plugin,
            caps,
            secrets,
            guard,
        }
    }

    fn control(&self) -> Result<&Arc<dyn SocketControl>, WitError> {
        self.caps
            .control
            .as_ref()
            .ok_or_else(|| permanent("sockets are for channels"))
    }

    /// Check `request` against the policy and build its [`Dial`].
    fn dial(&self, request: ConnectRequest) -> Result<Dial, WitError> {
        let ConnectRequest { name, url, headers } = request;
        if !valid_name(&name) {
            return Err(permanent(format!(
                "session name {name:?}: use 1-64 of a-z, 0-9, `-` and `_`"
            )));
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|_| permanent(format!("session `{name}`: bad URL")))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => {
                return Err(permanent(format!(
                    "session `{name}`: the URL must be wss:// (or ws:// where the operator allows it)"
                )));
            }
        };
        let scheme = if tls { "wss" } else { "ws" };
        let host = uri
            .host()
            .ok_or_else(|| permanent(format!("session `{name}`: the URL has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if !self
            .caps
            .hosts
            .iter()
            .any(|p| p.matches(scheme, &host, port))
        {
            tracing::warn!(plugin = %self.plugin, session = %name, %scheme, %host, port, "socket refused: host not allowed");
            let hint = if tls {
                format!("add `wss://{host}` to the plugin's allowed_hosts")
            } else {
                format!("ws:// needs the operator's allowed_hosts to list `ws://{host}:{port}`")
            };
            return Err(permanent(format!(
                "denied: session `{name}`: {scheme}://{host}:{port} is not an allowed host ({hint})"
            )));
        }
        let dest = Destination {
            scheme,
            host: &host,
            port,
        };
        let refused = |r: super::secrets::Refused| permanent(format!("denied: {r}"));
        let (path, query) = match uri.path_and_query() {
            Some(pq) => (pq.path().to_string(), pq.query().map(str::to_string)),
            None => ("/".to_string(), None),
        };
        let path = self
            .secrets
            .fill(&path, &Place::Path, &dest)
            .map_err(refused)?
            .unwrap_or(path);
        if let Some(q) = &query {
            self.secrets
                .fill(q, &Place::Query, &dest)
                .map_err(refused)?;
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let filled = match &query {
            Some(q) => format!("{scheme}://{authority}{path}?{q}"),
            None => format!("{scheme}://{authority}{path}"),
        };
        let filled_uri: http::Uri = filled
            .parse()
            .map_err(|_| permanent(format!("session `{name}`: bad URL after filling secrets")))?;
        let mut upgrade = filled_uri
            .into_client_request()
            .map_err(|e| permanent(format!("session `{name}`: {e}")))?;
        for (k, v) in headers {
            let lower = k.to_ascii_lowercase();
            if [
                "host",
                "connection",
                "upgrade",
                "sec-websocket-key",
                "sec-websocket-version",
            ]
            .contains(&lower.as_str())
            {
                return Err(permanent(format!(
                    "session `{name}`: header `{k}` is set by the host"
                )));
            }
            let value = self
                .secrets
                .fill(&v, &Place::Header(lower.clone()), &dest)
                .map_err(refused)?
                .unwrap_or(v);
            let hname = http::HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| permanent(format!("session `{name}`: bad header name `{k}`")))?;
            let hvalue = http::HeaderValue::from_str(&value)
                .map_err(|_| permanent(format!("session `{name}`: bad value for header `{k}`")))?;
            upgrade.headers_mut().append(hname, hvalue);
        }
        Ok(Dial {
            plugin: self.plugin.clone(),
            name,
            url,
            request: upgrade,
            key: pool::Key {
                tls,
                host: host.clone(),
                port,
            },
            guard: self.guard.clone(),
            frames: Frames {
                secrets: self.secrets.clone(),
                scheme,
                host,
                port,
                limits: self.caps.limits,
            },
        })
    }
}

/// `error.rate-limited` for a session that sent its frames for the window.
pub fn rate_limited(name: &str, retry_after: Duration, limits: &SocketLimits) -> WitError {
    WitError::RateLimited(RateLimit {
        retry_after_ms: (retry_after.as_millis() as u64).max(1),
        message: format!(
            "session `{name}` may send {} frames per {} ms",
            limits.frames_per_window, limits.window_ms
        ),
    })
}

impl websocket::Host for HostState {
    fn open(&mut self, request: ConnectRequest) -> Result<(), WitError> {
        let s = &self.sockets;
        let control = s.control()?.clone();
        let dial = s.dial(request)?;
        control.open(dial)
    }

    fn send_text(&mut self, name: String, text: String) -> Result<(), WitError> {
        self.sockets.control()?.send_text(&name, text)
    }

    fn close(&mut self, name: String, code: u16, reason: String) {
        if let Ok(control) = self.sockets.control() {
            control.close(&name, code, reason);
        }
    }

    fn info(&mut self, name: String) -> Option<SessionInfo> {
        self.sockets.control().ok()?.info(&name)
    }
}

impl timer::Host for HostState {
    fn set(&mut self, name: String, delay_ms: u64, repeat_ms: u64) -> Result<(), WitError> {
        let s = &self.sockets;
        let control = s.control()?;
        if !valid_name(&name) {
            return Err(permanent(format!(
                "timer name {name:?}: use 1-64 of a-z, 0-9, `-` and `_`"
            )));
        }
        let min = s.caps.limits.min_timer_ms;
        if delay_ms < min || (repeat_ms != 0 && repeat_ms < min) {
            return Err(permanent(format!(
                "timer `{name}`: delays below {min} ms are not allowed"
            )));
        }
        if !control.has_timer(&name) && control.timers() >= s.caps.limits.max_timers as usize {
            return Err(permanent(format!(
                "timer `{name}`: the account has {} timers set already (the most allowed)",
                s.caps.limits.max_timers
            )));
        }
        control.set_timer(
            &name,
            Duration::from_millis(delay_ms),
            (repeat_ms != 0).then(|| Duration::from_millis(repeat_ms)),
        );
        Ok(())
    }

    fn cancel(&mut self, name: String) {
        if let Ok(control) = self.sockets.control() {
            control.cancel_timer(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("gateway"));
        assert!(valid_name("hb_1-x"));
        assert!(!valid_name(""));
        assert!(!valid_name("Gateway"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"a".repeat(65)));
    }

    fn sockets(rules: &[&str], secrets: SecretValues) -> PluginSockets {
        let hosts: Vec<HostPattern> = rules
            .iter()
            .map(|r| HostPattern::parse(r).unwrap())
            .collect();
        PluginSockets::new(
            Arc::from("probe"),
            SocketCaps {
                hosts: SocketCaps::hosts_from(&hosts, true),
                ..Default::default()
            },
            Arc::new(secrets),
            NetGuard::default(),
        )
    }

    fn request(url: &str, headers: &[(&str, &str)]) -> ConnectRequest {
        ConnectRequest {
            name: "gw".into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn refusal(r: Result<Dial, WitError>) -> String {
        match r {
            Err(WitError::Permanent(m)) => m,
            other => panic!("expected a permanent refusal, got {other:?}"),
        }
    }

    #[test]
    fn tools_and_hosts_without_a_hub_are_refused() {
        let s = sockets(&["wss://gw.example.com"], SecretValues::default());
        match s.control() {
            Err(WitError::Permanent(m)) => assert_eq!(m, "sockets are for channels"),
            _ => panic!("a plugin without sessions must be refused"),
        }
    }

    #[test]
    fn the_policy_checks_scheme_host_headers_and_secret_places() {
        let mut secrets = SecretValues::default();
        let bound = crate::plugins::manifest::SecretBinding {
            hosts: Some(vec!["wss://gw.example.com".into()]),
            places: Some(vec!["header:authorization".into(), "body:token".into()]),
            generate: false,
            optional: false,
        };
        secrets.grant("token", "T0K3N".into(), &[bound]).unwrap();
        let s = sockets(
            &["wss://gw.example.com", "wss://other.example.com"],
            secrets,
        );
        assert!(refusal(s.dial(request("https://gw.example.com/", &[]))).contains("wss://"));
        assert!(
            refusal(s.dial(request("wss://evil.example.com/", &[])))
                .contains("not an allowed host")
        );
        assert!(refusal(s.dial(request("ws://gw.example.com/", &[]))).contains("ws:// needs"));
        assert!(
            refusal(s.dial(request("wss://gw.example.com/", &[("Host", "x")])))
                .contains("set by the host")
        );
        // Query strings never carry secrets; other hosts never get them.
        assert!(
            refusal(s.dial(request("wss://gw.example.com/?t={{secret:token}}", &[])))
                .contains("denied")
        );
        assert!(
            refusal(s.dial(request(
                "wss://other.example.com/",
                &[("authorization", "Bot {{secret:token}}")]
            )))
            .contains("denied")
        );
        let dial = s
            .dial(request(
                "wss://gw.example.com/?v=10",
                &[("Authorization", "Bot {{secret:token}}")],
            ))
            .expect("allowed");
        assert_eq!(dial.request.headers()["authorization"], "Bot T0K3N");
        assert_eq!(dial.url, "wss://gw.example.com/?v=10");
        // Frames: filled in bound JSON fields only; scrubbed on the way in.
        let filled = dial
            .frames
            .fill(r#"{"op":2,"d":{"token":"{{secret:token}}"}}"#.into())
            .unwrap();
        assert!(filled.contains("T0K3N"));
        assert!(
            dial.frames
                .fill(r#"{"text":"{{secret:token}}"}"#.into())
                .is_err()
        );
        assert!(dial.frames.fill("plain {{secret:token}}".into()).is_err());
        assert_eq!(
            dial.frames.scrub(b"echo T0K3N".to_vec()),
            b"echo {{secret:token}}".to_vec()
        );
    }

    #[test]
    fn only_operator_listed_ws_rules_count() {
        let rules: Vec<HostPattern> = ["https://x.org", "wss://gw.x.org", "ws://127.0.0.1:*"]
            .iter()
            .map(|r| HostPattern::parse(r).unwrap())
            .collect();
        let manifest = SocketCaps::hosts_from(&rules, false);
        assert_eq!(manifest.len(), 1);
        assert!(manifest[0].matches("wss", "gw.x.org", 443));
        let operator = SocketCaps::hosts_from(&rules, true);
        assert_eq!(operator.len(), 2);
    }
}
