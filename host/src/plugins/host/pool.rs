//! Connections of one plugin's outbound HTTP: opening them (resolve, check
//! every address with the [`NetGuard`], TCP, TLS, HTTP/1.1 handshake) and
//! keeping idle keep-alive ones for reuse, bounded per host and in total.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use hyper::client::conn::http1::SendRequest;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use crate::netguard::NetGuard;

/// A connection's request handle.
pub(crate) type Sender = SendRequest<WasiBody>;

/// Idle connections kept per destination.
const MAX_IDLE_PER_HOST: usize = 4;
/// Idle connections kept in total per plugin.
const MAX_IDLE: usize = 16;
/// An idle connection older than this is closed instead of reused.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// Longest wait for a connection to become ready for the next request
/// after a response was read in full.
const READY_WAIT: Duration = Duration::from_secs(5);

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// Idle connections by destination, each with the time it was given back.
type Idle = HashMap<Key, Vec<(Sender, Instant)>>;

/// Idle keep-alive connections of one plugin (or channel account). A
/// connection unused for [`IDLE_FOR`] is closed then, not only when the
/// next request looks for one: a thousand quiet bots would otherwise each
/// keep a connection (and its buffers, and a TLS session) open for as long
/// as the platform does.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Arc<Mutex<Idle>>,
}

/// Drop the connections of `idle` that are closed or unused for
/// [`IDLE_FOR`] as of `now`.
fn prune(idle: &mut Idle, now: Instant) {
    idle.retain(|_, list| {
        list.retain(|(s, since)| {
            !s.is_closed() && now.saturating_duration_since(*since) < IDLE_FOR
        });
        !list.is_empty()
    });
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `key` that is ready for a request.
    pub fn checkout(&self, key: &Key) -> Option<Sender> {
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        let mut found = None;
        while let Some((mut sender, since)) = list.pop() {
            if now.saturating_duration_since(since) < IDLE_FOR
                && !sender.is_closed()
                && matches!(sender.ready().now_or_never(), Some(Ok(())))
            {
                found = Some(sender);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Keep `sender` for reuse once it is ready for the next request
    /// (a connection the server closes is dropped).
    pub async fn give_back(&self, key: Key, mut sender: Sender) {
        match tokio::time::timeout(READY_WAIT, sender.ready()).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        let mut idle = self.lock();
        let now = Instant::now();
        prune(&mut idle, now);
        let total: usize = idle.values().map(Vec::len).sum();
        if total >= MAX_IDLE {
            return;
        }
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push((sender, now));
            drop(idle);
            // Closed once unused for IDLE_FOR (dropping the last sender
            // ends the connection's task).
            let pool = Arc::downgrade(&self.idle);
            tokio::spawn(async move {
                tokio::time::sleep(IDLE_FOR).await;
                if let Some(pool) = pool.upgrade() {
                    prune(
                        &mut pool.lock().unwrap_or_else(|p| p.into_inner()),
                        Instant::now(),
                    );
                }
            });
        }
    }
}

/// A connected byte stream: plain TCP or TLS over it.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Open a connection to `key`: resolve the name here, connect only to an
/// address that passed `guard` (so DNS rebinding cannot reach a private
/// range), then TLS if asked and the HTTP/1.1 handshake.
pub(crate) async fn connect(
    plugin: &str,
    key: &Key,
    guard: &NetGuard,
    connect_timeout: Duration,
) -> Result<Sender, HttpError> {
    let stream = dial(plugin, key, guard, connect_timeout).await?;
    handshake(stream, connect_timeout).await
}

/// Resolve `key`'s host, connect to the first address `guard` passes and
/// do TLS if `key.tls`: the stream outbound HTTP and host-managed
/// WebSocket sessions are built on.
pub(crate) async fn dial(
    plugin: &str,
    key: &Key,
    guard: &NetGuard,
    connect_timeout: Duration,
) -> Result<Box<dyn Io>, HttpError> {
    let host = key.host.as_str();
    let port = key.port;
    let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(connect_timeout, tokio::net::lookup_host((host, port)))
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
        match guard.check(addr.ip()) {
            Ok(()) => {
                allowed_addr = Some(*addr);
                break;
            }
            Err(blocked) => {
                tracing::warn!(plugin, %host, %blocked, "outbound connection denied: blocked address");
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

    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;
    let _ = tcp.set_nodelay(true);
    if key.tls {
        let name = rustls::pki_types::ServerName::try_from(key.host.clone())
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let stream = tokio::time::timeout(
            connect_timeout,
            tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp),
        )
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Tls)?;
        Ok(Box::new(stream))
    } else {
        Ok(Box::new(tcp))
    }
}

async fn handshake<S>(stream: S, timeout: Duration) -> Result<Sender, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) = tokio::time::timeout(
        timeout,
        hyper::client::conn::http1::Builder::new().handshake(io),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "outbound connection ended with an error");
        }
    });
    Ok(sender)
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
