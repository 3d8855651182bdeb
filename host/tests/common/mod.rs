//! What the tests that run the real `pincer` binary share: a child that is
//! killed however the test ends, and a free loopback port for it.
#![allow(dead_code)] // Each test file uses its own part.

use std::process::Child;

/// Kills the gateway when the test ends, however it ends.
pub struct Gateway(pub Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (for `--listen 127.0.0.1:PORT`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
