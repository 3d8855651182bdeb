//! # Pincer
//!
//! A messaging gateway whose channels (Telegram, WhatsApp, Slack, ...) and
//! agent tools are sandboxed WebAssembly components.
//!
//! The modules follow the architecture:
//! - [`plugin_dev`]: `pincer plugin new|build|check` for plugin authors.
//! - [`admin_client`]: `pincer plugins install|remove`, an operator's
//!   client for a running gateway's HTTP API.
//! - [`plugins`]: the WIT contract's host side: loading, sandboxing, calling
//!   and hot-reloading plugin components.
//! - [`channels`]: running channel plugins: the receive loop, senders and
//!   webhook dispatch.
//! - [`health`]: the channel health monitor (stale detection, restarts with
//!   cooldown and an hourly cap, gave-up state).
//! - [`store`]: durable state behind a small trait (SQLite by default).
//! - [`events`]: the in-process event bus behind a small trait.
//! - [`webhooks`]: outgoing webhooks (registry, signing, SSRF guard, the
//!   durable dispatcher).
//! - [`netguard`]: which network addresses outbound requests may reach.
//! - [`clock`]: wall-clock time, replaceable in tests.
//! - [`bundled`]: the plugins shipped inside the `pincer` binary.
//! - [`bench`]: `pincer bench` measurements.
//! - [`logging`]: the binary's log format (text or JSON, colours on a
//!   terminal only).
//! - [`secret`]: a string type whose `Debug` never shows the value.
//! - [`fakes`]: local fakes of closed platforms' documented APIs (Telegram,
//!   WhatsApp), for tests and benchmarks; never used by the gateway itself.

pub mod admin_client;
pub mod agent;
pub mod atomic_file;
pub mod bench;
pub mod blobs;
pub mod bundled;
pub mod channels;
pub mod clock;
pub mod config;
pub mod config_reload;
pub mod events;
pub mod fakes;
pub mod gateway;
pub mod health;
pub mod logging;
pub mod netguard;
pub mod plugin_dev;
pub mod plugins;
pub mod protocol;
pub mod runtime;
pub mod secret;
pub mod store;
pub mod webhooks;
