//! The channel health monitor.
//!
//! Every `check_interval` it looks at each channel. Liveness is contact with
//! the platform: a poll that returned (even empty), a verified push. A
//! poll-mode channel with no contact (nor plugin-reported activity, nor
//! start) for `stale_threshold` is stale, so a quiet bot whose polls succeed
//! stays healthy while one whose polls keep failing (401, 409, network:
//! counted in `pollErrors`, the cause in `lastError`) goes stale;
//! webhook-mode channels are never judged stale for being quiet, except a
//! socket channel with host-managed sessions open: it is alive while they
//! receive frames (heartbeat ACKs and pings count), and stale after
//! `stale_threshold` with none (a zombie connection). A channel
//! whose start failed or whose receiver died is failed. An `unconfigured`
//! channel (declared secrets not granted) is left alone. After
//! `confirm_checks` consecutive bad checks it is restarted, at most once per
//! `restart_cooldown` and `max_restarts_per_hour` times per sliding hour;
//! past the cap it enters the visible `gave-up` state until an operator
//! restarts it. Every state change is published on the event bus.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::channels::{ChannelError, ChannelManager, ChannelRunner, ChannelState};
use crate::clock::SharedClock;
use crate::events::{Event, EventBus};
use crate::plugins::bindings::ReceiveMode;

/// Monitor settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Time between checks, ms.
    pub check_interval_ms: u64,
    /// Quiet time after which a poll-mode channel is stale, ms.
    pub stale_threshold_ms: u64,
    /// Minimum time between two automatic restarts of a channel, ms.
    pub restart_cooldown_ms: u64,
    /// Automatic restarts allowed per sliding hour before giving up.
    pub max_restarts_per_hour: usize,
    /// Time allowed for the plugin's `restart`, ms.
    pub restart_timeout_ms: u64,
    /// No judgement within this time after a (re)start, ms.
    pub startup_grace_ms: u64,
    /// Consecutive bad checks needed before acting.
    pub confirm_checks: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check_interval_ms: 60_000,
            stale_threshold_ms: 5 * 60_000,
            restart_cooldown_ms: 2 * 60_000,
            max_restarts_per_hour: 5,
            restart_timeout_ms: 30_000,
            startup_grace_ms: 60_000,
            confirm_checks: 2,
        }
    }
}

const HOUR_MS: u64 = 3_600_000;

/// Health of one channel, shaped for the gateway's `channels.status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelHealth {
    /// The channel key (see `crate::channels::account::key`).
    pub name: String,
    /// The plugin serving the account.
    pub plugin: String,
    /// The account id (`default` for the plugin table).
    pub account_id: String,
    pub state: ChannelState,
    pub healthy: bool,
    pub running: bool,
    pub connected: bool,
    pub mode: &'static str,
    /// Latest activity known (plugin-reported or host-seen), Unix ms.
    pub last_activity_at: Option<u64>,
    pub last_inbound_at: Option<u64>,
    pub last_outbound_at: Option<u64>,
    pub last_start_at: Option<u64>,
    pub reconnect_attempts: u64,
    /// Automatic or manual restarts within the last hour.
    pub restarts: usize,
    pub restarts_total: u64,
    pub last_error: Option<String>,
    /// Last contact with the platform (a poll that returned, a verified
    /// push), Unix ms: what liveness is judged on.
    pub last_contact_at: Option<u64>,
    /// Consecutive failed polls.
    pub poll_errors: u64,
    /// Declared secrets not granted (state `unconfigured`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_secrets: Vec<String>,
    /// The durable inbox: messages committed but not yet settled.
    pub inbox_pending: u64,
    /// The durable outbox: depth, failed count and last error.
    pub outbox: OutboxHealth,
    /// Host-side push verification: scheme, problem, pushes refused.
    pub webhook: crate::channels::verify::WebhookStatus,
    /// Host-managed WebSocket sessions of a socket channel (name, state,
    /// opened and last-frame times, frames in and out, reconnects).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<crate::channels::socket::SessionStatus>,
}

/// A channel's outbox as `channels.status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxHealth {
    /// Replies and notices waiting for delivery (retries included).
    pub depth: u64,
    /// Replies and notices given up on.
    pub failed: u64,
    /// The latest delivery failure's cause.
    pub last_error: Option<String>,
    /// Sends in flight now.
    pub in_flight: u64,
    /// Sent messages the platform later reported as not delivered (a
    /// `failed` delivery status).
    pub delivery_failed: u64,
    /// The reason of the latest such report.
    pub last_delivery_failure: Option<String>,
}

/// The monitor.
pub struct HealthMonitor {
    channels: Arc<ChannelManager>,
    config: HealthConfig,
    clock: SharedClock,
    events: Arc<dyn EventBus>,
}

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

impl HealthMonitor {
    /// A monitor over `channels`.
    pub fn new(
        channels: Arc<ChannelManager>,
        config: HealthConfig,
        clock: SharedClock,
        events: Arc<dyn EventBus>,
    ) -> Arc<Self> {
        Arc::new(HealthMonitor {
            channels,
            config,
            clock,
            events,
        })
    }

    /// The settings.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Run checks every `check_interval` until the task is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(me.config.check_interval_ms.max(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.check_once().await;
            }
        })
    }

    fn transition(&self, runner: &ChannelRunner, to: ChannelState, reason: &str) {
        let from = runner.set_state(to, None);
        if from != to {
            tracing::info!(
                channel = runner.name(),
                from = from.as_str(),
                to = to.as_str(),
                reason,
                "channel state changed"
            );
            self.events.publish(Event::ChannelState {
                channel: runner.name().to_string(),
                from: from.as_str().to_string(),
                to: to.as_str().to_string(),
                reason: reason.to_string(),
            });
        }
    }

    /// Check every channel once (tests call this directly with a manual clock).
    /// Idle sender instances unused for a while are dropped here too (see
    /// `ChannelRunner::trim_idle`): no account keeps a timer of its own.
    pub async fn check_once(&self) {
        let now = self.clock.now_ms();
        for runner in self.channels.all() {
            runner.trim_idle(now);
            self.check(&runner).await;
        }
        // What instances and their calls freed since (quiet socket
        // accounts drop theirs all the time) goes back to the kernel.
        crate::plugins::heap::release();
    }

    async fn latest_activity(&self, runner: &ChannelRunner) -> u64 {
        let status = runner.status();
        let mut latest = status.last_start_at.unwrap_or(0);
        latest = latest.max(runner.last_contact_at.load(Ordering::Relaxed));
        // A socket channel is alive while its sessions receive frames
        // (heartbeat ACKs, pings), even with no message for hours.
        latest = latest.max(runner.sockets().last_frame_at());
        // Only a channel the host has not seen alive lately is asked (the
        // ask needs an instance: with many quiet accounts, one each).
        if self.clock.now_ms().saturating_sub(latest) <= self.config.stale_threshold_ms {
            return latest;
        }
        if let Ok(mut inst) = runner.checkout().await {
            if let Ok(t) = inst.last_activity().await {
                latest = latest.max(t);
            }
            runner.checkin(inst);
        }
        latest
    }

    async fn check(&self, runner: &Arc<ChannelRunner>) {
        let now = self.clock.now_ms();
        let status = runner.status();
        match status.state {
            ChannelState::Stopped
            | ChannelState::Standby
            | ChannelState::Unconfigured
            | ChannelState::GaveUp
            | ChannelState::Starting
            | ChannelState::Restarting => return,
            _ => {}
        }
        let poll_mode = runner.mode() == Some(ReceiveMode::Poll);
        // A socket channel (host-managed sessions open) is judged like a
        // poll channel: alive while its sockets receive frames.
        let socket_mode = !poll_mode && runner.sockets().totals().sessions > 0;
        let in_grace = status
            .last_start_at
            .is_some_and(|t| now.saturating_sub(t) < self.config.startup_grace_ms);
        let failed =
            status.state == ChannelState::Failed || (poll_mode && !runner.receiver_alive().await);
        let reason = if failed {
            Some(
                status
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "receiver stopped".into()),
            )
        } else if (poll_mode || socket_mode) && !in_grace {
            let latest = self.latest_activity(runner).await;
            let quiet = now.saturating_sub(latest);
            (quiet > self.config.stale_threshold_ms).then(|| match &status.last_error {
                _ if socket_mode => {
                    format!("stale: no frame on its sockets for {} s", quiet / 1000)
                }
                Some(e) if status.poll_errors > 0 => format!(
                    "stale: no contact with the platform for {} s ({} failed polls; last: {e})",
                    quiet / 1000,
                    status.poll_errors
                ),
                _ => format!("stale: no contact with the platform for {} s", quiet / 1000),
            })
        } else {
            None
        };
        let Some(reason) = reason else {
            runner.update(|s| s.bad_checks = 0);
            if status.state == ChannelState::Unhealthy {
                self.transition(runner, ChannelState::Running, "healthy again");
            }
            return;
        };
        let bad = runner.update(|s| {
            s.bad_checks += 1;
            s.bad_checks
        });
        if bad < self.config.confirm_checks {
            return;
        }
        if status.state == ChannelState::Running {
            self.transition(runner, ChannelState::Unhealthy, &reason);
        }
        // Cooldown and the hourly cap.
        let (recent, last_restart) = runner.update(|s| {
            while s
                .restart_times
                .front()
                .is_some_and(|t| now.saturating_sub(*t) >= HOUR_MS)
            {
                s.restart_times.pop_front();
            }
            (s.restart_times.len(), s.restart_times.back().copied())
        });
        if last_restart.is_some_and(|t| now.saturating_sub(t) < self.config.restart_cooldown_ms) {
            return;
        }
        if recent >= self.config.max_restarts_per_hour {
            let why =
                format!("gave up after {recent} restarts within an hour; last problem: {reason}");
            runner.set_state(ChannelState::GaveUp, Some(why.clone()));
            tracing::error!(channel = runner.name(), reason = %why, "channel gave up");
            self.events.publish(Event::ChannelState {
                channel: runner.name().to_string(),
                from: status.state.as_str().to_string(),
                to: ChannelState::GaveUp.as_str().to_string(),
                reason: why,
            });
            return;
        }
        self.restart(runner, &reason, false).await;
    }

    async fn restart(&self, runner: &Arc<ChannelRunner>, reason: &str, manual: bool) {
        tracing::warn!(
            channel = runner.name(),
            reason,
            manual,
            "restarting channel"
        );
        let from = runner.status().state;
        let result = runner
            .restart(Duration::from_millis(self.config.restart_timeout_ms))
            .await;
        self.events.publish(Event::ChannelRestarted {
            channel: runner.name().to_string(),
            reason: reason.to_string(),
            manual,
        });
        let to = runner.status().state;
        let detail = match &result {
            Ok(()) => "restarted".to_string(),
            Err(e) => format!("restart failed: {e}"),
        };
        if from != to {
            self.events.publish(Event::ChannelState {
                channel: runner.name().to_string(),
                from: from.as_str().to_string(),
                to: to.as_str().to_string(),
                reason: detail,
            });
        }
    }

    /// Operator restart: clears `gave-up` and the hourly window, then restarts
    /// regardless of cooldown and cap.
    pub async fn restart_channel(&self, name: &str) -> Result<ChannelHealth, ChannelError> {
        let runner = self
            .channels
            .get(name)
            .ok_or_else(|| ChannelError::Unknown(name.to_string()))?;
        runner.update(|s| {
            s.restart_times.clear();
            s.bad_checks = 0;
        });
        self.restart(&runner, "operator request", true).await;
        let h = self.health_of(&runner).await;
        Ok(h)
    }

    async fn health_of(&self, runner: &ChannelRunner) -> ChannelHealth {
        let s = runner.status();
        let now = self.clock.now_ms();
        let mode = match runner.mode() {
            Some(ReceiveMode::Poll) => "poll",
            Some(ReceiveMode::Webhook) => "webhook",
            None => "unknown",
        };
        let inbound = nonzero(runner.last_inbound_at.load(Ordering::Relaxed));
        let outbound = nonzero(runner.last_outbound_at.load(Ordering::Relaxed));
        let running = matches!(s.state, ChannelState::Running | ChannelState::Unhealthy);
        let contact = nonzero(
            runner
                .last_contact_at
                .load(Ordering::Relaxed)
                .max(runner.sockets().last_frame_at()),
        );
        let channels = &self.channels;
        let inbox_pending = channels.inbox().pending(runner.name()).unwrap_or_else(|e| {
            tracing::warn!(channel = runner.name(), error = %e, "reading the inbox depth failed");
            0
        });
        let outbox = match channels.outbox().stats(runner.name()) {
            Ok(o) => OutboxHealth {
                depth: o.depth,
                failed: o.failed,
                last_error: o.last_error,
                in_flight: o.in_flight,
                delivery_failed: o.delivery_failed,
                last_delivery_failure: o.last_delivery_failure,
            },
            Err(e) => {
                tracing::warn!(channel = runner.name(), error = %e, "reading the outbox state failed");
                OutboxHealth::default()
            }
        };
        ChannelHealth {
            name: runner.name().to_string(),
            plugin: runner.plugin().to_string(),
            account_id: runner.account_id().to_string(),
            state: s.state,
            healthy: s.state == ChannelState::Running,
            running,
            connected: s.state == ChannelState::Running,
            mode,
            last_activity_at: [inbound, outbound, contact, s.last_start_at]
                .into_iter()
                .flatten()
                .max(),
            last_inbound_at: inbound,
            last_outbound_at: outbound,
            last_start_at: s.last_start_at,
            reconnect_attempts: s.reconnect_attempts,
            restarts: s
                .restart_times
                .iter()
                .filter(|t| now.saturating_sub(**t) < HOUR_MS)
                .count(),
            restarts_total: s.restarts_total,
            last_error: s.last_error,
            last_contact_at: contact,
            poll_errors: s.poll_errors,
            missing_secrets: s.missing_secrets,
            inbox_pending,
            outbox,
            webhook: runner.webhook_status(),
            sockets: runner.sockets().sessions(),
        }
    }

    /// Health of every channel.
    pub async fn snapshot(&self) -> Vec<ChannelHealth> {
        let mut out = Vec::new();
        for r in self.channels.all() {
            out.push(self.health_of(&r).await);
        }
        out
    }
}
