//! Socket Mode (`mode = "socket"`): Slack delivers events over a WebSocket
//! the host keeps open for this account (`pincer:socket`), so the gateway
//! needs no public URL.
//!
//! `apps.connections.open` with the app-level token (`{{secret:app_token}}`)
//! answers a single-use `wss://` URL, opened as session `sm-N`. The
//! session serving the account is named in the key-value store
//! (`socket/current`, claimed by compare-and-swap so two instances never
//! open two). Envelopes are acknowledged with `{"envelope_id": ..}`;
//! `events_api` payloads are the Events API's and go through the same
//! [`crate::deliver`]. An envelope that carries nothing for the agent is
//! acknowledged at once; one whose message the host must commit to the
//! inbox first is acknowledged as soon as that commit is certain: when the
//! account's next socket event arrives (the host commits before it
//! delivers the next one) or, if none comes, on the [`ACK`] timer
//! [`ACK_DELAY_MS`] later. A crash therefore never loses an acknowledged
//! event: an unacknowledged one is redelivered by Slack and answered once. A `disconnect` (`refresh_requested`,
//! `warning`) is handled make-before-break: a second session is opened and
//! the first closed once the second is open. A session that closes is
//! reopened after [`RECONNECT_DELAY_MS`]; a watchdog timer closes and
//! replaces one that has received no frame (Slack pings included) for
//! the configured idle time (75 s by default).

use pincer_sdk::socket::{self, SessionState, SocketEvent};
use pincer_sdk::{Error, WebhookResponse, kv, log};
use serde_json::{Value, json};

use crate::api;
use crate::settings::Settings;

/// The key naming the session that serves the account.
pub const CURRENT: &str = "socket/current";
/// The key naming the session being replaced (closed once the new one is
/// open).
pub const RETIRING: &str = "socket/retiring";
/// The counter that numbers sessions.
const SEQ: &str = "socket/seq";
/// The watchdog timer.
pub const WATCHDOG: &str = "watchdog";
/// The one-shot timer that reopens a closed session.
pub const RECONNECT: &str = "reconnect";
/// How long after a close the session is reopened.
pub const RECONNECT_DELAY_MS: u64 = 1_000;
/// The one-shot timer that sends acknowledgements held for a commit.
pub const ACK: &str = "ack";
/// How long an acknowledgement waits for a next event before the timer
/// sends it (the host's shortest timer).
pub const ACK_DELAY_MS: u64 = 100;
/// Acknowledgements waiting for their message's commit:
/// `socket/ack/{session}/{envelope_id}`.
const ACK_PREFIX: &str = "socket/ack/";
/// When the first watchdog check after a start comes.
pub const WATCHDOG_FIRST_MS: u64 = 1_000;
/// The longest gap between two watchdog checks.
pub const WATCHDOG_MAX_MS: u64 = 15_000;

/// The raw `socket/current` value: `"{name} {claimed_at_ms}"`.
fn current_raw() -> Result<Option<String>, Error> {
    kv::get_string(CURRENT)
}

/// `(name, claimed_at_ms)` of a `socket/current` value.
fn parse_current(raw: &str) -> (&str, u64) {
    let (name, at) = raw.split_once(' ').unwrap_or((raw, "0"));
    (name, at.parse().unwrap_or(0))
}

/// The session serving the account.
fn current() -> Result<Option<String>, Error> {
    Ok(current_raw()?.map(|r| parse_current(&r).0.to_string()))
}

/// How long a claimed session may take to appear in the host (its
/// `apps.connections.open` call in flight) before another instance's
/// `start` replaces it.
pub const CLAIM_GRACE_MS: u64 = 30_000;

/// Start serving the account: make sure a session is open or opening, and
/// the watchdog runs. Called by every instance's `start` (a no-op when a
/// session already serves the account or another instance is opening one).
pub fn ensure(s: &Settings) -> Result<(), Error> {
    let period = (s.idle_ms / 3).clamp(100, WATCHDOG_MAX_MS);
    let raw = current_raw()?;
    if let Some(raw) = &raw
        && socket::info(parse_current(raw).0).is_some()
    {
        // A live session: the watchdog set when it was opened runs (the
        // host keeps timers across instances). Setting it again here would
        // move its next check on every fresh instance, and the host starts
        // one for each event of an account that was quiet
        // (`idle_instance_ms`).
        return Ok(());
    }
    // The first check comes soon: a claim a crashed process left behind
    // (within the grace time) is replaced by it.
    socket::timer::set(WATCHDOG, WATCHDOG_FIRST_MS.min(period), period)?;
    if let Some(raw) = &raw {
        let (_, claimed_at) = parse_current(raw);
        let opening = pincer_sdk::clock::now_ms().saturating_sub(claimed_at) < CLAIM_GRACE_MS;
        if opening {
            return Ok(());
        }
    }
    replace(s, raw.as_deref().map(|r| parse_current(r).0))
}

/// Open a new session in place of `expected` (the session that serves the
/// account now, if any). Does nothing when another instance already did.
fn replace(s: &Settings, expected: Option<&str>) -> Result<(), Error> {
    let raw = current_raw()?;
    if raw.as_deref().map(|r| parse_current(r).0) != expected {
        return Ok(());
    }
    let seq = kv::increment(SEQ, 1)?;
    let name = format!("sm-{seq}");
    let claim = format!("{name} {}", pincer_sdk::clock::now_ms());
    if !kv::compare_and_swap(
        CURRENT,
        raw.as_deref().map(str::as_bytes),
        Some(claim.as_bytes()),
    )? {
        return Ok(());
    }
    let answer = api::post_json(&s.url("apps.connections.open"), api::APP_TOKEN, &json!({}))?;
    let Some(url) = answer.get("url").and_then(Value::as_str) else {
        return Err(Error::transient(format!(
            "apps.connections.open answered without a url: {answer}"
        )));
    };
    log::info("opening a Socket Mode session", &[("session", &name)]);
    socket::open(&name, url, &[])
}

/// Reopen later (a timer), so a platform refusing connections is not
/// hammered.
fn reconnect_later(why: &str) {
    log::warn("Socket Mode session lost; reconnecting", &[("why", why)]);
    if let Err(e) = socket::timer::set(RECONNECT, RECONNECT_DELAY_MS, 0) {
        log::error(
            "cannot schedule the reconnect",
            &[("error", &e.to_string())],
        );
    }
}

/// Acknowledge envelope `id` on `session` now.
fn ack(session: &str, id: &str) {
    if let Err(e) = socket::send_text(session, &json!({ "envelope_id": id }).to_string()) {
        // Slack redelivers an envelope it saw no ack for; the inbox
        // deduplicates the message.
        log::warn(
            "acknowledging an envelope failed",
            &[
                ("envelope_id", id),
                ("session", session),
                ("error", &e.to_string()),
            ],
        );
    }
}

/// Send the acknowledgements held for a commit: every event before this
/// one has been committed by the host.
fn flush_acks() -> Result<(), Error> {
    for key in kv::list_keys(ACK_PREFIX)? {
        if let Some((session, id)) = key[ACK_PREFIX.len()..].split_once('/') {
            ack(session, id);
        }
        kv::delete(&key)?;
    }
    Ok(())
}

/// Hold the acknowledgement of `id` on `session` until its message is
/// committed.
fn hold_ack(session: &str, id: &str) -> Result<(), Error> {
    kv::set(&format!("{ACK_PREFIX}{session}/{id}"), b"")?;
    socket::timer::set(ACK, ACK_DELAY_MS, 0)
}

/// Handle one socket event; what to hand the host (inbound messages of an
/// `events_api` envelope).
pub fn handle(s: &Settings, event: SocketEvent) -> Result<WebhookResponse, Error> {
    let nothing = || pincer_sdk::webhook_json(200, &json!({"ok": true}), vec![]);
    flush_acks()?;
    let cur = current()?;
    match event {
        SocketEvent::Open { session } => {
            log::info("Socket Mode session open", &[("session", &session)]);
            if cur.as_deref() == Some(session.as_str())
                && let Some(old) = kv::get_string(RETIRING)?
            {
                // Make-before-break: the replacement is up, the old one goes.
                socket::close(&old, 1000, "replaced after disconnect");
                kv::delete(RETIRING)?;
            }
            Ok(nothing())
        }
        SocketEvent::Text { session, text } => on_frame(s, &session, cur.as_deref(), &text),
        SocketEvent::Binary { session, .. } => {
            log::warn("binary frame ignored", &[("session", &session)]);
            Ok(nothing())
        }
        SocketEvent::Close {
            session,
            code,
            reason,
        } => {
            let code = code.to_string();
            log::info(
                "Socket Mode session closed",
                &[("session", &session), ("code", &code), ("reason", &reason)],
            );
            if kv::get_string(RETIRING)?.as_deref() == Some(session.as_str()) {
                kv::delete(RETIRING)?;
            } else if cur.as_deref() == Some(session.as_str()) {
                reconnect_later(&format!("closed with {code} {reason}"));
            }
            Ok(nothing())
        }
        SocketEvent::Timer { name } if name == RECONNECT => {
            if cur.as_deref().is_none_or(|c| socket::info(c).is_none())
                && let Err(e) = replace(s, cur.as_deref())
            {
                log::warn("reconnecting failed", &[("error", &e.to_string())]);
                reconnect_later("the last attempt failed");
            }
            Ok(nothing())
        }
        // The acknowledgements went out above.
        SocketEvent::Timer { name } if name == ACK => Ok(nothing()),
        SocketEvent::Timer { name } if name == WATCHDOG => {
            watchdog(s, cur.as_deref());
            Ok(nothing())
        }
        SocketEvent::Timer { name } => {
            log::debug("unknown timer ignored", &[("timer", &name)]);
            Ok(nothing())
        }
    }
}

/// A dead session (no frame for the idle time) is closed and replaced; a
/// missing one is reopened.
fn watchdog(s: &Settings, cur: Option<&str>) {
    let now = pincer_sdk::clock::now_ms();
    let stale = match cur.map(|c| (c, socket::info(c))) {
        None | Some((_, None)) => true,
        Some((name, Some(info))) => {
            let since = if info.last_frame_at > 0 {
                info.last_frame_at
            } else {
                info.opened_at
            };
            let dead = matches!(info.state, SessionState::Open)
                && since > 0
                && now.saturating_sub(since) > s.idle_ms;
            if dead {
                log::warn(
                    "no frame on the Socket Mode session; replacing it",
                    &[
                        ("session", name),
                        ("idle_ms", &now.saturating_sub(since).to_string()),
                    ],
                );
                socket::close(name, 4000, "no frame within the idle time");
            }
            dead
        }
    };
    if stale && let Err(e) = replace(s, cur) {
        log::warn("reconnecting failed", &[("error", &e.to_string())]);
        reconnect_later("the watchdog's attempt failed");
    }
}

/// One text frame from Slack: acknowledge an envelope at once, then act on
/// it.
fn on_frame(
    s: &Settings,
    session: &str,
    cur: Option<&str>,
    text: &str,
) -> Result<WebhookResponse, Error> {
    let nothing = || pincer_sdk::webhook_json(200, &json!({"ok": true}), vec![]);
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        log::warn("a frame that is not JSON ignored", &[("session", session)]);
        return Ok(nothing());
    };
    let envelope = frame.get("envelope_id").and_then(Value::as_str);
    match frame.get("type").and_then(Value::as_str).unwrap_or("") {
        "events_api" => {
            let payload = frame.get("payload").cloned().unwrap_or(Value::Null);
            let retry = frame
                .get("retry_attempt")
                .and_then(Value::as_u64)
                .filter(|n| *n > 0)
                .map(|n| n.to_string());
            let answer = crate::deliver(s, payload.to_string().as_bytes(), retry.as_deref())?;
            if let Some(id) = envelope {
                if answer.messages.is_empty() {
                    ack(session, id);
                } else {
                    hold_ack(session, id)?;
                }
            }
            Ok(answer)
        }
        _ if envelope.is_some() => {
            // slash_commands, interactive, ...: nothing to commit.
            if let Some(id) = envelope {
                ack(session, id);
            }
            log::debug("envelope ignored", &[("session", session)]);
            Ok(nothing())
        }
        "hello" => {
            log::info("Slack said hello", &[("session", session)]);
            Ok(nothing())
        }
        "disconnect" => {
            let reason = frame.get("reason").and_then(Value::as_str).unwrap_or("");
            log::info(
                "Slack asked to reconnect",
                &[("session", session), ("reason", reason)],
            );
            if cur == Some(session) {
                kv::set_string(RETIRING, session)?;
                if let Err(e) = replace(s, Some(session)) {
                    kv::delete(RETIRING)?;
                    log::warn(
                        "opening the replacement failed",
                        &[("error", &e.to_string())],
                    );
                    reconnect_later("the replacement could not be opened");
                }
            }
            Ok(nothing())
        }
        other => {
            log::debug("envelope ignored", &[("type", other)]);
            Ok(nothing())
        }
    }
}
