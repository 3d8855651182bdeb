//! Local fakes of closed platforms' documented APIs, for tests and
//! benchmarks; never used by the gateway itself.
//!
//! Each fake is an HTTP server on `127.0.0.1` (port 0) started by the test
//! or benchmark that uses it and stopped when dropped. It models the
//! platform's documented behaviour (reply shapes, error texts, long polls,
//! webhook deliveries, multipart uploads), records every call, and offers
//! a Rust control API: push what a user would send, inspect what the bot
//! sent, inject faults, and await conditions without sleeping.
//!
//! - [`telegram`]: the Telegram Bot API ([`telegram::FakeTelegram`]).
//! - [`whatsapp`]: the WhatsApp Cloud API on Meta's Graph
//!   ([`whatsapp::FakeWhatsApp`]) and signed webhook pushes.
//! - [`discord`]: Discord's REST API and Gateway WebSocket
//!   ([`discord::FakeDiscord`]).
//! - [`slack`]: Slack's Web API, signed Events API pushes and Socket
//!   Mode ([`slack::FakeSlack`]).
//! - [`bare_bot`]: gateway-less bots answering through the fakes, the
//!   baselines of `pincer bench channels`.
//! - [`recorder`]: the call record both fakes keep.
//! - [`multipart`]: `multipart/form-data` parsing and building.
//! - [`faults`]: next-N fault queues and hang/resume.
//!
//! Waiting helpers (`wait_for_*`) have a hang guard: they panic with a
//! message saying what was awaited and what was seen after
//! [`WAIT_GUARD`] (generous, so a loaded machine never trips it).

pub mod bare_bot;
pub mod discord;
pub mod faults;
pub mod multipart;
pub mod recorder;
mod server;
pub mod slack;
pub mod telegram;
mod wait;
pub mod whatsapp;

use std::time::Duration;

/// How long a `wait_for_*` helper waits before it fails the test with a
/// message saying what it awaited and what it saw.
pub const WAIT_GUARD: Duration = Duration::from_secs(60);
