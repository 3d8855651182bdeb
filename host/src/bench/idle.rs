//! The idle-connections part of `pincer bench gateway`: many idle
//! authenticated WebSocket connections held open against a gateway running
//! in a separate process, whose resident memory (`VmRSS`) alone is
//! measured, against the same number of sockets held by a plain tokio echo
//! server (the floor: a socket and a task each) in the same run.
//!
//! The server runs as a child (`pincer bench gateway --serve-child
//! gateway|echo`) that prints its address and lives until its stdin
//! closes. The clients connect from several source addresses in
//! `127.0.0.0/8` (127.0.1.2, 127.0.1.3, ... for the echo server, 127.0.2.x
//! for the gateway), [`PER_SOURCE`] each, because
//! loopback has about 28 000 ephemeral ports per source, destination and
//! port. Both processes raise their descriptor limit to the hard limit;
//! the connection count is capped by it (each end needs one descriptor per
//! connection).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::client::{response, send_json};

/// The token the child gateway is started with.
const TOKEN: &str = "bench";

/// Connections per client source address.
pub const PER_SOURCE: usize = 20_000;

/// Default number of idle connections (capped by the descriptor limit).
pub const DEFAULT_IDLE: usize = 100_000;

/// Descriptors each process keeps beyond its connections.
const SPARE_FDS: u64 = 600;

/// Handshakes in flight at once while connecting.
const PARALLEL: usize = 48;

/// The line a server child prints with its address.
const ADDR_LINE: &str = "pincer-idle-server ";

/// The line a server child answers `heap` with.
const HEAP_LINE: &str = "pincer-idle-heap ";

/// Bytes malloc has handed out and not had back (glibc's `mallinfo2`):
/// live heap, without the fragmentation and free pages RSS includes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> Option<u64> {
    // SAFETY: `mallinfo2` only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    Some((m.uordblks + m.hblkhd) as u64)
}

/// Not available off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Option<u64> {
    None
}

/// What one server held.
pub struct Held {
    /// Connections held open.
    pub n: usize,
    /// Server `VmRSS` before the first connection, bytes.
    pub before: u64,
    /// Server `VmRSS` with all `n` connections idle, bytes.
    pub after: u64,
    /// Server live heap (malloc in use) before, bytes (0 if unknown).
    pub heap_before: u64,
    /// Server live heap with the connections idle, bytes.
    pub heap_after: u64,
    /// Seconds to open them.
    pub connect_secs: f64,
}

impl Held {
    /// Server bytes per connection.
    pub fn per_conn(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / self.n.max(1) as f64
    }

    /// Server live heap bytes per connection.
    pub fn heap_per_conn(&self) -> f64 {
        self.heap_after.saturating_sub(self.heap_before) as f64 / self.n.max(1) as f64
    }
}

/// The connection count this machine allows for `wanted`: both this
/// process and the server child need a descriptor per connection.
pub fn feasible(wanted: usize) -> (usize, u64) {
    let limit = crate::gateway::fdlimit::raise();
    let cap = limit.saturating_sub(SPARE_FDS) as usize;
    (wanted.min(cap), limit)
}

/// Run a server child (`gateway` or `echo`): print its address, serve
/// until stdin closes.
pub async fn serve_child(kind: &str, n: usize) -> anyhow::Result<()> {
    crate::gateway::fdlimit::raise();
    let dir = std::env::temp_dir().join(format!("pincer-bench-idle-{}", uuid::Uuid::new_v4()));
    let running = match kind {
        "gateway" => {
            let mut opts = crate::gateway::launch::Options::new(&dir);
            opts.gateway.listen = "127.0.0.1:0".parse()?;
            opts.gateway.token = Some(TOKEN.into());
            opts.gateway.max_connections = n + 100;
            opts.install_bundled = false;
            let running = crate::gateway::launch::start(opts)
                .await
                .context("starting the gateway")?;
            println!("{ADDR_LINE}{}", running.addr);
            Some(running)
        }
        "echo" => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            println!("{ADDR_LINE}{}", listener.local_addr()?);
            tokio::spawn(echo_server(listener));
            None
        }
        other => anyhow::bail!("unknown idle server `{other}` (gateway|echo)"),
    };
    // Answer `heap` with the bytes malloc has in use, until the parent
    // closes our stdin.
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "heap" {
            println!("{HEAP_LINE}{}", heap_in_use().unwrap_or(0));
        }
    }
    if let Some(r) = running {
        let _ = r.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The baseline: a task per socket that echoes what it reads, with no
/// buffer held while waiting.
async fn echo_server(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                let mut buf = [0u8; 512];
                match stream.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let _ = stream.try_write(&buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        });
    }
}

/// `VmRSS` of process `pid`, bytes.
fn vm_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .context("no VmRSS line")?;
    Ok(kb * 1024)
}

/// A TCP connection to `addr` from source address number `i` in
/// `127.0.net.0/24` (each server gets its own `net`: the sockets a previous
/// run closed linger in TIME_WAIT and hold their ports for a minute).
async fn tcp_from(addr: SocketAddr, net: u8, i: usize) -> anyhow::Result<TcpStream> {
    let source = Ipv4Addr::new(127, 0, net, 2 + (i / PER_SOURCE) as u8);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket
        .connect(addr)
        .await
        .map_err(super::client::fd_context)
        .with_context(|| format!("connecting from {source}"))
}

/// What a client holds: the socket (the WebSocket state is dropped after
/// `hello-ok`; the server sees an idle, open connection).
type Hold = TcpStream;

/// Open one gateway connection through `hello-ok` and keep its socket.
async fn gateway_client(addr: SocketAddr, net: u8, i: usize) -> anyhow::Result<Hold> {
    let tcp = tcp_from(addr, net, i).await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        Some(config),
    )
    .await
    .context("WebSocket upgrade")?;
    let challenge = tokio::time::timeout(super::client::FRAME_WAIT, ws.next())
        .await
        .context("no challenge")?;
    anyhow::ensure!(challenge.is_some(), "socket closed before the challenge");
    let req = json!({"type": "req", "id": "1", "method": "connect", "params": {
        "minProtocol": 3, "maxProtocol": 4,
        "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli"},
        "role": "operator", "scopes": ["operator.read"],
        "auth": {"token": TOKEN},
    }});
    send_json(&mut ws, &req).await?;
    let hello = response(&mut ws, "1").await.context("connect")?;
    anyhow::ensure!(hello["type"] == "hello-ok", "expected hello-ok");
    match ws.into_inner() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => Ok(tcp),
        _ => anyhow::bail!("unexpected TLS stream"),
    }
}

/// Start a server child of `kind` and hold `n` idle connections to it
/// (from `127.0.net.x`); the server's memory before and after.
async fn hold(kind: &str, net: u8, n: usize) -> anyhow::Result<Held> {
    let exe = std::env::current_exe().context("locating the pincer binary")?;
    let mut child = tokio::process::Command::new(exe)
        .args(["bench", "gateway", "--serve-child", kind, "--idle"])
        .arg(n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the server child")?;
    let pid = child.id().context("server child pid")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut stdin = child.stdin.take().context("child stdin")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr: SocketAddr = loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("server child did not start")??
            .context("server child exited")?;
        if let Some(a) = line.strip_prefix(ADDR_LINE) {
            break a.trim().parse()?;
        }
    };
    // Let start-up settle before the baseline figure.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = vm_rss(pid)?;
    let heap_before = child_heap(&mut stdin, &mut lines).await?;
    let t = Instant::now();
    let held = open_all(kind, addr, net, n).await?;
    let connect_secs = t.elapsed().as_secs_f64();
    // Let the server finish what it does after hello-ok (tasks parked).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = vm_rss(pid)?;
    let heap_after = child_heap(&mut stdin, &mut lines).await?;
    drop(held);
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    Ok(Held {
        n,
        before,
        after,
        heap_before,
        heap_after,
        connect_secs,
    })
}

/// Ask the server child for its live heap.
async fn child_heap(
    stdin: &mut tokio::process::ChildStdin,
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> anyhow::Result<u64> {
    use tokio::io::AsyncWriteExt;
    stdin.write_all(b"heap\n").await?;
    stdin.flush().await?;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("server child did not answer")??
            .context("server child exited")?;
        if let Some(v) = line.strip_prefix(HEAP_LINE) {
            return Ok(v.trim().parse()?);
        }
    }
}

/// Open `n` connections to `addr`, [`PARALLEL`] at a time.
async fn open_all(kind: &str, addr: SocketAddr, net: u8, n: usize) -> anyhow::Result<Vec<Hold>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gateway = kind == "gateway";
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(mine);
                }
                let s = if gateway {
                    gateway_client(addr, net, i)
                        .await
                        .with_context(|| format!("connection {i}"))?
                } else {
                    tcp_from(addr, net, i).await?
                };
                mine.push(s);
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.context("connect task")??);
    }
    Ok(all)
}

/// The idle-connections rows of `pincer bench gateway`.
pub async fn rows(wanted: usize) -> anyhow::Result<Vec<[String; 4]>> {
    let (n, limit) = feasible(wanted);
    anyhow::ensure!(
        n >= 100,
        "the descriptor limit ({limit}) allows too few connections"
    );
    let echo = hold("echo", 1, n).await.context("echo baseline")?;
    let gw = hold("gateway", 2, n).await.context("gateway")?;
    let kib = |b: f64| format!("{:.2} KiB", b / 1024.0);
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let capped = if n < wanted {
        format!(" (asked {wanted}; capped by the hard descriptor limit {limit})")
    } else {
        String::new()
    };
    Ok(vec![
        [
            format!("server RSS per idle authenticated connection, {n} held{capped}"),
            format!(
                "**{}** (server process {} → {})",
                kib(gw.per_conn()),
                mib(gw.before),
                mib(gw.after)
            ),
            format!(
                "plain tokio echo server, same sockets: {} ({} → {})",
                kib(echo.per_conn()),
                mib(echo.before),
                mib(echo.after)
            ),
            format!("+{} over the floor", kib(gw.per_conn() - echo.per_conn())),
        ],
        [
            format!("server live heap (malloc in use) per idle connection, {n} held"),
            format!("**{}**", kib(gw.heap_per_conn())),
            format!("echo server: {}", kib(echo.heap_per_conn())),
            format!(
                "+{} over the floor",
                kib(gw.heap_per_conn() - echo.heap_per_conn())
            ),
        ],
        [
            format!("time to open {n} connections through hello-ok ({PARALLEL} at a time)"),
            format!(
                "{:.1} s ({:.0} hs/s)",
                gw.connect_secs,
                n as f64 / gw.connect_secs
            ),
            format!("TCP connect only: {:.1} s", echo.connect_secs),
            "n/a".into(),
        ],
    ])
}
