//! WebSocket helpers for the hardening tests: a raw RFC 6455 client over
//! TCP that writes frames header by header (to send an unfinished frame,
//! an oversized declaration or invalid UTF-8), the upgrade of a raw socket
//! by hand ([`upgrade_from`]; [`upgrade_request`] and
//! [`read_upgrade_head`] to pipeline bytes after the request), and
//! protocol clients bound to a chosen loopback source address (per-IP
//! limits).

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;

use crate::gateway::FRAME_WAIT;

/// Opcodes.
pub mod op {
    /// Continuation.
    pub const CONT: u8 = 0;
    /// Text.
    pub const TEXT: u8 = 1;
    /// Close.
    pub const CLOSE: u8 = 8;
    /// Ping.
    pub const PING: u8 = 9;
}

/// A TCP connection from `source` (any port) to `addr`.
pub async fn tcp_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(source, 0)).expect("bind source");
    sock.connect(addr).await.expect("connect")
}

/// A tungstenite client socket from `source` to the gateway at `addr`
/// (upgrade done; the challenge not read yet).
pub async fn ws_from(
    source: IpAddr,
    addr: SocketAddr,
) -> Result<WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let tcp = tcp_from(source, addr).await;
    tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .map(|(ws, _)| ws)
}

/// The HTTP request upgrading a raw socket to a WebSocket at `addr` (a
/// fixed key: nothing here checks the accept hash).
pub fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Read the head of the answer to an [`upgrade_request`] byte by byte
/// (nothing past it is consumed) and check it is the `101`.
pub async fn read_upgrade_head(tcp: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(FRAME_WAIT, tcp.read(&mut byte))
            .await
            .expect("an upgrade answer within the hang guard")
            .expect("read");
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "upgrade refused: {}",
        String::from_utf8_lossy(&head)
    );
}

/// A raw socket from `source` to the gateway at `addr`, upgraded to a
/// WebSocket by hand: the `101` is read, nothing after it (the challenge
/// is next).
pub async fn upgrade_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let mut tcp = tcp_from(source, addr).await;
    tcp.write_all(upgrade_request(addr).as_bytes())
        .await
        .expect("write upgrade");
    read_upgrade_head(&mut tcp).await;
    tcp
}

/// A raw WebSocket client: masked frames written by hand (mask key 0, so
/// the payload goes as is), server frames parsed.
pub struct RawWs {
    tcp: TcpStream,
    /// Bytes written after the upgrade.
    pub written: usize,
}

/// A frame from the server.
#[derive(Debug)]
pub struct ServerFrame {
    /// Opcode.
    pub opcode: u8,
    /// Payload.
    pub payload: Vec<u8>,
}

impl RawWs {
    /// Upgrade on `addr` and read the `connect.challenge` frame.
    pub async fn open(addr: SocketAddr) -> RawWs {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(upgrade_request(addr).as_bytes())
            .await
            .expect("write upgrade");
        read_upgrade_head(&mut tcp).await;
        let mut ws = RawWs { tcp, written: 0 };
        let challenge = ws.read_frame().await.expect("challenge");
        assert_eq!(challenge.opcode, op::TEXT);
        assert!(
            String::from_utf8_lossy(&challenge.payload).contains("connect.challenge"),
            "first frame is the challenge"
        );
        ws
    }

    /// Write a masked frame header declaring `len` payload bytes.
    pub async fn header(&mut self, fin: bool, opcode: u8, len: u64) -> std::io::Result<()> {
        let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[0, 0, 0, 0]);
        self.write(&h).await
    }

    /// Write payload bytes (mask key 0: as is).
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(data).await?;
        self.written += data.len();
        Ok(())
    }

    /// A whole frame.
    pub async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.header(fin, opcode, payload.len() as u64).await?;
        self.write(payload).await
    }

    /// The next server frame; `None` at EOF or on a reset.
    pub async fn read_frame(&mut self) -> Option<ServerFrame> {
        let mut h = [0u8; 2];
        tokio::time::timeout(FRAME_WAIT, self.tcp.read_exact(&mut h))
            .await
            .expect("a frame within the hang guard")
            .ok()?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.tcp.read_exact(&mut b).await.ok()?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.tcp.read_exact(&mut b).await.ok()?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some(ServerFrame {
            opcode: h[0] & 0x0f,
            payload,
        })
    }

    /// Read until a close frame: its code and reason (`None` if the socket
    /// ended without one).
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        loop {
            let f = self.read_frame().await?;
            if f.opcode == op::CLOSE {
                if f.payload.len() < 2 {
                    return Some((1005, String::new()));
                }
                let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                let reason = String::from_utf8_lossy(&f.payload[2..]).to_string();
                return Some((code, reason));
            }
        }
    }
}
