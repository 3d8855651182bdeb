//! A keep-alive loopback HTTP/1.1 server for the plugin sandbox tests: it
//! counts the connections and requests it gets, keeps every request's text,
//! and answers by path:
//!
//! - `/big/N`: `N` bytes with a `content-length`;
//! - `/bigclose/N`: `N` bytes without a length, then closes;
//! - anything else: the whole request (head and body) as the body, with the
//!   request's `authorization` value echoed in `x-echo-authorization`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running echo server.
#[derive(Clone)]
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl EchoServer {
    /// Start one on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = EchoServer {
            addr: listener.local_addr().expect("addr"),
            connections: Arc::default(),
            requests: Arc::default(),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(s.clone().serve(sock));
            }
        });
        server
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request received so far (head, blank line, body).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    async fn serve(self, mut sock: tokio::net::TcpStream) {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            // One request: head, then a content-length body.
            let end = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end;
                }
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            buf.drain(..end + 4 + len);
            let text = format!("{head}\r\n\r\n{body}");
            self.requests.lock().unwrap().push(text.clone());
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            let reply = if let Some(n) = path.strip_prefix("/big/") {
                let n: usize = n.parse().unwrap_or(0);
                let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n").into_bytes();
                r.resize(r.len() + n, b'a');
                r
            } else if let Some(n) = path.strip_prefix("/bigclose/") {
                let n: usize = n.parse().unwrap_or(0);
                let mut r = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
                r.resize(r.len() + n, b'a');
                let _ = sock.write_all(&r).await;
                return;
            } else {
                let auth = header("authorization").unwrap_or_default();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-echo-authorization: {auth}\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                )
                .into_bytes()
            };
            if sock.write_all(&reply).await.is_err() {
                return;
            }
        }
    }
}
