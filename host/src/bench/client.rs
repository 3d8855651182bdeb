//! A minimal protocol client for the benchmarks: open a socket, complete the
//! handshake as a CLI operator, send requests and wait for their responses.

use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client socket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any one frame may take before a benchmark fails (a hang guard,
/// not a measurement).
pub(crate) const FRAME_WAIT: Duration = Duration::from_secs(30);

/// The soft `RLIMIT_NOFILE` of this process from `/proc/self/limits`.
pub(crate) fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Turn a connect error into a clear message when it is the fd limit.
pub(crate) fn fd_context(e: impl std::fmt::Display) -> anyhow::Error {
    let s = e.to_string();
    if s.contains("Too many open files") {
        anyhow::anyhow!("{s}: raise the descriptor limit (`ulimit -n 8192`) first")
    } else {
        anyhow::anyhow!("{s}")
    }
}

/// The next JSON text frame (other frames skipped).
pub(crate) async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout(FRAME_WAIT, ws.next())
            .await
            .context("no frame within 30 s")?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t).context("server sent invalid JSON");
            }
            Some(Ok(Message::Close(f))) => anyhow::bail!("socket closed by the server: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(fd_context(e)).context("reading a frame"),
            None => anyhow::bail!("socket ended without a close frame"),
        }
    }
}

/// Send one JSON frame.
pub(crate) async fn send_json(ws: &mut Ws, v: &Value) -> anyhow::Result<()> {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .context("sending a frame")
}

/// Open a socket and read the `connect.challenge` (the WebSocket upgrade
/// plus the server's first frame).
pub(crate) async fn open(url: &str) -> anyhow::Result<Ws> {
    // Small client buffers (the default read buffer is 128 KiB) so the
    // client end adds little to per-connection RSS figures.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
        .await
        .map_err(fd_context)
        .with_context(|| format!("WebSocket connect to {url}"))?;
    let challenge = next_json(&mut ws).await.context("reading the challenge")?;
    anyhow::ensure!(
        challenge["event"] == "connect.challenge",
        "expected connect.challenge, got {challenge}"
    );
    Ok(ws)
}

/// Wait for the response to `id`, skipping events; its payload if ok.
pub(crate) async fn response(ws: &mut Ws, id: &str) -> anyhow::Result<Value> {
    loop {
        let v = next_json(ws).await?;
        if v["type"] == "res" && v["id"] == id {
            anyhow::ensure!(v["ok"] == true, "request {id} failed: {v}");
            return Ok(v["payload"].clone());
        }
    }
}

/// Open a socket and complete the protocol handshake (`hello-ok`) with
/// `token`, as a CLI operator with every scope (not a presence entry).
pub(crate) async fn connect(url: &str, token: &str) -> anyhow::Result<Ws> {
    let mut ws = open(url).await?;
    let req = json!({"type": "req", "id": "1", "method": "connect", "params": {
        "minProtocol": 3, "maxProtocol": 4,
        "client": {"id": "test", "version": "1", "platform": "linux", "mode": "cli"},
        "role": "operator", "scopes": ["operator.admin", "operator.read", "operator.write"],
        "auth": {"token": token},
    }});
    send_json(&mut ws, &req).await?;
    let hello = response(&mut ws, "1").await.context("connect")?;
    anyhow::ensure!(
        hello["type"] == "hello-ok",
        "expected hello-ok, got {hello}"
    );
    Ok(ws)
}
