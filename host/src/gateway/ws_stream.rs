//! The server end of a WebSocket connection (RFC 6455 framing over an
//! upgraded socket) that holds no buffer while idle.
//!
//! tungstenite's stream keeps a read buffer of `read_buffer_size` for the
//! connection's whole life and its write buffer at the size of the largest
//! frame ever sent (the `hello-ok` alone is kilobytes); both grow to the
//! largest frame and never shrink. With tens of thousands of idle
//! connections that is most of the gateway's memory. [`WsStream`] instead:
//!
//! - reads into a stack buffer while no frame is in progress, so a socket
//!   waiting for its next frame holds nothing; a frame's bytes are kept
//!   only until the frame is complete, and a big frame is read straight
//!   into a buffer that grows with it and is freed with the message;
//! - encodes each outgoing frame into a buffer that is freed as soon as the
//!   socket has taken it (one frame at a time: `poll_ready` waits until
//!   the previous one is written);
//! - keeps at most one pending pong (the latest) and one close reply.
//!
//! It speaks tungstenite's [`Message`] and [`Error`] types so callers
//! (`conn.rs`) treat it as they treated `tokio_tungstenite::WebSocketStream`:
//! the same errors for oversize frames (`Capacity`), invalid UTF-8
//! (`Utf8`), protocol violations (`Protocol`), and a peer that went away
//! without a close (`ResetWithoutClosingHandshake`). Per-message deflate
//! and subprotocols are not negotiated by the gateway, so they are not
//! supported here.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data};
use tokio_tungstenite::tungstenite::{Error, Message, Utf8Bytes};

/// Bytes read per call while no frame is in progress (on the stack, not
/// kept).
const STACK_READ: usize = 4096;

/// Most bytes a frame's buffer grows by per read (the buffer grows with
/// the bytes that really arrive, not with the length a header declares).
const GROW_STEP: usize = 256 * 1024;

/// Size limits for incoming data.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// Largest frame payload.
    pub max_frame: usize,
    /// Largest message (all fragments together).
    pub max_message: usize,
}

/// A frame header as parsed from the buffer.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes.
    len: usize,
    /// Payload bytes.
    payload: usize,
}

/// A fragmented message being assembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
}

/// The server end of a WebSocket over `S` (see the module docs).
#[derive(Debug)]
pub struct WsStream<S> {
    io: S,
    /// The sending side's task while it waits for the socket: a write the
    /// reading side starts (a pong) must wake it too, since the socket
    /// keeps one waker per direction. Tied to this socket object, so not
    /// part of the [`WsState`].
    write_waker: Option<Waker>,
    /// Everything else: buffers, pending replies, the close state.
    state: WsState,
}

/// Where the bytes held in buffers are added up (all connections of a
/// gateway), and one stream's share of it, given back when dropped.
#[derive(Debug, Default)]
struct GaugeShare {
    gauge: Option<Arc<AtomicUsize>>,
    accounted: usize,
}

impl Drop for GaugeShare {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.fetch_sub(self.accounted, Ordering::Relaxed);
        }
    }
}

/// Everything a [`WsStream`] holds apart from its socket (and the waiting
/// writer's waker): buffered bytes (a frame read ahead, a fragmented
/// message, an unwritten frame), pending replies and the close state.
/// [`WsStream::into_parts`] and [`WsStream::from_parts`] move a connection
/// to another socket object for the same connection (the hand-over to the
/// control runtime) without losing a byte; both are moves.
#[derive(Debug)]
pub struct WsState {
    limits: WsLimits,
    /// Bytes of the frame in progress (and any after it); empty, with no
    /// allocation, between frames.
    rbuf: Vec<u8>,
    /// A fragmented message's earlier fragments.
    partial: Option<Partial>,
    /// Encoded bytes not yet written; empty, with no allocation, when
    /// everything was written.
    wbuf: Vec<u8>,
    /// How much of `wbuf` the socket has taken.
    wpos: usize,
    /// The answer to the latest ping, not yet encoded.
    pending_pong: Option<Bytes>,
    /// The reply to the peer's close, not yet encoded.
    pending_close: Option<Option<CloseFrame>>,
    /// A close frame was sent or queued: nothing else may be sent.
    close_sent: bool,
    /// The stream has ended (close received, error or end of file).
    ended: bool,
    /// This stream's share of the gateway's frame-buffer gauge.
    share: GaugeShare,
}

/// Wakes the reading task and the waiting writer (see
/// [`WsStream::write_waker`]).
struct BothWakers {
    read: Waker,
    write: Option<Waker>,
}

impl futures::task::ArcWake for BothWakers {
    fn wake_by_ref(this: &Arc<Self>) {
        this.read.wake_by_ref();
        if let Some(w) = &this.write {
            w.wake_by_ref();
        }
    }
}

impl<S> WsStream<S> {
    /// A WebSocket over an upgraded socket (the HTTP handshake is done).
    pub fn new(io: S, limits: WsLimits) -> Self {
        Self::from_parts(io, WsState::new(limits))
    }

    /// Split into the socket and the stream's state (see [`WsState`]).
    pub fn into_parts(self) -> (S, WsState) {
        (self.io, self.state)
    }

    /// Continue a stream split by [`WsStream::into_parts`] over `io`, which
    /// must yield the same connection's bytes from where the old socket
    /// object stopped.
    pub fn from_parts(io: S, state: WsState) -> Self {
        WsStream {
            io,
            write_waker: None,
            state,
        }
    }

    /// Like [`WsStream::new`], adding the bytes its buffers hold to
    /// `gauge` (shared by every connection; 0 while all are idle).
    pub fn with_gauge(io: S, limits: WsLimits, gauge: Arc<AtomicUsize>) -> Self {
        let mut ws = Self::new(io, limits);
        ws.state.share.gauge = Some(gauge);
        ws
    }

    /// The socket.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Bytes this stream holds in buffers right now (0 when idle).
    pub fn buffered_capacity(&self) -> usize {
        self.state.buffered_capacity()
    }
}

impl WsState {
    /// The state of a new stream: nothing buffered, nothing pending.
    fn new(limits: WsLimits) -> Self {
        WsState {
            limits,
            rbuf: Vec::new(),
            partial: None,
            wbuf: Vec::new(),
            wpos: 0,
            pending_pong: None,
            pending_close: None,
            close_sent: false,
            ended: false,
            share: GaugeShare::default(),
        }
    }

    /// Bring the gauge up to date with the buffers.
    fn account(&mut self) {
        let now = self.buffered_capacity();
        let share = &mut self.share;
        let Some(g) = &share.gauge else {
            return;
        };
        if now > share.accounted {
            g.fetch_add(now - share.accounted, Ordering::Relaxed);
        } else if now < share.accounted {
            g.fetch_sub(share.accounted - now, Ordering::Relaxed);
        }
        share.accounted = now;
    }

    /// Bytes held in buffers right now (0 when idle).
    fn buffered_capacity(&self) -> usize {
        self.rbuf.capacity()
            + self.wbuf.capacity()
            + self.partial.as_ref().map_or(0, |p| p.data.capacity())
    }
}

/// Append one unmasked (server) frame to `out`.
fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let n = payload.len();
    let header = if n < 126 {
        2
    } else if n <= u16::MAX as usize {
        4
    } else {
        10
    };
    out.reserve_exact(header + n);
    out.push(0x80 | opcode);
    if n < 126 {
        out.push(n as u8);
    } else if n <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// A close frame's payload.
fn close_payload(frame: &Option<CloseFrame>) -> Vec<u8> {
    match frame {
        None => Vec::new(),
        Some(f) => {
            let mut p = Vec::with_capacity(2 + f.reason.len());
            p.extend_from_slice(&u16::from(f.code).to_be_bytes());
            p.extend_from_slice(f.reason.as_bytes());
            p
        }
    }
}

/// Parse a client frame header at the start of `buf`; `None` until it is
/// complete.
fn parse_header(buf: &[u8], limits: &WsLimits) -> Result<Option<Header>, Error> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::NonZeroReservedBits.into());
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        0..=2 | 8..=10 => {}
        3..=7 => return Err(ProtocolError::UnknownDataFrameType(opcode).into()),
        _ => return Err(ProtocolError::UnknownControlFrameType(opcode).into()),
    }
    if b1 & 0x80 == 0 {
        return Err(ProtocolError::UnmaskedFrameFromClient.into());
    }
    let (payload, at) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            (u64::from_be_bytes(a), 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode >= 8 {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame.into());
        }
        if payload > 125 {
            return Err(ProtocolError::ControlFrameTooBig.into());
        }
    }
    let size = usize::try_from(payload).unwrap_or(usize::MAX);
    if size > limits.max_frame {
        return Err(CapacityError::MessageTooLong {
            size,
            max_size: limits.max_frame,
        }
        .into());
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        len: at + 4,
        payload: size,
    }))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

fn text(data: Vec<u8>) -> Result<Message, Error> {
    String::from_utf8(data)
        .map(|s| Message::Text(Utf8Bytes::from(s)))
        .map_err(|e| Error::Utf8(e.utf8_error().to_string()))
}

impl WsState {
    /// Take the next complete frame out of `rbuf`, unmasked.
    fn take_frame(&mut self) -> Result<Option<(Header, Vec<u8>)>, Error> {
        let Some(h) = parse_header(&self.rbuf, &self.limits)? else {
            return Ok(None);
        };
        let total = h.len + h.payload;
        if self.rbuf.len() < total {
            return Ok(None);
        }
        let mut payload = if self.rbuf.len() == total {
            // The common case: the buffer is exactly this frame; reuse it
            // as the payload and leave nothing behind.
            let mut v = std::mem::take(&mut self.rbuf);
            v.drain(..h.len);
            v
        } else {
            let p = self.rbuf[h.len..total].to_vec();
            self.rbuf.drain(..total);
            if self.rbuf.capacity() > 4 * self.rbuf.len() + STACK_READ {
                self.rbuf.shrink_to_fit();
            }
            p
        };
        unmask(&mut payload, h.mask);
        Ok(Some((h, payload)))
    }

    /// Handle one frame: a message for the caller, or `None` (a fragment).
    fn on_frame(&mut self, h: Header, payload: Vec<u8>) -> Result<Option<Message>, Error> {
        match h.opcode {
            0 => {
                let Some(p) = self.partial.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinueFrame.into());
                };
                let size = p.data.len() + payload.len();
                if size > self.limits.max_message {
                    return Err(CapacityError::MessageTooLong {
                        size,
                        max_size: self.limits.max_message,
                    }
                    .into());
                }
                p.data.extend_from_slice(&payload);
                if !h.fin {
                    return Ok(None);
                }
                let Some(Partial {
                    text: is_text,
                    data,
                }) = self.partial.take()
                else {
                    return Ok(None);
                };
                if is_text {
                    text(data).map(Some)
                } else {
                    Ok(Some(Message::Binary(Bytes::from(data))))
                }
            }
            1 | 2 => {
                if let Some(p) = &self.partial {
                    let d = if p.text { Data::Text } else { Data::Binary };
                    return Err(ProtocolError::ExpectedFragment(d).into());
                }
                if payload.len() > self.limits.max_message {
                    return Err(CapacityError::MessageTooLong {
                        size: payload.len(),
                        max_size: self.limits.max_message,
                    }
                    .into());
                }
                let is_text = h.opcode == 1;
                if !h.fin {
                    self.partial = Some(Partial {
                        text: is_text,
                        data: payload,
                    });
                    return Ok(None);
                }
                if is_text {
                    text(payload).map(Some)
                } else {
                    Ok(Some(Message::Binary(Bytes::from(payload))))
                }
            }
            8 => {
                let frame = match payload.len() {
                    0 => None,
                    1 => return Err(ProtocolError::InvalidCloseSequence.into()),
                    _ => {
                        let code = CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
                        let reason = std::str::from_utf8(&payload[2..])
                            .map_err(|e| Error::Utf8(e.to_string()))?;
                        Some(if code.is_allowed() {
                            CloseFrame {
                                code,
                                reason: Utf8Bytes::from(reason.to_string()),
                            }
                        } else {
                            CloseFrame {
                                code: CloseCode::Protocol,
                                reason: Utf8Bytes::from_static("Protocol violation"),
                            }
                        })
                    }
                };
                if !self.close_sent {
                    self.close_sent = true;
                    self.pending_close = Some(frame.clone());
                }
                self.ended = true;
                Ok(Some(Message::Close(frame)))
            }
            9 => {
                let data = Bytes::from(payload);
                if !self.close_sent {
                    self.pending_pong = Some(data.clone());
                }
                Ok(Some(Message::Ping(data)))
            }
            _ => Ok(Some(Message::Pong(Bytes::from(payload)))),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Read more bytes into `rbuf`; the count (0 at end of file).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let WsStream {
            io: sock, state, ..
        } = self;
        // A frame whose header is complete reads straight into its buffer,
        // no further than the frame's end.
        let need = match parse_header(&state.rbuf, &state.limits) {
            Ok(Some(h)) => (h.len + h.payload).saturating_sub(state.rbuf.len()),
            _ => 0,
        };
        if need > STACK_READ {
            state.rbuf.reserve(need.min(GROW_STEP));
            let want = need.min(state.rbuf.capacity() - state.rbuf.len());
            let spare = &mut state.rbuf.spare_capacity_mut()[..want];
            let mut rb = ReadBuf::uninit(spare);
            ready!(Pin::new(&mut *sock).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            // SAFETY: `poll_read` initialised the first `n` bytes of the
            // spare capacity (`ReadBuf::filled`).
            unsafe { state.rbuf.set_len(state.rbuf.len() + n) };
            return Poll::Ready(Ok(n));
        }
        let mut stack = [0u8; STACK_READ];
        let mut rb = ReadBuf::new(&mut stack);
        ready!(Pin::new(&mut *sock).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        state.rbuf.extend_from_slice(rb.filled());
        Poll::Ready(Ok(n))
    }

    /// Write everything queued (then the pending pong and close reply);
    /// the write buffer is freed once the socket took it.
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let WsStream {
            io: sock, state, ..
        } = self;
        loop {
            if state.wpos < state.wbuf.len() {
                let n = ready!(Pin::new(&mut *sock).poll_write(cx, &state.wbuf[state.wpos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                state.wpos += n;
                continue;
            }
            if state.wbuf.capacity() > 0 {
                state.wbuf = Vec::new();
                state.wpos = 0;
            }
            if let Some(p) = state.pending_pong.take() {
                encode(&mut state.wbuf, 10, &p);
                continue;
            }
            if let Some(c) = state.pending_close.take() {
                encode(&mut state.wbuf, 8, &close_payload(&c));
                continue;
            }
            return Poll::Ready(Ok(()));
        }
    }

    /// Write pending answers from the reading side, waking the writer too
    /// when the socket becomes writable (its waker would be replaced).
    fn write_from_reader(&mut self, cx: &mut Context<'_>) {
        if self.state.pending_pong.is_none()
            && self.state.pending_close.is_none()
            && self.state.wbuf.is_empty()
        {
            return;
        }
        let waker = futures::task::waker(Arc::new(BothWakers {
            read: cx.waker().clone(),
            write: self.write_waker.clone(),
        }));
        if self
            .poll_write_pending(&mut Context::from_waker(&waker))
            .is_ready()
        {
            // Written here: a writer waiting for the socket would not be
            // woken by it any more.
            if let Some(w) = self.write_waker.take() {
                w.wake();
            }
        }
    }

    /// [`Self::poll_write_pending`] for the sending side, which records
    /// its waker while it waits.
    fn poll_send_side(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self.poll_write_pending(cx) {
            Poll::Pending => {
                self.write_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(r) => {
                self.write_waker = None;
                Poll::Ready(r.map_err(Error::Io))
            }
        }
    }

    /// Send a close frame (unless one was sent) and flush it.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if !self.state.close_sent {
            self.send(Message::Close(frame)).await
        } else {
            self.flush().await
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WsStream<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let r = this.poll_next_frame(cx);
        this.state.account();
        r
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    fn poll_next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        let this = self;
        // Answers (pongs, the close reply) go out as we read; a write that
        // cannot proceed now is retried on the next read or send.
        this.write_from_reader(cx);
        loop {
            if this.state.ended {
                return Poll::Ready(None);
            }
            let frame = match this.state.take_frame() {
                Ok(f) => f,
                Err(e) => {
                    this.state.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            if let Some((h, payload)) = frame {
                match this.state.on_frame(h, payload) {
                    Ok(Some(m)) => {
                        if matches!(m, Message::Close(_) | Message::Ping(_)) {
                            this.write_from_reader(cx);
                        }
                        return Poll::Ready(Some(Ok(m)));
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        this.state.ended = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            match ready!(this.poll_fill(cx)) {
                Ok(0) => {
                    this.state.ended = true;
                    return Poll::Ready(Some(Err(
                        ProtocolError::ResetWithoutClosingHandshake.into()
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    this.state.ended = true;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WsStream<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        let r = this.poll_send_side(cx);
        this.state.account();
        r
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let this = self.get_mut();
        let r = this.state.encode_message(item);
        this.state.account();
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        let r = this.poll_flush_all(cx);
        this.state.account();
        r
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        let r = this.poll_close_frame(cx);
        this.state.account();
        r
    }
}

impl WsState {
    /// Encode `item` into the write buffer (nothing after a close).
    fn encode_message(&mut self, item: Message) -> Result<(), Error> {
        let this = self;
        if this.close_sent {
            return match item {
                Message::Close(_) => Ok(()),
                _ => Err(ProtocolError::SendAfterClosing.into()),
            };
        }
        match item {
            Message::Text(t) => encode(&mut this.wbuf, 1, t.as_bytes()),
            Message::Binary(b) => encode(&mut this.wbuf, 2, &b),
            Message::Ping(b) => encode(&mut this.wbuf, 9, &b),
            Message::Pong(b) => encode(&mut this.wbuf, 10, &b),
            Message::Close(f) => {
                this.close_sent = true;
                this.pending_pong = None;
                encode(&mut this.wbuf, 8, &close_payload(&f));
            }
            Message::Frame(_) => {
                return Err(Error::Io(io::Error::other(
                    "raw frames are not supported by the gateway's WebSocket",
                )));
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self;
        ready!(this.poll_send_side(cx))?;
        Pin::new(&mut this.io).poll_flush(cx).map_err(Error::Io)
    }

    fn poll_close_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self;
        if !this.state.close_sent {
            this.state.close_sent = true;
            this.state.pending_pong = None;
            encode(&mut this.state.wbuf, 8, &[]);
        }
        ready!(this.poll_send_side(cx))?;
        Pin::new(&mut this.io).poll_flush(cx).map_err(Error::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: WsLimits = WsLimits {
        max_frame: 1 << 20,
        max_message: 1 << 20,
    };

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let n = payload.len();
        if n < 126 {
            out.push(0x80 | n as u8);
        } else if n <= 65535 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    #[tokio::test]
    async fn reads_text_fragments_and_big_frames_then_holds_nothing() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut ws = WsStream::new(server, LIMITS);
        let big = "x".repeat(300_000);
        let writer = tokio::spawn(async move {
            client.write_all(&client_frame(true, 1, b"hello")).await?;
            client.write_all(&client_frame(false, 1, b"hel")).await?;
            client.write_all(&client_frame(true, 0, b"lo")).await?;
            client
                .write_all(&client_frame(true, 1, big.as_bytes()))
                .await?;
            io::Result::Ok(client)
        });
        for want in ["hello", "hello"] {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), want),
                other => panic!("unexpected {other:?}"),
            }
        }
        match ws.next().await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.len(), 300_000),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(ws.buffered_capacity(), 0);
        let _client = writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn parts_carry_read_ahead_and_partial_frames_to_a_new_socket_object() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut ws = WsStream::new(server, LIMITS);
        let mut first = client_frame(true, 1, b"one");
        first.extend(client_frame(false, 1, b"ab"));
        let cont = client_frame(false, 0, b"cd");
        first.extend(&cont[..3]);
        client.write_all(&first).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "one"),
            other => panic!("unexpected {other:?}"),
        }
        // What was read past "one" (a fragment and half a frame) moves with
        // the state to a different socket object over the same bytes.
        let (io, state) = ws.into_parts();
        let mut ws = WsStream::from_parts(tokio::io::BufReader::new(io), state);
        client.write_all(&cont[3..]).await.unwrap();
        client
            .write_all(&client_frame(true, 0, b"ef"))
            .await
            .unwrap();
        match ws.next().await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "abcdef"),
            other => panic!("unexpected {other:?}"),
        }
        ws.send(Message::Text("reply".into())).await.unwrap();
        let mut got = [0u8; 7];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x81\x05reply");
    }

    #[tokio::test]
    async fn refuses_oversize_and_unmasked_frames_and_bad_utf8() {
        let small = WsLimits {
            max_frame: 10,
            max_message: 10,
        };
        let (mut client, server) = tokio::io::duplex(1024);
        let mut ws = WsStream::new(server, small);
        client
            .write_all(&client_frame(true, 1, &[b'a'; 11]))
            .await
            .unwrap();
        assert!(matches!(ws.next().await, Some(Err(Error::Capacity(_)))));
        assert!(ws.next().await.is_none());

        let (mut client, server) = tokio::io::duplex(1024);
        let mut ws = WsStream::new(server, LIMITS);
        client.write_all(&[0x81, 0x01, b'a']).await.unwrap();
        assert!(matches!(
            ws.next().await,
            Some(Err(Error::Protocol(ProtocolError::UnmaskedFrameFromClient)))
        ));

        let (mut client, server) = tokio::io::duplex(1024);
        let mut ws = WsStream::new(server, LIMITS);
        client
            .write_all(&client_frame(true, 1, &[0xff, 0xfe]))
            .await
            .unwrap();
        assert!(matches!(ws.next().await, Some(Err(Error::Utf8(_)))));

        let (mut client, server) = tokio::io::duplex(1024);
        let mut ws = WsStream::new(server, small);
        client
            .write_all(&client_frame(false, 1, &[b'a'; 8]))
            .await
            .unwrap();
        client
            .write_all(&client_frame(true, 0, &[b'a'; 8]))
            .await
            .unwrap();
        assert!(matches!(ws.next().await, Some(Err(Error::Capacity(_)))));
    }

    #[tokio::test]
    async fn answers_ping_and_close_and_sends_frames() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut ws = WsStream::new(server, LIMITS);
        client
            .write_all(&client_frame(true, 9, b"p"))
            .await
            .unwrap();
        assert!(matches!(ws.next().await, Some(Ok(Message::Ping(_)))));
        let mut pong = [0u8; 3];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(pong, [0x8A, 1, b'p']);

        let big = "y".repeat(70_000);
        ws.send(Message::Text(big.clone().into())).await.unwrap();
        assert_eq!(ws.buffered_capacity(), 0);
        let mut head = [0u8; 10];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(head[2..].try_into().unwrap()), 70_000);
        let mut body = vec![0u8; 70_000];
        client.read_exact(&mut body).await.unwrap();
        assert_eq!(body, big.as_bytes());

        let mut close = vec![0x88, 0x80 | 2, 0, 0, 0, 0];
        close.extend_from_slice(&1000u16.to_be_bytes());
        client.write_all(&close).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1000),
            other => panic!("unexpected {other:?}"),
        }
        let mut reply = [0u8; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [0x88, 2, 0x03, 0xE8]);
        assert!(ws.next().await.is_none());
        assert!(ws.send(Message::Text("late".into())).await.is_err());
    }
}
