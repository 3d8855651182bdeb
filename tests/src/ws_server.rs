//! A local WebSocket server for the socket-session tests (a platform's
//! gateway stand-in): it accepts on loopback, records every upgrade's
//! headers and everything each connection sends (text frames, pongs, the
//! close frame and its code), and sends what the test tells it to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Longest a test waits for the server to see something (a hang guard).
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// What the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Connection `conn` was upgraded with these (lower-case) headers.
    Accepted {
        /// Connection number (from 0).
        conn: usize,
        /// Upgrade request headers.
        headers: Vec<(String, String)>,
    },
    /// A text frame.
    Text {
        /// Connection number.
        conn: usize,
        /// The frame.
        text: String,
    },
    /// A pong.
    Pong {
        /// Connection number.
        conn: usize,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// The client's close frame (`None`: the connection ended without one).
    Closed {
        /// Connection number.
        conn: usize,
        /// The close code.
        code: Option<u16>,
        /// The close reason.
        reason: String,
    },
}

/// The running server.
pub struct WsServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    accepts: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
    conns: Arc<Mutex<Vec<mpsc::UnboundedSender<Message>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsServer {
    /// Listen on an ephemeral loopback port.
    pub async fn start() -> WsServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let conns: Arc<Mutex<Vec<mpsc::UnboundedSender<Message>>>> = Arc::default();
        let (tx, seen) = mpsc::unbounded_channel();
        let task = {
            let (accepts, conns) = (accepts.clone(), conns.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let headers = Arc::new(Mutex::new(Vec::new()));
                    let h = headers.clone();
                    // tungstenite's callback type fixes the error type.
                    #[allow(clippy::result_large_err)]
                    let callback = move |req: &Request, resp: Response| {
                        let mut out = h.lock().unwrap();
                        for (k, v) in req.headers() {
                            out.push((
                                k.as_str().to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            ));
                        }
                        Ok(resp)
                    };
                    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                        continue;
                    };
                    let conn = accepts.fetch_add(1, Ordering::SeqCst);
                    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
                    conns.lock().unwrap().push(out_tx);
                    let headers = headers.lock().unwrap().clone();
                    let _ = tx.send(Seen::Accepted { conn, headers });
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let (mut sink, mut stream) = ws.split();
                        loop {
                            tokio::select! {
                                out = out_rx.recv() => match out {
                                    Some(m) => { let _ = sink.send(m).await; }
                                    None => return,
                                },
                                frame = stream.next() => match frame {
                                    Some(Ok(Message::Text(t))) => {
                                        let _ = tx.send(Seen::Text { conn, text: t.to_string() });
                                    }
                                    Some(Ok(Message::Pong(p))) => {
                                        let _ = tx.send(Seen::Pong { conn, payload: p.to_vec() });
                                    }
                                    Some(Ok(Message::Close(frame))) => {
                                        let (code, reason) = frame
                                            .map(|f| (Some(u16::from(f.code)), f.reason.to_string()))
                                            .unwrap_or((None, String::new()));
                                        let _ = tx.send(Seen::Closed { conn, code, reason });
                                        // tungstenite answers the close; finish the handshake.
                                        let _ = sink.flush().await;
                                        while stream.next().await.is_some() {}
                                        return;
                                    }
                                    Some(Ok(_)) => {}
                                    Some(Err(_)) | None => {
                                        let _ = tx.send(Seen::Closed { conn, code: None, reason: String::new() });
                                        return;
                                    }
                                },
                            }
                        }
                    });
                }
            })
        };
        WsServer {
            addr,
            accepts,
            seen,
            conns,
            task,
        }
    }

    /// `ws://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// The next thing the server saw.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(HANG_GUARD, self.seen.recv())
            .await
            .expect("the server saw nothing in time")
            .expect("server gone")
    }

    /// Skip to the first text frame that is JSON matching `pred`.
    pub async fn json(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            if let Seen::Text { text, .. } = self.next().await
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && pred(&v)
            {
                return v;
            }
        }
    }

    /// Skip to the close frame (or end) of a connection.
    pub async fn closed(&mut self) -> (Option<u16>, String) {
        loop {
            if let Seen::Closed { code, reason, .. } = self.next().await {
                return (code, reason);
            }
        }
    }

    /// Send `message` on connection `conn`.
    pub fn send(&self, conn: usize, message: Message) {
        let conns = self.conns.lock().unwrap();
        conns
            .get(conn)
            .expect("no such connection")
            .send(message)
            .expect("connection gone");
    }

    /// Send a JSON text frame on connection `conn`.
    pub fn send_json(&self, conn: usize, value: &Value) {
        self.send(conn, Message::text(value.to_string()));
    }

    /// Close connection `conn` with `code` and `reason`.
    pub fn close(&self, conn: usize, code: u16, reason: &str) {
        self.send(
            conn,
            Message::Close(Some(CloseFrame {
                code: code.into(),
                reason: reason.to_string().into(),
            })),
        );
    }
}
