//! The hand-over of an authenticated WebSocket from the edge runtime to
//! the control runtime.
//!
//! Sockets are accepted, upgraded and handshaken on the edge runtime
//! ([`super::listener`], [`super::conn::authenticate`]), so a flood of
//! unauthenticated sockets is registered with, polled by and refused on
//! the edge runtime's threads and I/O driver only. A connection that gets
//! its `hello-ok` moves here to the control runtime, socket included: the
//! socket is taken out of hyper's upgrade ([`Upgraded::downcast`] gives the
//! listener's socket object and the bytes hyper read past the HTTP
//! request), deregistered from the edge runtime's driver
//! ([`TcpStream::into_std`]) and registered with the control runtime's
//! ([`TcpStream::from_std`], inside a task spawned there). The WebSocket's
//! state ([`WsState`]: a frame read ahead, a fragmented message, a pending
//! pong) moves with it, so frames a client pipelined right after `connect`
//! are all answered.
//!
//! The hand-over happens between the handshake and the connected phase,
//! when no read or write is in progress: the bytes of the connection are,
//! in order, those in the [`WsState`], then hyper's read-ahead, then the
//! socket's. Counted in `pincer_ws_handovers_total`; a socket that cannot
//! be moved (not the listener's own socket type) stays registered with the
//! edge runtime while its connection runs on the control runtime, counted
//! in `pincer_ws_handovers_skipped_total`.
//!
//! A pre-auth socket refused without lingering (a protocol violation, or
//! evicted from a full pre-auth table) is closed here too
//! ([`close_without_linger`]): taken out of hyper's upgrade and closed
//! without the listener's drain-on-close linger.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::Gateway;
use super::conn::Authenticated;
use super::frame_guard::FrameGuard;
use super::listener::{self, Slot, TrackedIo};
use super::ws_stream::{WsState, WsStream};

/// The WebSocket as the handshake on the edge runtime had it.
pub type EdgeWs = WsStream<FrameGuard<TokioIo<Upgraded>>>;

/// Why a socket was not detached.
#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    /// The upgrade is not over the listener's socket object (given back).
    #[error("the upgraded connection is not a listener socket")]
    Foreign(Upgraded),
    /// The socket was already taken out.
    #[error("the socket was already taken")]
    Taken,
    /// Deregistering the socket from its runtime failed (the socket is
    /// closed).
    #[error("deregistering the socket: {0}")]
    Io(#[from] io::Error),
}

/// A socket taken out of its runtime, not registered with any: move it to
/// the target runtime and [`Detached::attach`] it there.
pub struct Detached {
    stream: std::net::TcpStream,
    read_ahead: Bytes,
    slot: Option<Slot>,
}

impl std::fmt::Debug for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detached")
            .field("stream", &self.stream)
            .field("read_ahead", &self.read_ahead.len())
            .finish()
    }
}

/// Take the listener's socket out of an upgraded connection and out of
/// the current runtime's I/O driver. Call it on the runtime the socket is
/// registered with, with no read or write in progress.
pub fn detach(upgraded: Upgraded) -> Result<Detached, DetachError> {
    let parts = upgraded
        .downcast::<TokioIo<TrackedIo>>()
        .map_err(DetachError::Foreign)?;
    let mut tracked = parts.io.into_inner();
    let (stream, slot) = tracked.take().ok_or(DetachError::Taken)?;
    let stream = stream.into_std()?;
    Ok(Detached {
        stream,
        read_ahead: parts.read_buf,
        slot,
    })
}

/// Close a pre-auth socket at once, without the linger that drains what
/// its peer still sends (`listener::linger`, for sockets dropped
/// otherwise): for a protocol violator, whose close already had its
/// bounded drain (`conn::authenticate`), or a socket evicted for a newer
/// one. Its close may end in a reset.
pub fn close_without_linger(ws: EdgeWs) {
    let (guard, _state) = ws.into_parts();
    let upgraded = guard.into_inner().into_inner();
    if let Ok(parts) = upgraded.downcast::<TokioIo<TrackedIo>>() {
        let mut tracked = parts.io.into_inner();
        drop(tracked.take());
    }
}

impl Detached {
    /// Register the socket with the current runtime's I/O driver. Call it
    /// inside the target runtime (in a task spawned there).
    pub fn attach(self) -> io::Result<Attached> {
        let stream = TcpStream::from_std(self.stream)?;
        Ok(Attached {
            read_ahead: self.read_ahead,
            stream: Some(stream),
            slot: self.slot,
        })
    }
}

/// A socket handed over to this runtime: yields the bytes read ahead
/// before the socket's own, keeps its slot under the socket cap, and is
/// closed with a linger when dropped, as the listener's sockets are.
pub struct Attached {
    read_ahead: Bytes,
    /// Always `Some` until dropped.
    stream: Option<TcpStream>,
    slot: Option<Slot>,
}

impl Attached {
    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            listener::linger(stream);
        }
    }
}

impl AsyncRead for Attached {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_ahead.is_empty() {
            let n = self.read_ahead.len().min(buf.remaining());
            buf.put_slice(&self.read_ahead[..n]);
            self.read_ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Attached {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write(cx, data),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Free the slot before the peer can see the close.
        self.slot.take();
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Continue an authenticated connection on the control runtime, its socket
/// moved there (see the module docs). Without a control runtime the
/// connection is served here, and this returns when it ends; otherwise it
/// returns at once.
pub async fn continue_on_control(gw: Arc<Gateway>, ws: EdgeWs, authed: Authenticated) {
    let Some(control) = gw.control.get().cloned() else {
        return authed.serve(ws).await;
    };
    let (guard, state) = ws.into_parts();
    let upgraded = guard.into_inner().into_inner();
    match detach(upgraded) {
        Ok(detached) => {
            control.spawn(serve_attached(gw, detached, state, authed));
        }
        Err(DetachError::Foreign(upgraded)) => {
            gw.counters
                .handovers_skipped
                .fetch_add(1, Ordering::Relaxed);
            debug!(conn = %authed.conn_id(), "a connection's socket cannot move to the control runtime");
            let ws = WsStream::from_parts(TokioIo::new(upgraded), state);
            control.spawn(authed.serve(ws));
        }
        Err(e) => {
            warn!(conn = %authed.conn_id(), error = %e, "closing a connection: its socket could not move to the control runtime");
        }
    }
}

/// On the control runtime: register the socket and serve the connection.
async fn serve_attached(
    gw: Arc<Gateway>,
    detached: Detached,
    state: WsState,
    authed: Authenticated,
) {
    let io = match detached.attach() {
        Ok(io) => io,
        Err(e) => {
            warn!(conn = %authed.conn_id(), error = %e, "closing a connection: its socket could not be registered with the control runtime");
            return;
        }
    };
    gw.counters.handovers.fetch_add(1, Ordering::Relaxed);
    authed.serve(WsStream::from_parts(io, state)).await;
}
