//! What the tests that run the real `pincer` binary share: a child that is
//! killed however the test ends, and a free loopback port for it.
#![allow(dead_code)] // Each test file uses its own part.

use std::process::{Child, Command};

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

/// `pincer ARGS` with none of the operator environment that would change
/// what it opens (store, token, URL, config, data and plugin directories).
pub fn pincer(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pincer"));
    cmd.args(args)
        .env_remove("PINCER_STORE")
        .env_remove("PINCER_GATEWAY_TOKEN")
        .env_remove("PINCER_URL")
        .env_remove("PINCER_CONFIG")
        .env_remove("PINCER_DATA_DIR")
        .env_remove("PINCER_PLUGINS_DIR");
    cmd
}
