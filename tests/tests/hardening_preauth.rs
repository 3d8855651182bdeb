//! Pre-auth protocol violations cost the violator its address (issue 8,
//! the attack benchmark's pre-auth flood): an address whose unauthenticated
//! sockets sent a frame over the pre-auth limit or let the handshake time
//! out `preauth_violations_burst` times is refused at accept, with a 429
//! and before anything it sends is read, until its backoff ends; other
//! addresses are served as before, and loopback is exempt unless
//! `limit_loopback` (a local reverse proxy shares one address).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use pincer_tests::gateway::{Client, TestGateway};
use pincer_tests::ws::{tcp_from, upgrade_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The attacker's own loopback address (any 127/8 address works on Linux).
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// A hang guard for one exchange, not a timing check.
const WAIT: Duration = Duration::from_secs(30);

/// Everything the server sends until it closes.
async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the server closes");
    out
}

/// The close code of the server's close frame in `bytes` (unmasked server
/// frames: the challenge, then the close).
fn close_code(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, head) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().ok()?) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let payload = bytes.get(head..head + len)?;
        if opcode == 0x8 {
            return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
        }
        bytes = &bytes[head + len..];
    }
    None
}

/// Violation: a text frame declaring 1 MiB before `connect` (the limit is
/// 64 KiB); the server closes with 1009.
async fn oversize_frame(addr: SocketAddr, from: Ipv4Addr) {
    let mut s = upgrade_from(from.into(), addr).await;
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&[b'a'; 1024]);
    s.write_all(&frame).await.expect("write frame");
    s.shutdown().await.expect("shutdown");
    assert_eq!(close_code(&read_to_end(&mut s).await), Some(1009));
}

/// Violation: no `connect` before the handshake deadline; the server
/// closes with 1000.
async fn handshake_timeout(addr: SocketAddr, from: Ipv4Addr) {
    let mut s = upgrade_from(from.into(), addr).await;
    assert_eq!(close_code(&read_to_end(&mut s).await), Some(1000));
}

/// What a new socket from `from` is answered before it sends anything.
async fn answer_before_sending(addr: SocketAddr, from: Ipv4Addr) -> String {
    let mut s = tcp_from(from.into(), addr).await;
    String::from_utf8_lossy(&read_to_end(&mut s).await).into_owned()
}

async fn gateway(limit_loopback: bool) -> TestGateway {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.gateway.limit_loopback = limit_loopback;
    opts.gateway.handshake_timeout_ms = 300;
    opts.gateway.preauth_violations_burst = 2;
    // Long enough that the block outlives the test.
    opts.gateway.preauth_backoff_base_ms = 600_000;
    TestGateway::start_with(opts, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_breaks_the_handshake_is_refused_at_accept() {
    let g = gateway(true).await;
    oversize_frame(g.addr, ATTACKER).await;
    // One violation is under the burst: the address is still served.
    handshake_timeout(g.addr, ATTACKER).await;
    // The second blocked it: refused before reading a byte, WebSocket or
    // plain HTTP alike.
    let answer = answer_before_sending(g.addr, ATTACKER).await;
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(answer.contains("retry-after: "), "{answer}");
    assert!(answer.contains("RATE_LIMITED"), "{answer}");
    assert_eq!(
        g.gw()
            .violations
            .failures
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // Everyone else is served: the operator on 127.0.0.1, HTTP included.
    let mut c = Client::admin(&g.url()).await;
    let health = c.call("health", serde_json::json!({})).await;
    assert_eq!(health["ok"], true, "{health}");
    let r = reqwest::get(format!("http://{}/healthz", g.addr))
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_violations_are_not_counted_unless_loopback_is_limited() {
    let g = gateway(false).await;
    for _ in 0..3 {
        oversize_frame(g.addr, ATTACKER).await;
    }
    // Still served: the upgrade succeeds.
    drop(upgrade_from(ATTACKER.into(), g.addr).await);
    assert_eq!(
        g.gw()
            .violations
            .failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
