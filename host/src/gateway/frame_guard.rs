//! The pre-auth frame limit, enforced below tungstenite.
//!
//! tokio-tungstenite 0.28 cannot change a live `WebSocketStream`'s
//! `max_frame_size`/`max_message_size`, and the connection must move from
//! the 64 KiB pre-auth limit to `max_payload` after `hello-ok` without
//! losing bytes tungstenite already buffered. So the socket is wrapped in a
//! [`FrameGuard`] that parses WebSocket frame headers as the bytes pass by
//! and fails the read as soon as a header declares a frame (or a fragmented
//! message's running total) over the limit: nothing past the header is
//! buffered. Once the handshake succeeds the guard is [`Lift`]ed and becomes
//! a pass-through; tungstenite's own `max_payload` limits apply from then on.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The error a [`FrameGuard`] read fails with (inside an `io::Error` of
/// kind `InvalidData`).
#[derive(Debug, thiserror::Error)]
#[error("pre-auth payload over {limit} bytes (declared {declared})")]
pub struct TooLarge {
    /// The limit in force.
    pub limit: u64,
    /// The frame or message size the peer declared.
    pub declared: u64,
}

/// Whether `e` (from tungstenite) is a [`FrameGuard`] refusal.
pub fn is_too_large(e: &tokio_tungstenite::tungstenite::Error) -> bool {
    matches!(e, tokio_tungstenite::tungstenite::Error::Io(io)
        if io.get_ref().is_some_and(|inner| inner.is::<TooLarge>()))
}

/// Switches a [`FrameGuard`] to pass-through (shared with the guard).
#[derive(Debug, Clone, Default)]
pub struct Lift(Arc<AtomicBool>);

impl Lift {
    /// Stop checking: the handshake succeeded.
    pub fn lift(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn lifted(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// An I/O stream that refuses WebSocket frames (client to server, masked)
/// over a limit until lifted.
#[derive(Debug)]
pub struct FrameGuard<S> {
    inner: S,
    lift: Lift,
    limit: u64,
    parser: HeaderParser,
    /// Set after a refusal: later reads (the close drain) pass through.
    tripped: bool,
}

impl<S> FrameGuard<S> {
    /// Guard `inner` with `limit` bytes per frame and per message.
    pub fn new(inner: S, limit: usize) -> (Self, Lift) {
        let lift = Lift::default();
        let guard = FrameGuard {
            inner,
            lift: lift.clone(),
            limit: limit as u64,
            parser: HeaderParser::default(),
            tripped: false,
        };
        (guard, lift)
    }

    /// The guarded stream (the guard's checks end here).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.tripped || this.lift.lifted() {
            return res;
        }
        if let Poll::Ready(Ok(())) = res
            && let Err(e) = this.parser.feed(&buf.filled()[before..], this.limit)
        {
            this.tripped = true;
            buf.set_filled(before);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Incremental RFC 6455 frame-header parser: tracks where each frame's
/// header starts and the running size of a fragmented data message.
#[derive(Debug, Default)]
struct HeaderParser {
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    remaining: u64,
    /// Payload bytes of the current (unfinished) data message so far.
    message: u64,
}

impl HeaderParser {
    fn feed(&mut self, mut data: &[u8], limit: u64) -> Result<(), TooLarge> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len() as u64);
                self.remaining -= skip;
                data = &data[skip as usize..];
                continue;
            }
            self.header[self.header_len] = data[0];
            self.header_len += 1;
            data = &data[1..];
            let Some((opcode, fin, len)) = parse_header(&self.header[..self.header_len]) else {
                continue;
            };
            self.header_len = 0;
            if len > limit {
                return Err(TooLarge {
                    limit,
                    declared: len,
                });
            }
            // Data frames (continuation, text, binary, reserved) make up a
            // message; control frames (opcode >= 8) stand alone.
            if opcode < 8 {
                self.message = self.message.saturating_add(len);
                if self.message > limit {
                    return Err(TooLarge {
                        limit,
                        declared: self.message,
                    });
                }
                if fin {
                    self.message = 0;
                }
            }
            self.remaining = len;
        }
        Ok(())
    }
}

/// `(opcode, fin, payload length)` once `h` holds a whole header.
fn parse_header(h: &[u8]) -> Option<(u8, bool, u64)> {
    if h.len() < 2 {
        return None;
    }
    let fin = h[0] & 0x80 != 0;
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let len7 = h[1] & 0x7f;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let total = 2 + ext + if masked { 4 } else { 0 };
    if h.len() < total {
        return None;
    }
    let len = match len7 {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        n => u64::from(n),
    };
    Some((opcode, fin, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header for `len` payload bytes.
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut h = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    #[test]
    fn small_frames_pass_byte_by_byte() {
        let mut p = HeaderParser::default();
        let mut wire = header(true, 1, 100);
        wire.extend(vec![b'x'; 100]);
        wire.extend(header(true, 9, 4)); // ping
        wire.extend([0; 4]);
        wire.extend(header(true, 1, 60_000));
        wire.extend(vec![b'y'; 60_000]);
        for b in &wire {
            p.feed(std::slice::from_ref(b), 65_536).unwrap();
        }
        p.feed(&wire, 65_536).unwrap();
    }

    #[test]
    fn oversized_header_is_refused_before_its_payload() {
        let mut p = HeaderParser::default();
        let e = p.feed(&header(false, 1, 20 << 20), 65_536).unwrap_err();
        assert_eq!(e.declared, 20 << 20);
    }

    #[test]
    fn fragments_add_up() {
        let mut p = HeaderParser::default();
        let mut wire = header(false, 1, 30_000);
        wire.extend(vec![0; 30_000]);
        wire.extend(header(false, 0, 30_000));
        wire.extend(vec![0; 30_000]);
        p.feed(&wire, 65_536).unwrap();
        // A ping between fragments does not count.
        p.feed(&header(true, 9, 0), 65_536).unwrap();
        let e = p.feed(&header(true, 0, 10_000), 65_536).unwrap_err();
        assert_eq!(e.declared, 70_000);
    }
}
