//! Outbound HTTP factor: `wasi:http/outgoing-handler`, the only network a
//! plugin has.
//!
//! Every request, in order: takes a token from the plugin's rate limit
//! ([`super::budget`]); must match the plugin's allowed hosts (scheme, host,
//! port); has its secret placeholders filled in only where each secret is
//! bound ([`super::secrets`]: URL path, a named header, a JSON body field;
//! anywhere else refuses the request); then goes out over a pooled
//! keep-alive connection or a new one to an address the [`NetGuard`]
//! passed ([`super::pool`]), so DNS rebinding cannot reach a private range.
//! The response body is read up to the plugin's size cap, and every granted
//! secret value in the response headers and body is replaced by its
//! placeholder before the guest sees it. Timeouts requested by the guest are
//! clamped.
//!
//! Refusals reach the guest as `internal-error` with a message starting
//! `denied: ` or `rate-limited: retry after N ms: `, which the SDK maps to
//! `Error::Permanent` and `Error::RateLimited`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::budget::{Counters, OutboundStats, TokenBucket};
use super::pool::{self, Key, Pool};
use super::secrets::{Destination, Place, Refused, SecretValues};
use crate::netguard::NetGuard;
use crate::plugins::limits::HttpLimits;
/// One allowed-host rule: `scheme://host[:port]`, where host may be `*` or
/// `*.example.com` and port may be `*`. Without a scheme, `https` is meant;
/// without a port, the scheme's default port. `http`/`https` rules allow
/// outbound HTTP, `ws`/`wss` rules host-managed WebSocket sessions
/// ([`super::socket`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: String,
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    Suffix(String),
}

impl HostPattern {
    /// Parse a rule such as `https://api.telegram.org` or `http://127.0.0.1:*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = match s.split_once("://") {
            Some((sc, rest)) => (sc.to_ascii_lowercase(), rest),
            None => ("https".to_string(), s),
        };
        if !["http", "https", "ws", "wss"].contains(&scheme.as_str()) {
            return Err(format!(
                "allowed host `{s}`: scheme must be http, https, ws or wss"
            ));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.is_empty() {
            return Err(format!("allowed host `{s}`: expected scheme://host[:port]"));
        }
        let (host, port) = if let Some(h) = rest.strip_prefix('[') {
            let (h, after) = h
                .split_once(']')
                .ok_or_else(|| format!("allowed host `{s}`: unclosed ["))?;
            (h.to_string(), after.strip_prefix(':').map(str::to_string))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.to_string())),
                None => (rest.to_string(), None),
            }
        };
        let default_port = if scheme == "https" || scheme == "wss" {
            443
        } else {
            80
        };
        let port = match port.as_deref() {
            None => Some(default_port),
            Some("*") => None,
            Some(p) => Some(
                p.parse()
                    .map_err(|_| format!("allowed host `{s}`: bad port `{p}`"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostMatch::Suffix(format!(".{suffix}"))
        } else {
            HostMatch::Exact(host)
        };
        Ok(HostPattern { scheme, host, port })
    }

    /// The rule's scheme (`http`, `https`, `ws` or `wss`).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Whether a request to `scheme://host:port` matches this rule.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.scheme == scheme
            && self.port.is_none_or(|p| p == port)
            && match &self.host {
                HostMatch::Any => true,
                HostMatch::Exact(h) => h == host,
                HostMatch::Suffix(s) => host.ends_with(s.as_str()),
            }
    }
}

/// A plugin's outbound policy, budget, counters and connection pool
/// (shared by all instances of one version).
#[derive(Debug)]
pub struct HttpPolicy {
    /// Allowed hosts; empty means no outbound HTTP at all.
    pub allowed: Vec<HostPattern>,
    /// Which addresses may be connected to.
    pub guard: NetGuard,
    /// Longest connect time.
    pub max_connect: Duration,
    /// Longest wait for the first response byte (long polls need long ones).
    /// The body is bounded by the plugin call's wall-clock limit.
    pub max_first_byte: Duration,
    /// Rate, burst and response size cap.
    pub limits: HttpLimits,
    bucket: TokenBucket,
    counters: Counters,
    pool: Pool,
}

/// Largest request body scanned for secret placeholders; a longer body is
/// sent as the guest wrote it (placeholders in it are not filled).
pub const MAX_SCANNED_BODY: usize = 1 << 20;

impl HttpPolicy {
    /// A policy allowing `allowed` hosts, with `guard` for addresses and the
    /// default [`HttpLimits`].
    pub fn new(allowed: Vec<HostPattern>, guard: NetGuard) -> Self {
        Self::with_limits(allowed, guard, HttpLimits::default())
    }

    /// A policy with an explicit outbound budget.
    pub fn with_limits(allowed: Vec<HostPattern>, guard: NetGuard, limits: HttpLimits) -> Self {
        HttpPolicy {
            allowed,
            guard,
            max_connect: Duration::from_secs(10),
            max_first_byte: Duration::from_secs(120),
            limits,
            bucket: TokenBucket::new(limits.rate_per_sec, limits.burst),
            counters: Counters::default(),
            pool: Pool::default(),
        }
    }

    /// The same hosts, guard, timeouts and limits with a budget, counters
    /// and connection pool of its own (a channel account's: each account
    /// is its own platform client with its own rate limits).
    pub fn fresh_budget(&self) -> Self {
        HttpPolicy {
            max_connect: self.max_connect,
            max_first_byte: self.max_first_byte,
            ..Self::with_limits(self.allowed.clone(), self.guard.clone(), self.limits)
        }
    }

    /// What this plugin's outbound HTTP did so far.
    pub fn stats(&self) -> OutboundStats {
        self.counters.snapshot()
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.allowed.iter().any(|p| p.matches(scheme, host, port))
    }
}

/// Per-instance hooks for `wasi:http`.
pub struct OutboundHttp {
    plugin: Arc<str>,
    policy: Arc<HttpPolicy>,
    secrets: Arc<SecretValues>,
}

impl OutboundHttp {
    /// Hooks for `plugin` under `policy`, filling in `secrets`.
    pub fn new(plugin: Arc<str>, policy: Arc<HttpPolicy>, secrets: Arc<SecretValues>) -> Self {
        OutboundHttp {
            plugin,
            policy,
            secrets,
        }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> SendFuture {
        drop(fut);
        let plugin = self.plugin.clone();
        let policy = self.policy.clone();
        let secrets = self.secrets.clone();
        Box::new(async move { send(&plugin, &policy, &secrets, request, options).await })
    }
}

fn denied(message: String) -> HttpError {
    HttpError::InternalError(Some(format!("denied: {message}")))
}

pub(crate) fn full(bytes: Bytes) -> WasiBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

async fn send(
    plugin: &str,
    policy: &HttpPolicy,
    secrets: &SecretValues,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
    let head = request.method() == http::Method::HEAD;
    let opened = open(plugin, policy, secrets, request, options, BodyScan::Json).await?;
    let (parts, body) = opened.read_capped(plugin, policy, head).await?;
    let (mut parts, body) = scrub(secrets, parts, body);
    if !head {
        // The guest gets the whole (scrubbed) body: say its length.
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        parts.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
    }
    let response = http::Response::from_parts(parts, full(body));
    Ok((response, Box::new(async { Ok(()) }) as IoFuture))
}

/// Whether [`open`] scans the request body for secret placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyScan {
    /// Fill placeholders in JSON string fields where bound; refuse them
    /// elsewhere in the body (a guest's `wasi:http` request).
    Json,
    /// Leave the body alone: the host built it and filled it already
    /// (`media.upload`), or there is none (attachment downloads).
    HostBuilt,
}

/// A request that passed every check of the plugin's policy and got its
/// response head; the body is still to be read.
pub(crate) struct Opened {
    /// The response head.
    pub parts: http::response::Parts,
    /// The response body.
    pub body: hyper::body::Incoming,
    key: Key,
    sender: pool::Sender,
}

/// A connection whose response is being read; give it back with
/// [`Connection::release`] once the body was read in full.
pub(crate) struct Connection {
    key: Key,
    sender: pool::Sender,
}

impl Connection {
    /// Keep the connection for reuse by the plugin.
    pub async fn release(self, policy: &HttpPolicy) {
        policy.pool.give_back(self.key, self.sender).await;
    }
}

impl Opened {
    /// Split into head, body and the connection to release.
    pub fn into_parts(self) -> (http::response::Parts, hyper::body::Incoming, Connection) {
        (
            self.parts,
            self.body,
            Connection {
                key: self.key,
                sender: self.sender,
            },
        )
    }

    /// Read the body up to the plugin's response cap and give the
    /// connection back.
    async fn read_capped(
        self,
        plugin: &str,
        policy: &HttpPolicy,
        head: bool,
    ) -> Result<(http::response::Parts, Bytes), HttpError> {
        let cap = policy.limits.max_response_bytes;
        let declared = self
            .parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !head && declared.is_some_and(|n| n > cap) {
            Counters::bump(&policy.counters.too_large);
            tracing::warn!(plugin, host = %self.key.host, cap, "outbound response refused: body over the size cap");
            return Err(HttpError::HttpResponseBodySize(Some(cap)));
        }
        let host = self.key.host.clone();
        let (parts, incoming, conn) = self.into_parts();
        let body = match read_capped(incoming, cap).await? {
            Some(b) => b,
            None => {
                Counters::bump(&policy.counters.too_large);
                tracing::warn!(plugin, %host, cap, "outbound response refused: body over the size cap");
                return Err(HttpError::HttpResponseBodySize(Some(cap)));
            }
        };
        conn.release(policy).await;
        Ok((parts, body))
    }
}

/// Replace every granted secret value in a response's headers and body
/// with its placeholder, so the guest never sees one.
pub(crate) fn scrub(
    secrets: &SecretValues,
    mut parts: http::response::Parts,
    body: Bytes,
) -> (http::response::Parts, Bytes) {
    if secrets.is_empty() {
        return (parts, body);
    }
    for value in parts.headers.values_mut() {
        if let Some(clean) = secrets.scrub_response(value.as_bytes())
            && let Ok(v) = http::HeaderValue::from_bytes(&clean)
        {
            *value = v;
        }
    }
    let body = secrets.scrub_response(&body).map_or(body, Bytes::from);
    (parts, body)
}

/// Send `request` for plugin `plugin` under its `policy`, in order: the
/// rate limit, the allowed hosts, secret placeholders filled only where
/// bound (the body as `scan` says), then a pooled or new connection to an
/// address the [`NetGuard`] passed. Returns the response head with the
/// unread body. Used for guests' `wasi:http` requests and for the host's
/// own requests on a plugin's behalf (`media.upload`, attachment downloads).
pub(crate) async fn open(
    plugin: &str,
    policy: &HttpPolicy,
    secrets: &SecretValues,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    scan: BodyScan,
) -> Result<Opened, HttpError> {
    // 1. The rate limit, before anything else (refusals cost nothing).
    if let Err(wait) = policy.bucket.take() {
        let n = Counters::bump(&policy.counters.rate_limited);
        if n == 1 || n.is_power_of_two() {
            tracing::warn!(
                plugin,
                refused = n,
                rate_per_sec = policy.limits.rate_per_sec,
                burst = policy.limits.burst,
                "outbound request refused: rate limit"
            );
        }
        let ms = wait.map_or(u64::MAX, |w| (w.as_millis() as u64).max(1));
        return Err(HttpError::InternalError(Some(format!(
            "rate-limited: retry after {ms} ms: plugin `{plugin}` may make {} outbound requests per second (burst {})",
            policy.limits.rate_per_sec, policy.limits.burst
        ))));
    }

    // 2. The allowed hosts.
    let uri = request.uri().clone();
    let tls = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => false,
        _ => return Err(HttpError::HttpRequestUriInvalid),
    };
    let host = uri
        .host()
        .ok_or(HttpError::HttpRequestUriInvalid)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let scheme = if tls { "https" } else { "http" };
    if !policy.allows(scheme, &host, port) {
        tracing::warn!(plugin, %scheme, %host, port, "outbound request denied: host not allowed");
        return Err(HttpError::HttpRequestDenied);
    }
    let dest = Destination {
        scheme,
        host: &host,
        port,
    };

    // 3. Secrets, only where bound; the request stays in the host until a
    // checked connection exists.
    let request = match fill_secrets(secrets, &dest, request, scan).await {
        Ok(r) => r,
        Err(Fill::Refused(refused)) => return Err(refuse(plugin, policy, &refused)),
        Err(Fill::Http(e)) => return Err(e),
    };

    // 4. A pooled connection, or a new one to a checked address.
    let clamp = |asked: Option<Duration>, max: Duration| asked.map_or(max, |d| d.min(max));
    let connect_timeout = clamp(options.and_then(|o| o.connect_timeout), policy.max_connect);
    let first_byte = clamp(
        options.and_then(|o| o.first_byte_timeout),
        policy.max_first_byte,
    );
    let key = Key { tls, host, port };
    let (sender, response) = match policy.pool.checkout(&key) {
        Some(mut sender) => {
            match tokio::time::timeout(first_byte, sender.try_send_request(request)).await {
                Err(_) => return Err(HttpError::ConnectionReadTimeout),
                Ok(Ok(response)) => {
                    Counters::bump(&policy.counters.reused);
                    (sender, response)
                }
                Ok(Err(mut e)) => match e.take_message() {
                    // Never written: the idle connection had closed; retry once fresh.
                    Some(request) => {
                        fresh(plugin, policy, &key, connect_timeout, first_byte, request).await?
                    }
                    None => return Err(e.into_error().into()),
                },
            }
        }
        None => fresh(plugin, policy, &key, connect_timeout, first_byte, request).await?,
    };
    Counters::bump(&policy.counters.sent);
    let (parts, body) = response.into_parts();
    Ok(Opened {
        parts,
        body,
        key,
        sender,
    })
}

/// Count, log and turn into the guest's error a placeholder found outside
/// its secret's binding.
pub(crate) fn refuse(plugin: &str, policy: &HttpPolicy, refused: &Refused) -> HttpError {
    Counters::bump(&policy.counters.secrets_refused);
    tracing::warn!(
        plugin,
        secret = %refused.secret,
        place = %refused.place,
        destination = %refused.destination,
        "outbound request refused: secret outside its binding"
    );
    denied(refused.to_string())
}

/// Send `request` over a new connection.
async fn fresh(
    plugin: &str,
    policy: &HttpPolicy,
    key: &Key,
    connect_timeout: Duration,
    first_byte: Duration,
    request: http::Request<WasiBody>,
) -> Result<(pool::Sender, http::Response<hyper::body::Incoming>), HttpError> {
    let mut sender = pool::connect(plugin, key, &policy.guard, connect_timeout).await?;
    Counters::bump(&policy.counters.connections);
    let response = tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    Ok((sender, response))
}

/// Read `body` in full, or `None` once it passes `cap` bytes.
pub(crate) async fn read_capped(
    mut body: hyper::body::Incoming,
    cap: u64,
) -> Result<Option<Bytes>, HttpError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() as u64 + data.len() as u64 > cap {
                return Ok(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Some(Bytes::from(out)))
}

enum Fill {
    Refused(Refused),
    Http(HttpError),
}

impl From<Refused> for Fill {
    fn from(r: Refused) -> Self {
        Fill::Refused(r)
    }
}

/// Fill secret placeholders in the URL path, headers and (JSON) body where
/// each secret is bound; refuse one anywhere else. Bodies up to
/// [`MAX_SCANNED_BODY`] are scanned; the request goes out in origin form.
async fn fill_secrets(
    secrets: &SecretValues,
    dest: &Destination<'_>,
    request: http::Request<WasiBody>,
    scan: BodyScan,
) -> Result<http::Request<WasiBody>, Fill> {
    let (mut parts, body) = request.into_parts();
    let (path, query) = match parts.uri.path_and_query() {
        Some(pq) => (pq.path().to_string(), pq.query().map(str::to_string)),
        None => ("/".to_string(), None),
    };
    let path = secrets.fill(&path, &Place::Path, dest)?.unwrap_or(path);
    if let Some(q) = &query {
        secrets.fill(q, &Place::Query, dest)?;
    }
    let origin_form = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    parts.uri = origin_form
        .parse()
        .map_err(|_| Fill::Http(HttpError::HttpRequestUriInvalid))?;
    for (name, value) in parts.headers.iter_mut() {
        let Ok(text) = value.to_str() else {
            if memchr::memmem::find(value.as_bytes(), b"{{secret:").is_some() {
                // Not text: refuse a granted secret's placeholder as well.
                secrets.fill(
                    &String::from_utf8_lossy(value.as_bytes()),
                    &Place::Header(name.as_str().to_string()),
                    dest,
                )?;
            }
            continue;
        };
        if let Some(filled) = secrets.fill(text, &Place::Header(name.as_str().to_string()), dest)? {
            *value = http::HeaderValue::from_str(&filled).map_err(|_| {
                Fill::Http(denied(format!(
                    "a secret's value is not valid in header `{name}`"
                )))
            })?;
        }
    }
    if !secrets.is_empty() {
        // Compressed responses could not be scrubbed.
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
    }
    if scan == BodyScan::HostBuilt {
        return Ok(http::Request::from_parts(parts, body));
    }
    let body = match read_prefix(body, MAX_SCANNED_BODY)
        .await
        .map_err(Fill::Http)?
    {
        Prefix::Whole(bytes) => match secrets.fill_json(&bytes, dest)? {
            Some(filled) => {
                parts.headers.remove(http::header::CONTENT_LENGTH);
                full(Bytes::from(filled))
            }
            None => full(bytes),
        },
        Prefix::Partial(body) => body,
    };
    Ok(http::Request::from_parts(parts, body))
}

enum Prefix {
    /// The whole body (at most the limit).
    Whole(Bytes),
    /// A longer body, with what was read put back in front.
    Partial(WasiBody),
}

async fn read_prefix(mut body: WasiBody, limit: usize) -> Result<Prefix, HttpError> {
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        read.extend_from_slice(&data);
        if read.len() > limit {
            let head = futures::stream::once(async move {
                Ok::<_, HttpError>(hyper::body::Frame::data(Bytes::from(read)))
            });
            let rest = http_body_util::BodyStream::new(body);
            let stream = futures::StreamExt::chain(head, rest);
            return Ok(Prefix::Partial(
                http_body_util::StreamBody::new(stream).boxed_unsync(),
            ));
        }
    }
    Ok(Prefix::Whole(Bytes::from(read)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let p = HostPattern::parse("https://api.telegram.org").unwrap();
        assert!(p.matches("https", "api.telegram.org", 443));
        assert!(!p.matches("http", "api.telegram.org", 80));
        assert!(!p.matches("https", "api.telegram.org", 8443));
        assert!(!p.matches("https", "evil.org", 443));
        let p = HostPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(p.matches("http", "127.0.0.1", 1234));
        let p = HostPattern::parse("*.slack.com").unwrap();
        assert!(p.matches("https", "hooks.slack.com", 443));
        assert!(!p.matches("https", "slack.com.evil.org", 443));
        let p = HostPattern::parse("http://[::1]:8080").unwrap();
        assert!(p.matches("http", "::1", 8080));
        let p = HostPattern::parse("wss://gateway.discord.gg").unwrap();
        assert!(p.matches("wss", "gateway.discord.gg", 443));
        assert!(!p.matches("https", "gateway.discord.gg", 443));
        assert!(HostPattern::parse("ftp://x").is_err());
        assert!(HostPattern::parse("https://x/path").is_err());
    }
}
