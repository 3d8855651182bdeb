//! Outbound HTTP factor: `wasi:http/outgoing-handler`, the only network a
//! plugin has.
//!
//! Every request is checked against the plugin's allowed hosts (scheme, host,
//! port); the host name is resolved by the host, every resolved address is
//! checked by [`NetGuard`] and the connection goes to a checked address, so
//! DNS rebinding cannot reach a private range. Secret placeholders in the URL
//! and headers are filled in here, after the checks, so secrets never enter
//! guest memory. Timeouts requested by the guest are clamped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::secrets::SecretValues;
use crate::netguard::NetGuard;

/// One allowed-host rule: `scheme://host[:port]`, where host may be `*` or
/// `*.example.com` and port may be `*`. Without a scheme, `https` is meant;
/// without a port, the scheme's default port.
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
        if scheme != "http" && scheme != "https" {
            return Err(format!("allowed host `{s}`: scheme must be http or https"));
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
        let default_port = if scheme == "https" { 443 } else { 80 };
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

/// A plugin's outbound policy (shared by all its instances).
#[derive(Debug, Clone)]
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
}

impl HttpPolicy {
    /// A policy allowing `allowed` hosts, with `guard` for addresses.
    pub fn new(allowed: Vec<HostPattern>, guard: NetGuard) -> Self {
        HttpPolicy {
            allowed,
            guard,
            max_connect: Duration::from_secs(10),
            max_first_byte: Duration::from_secs(120),
        }
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

async fn send(
    plugin: &str,
    policy: &HttpPolicy,
    secrets: &SecretValues,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
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

    // Resolve here and connect only to an address that passed the guard.
    let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(
            policy.max_connect,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| HttpError::DnsTimeout)?
        .map_err(|e| HttpError::DnsError {
            rcode: Some(e.to_string()),
            info_code: None,
        })?
        .collect(),
    };
    let mut allowed_addr = None;
    for addr in &addrs {
        match policy.guard.check(addr.ip()) {
            Ok(()) => {
                allowed_addr = Some(*addr);
                break;
            }
            Err(blocked) => {
                tracing::warn!(plugin, %host, %blocked, "outbound request denied: blocked address");
            }
        }
    }
    let Some(addr) = allowed_addr else {
        return Err(if addrs.is_empty() {
            HttpError::DestinationNotFound
        } else {
            HttpError::DestinationIpProhibited
        });
    };

    // Secrets go in only now, after every check.
    if let Some(filled) = secrets.fill(&uri.to_string()) {
        *request.uri_mut() = filled
            .parse()
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    }
    for value in request.headers_mut().values_mut() {
        if let Some(filled) = value.to_str().ok().and_then(|v| secrets.fill(v))
            && let Ok(v) = http::HeaderValue::from_str(&filled)
        {
            *value = v;
        }
    }

    let clamp = |asked: Option<Duration>, max: Duration| asked.map_or(max, |d| d.min(max));
    let connect_timeout = clamp(options.and_then(|o| o.connect_timeout), policy.max_connect);
    let first_byte = clamp(
        options.and_then(|o| o.first_byte_timeout),
        policy.max_first_byte,
    );

    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;
    let _ = tcp.set_nodelay(true);

    // Origin-form request line.
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let response = if tls {
        let config = tls_config();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(HttpError::Tls)?;
        exchange(stream, request, connect_timeout, first_byte).await?
    } else {
        exchange(tcp, request, connect_timeout, first_byte).await?
    };
    let response = response.map(|body| body.map_err(HttpError::from).boxed_unsync());
    Ok((response, Box::new(async { Ok(()) }) as IoFuture))
}

async fn exchange<S>(
    stream: S,
    request: http::Request<WasiBody>,
    handshake_timeout: Duration,
    first_byte: Duration,
) -> Result<http::Response<hyper::body::Incoming>, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = tokio::time::timeout(
        handshake_timeout,
        hyper::client::conn::http1::Builder::new().handshake(io),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "outbound connection ended with an error");
        }
    });
    tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(HttpError::from)
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                }),
            )
        })
        .clone()
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
        assert!(HostPattern::parse("ftp://x").is_err());
        assert!(HostPattern::parse("https://x/path").is_err());
    }

    #[test]
    fn secrets_are_filled_and_scrubbed() {
        let s = SecretValues([("token".to_string(), "s3cr3t".to_string())].into());
        assert_eq!(
            s.fill("https://api/bot{{secret:token}}/getMe").as_deref(),
            Some("https://api/bots3cr3t/getMe")
        );
        assert_eq!(s.fill("no placeholder"), None);
        assert_eq!(s.scrub("bad token s3cr3t"), "bad token [secret:token]");
    }
}
