//! The HTTP accept loop (in place of `axum::serve`): one hyper HTTP/1.1
//! connection per socket, with upgrades (the WebSocket protocol), and what
//! `axum::serve` lacks:
//!
//! - a header timeout (from a request's first byte, and for a new
//!   connection's first request), an idle keep-alive timeout and a request
//!   body timeout (a slowloris client is closed, not kept for ever);
//! - a cap on open sockets (HTTP and upgraded WebSockets together),
//!   derived from the descriptor limit less a reserve: over it a new
//!   connection gets an immediate `503` with `Retry-After` and is closed;
//! - accept errors (`EMFILE`, `ENFILE`, ...) back off instead of spinning;
//! - an [`AcceptGate`] consulted at accept, before a byte is read: a peer
//!   it refuses (an address blocked for pre-auth protocol violations or
//!   over its connection rate) gets a `429` with `Retry-After` and is
//!   closed, so a flood of such sockets costs an accept and a close each.
//!
//! Metrics: `pincer_http_sockets_open`, `pincer_http_sockets_max`,
//! `pincer_http_sockets_refused_total`, `pincer_http_refused_at_accept_total`
//! and `pincer_http_timeouts_total` (by `reason`: header, idle or body
//! timeout).
//!
//! Connections are served on the `edge` runtime handle given to [`serve`]
//! (the gateway's untrusted-work runtime, at lower OS priority); the
//! accept loop itself runs where it is called (the gateway calls it on the
//! edge runtime too, so no socket it accepts or refuses touches the
//! operators' runtime; authenticated WebSockets move there afterwards,
//! [`super::handover`]).
//!
//! Graceful shutdown asks every HTTP connection to finish its request and
//! close, and waits for them; `ConnectInfo<SocketAddr>` is set on every
//! request as `axum::serve` did.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;
use tracing::{debug, warn};

/// The listener's limits (from [`super::GatewayConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Longest wait for a request's headers, from its first byte (and for
    /// a new connection's first request).
    pub header_timeout: Duration,
    /// Longest time to receive one request body.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Most open client sockets.
    pub max_sockets: usize,
}

/// Most refused sockets (answered 503) lingering at once to drain the
/// client's request.
const MAX_REFUSING: usize = 64;

/// How long a refused connection lingers.
const REFUSE_LINGER: Duration = Duration::from_millis(500);

/// Decides at accept, before anything is read, whether a peer is served.
pub trait AcceptGate: Send + Sync + 'static {
    /// `Some(retry_after)` refuses a new socket from `ip` now.
    fn refusal(&self, ip: IpAddr) -> Option<Duration>;
}

/// The answer to a peer refused by the [`AcceptGate`].
fn too_many_requests(retry_after: Duration) -> Bytes {
    const BODY: &str = "{\"error\":{\"code\":\"RATE_LIMITED\",\"message\":\"too many connections or protocol errors from this address\"}}";
    let secs = retry_after.as_millis().div_ceil(1000).max(1);
    Bytes::from(format!(
        "HTTP/1.1 429 Too Many Requests\r\n\
content-type: application/json\r\n\
retry-after: {secs}\r\n\
connection: close\r\n\
content-length: {}\r\n\r\n{BODY}",
        BODY.len()
    ))
}

/// The answer to a connection over the cap.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 69\r\n\r\n\
{\"error\":{\"code\":\"OVERLOADED\",\"message\":\"too many open connections\"}}";

/// A slot under the socket cap, counted in `pincer_http_sockets_open`.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("pincer_http_sockets_open").increment(1.0);
        Slot { _permit: permit }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("pincer_http_sockets_open").decrement(1.0);
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then let the open
/// HTTP connections finish their requests and return once they have.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    open: Arc<Semaphore>,
    gate: Arc<dyn AcceptGate>,
    edge: tokio::runtime::Handle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    metrics::gauge!("pincer_http_sockets_max").set(limits.max_sockets as f64);
    // Every connection task holds a receiver; `closed()` on the sender
    // resolves once all of them have ended.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, remote) = match accepted {
            Ok(a) => {
                backoff = Duration::ZERO;
                a
            }
            Err(e) if is_resource_error(&e) => {
                // Out of descriptors or memory: the pending connection stays
                // in the backlog; retrying at once would spin.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
            Err(e) => {
                debug!(error = %e, "accept failed");
                continue;
            }
        };
        if let Some(wait) = gate.refusal(remote.ip()) {
            metrics::counter!("pincer_http_refused_at_accept_total").increment(1);
            debug!(%remote, "refusing a connection at accept: address limited");
            refuse(stream, &refusing, too_many_requests(wait), &edge);
            continue;
        }
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("pincer_http_sockets_refused_total").increment(1);
            debug!(%remote, "refusing a connection: too many open sockets");
            refuse(stream, &refusing, Bytes::from_static(OVERLOADED), &edge);
            continue;
        };
        let _ = stream.set_nodelay(true);
        edge.spawn(serve_connection(
            stream,
            remote,
            permit,
            app.clone(),
            limits,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
}

fn is_resource_error(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
        || e.kind() == std::io::ErrorKind::OutOfMemory
}

/// Refuse a socket: write `answer` and close, without reading the
/// request. A bounded number of refusals linger to drain what the client
/// sends (so the close is a FIN, not a reset that could discard the
/// answer); beyond that the answer is written without waiting and the
/// socket closed.
fn refuse(
    stream: TcpStream,
    refusing: &Arc<Semaphore>,
    answer: Bytes,
    edge: &tokio::runtime::Handle,
) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        let mut sink = [0u8; 1024];
        while matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {}
        let _ = stream.try_write(&answer);
        return;
    };
    edge.spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSE_LINGER, async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = stream;
            stream.write_all(&answer).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    permit: OwnedSemaphorePermit,
    app: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TrackedIo {
        slot: Some(Slot::new(permit)),
        activity: activity.clone(),
        inner: Some(stream),
    };
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let activity = activity.clone();
            let mut req = req.map(|b| Body::new(TimeoutBody::new(b, limits.body_timeout)));
            req.extensions_mut().insert(ConnectInfo(remote));
            let busy = activity.begin_request();
            let app = app.clone();
            async move {
                let response = app.oneshot(req).await;
                drop(busy);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None).keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%remote, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            why = activity.expired(limits) => {
                debug!(%remote, why, "closing HTTP connection");
                metrics::counter!("pincer_http_timeouts_total", "reason" => why).increment(1);
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Where a connection is, for its timeouts.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head since this instant.
    Head(Instant),
    /// No request since this instant (the last byte written or read).
    Idle(Instant),
    /// This many requests are being handled (their bodies have their own
    /// timeout).
    Busy(usize),
}

/// A connection's phase, updated by its socket and its service.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Phase) -> R) -> R {
        f(&mut self.phase.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn on_read(&self) {
        let started = self.with(|p| match *p {
            Phase::Idle(_) => {
                *p = Phase::Head(Instant::now());
                true
            }
            _ => false,
        });
        if started {
            self.changed.notify_one();
        }
    }

    /// Bytes were written: an idle connection is still making progress.
    fn on_write(&self) {
        self.with(|p| {
            if let Phase::Idle(_) = *p {
                *p = Phase::Idle(Instant::now());
            }
        });
    }

    /// A request head was read; the guard ends the request.
    fn begin_request(self: &Arc<Self>) -> BusyGuard {
        self.with(|p| {
            *p = match *p {
                Phase::Busy(n) => Phase::Busy(n + 1),
                _ => Phase::Busy(1),
            }
        });
        self.changed.notify_one();
        BusyGuard(self.clone())
    }

    /// Resolves when the connection has waited too long for a request head
    /// or sat idle too long.
    async fn expired(&self, limits: HttpLimits) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let due = self.with(|p| match *p {
                Phase::Head(since) => Some((since + limits.header_timeout, "header timeout")),
                Phase::Idle(since) => Some((since + limits.idle_timeout, "idle timeout")),
                Phase::Busy(_) => None,
            });
            match due {
                Some((at, why)) if Instant::now() >= at => return why,
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Ends a request when dropped (also when its handler is cancelled).
struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.with(|p| {
            *p = match *p {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Idle(Instant::now()),
            }
        });
        self.0.changed.notify_one();
    }
}

/// The socket, reporting reads and writes to its [`Activity`] and holding
/// its slot under the socket cap until it is shut down or dropped (also
/// after an upgrade, for the WebSocket's whole life). Dropped, it closes
/// the socket with a [`linger`].
pub(super) struct TrackedIo {
    slot: Option<Slot>,
    activity: Arc<Activity>,
    /// Always `Some` until dropped.
    inner: Option<TcpStream>,
}

impl TrackedIo {
    fn stream(&mut self) -> std::io::Result<Pin<&mut TcpStream>> {
        self.inner
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| std::io::ErrorKind::NotConnected.into())
    }
}

impl TrackedIo {
    /// Take the socket and its slot out (for the hand-over of an upgraded
    /// connection, [`super::handover`]); `None` once it was taken.
    pub(super) fn take(&mut self) -> Option<(TcpStream, Option<Slot>)> {
        let stream = self.inner.take()?;
        Some((stream, self.slot.take()))
    }
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        self.slot.take();
        if let Some(stream) = self.inner.take() {
            linger(stream);
        }
    }
}

/// Most closed sockets lingering at once (each holds a descriptor for at
/// most [`CLOSE_LINGER`]); beyond that a socket is closed at once.
const MAX_LINGERING: usize = 64;

/// How long a closed connection lingers to drain what its client still
/// sends.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// Close `stream` with a FIN and drain what the client still sends for a
/// moment. Closing a socket with unread bytes makes the kernel answer with
/// a reset, and a reset can destroy the answer still in flight to the
/// client: a `413` for a body the client is still uploading never arrived
/// (the client saw the connection reset instead). Bounded by
/// [`MAX_LINGERING`]; outside a runtime the socket is closed at once.
pub(super) fn linger(stream: TcpStream) {
    static LINGERING: Semaphore = Semaphore::const_new(MAX_LINGERING);
    let mut probe = [0u8; 1];
    if matches!(stream.try_read(&mut probe), Ok(0)) {
        // The client has closed already: nothing to drain.
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Ok(permit) = LINGERING.try_acquire() else {
        return;
    };
    runtime.spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(CLOSE_LINGER, async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = stream;
            // Already shut down by the connection: an error here is fine.
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        r
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = match self.stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = match self.stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => return Poll::Ready(Err(e)),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Free the slot before the peer can see the close.
        self.slot.take();
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// A request body that fails once its whole-body deadline passes (a
/// client that trickles a body is cut off, however steady the trickle).
struct TimeoutBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
}

impl TimeoutBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        TimeoutBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

/// The error a body past its deadline yields.
#[derive(Debug, thiserror::Error)]
#[error("request body timed out")]
pub struct BodyTimeout;

impl HttpBody for TimeoutBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            metrics::counter!("pincer_http_timeouts_total", "reason" => "body timeout")
                .increment(1);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overloaded_answer_is_well_formed() {
        let text = std::str::from_utf8(OVERLOADED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), len);
        let v: serde_json::Value = serde_json::from_str(body.trim_end()).unwrap();
        assert_eq!(v["error"]["code"], "OVERLOADED");
    }

    #[test]
    fn too_many_requests_answer_is_well_formed() {
        let answer = too_many_requests(Duration::from_millis(1500));
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "), "{head}");
        assert!(head.contains("retry-after: 2\r\n"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), len);
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "RATE_LIMITED");
    }
}
