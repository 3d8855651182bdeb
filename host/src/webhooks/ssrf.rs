//! The SSRF guard for webhook URLs, at registration and at delivery time.
//!
//! This module owns the rules a webhook URL must meet
//! ([`parse_endpoint_url`]: WHATWG parsing, `http`/`https` only, a host, no
//! credentials, at most [`MAX_URL_LEN`] bytes) and the address check
//! ([`SsrfGuard`]): a hostname is resolved through a [`Resolver`] and every
//! address is judged by [`NetGuard`]; blocked ones are dropped, and the URL is
//! refused when none remain. IP-literal hosts (in any form the WHATWG parser
//! accepts: `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`, ...) are judged
//! directly, without DNS.
//!
//! At delivery time the HTTP client resolves names through
//! [`SsrfGuard::reqwest_resolver`], which hands it only checked addresses,
//! so the address connected to is the address checked (no DNS-rebinding
//! window). reqwest dials IP-literal hosts without calling a resolver, so
//! those must go through [`SsrfGuard::check_url`] before the request.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Host;

use crate::netguard::{Blocked, NetGuard};

/// The longest webhook URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Why a webhook URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum SsrfError {
    /// The URL does not parse, has no host, or is too long.
    #[error("invalid webhook URL: {0}")]
    InvalidUrl(String),
    /// The scheme is not `http` or `https`.
    #[error("unsupported URL scheme `{0}`: webhook URLs must be http or https")]
    UnsupportedScheme(String),
    /// The URL carries a user name or password.
    #[error("webhook URLs must not contain credentials (user:password@)")]
    Credentials,
    /// The host is, or resolves only to, blocked addresses.
    #[error("host `{host}` is not allowed: {source}")]
    Blocked {
        /// The host as written in the URL (or as asked by the HTTP client).
        host: String,
        /// The first blocked address and its range.
        source: Blocked,
    },
    /// The host resolved to no addresses at all.
    #[error("host `{host}` resolved to no addresses")]
    NoAddress {
        /// The host that was looked up.
        host: String,
    },
    /// Looking the host up failed.
    #[error("cannot resolve host `{host}`: {source}")]
    Dns {
        /// The host that was looked up.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
}

/// Parse and validate a webhook endpoint URL.
///
/// Parsing follows the WHATWG URL standard (`reqwest::Url`), which also
/// normalises the legacy IPv4 spellings (`http://2130706433/`,
/// `http://0177.0.0.1/`, `http://0x7f.1/` all become `127.0.0.1`), so the
/// address checked later is the one a client would dial. The URL must be
/// `http` or `https`, have a host, carry no `user:password@`, and be at most
/// [`MAX_URL_LEN`] bytes. Addresses are not checked here; see
/// [`SsrfGuard::check_url`].
pub fn parse_endpoint_url(s: &str) -> Result<Url, SsrfError> {
    if s.len() > MAX_URL_LEN {
        return Err(too_long(s.len()));
    }
    let url = Url::parse(s).map_err(|e| SsrfError::InvalidUrl(e.to_string()))?;
    validate(&url)?;
    Ok(url)
}

/// The URL rules that do not need DNS (shared by parsing and checking).
fn validate(url: &Url) -> Result<(), SsrfError> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(SsrfError::UnsupportedScheme(other.to_owned())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SsrfError::Credentials);
    }
    if url.host().is_none() {
        return Err(SsrfError::InvalidUrl("the URL has no host".into()));
    }
    if url.as_str().len() > MAX_URL_LEN {
        return Err(too_long(url.as_str().len()));
    }
    Ok(())
}

fn too_long(len: usize) -> SsrfError {
    SsrfError::InvalidUrl(format!(
        "the URL is {len} bytes long; at most {MAX_URL_LEN} are allowed"
    ))
}

/// Looks host names up. Implementations must not filter: the guard judges
/// every address returned.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `host` (a name, never an IP literal), with `port`.
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
}

/// The operating system's resolver (`getaddrinfo`, through
/// `tokio::net::lookup_host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// A fixed map from host name to addresses, for tests and for operators who
/// pin names. Names match case-insensitively and ignoring one trailing dot;
/// a name not in the map fails with [`io::ErrorKind::NotFound`].
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    hosts: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// A resolver answering from `entries` (host, addresses).
    pub fn new<I, H>(entries: I) -> StaticResolver
    where
        I: IntoIterator<Item = (H, Vec<IpAddr>)>,
        H: AsRef<str>,
    {
        StaticResolver {
            hosts: entries
                .into_iter()
                .map(|(host, ips)| (normalize_host(host.as_ref()), ips))
                .collect(),
        }
    }
}

impl Resolver for StaticResolver {
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let found = match self.hosts.get(&normalize_host(host)) {
            Some(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("`{host}` is not in the static host map"),
            )),
        };
        Box::pin(std::future::ready(found))
    }
}

/// Lower case, without one trailing dot (`Example.COM.` is `example.com`).
fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Decides which addresses a webhook may reach: resolves through a
/// [`Resolver`] and keeps only what the [`NetGuard`] allows. Cheap to clone.
#[derive(Clone)]
pub struct SsrfGuard {
    net: Arc<NetGuard>,
    resolver: Arc<dyn Resolver>,
}

impl fmt::Debug for SsrfGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsrfGuard")
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

impl SsrfGuard {
    /// A guard with the address policy `net` (its allow-list opens blocked
    /// ranges) resolving names through `resolver`.
    pub fn new(net: NetGuard, resolver: Arc<dyn Resolver>) -> SsrfGuard {
        SsrfGuard {
            net: Arc::new(net),
            resolver,
        }
    }

    /// A guard resolving through the system resolver.
    pub fn system(net: NetGuard) -> SsrfGuard {
        SsrfGuard::new(net, Arc::new(SystemResolver))
    }

    /// The allowed addresses `url` may be sent to (with the URL's port).
    ///
    /// The URL rules of [`parse_endpoint_url`] are applied again. An
    /// IP-literal host is judged directly, without DNS; a name is resolved
    /// and every address judged, blocked ones dropped. Fails when nothing
    /// allowed remains, naming the host, the (first) blocked address and its
    /// range.
    pub async fn check_url(&self, url: &Url) -> Result<Vec<SocketAddr>, SsrfError> {
        validate(url)?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| SsrfError::InvalidUrl("the URL has no port".into()))?;
        let host = url.host_str().unwrap_or_default();
        match url.host() {
            Some(Host::Ipv4(ip)) => self.keep_allowed(host, [SocketAddr::new(ip.into(), port)]),
            Some(Host::Ipv6(ip)) => self.keep_allowed(host, [SocketAddr::new(ip.into(), port)]),
            Some(Host::Domain(name)) => self.resolve(name, port).await,
            None => Err(SsrfError::InvalidUrl("the URL has no host".into())),
        }
    }

    /// A DNS resolver for `reqwest::ClientBuilder::dns_resolver`; see
    /// [`ReqwestResolver`]. (A concrete type rather than `Arc<dyn Resolve>`,
    /// which `dns_resolver` does not take; it coerces to one.)
    pub fn reqwest_resolver(&self) -> Arc<ReqwestResolver> {
        Arc::new(ReqwestResolver(self.clone()))
    }

    /// Resolve `host` (a name or a bare IP literal) and keep what is allowed.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SsrfError> {
        if let Some(ip) = literal_ip(host) {
            return self.keep_allowed(host, [SocketAddr::new(ip, port)]);
        }
        let addrs = self
            .resolver
            .lookup(host, port)
            .await
            .map_err(|source| SsrfError::Dns {
                host: host.to_owned(),
                source,
            })?;
        self.keep_allowed(host, addrs)
    }

    /// The allowed addresses among `addrs`, in order and without repeats;
    /// an error if there are none.
    fn keep_allowed(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, SsrfError> {
        let mut allowed: Vec<SocketAddr> = Vec::new();
        let mut first_blocked = None;
        for addr in addrs {
            match self.net.check(addr.ip()) {
                Ok(()) if !allowed.contains(&addr) => allowed.push(addr),
                Ok(()) => {}
                Err(blocked) => {
                    tracing::debug!(host, %blocked, "webhook address dropped");
                    first_blocked.get_or_insert(blocked);
                }
            }
        }
        if !allowed.is_empty() {
            return Ok(allowed);
        }
        let host = host.to_owned();
        Err(match first_blocked {
            Some(source) => SsrfError::Blocked { host, source },
            None => SsrfError::NoAddress { host },
        })
    }
}

/// `host` as an IP address, if it is one (IPv6 with or without brackets).
fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// [`SsrfGuard`] as a reqwest DNS resolver: names go through the guard's
/// [`Resolver`] and only allowed addresses are returned; when none are, the
/// lookup fails with the [`SsrfError`] (naming the blocked address and
/// range), so the client never connects anywhere else. reqwest does not call
/// a resolver for IP-literal hosts: check those with
/// [`SsrfGuard::check_url`] before the request.
#[derive(Debug, Clone)]
pub struct ReqwestResolver(SsrfGuard);

impl Resolve for ReqwestResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            // Port 0: reqwest substitutes the URL's (or the scheme's) port.
            let addrs = guard.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolver() -> Arc<dyn Resolver> {
        Arc::new(StaticResolver::new([
            ("internal.example", vec![ip("10.0.0.1")]),
            ("localhost", vec![ip("127.0.0.1"), ip("::1")]),
            ("metadata.example", vec![ip("169.254.169.254")]),
            (
                "mixed.example",
                vec![ip("10.0.0.1"), ip("93.184.216.34"), ip("127.0.0.1")],
            ),
            ("example.com", vec![ip("93.184.216.34")]),
            ("empty.example", vec![]),
        ]))
    }

    fn guard() -> SsrfGuard {
        SsrfGuard::new(NetGuard::default(), resolver())
    }

    fn loopback_allowed() -> NetGuard {
        NetGuard::new(NetGuard::parse_cidrs("127.0.0.0/8").unwrap())
    }

    async fn check(guard: &SsrfGuard, url: &str) -> Result<Vec<SocketAddr>, SsrfError> {
        guard.check_url(&parse_endpoint_url(url)?).await
    }

    /// Counts lookups and fails them: proves IP literals skip DNS.
    #[derive(Default)]
    struct NoDns(AtomicUsize);

    impl Resolver for NoDns {
        fn lookup(&self, _: &str, _: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::ready(Err(io::Error::other("no DNS here"))))
        }
    }

    #[test]
    fn legacy_ipv4_spellings_normalise_to_the_address() {
        let loopback = Host::Ipv4(Ipv4Addr::LOCALHOST);
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://0x7F.0.0.1:8080/x",
        ] {
            let parsed = parse_endpoint_url(url).unwrap();
            assert_eq!(parsed.host(), Some(loopback.clone()), "{url}");
        }
        assert_eq!(
            parse_endpoint_url("http://0/").unwrap().host(),
            Some(Host::Ipv4(Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(
            parse_endpoint_url("http://[::ffff:127.0.0.1]/")
                .unwrap()
                .host_str(),
            Some("[::ffff:7f00:1]")
        );
    }

    #[tokio::test]
    async fn ssrf_vectors_are_refused() {
        let guard = guard();
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://0x7f000001/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::]/",
            "http://10.0.0.1/",
            "http://100.64.0.1/",
            "http://172.16.0.1/",
            "http://192.168.0.1/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[ff02::1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://internal.example/",
            "http://internal.example./",
            "http://INTERNAL.Example/",
            "http://localhost/",
            "http://localhost:8080/",
            "http://localhost./",
            "https://metadata.example/latest/meta-data/",
        ] {
            match check(&guard, url).await {
                Err(SsrfError::Blocked { host, source }) => {
                    assert!(!host.is_empty(), "{url}");
                    let msg = SsrfError::Blocked { host, source }.to_string();
                    assert!(msg.contains("blocked range"), "{url}: {msg}");
                }
                other => panic!("{url} should be blocked, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn blocked_error_names_host_address_and_range() {
        let err = check(&guard(), "http://internal.example/hook")
            .await
            .unwrap_err();
        let msg = err.to_string();
        for word in ["internal.example", "10.0.0.1", "10.0.0.0/8"] {
            assert!(msg.contains(word), "{msg}");
        }
        let err = check(&guard(), "http://[::ffff:127.0.0.1]/")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("::ffff:127.0.0.1"), "{err}");
    }

    #[tokio::test]
    async fn ip_literals_are_checked_without_dns() {
        let dns = Arc::new(NoDns::default());
        let guard = SsrfGuard::new(NetGuard::default(), dns.clone());
        for url in ["http://[::ffff:127.0.0.1]/", "http://2130706433/"] {
            assert!(matches!(
                check(&guard, url).await,
                Err(SsrfError::Blocked { .. })
            ));
        }
        assert_eq!(
            check(&guard, "https://93.184.216.34:8443/in")
                .await
                .unwrap(),
            vec![SocketAddr::new(ip("93.184.216.34"), 8443)]
        );
        assert_eq!(
            check(&guard, "http://[2606:4700::1111]/").await.unwrap(),
            vec![SocketAddr::new(ip("2606:4700::1111"), 80)]
        );
        assert_eq!(dns.0.load(Ordering::SeqCst), 0);
        // A name does go to the resolver, and its failure is reported.
        let err = check(&guard, "http://example.com/").await.unwrap_err();
        assert!(matches!(err, SsrfError::Dns { .. }), "{err:?}");
        assert_eq!(dns.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn blocked_addresses_are_dropped_from_a_mixed_answer() {
        assert_eq!(
            check(&guard(), "http://mixed.example/").await.unwrap(),
            vec![SocketAddr::new(ip("93.184.216.34"), 80)]
        );
    }

    #[tokio::test]
    async fn public_host_is_allowed() {
        let guard = guard();
        assert_eq!(
            check(&guard, "https://example.com/").await.unwrap(),
            vec![SocketAddr::new(ip("93.184.216.34"), 443)]
        );
        assert_eq!(
            check(&guard, "http://EXAMPLE.com.:8080/hooks?x=1")
                .await
                .unwrap(),
            vec![SocketAddr::new(ip("93.184.216.34"), 8080)]
        );
    }

    #[tokio::test]
    async fn allow_list_opens_only_its_range() {
        let guard = SsrfGuard::new(loopback_allowed(), resolver());
        assert_eq!(
            check(&guard, "http://127.0.0.1:9000/").await.unwrap(),
            vec![SocketAddr::new(ip("127.0.0.1"), 9000)]
        );
        // `::1` is not in 127.0.0.0/8, so only the IPv4 loopback is kept.
        assert_eq!(
            check(&guard, "http://localhost/").await.unwrap(),
            vec![SocketAddr::new(ip("127.0.0.1"), 80)]
        );
        assert!(matches!(
            check(&guard, "http://10.0.0.1/").await,
            Err(SsrfError::Blocked { .. })
        ));
        assert!(matches!(
            check(&guard, "http://internal.example/").await,
            Err(SsrfError::Blocked { .. })
        ));
    }

    #[tokio::test]
    async fn resolution_failures_are_reported() {
        let guard = guard();
        match check(&guard, "http://nowhere.example/").await {
            Err(e @ SsrfError::Dns { .. }) => {
                assert!(e.to_string().contains("nowhere.example"), "{e}")
            }
            other => panic!("expected a DNS error, got {other:?}"),
        }
        match check(&guard, "http://empty.example/").await {
            Err(e @ SsrfError::NoAddress { .. }) => {
                assert!(e.to_string().contains("empty.example"), "{e}")
            }
            other => panic!("expected no address, got {other:?}"),
        }
    }

    #[test]
    fn other_schemes_are_refused_at_parse() {
        for url in [
            "ftp://x/",
            "file:///etc/passwd",
            "gopher://x/",
            "javascript:alert(1)",
            "data:text/plain,hi",
            "ws://example.com/",
        ] {
            let err = parse_endpoint_url(url).unwrap_err();
            assert!(
                matches!(err, SsrfError::UnsupportedScheme(_)),
                "{url}: {err:?}"
            );
            assert!(err.to_string().contains("scheme"), "{url}: {err}");
        }
    }

    #[test]
    fn credentials_are_refused() {
        for url in [
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "https://:pw@example.com/",
        ] {
            let err = parse_endpoint_url(url).unwrap_err();
            assert!(matches!(err, SsrfError::Credentials), "{url}: {err:?}");
            assert!(err.to_string().contains("credentials"), "{err}");
        }
    }

    #[test]
    fn malformed_and_oversized_urls_are_refused() {
        for url in [
            "",
            "not a url",
            "http://",
            "http://exa mple.com/",
            "http://[::1/",
        ] {
            let err = parse_endpoint_url(url).unwrap_err();
            assert!(matches!(err, SsrfError::InvalidUrl(_)), "{url}: {err:?}");
            assert!(err.to_string().starts_with("invalid webhook URL"), "{err}");
        }
        let base = "https://example.com/";
        let fits = format!("{base}{}", "a".repeat(MAX_URL_LEN - base.len()));
        assert!(parse_endpoint_url(&fits).is_ok());
        let err = parse_endpoint_url(&format!("{fits}a")).unwrap_err();
        assert!(err.to_string().contains("2048"), "{err}");
        // Percent-encoding can grow a URL past the limit after parsing.
        let grows = format!("{base}{}", "<".repeat(MAX_URL_LEN - base.len()));
        let err = parse_endpoint_url(&grows).unwrap_err();
        assert!(err.to_string().contains("2048"), "{err}");
    }

    #[tokio::test]
    async fn check_url_applies_the_url_rules_too() {
        let guard = guard();
        let ftp = Url::parse("ftp://example.com/").unwrap();
        assert!(matches!(
            guard.check_url(&ftp).await,
            Err(SsrfError::UnsupportedScheme(_))
        ));
        let creds = Url::parse("http://u:p@example.com/").unwrap();
        assert!(matches!(
            guard.check_url(&creds).await,
            Err(SsrfError::Credentials)
        ));
    }

    #[tokio::test]
    async fn static_resolver_matches_names_loosely() {
        let r = StaticResolver::new([("Hooks.Example.", vec![ip("1.1.1.1")])]);
        for name in ["hooks.example", "HOOKS.example.", "hooks.example."] {
            assert_eq!(
                r.lookup(name, 443).await.unwrap(),
                vec![SocketAddr::new(ip("1.1.1.1"), 443)]
            );
        }
        let err = r.lookup("other.example", 80).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    /// An HTTP server on 127.0.0.1 answering `200 ok`, and how many
    /// connections it accepted.
    async fn serve_ok() -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        (port, accepted)
    }

    fn client(guard: &SsrfGuard) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(guard.reqwest_resolver())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn hook_resolver() -> Arc<dyn Resolver> {
        Arc::new(StaticResolver::new([
            ("hook.test", vec![ip("127.0.0.1")]),
            ("mixed.test", vec![ip("10.0.0.1"), ip("127.0.0.1")]),
        ]))
    }

    fn chain(e: &dyn std::error::Error) -> String {
        let mut msg = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        msg
    }

    #[tokio::test]
    async fn reqwest_resolver_refuses_blocked_addresses() {
        let (port, accepted) = serve_ok().await;
        let guard = SsrfGuard::new(NetGuard::default(), hook_resolver());
        let err = client(&guard)
            .get(format!("http://hook.test:{port}/"))
            .send()
            .await
            .unwrap_err();
        let msg = chain(&err);
        assert!(
            msg.contains("hook.test") && msg.contains("127.0.0.1") && msg.contains("loopback"),
            "{msg}"
        );
        let ssrf = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .find_map(|e| e.downcast_ref::<SsrfError>());
        assert!(matches!(ssrf, Some(SsrfError::Blocked { .. })), "{ssrf:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "never connected");
    }

    #[tokio::test]
    async fn reqwest_resolver_connects_to_allowed_addresses() {
        let (port, accepted) = serve_ok().await;
        let guard = SsrfGuard::new(loopback_allowed(), hook_resolver());
        let client = client(&guard);
        for host in ["hook.test", "mixed.test"] {
            let resp = client
                .get(format!("http://{host}:{port}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.text().await.unwrap(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
