//! Helpers for the HTTP-surface hardening tests: raw HTTP/1.1 over a
//! plain TCP socket (so a test controls every header and byte, and how
//! slowly they are sent), and a process-wide log capture.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pincer::gateway::logbuf::LogBuffer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Hang guard for a read (not a timing assertion).
pub const READ_WAIT: Duration = Duration::from_secs(30);

/// A parsed response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body (by `Content-Length`).
    pub body: String,
}

impl RawResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Read one response (headers and a `Content-Length` body) from `sock`;
/// `None` if the connection closed first.
pub async fn read_response(sock: &mut TcpStream) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = tokio::time::timeout(READ_WAIT, sock.read(&mut chunk))
            .await
            .expect("a response within the hang guard")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(READ_WAIT, sock.read(&mut chunk))
            .await
            .expect("a body within the hang guard")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(RawResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// Send `request` (raw bytes) on a new connection to `addr` and read the
/// response.
pub async fn request(addr: std::net::SocketAddr, request: &str) -> RawResponse {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.write_all(request.as_bytes()).await.expect("send");
    read_response(&mut sock)
        .await
        .expect("a response before the close")
}

/// Wait until the server closes `sock` (EOF or reset), discarding data.
pub async fn wait_closed(sock: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(READ_WAIT, sock.read(&mut chunk))
            .await
            .expect("the server closes the socket within the hang guard")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// The process-wide log capture: every `tracing` event of this test
/// binary, formatted as `logs.tail` does (installed on first use).
pub fn logs() -> Arc<LogBuffer> {
    static LOGS: OnceLock<Arc<LogBuffer>> = OnceLock::new();
    LOGS.get_or_init(|| {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt;
        let buf = LogBuffer::new();
        // The gateway's own lines at INFO and above (the ring is bounded).
        let only_pincer = tracing_subscriber::filter::filter_fn(|m| {
            m.target().starts_with("pincer") && *m.level() <= tracing::Level::INFO
        });
        let subscriber = tracing_subscriber::registry()
            .with(pincer::gateway::logbuf::Layer(buf.clone()).with_filter(only_pincer));
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        buf
    })
    .clone()
}

/// Every captured log line.
pub fn log_lines() -> Vec<String> {
    logs().tail(None, usize::MAX, usize::MAX).0
}
