//! Discord's Gateway protocol as a pure state machine: an [`Event`] seen on
//! the host-managed session (open, text frame, close, timer) and the
//! persisted [`Session`] go in; the [`Action`]s to perform (frames to send,
//! timers to set, a close, a reconnect) come out. No I/O happens here, so
//! every rule (Hello, Identify, heartbeats and ACK tracking, Resume, op 7,
//! op 9, the close codes) is unit-tested without a socket.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The host session's name.
pub const SESSION: &str = "gateway";
/// The heartbeat timer's name.
pub const HEARTBEAT_TIMER: &str = "heartbeat";
/// The reconnect (backoff) timer's name.
pub const RECONNECT_TIMER: &str = "reconnect";
/// The close code this channel uses to drop a connection it wants to
/// resume (anything but 1000/1001, which end the session at Discord).
pub const RESUME_CLOSE: u16 = 4000;
/// The host's smallest timer delay.
pub const MIN_TIMER_MS: u64 = 100;
/// The longest reconnect backoff.
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// Gateway intents: GUILDS (1 << 0), GUILD_MESSAGES (1 << 9),
/// DIRECT_MESSAGES (1 << 12), MESSAGE_CONTENT (1 << 15).
pub const INTENTS: u64 = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15);

/// Gateway opcodes used here.
pub mod op {
    /// An event (`t` names it, `s` numbers it).
    pub const DISPATCH: u64 = 0;
    /// Heartbeat (both directions: Discord may ask for one at once).
    pub const HEARTBEAT: u64 = 1;
    /// Identify: start a new session.
    pub const IDENTIFY: u64 = 2;
    /// Resume: replay a dropped session.
    pub const RESUME: u64 = 6;
    /// Reconnect: Discord asks the client to reconnect and resume.
    pub const RECONNECT: u64 = 7;
    /// Invalid Session (`d`: whether it is resumable).
    pub const INVALID_SESSION: u64 = 9;
    /// Hello, with `heartbeat_interval`.
    pub const HELLO: u64 = 10;
    /// Heartbeat ACK.
    pub const HEARTBEAT_ACK: u64 = 11;
}

/// What the host reported on the session or a timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The upgrade completed.
    Open,
    /// A text frame.
    Text(String),
    /// The connection closed (1006: failed or dropped without a close frame).
    Close {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// A timer fired.
    Timer(String),
}

/// Why the channel stopped reconnecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fatal {
    /// The close code Discord sent.
    pub code: u16,
    /// The operator-facing explanation.
    pub message: String,
    /// A credentials problem (4004) rather than a configuration one.
    pub auth: bool,
}

/// The session as persisted in kv between events (so it survives instance
/// restarts, reloads and gateway restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// READY's `session_id`.
    pub session_id: Option<String>,
    /// The last dispatch sequence number seen (sent in heartbeats).
    pub seq: Option<u64>,
    /// The last sequence number whose messages the host has committed: the
    /// `seq` as it was when the next event of the same connection (or its
    /// close) arrived, since the host commits an event's messages before
    /// delivering the next one. Resume sends this, so a crash between this
    /// plugin seeing an event and the host committing it replays the event
    /// (the inbox drops the duplicate) instead of losing it.
    #[serde(default)]
    pub committed_seq: Option<u64>,
    /// Connections opened so far (`WS-OPEN`s seen).
    #[serde(default)]
    pub conn: u64,
    /// The connection `seq` was last advanced on. Only a later event of
    /// that connection proves it committed: after a crash the first events
    /// come on a new connection, and the old `seq` may never have been.
    #[serde(default)]
    pub seq_conn: u64,
    /// READY's `resume_gateway_url`.
    pub resume_url: Option<String>,
    /// The bot's user id (READY's `user.id`, or `/users/@me`).
    pub user_id: Option<String>,
    /// Hello's `heartbeat_interval` of the current connection, ms.
    pub heartbeat_ms: Option<u64>,
    /// A heartbeat was sent and its ACK has not arrived.
    pub awaiting_ack: bool,
    /// Consecutive connections that ended before READY/RESUMED.
    pub attempts: u32,
    /// Set after a close code that makes reconnecting wrong.
    pub fatal: Option<Fatal>,
    /// Reconnects since the channel started (shown in logs).
    pub reconnects: u64,
}

impl Session {
    /// Whether a Resume (rather than an Identify) is possible.
    pub fn resumable(&self) -> bool {
        self.session_id.is_some() && self.committed_seq.is_some()
    }

    fn forget_session(&mut self) {
        self.session_id = None;
        self.seq = None;
        self.committed_seq = None;
        self.resume_url = None;
    }
}

/// What the state machine needs from outside.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    /// The configured gateway URL (`wss://gateway.discord.gg`).
    pub gateway_url: &'a str,
    /// The text standing for the bot token (a secret placeholder).
    pub token: &'a str,
    /// The first reconnect delay, ms (doubles per failed attempt).
    pub backoff_base_ms: u64,
    /// A random number for jitter.
    pub random: u64,
}

/// Something to do on the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open the session to this URL.
    Open(String),
    /// Send a text frame.
    Send(Value),
    /// Close the session with a code and reason.
    Close(u16, String),
    /// Set a timer: name, first delay, repeat (0: once).
    SetTimer(&'static str, u64, u64),
    /// Cancel a timer.
    CancelTimer(&'static str),
    /// A dispatch to turn into inbound messages: event name and `d`.
    Dispatch(String, Value),
    /// Reconnecting stopped; surface this.
    Fatal(Fatal),
}

/// `url` with the query Discord wants (`?v=10&encoding=json`) unless it has one.
pub fn with_query(url: &str) -> String {
    if url.contains('?') {
        url.to_string()
    } else {
        format!("{}/?v=10&encoding=json", url.trim_end_matches('/'))
    }
}

/// The URL to connect to now: the resume URL when resuming.
pub fn connect_url(session: &Session, ctx: &Ctx) -> String {
    match (&session.resume_url, session.resumable()) {
        (Some(u), true) => with_query(u),
        _ => with_query(ctx.gateway_url),
    }
}

/// The close codes after which reconnecting is wrong, with what to tell the
/// operator; `None` for every other code.
pub fn fatal_close(code: u16) -> Option<Fatal> {
    let (message, auth) = match code {
        4004 => (
            "Discord closed the gateway with 4004 (authentication failed): the bot token is wrong; fix the secret `bot_token` (Bot > Reset Token in the developer portal), then restart the channel",
            true,
        ),
        4010 => (
            "Discord closed the gateway with 4010 (invalid shard); fix the shard settings, then restart the channel",
            false,
        ),
        4011 => (
            "Discord closed the gateway with 4011 (sharding required): the bot is in too many guilds for one connection",
            false,
        ),
        4012 => (
            "Discord closed the gateway with 4012 (invalid API version); check `gateway_url`",
            false,
        ),
        4013 => (
            "Discord closed the gateway with 4013 (invalid intents)",
            false,
        ),
        4014 => (
            "Discord closed the gateway with 4014 (disallowed intents): enable MESSAGE CONTENT INTENT under Bot > Privileged Gateway Intents in the developer portal, then restart the channel",
            false,
        ),
        _ => return None,
    };
    Some(Fatal {
        code,
        message: message.to_string(),
        auth,
    })
}

/// Close codes after which the session cannot be resumed (a fresh
/// Identify follows).
fn session_lost(code: u16) -> bool {
    matches!(code, 4007 | 4009 | 1000 | 1001)
}

/// The delay before reconnect attempt `attempts` (1-based): exponential
/// from `base`, capped, with jitter in its upper half.
pub fn backoff_ms(attempts: u32, base: u64, random: u64) -> u64 {
    let exp = base
        .max(MIN_TIMER_MS)
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF_MS);
    let half = exp / 2;
    (half + random % (half + 1)).max(MIN_TIMER_MS)
}

/// The Identify payload (the token as the placeholder the host fills in).
pub fn identify(ctx: &Ctx) -> Value {
    json!({
        "op": op::IDENTIFY,
        "d": {
            "token": ctx.token,
            "intents": INTENTS,
            "properties": {"os": "wasi", "browser": "pincer", "device": "pincer"},
        }
    })
}

/// The Resume payload.
pub fn resume(session: &Session, ctx: &Ctx) -> Value {
    json!({
        "op": op::RESUME,
        "d": {"token": ctx.token, "session_id": session.session_id, "seq": session.committed_seq},
    })
}

/// A heartbeat carrying the last sequence number.
pub fn heartbeat(session: &Session) -> Value {
    json!({"op": op::HEARTBEAT, "d": session.seq})
}

/// Advance the state machine by one event.
pub fn step(session: &mut Session, event: Event, ctx: &Ctx) -> Vec<Action> {
    let mut out = Vec::new();
    if event == Event::Open {
        session.conn += 1;
    } else if session.seq_conn == session.conn {
        session.committed_seq = session.seq;
    }
    match event {
        Event::Open => {
            session.heartbeat_ms = None;
            session.awaiting_ack = false;
        }
        Event::Text(text) => on_frame(session, &text, ctx, &mut out),
        Event::Close { code, reason } => {
            out.push(Action::CancelTimer(HEARTBEAT_TIMER));
            session.heartbeat_ms = None;
            session.awaiting_ack = false;
            if let Some(fatal) = fatal_close(code) {
                let fatal = Fatal {
                    message: if reason.is_empty() {
                        fatal.message
                    } else {
                        format!("{} (reason: {reason})", fatal.message)
                    },
                    ..fatal
                };
                session.fatal = Some(fatal.clone());
                out.push(Action::CancelTimer(RECONNECT_TIMER));
                out.push(Action::Fatal(fatal));
                return out;
            }
            if session_lost(code) {
                session.forget_session();
            }
            session.reconnects += 1;
            session.attempts = session.attempts.saturating_add(1);
            if session.attempts <= 1 {
                // The first reconnect after a working connection goes at once.
                out.push(Action::Open(connect_url(session, ctx)));
            } else {
                let delay = backoff_ms(session.attempts - 1, ctx.backoff_base_ms, ctx.random);
                out.push(Action::SetTimer(RECONNECT_TIMER, delay, 0));
            }
        }
        Event::Timer(name) if name == HEARTBEAT_TIMER => {
            if session.heartbeat_ms.is_none() {
                out.push(Action::CancelTimer(HEARTBEAT_TIMER));
            } else if session.awaiting_ack {
                // No ACK since the last beat: a zombie connection.
                out.push(Action::CancelTimer(HEARTBEAT_TIMER));
                out.push(Action::Close(
                    RESUME_CLOSE,
                    "zombie connection: no heartbeat ACK".into(),
                ));
            } else {
                session.awaiting_ack = true;
                out.push(Action::Send(heartbeat(session)));
            }
        }
        Event::Timer(name) if name == RECONNECT_TIMER => {
            if session.fatal.is_none() {
                out.push(Action::Open(connect_url(session, ctx)));
            }
        }
        Event::Timer(_) => {}
    }
    out
}

fn on_frame(session: &mut Session, text: &str, ctx: &Ctx, out: &mut Vec<Action>) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if let Some(s) = frame["s"].as_u64() {
        session.seq = Some(session.seq.map_or(s, |old| old.max(s)));
        session.seq_conn = session.conn;
    }
    let d = frame.get("d").cloned().unwrap_or(Value::Null);
    match frame["op"].as_u64() {
        Some(op::HELLO) => {
            let interval = d["heartbeat_interval"]
                .as_u64()
                .unwrap_or(41_250)
                .max(MIN_TIMER_MS);
            session.heartbeat_ms = Some(interval);
            session.awaiting_ack = false;
            // The first beat after interval * jitter (Discord's advice).
            let first = (ctx.random % interval).max(MIN_TIMER_MS);
            out.push(Action::SetTimer(HEARTBEAT_TIMER, first, interval));
            if session.resumable() {
                out.push(Action::Send(resume(session, ctx)));
            } else {
                out.push(Action::Send(identify(ctx)));
            }
        }
        Some(op::HEARTBEAT_ACK) => session.awaiting_ack = false,
        Some(op::HEARTBEAT) => out.push(Action::Send(heartbeat(session))),
        Some(op::RECONNECT) => {
            out.push(Action::CancelTimer(HEARTBEAT_TIMER));
            out.push(Action::Close(RESUME_CLOSE, "reconnect asked (op 7)".into()));
        }
        Some(op::INVALID_SESSION) => {
            if d.as_bool() != Some(true) {
                session.forget_session();
            }
            out.push(Action::CancelTimer(HEARTBEAT_TIMER));
            out.push(Action::Close(RESUME_CLOSE, "invalid session (op 9)".into()));
        }
        Some(op::DISPATCH) => {
            let name = frame["t"].as_str().unwrap_or_default().to_string();
            match name.as_str() {
                "READY" => {
                    session.session_id = d["session_id"].as_str().map(str::to_string);
                    session.resume_url = d["resume_gateway_url"].as_str().map(str::to_string);
                    if let Some(id) = d["user"]["id"].as_str() {
                        session.user_id = Some(id.to_string());
                    }
                    session.attempts = 0;
                    session.fatal = None;
                }
                "RESUMED" => {
                    session.attempts = 0;
                    session.fatal = None;
                }
                _ => {}
            }
            out.push(Action::Dispatch(name, d));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            gateway_url: "wss://gateway.discord.gg",
            token: "{{secret:bot_token}}",
            backoff_base_ms: 1_000,
            random: 7,
        }
    }

    fn text(v: Value) -> Event {
        Event::Text(v.to_string())
    }

    fn sent(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(v) => v["op"].as_u64(),
                _ => None,
            })
            .collect()
    }

    fn hello() -> Event {
        text(json!({"op": 10, "d": {"heartbeat_interval": 45_000}}))
    }

    fn ready(s: &mut Session) {
        step(s, Event::Open, &ctx());
        step(s, hello(), &ctx());
        step(
            s,
            text(json!({"op": 0, "s": 1, "t": "READY", "d": {
                "session_id": "abc", "resume_gateway_url": "wss://resume.discord.gg",
                "user": {"id": "99", "bot": true}
            }})),
            &ctx(),
        );
    }

    #[test]
    fn hello_identifies_with_intents_and_placeholder_token_and_sets_a_jittered_heartbeat() {
        let mut s = Session::default();
        let a = step(&mut s, hello(), &ctx());
        assert_eq!(a[0], Action::SetTimer(HEARTBEAT_TIMER, 100, 45_000));
        let Action::Send(identify) = &a[1] else {
            panic!("{a:?}")
        };
        assert_eq!(identify["op"], 2);
        assert_eq!(identify["d"]["token"], "{{secret:bot_token}}");
        let intents = identify["d"]["intents"].as_u64().unwrap();
        for bit in [0, 9, 12, 15] {
            assert_ne!(intents & (1 << bit), 0, "intent bit {bit}");
        }
        let c = Ctx {
            random: 20_000,
            ..ctx()
        };
        let a = step(&mut Session::default(), hello(), &c);
        assert_eq!(a[0], Action::SetTimer(HEARTBEAT_TIMER, 20_000, 45_000));
    }

    #[test]
    fn ready_keeps_the_session_and_a_later_hello_resumes_at_the_resume_url() {
        let mut s = Session::default();
        ready(&mut s);
        assert_eq!(s.session_id.as_deref(), Some("abc"));
        assert_eq!(s.seq, Some(1));
        assert_eq!(s.user_id.as_deref(), Some("99"));
        step(
            &mut s,
            text(json!({"op": 0, "s": 2, "t": "MESSAGE_CREATE", "d": {}})),
            &ctx(),
        );
        let a = step(
            &mut s,
            Event::Close {
                code: 1006,
                reason: String::new(),
            },
            &ctx(),
        );
        assert_eq!(
            a,
            vec![
                Action::CancelTimer(HEARTBEAT_TIMER),
                Action::Open("wss://resume.discord.gg/?v=10&encoding=json".into())
            ]
        );
        let a = step(&mut s, hello(), &ctx());
        let Action::Send(resume) = &a[1] else {
            panic!("{a:?}")
        };
        assert_eq!(
            resume,
            &json!({"op": 6, "d": {"token": "{{secret:bot_token}}", "session_id": "abc", "seq": 2}})
        );
    }

    #[test]
    fn a_missed_ack_is_a_zombie_closed_with_4000_and_acks_keep_it_alive() {
        let mut s = Session::default();
        ready(&mut s);
        let a = step(&mut s, Event::Timer(HEARTBEAT_TIMER.into()), &ctx());
        assert_eq!(sent(&a), vec![1]);
        step(&mut s, text(json!({"op": 11})), &ctx());
        let a = step(&mut s, Event::Timer(HEARTBEAT_TIMER.into()), &ctx());
        assert_eq!(sent(&a), vec![1], "acked: beat again");
        let a = step(&mut s, Event::Timer(HEARTBEAT_TIMER.into()), &ctx());
        assert!(a.contains(&Action::Close(
            4000,
            "zombie connection: no heartbeat ACK".into()
        )));
        assert!(s.resumable(), "a zombie is resumed, not re-identified");
    }

    #[test]
    fn resume_sends_the_seq_the_host_has_committed() {
        let mut s = Session::default();
        ready(&mut s);
        step(
            &mut s,
            text(json!({"op": 0, "s": 5, "t": "MESSAGE_CREATE", "d": {}})),
            &ctx(),
        );
        // Saved now, the state resumes from 1: event 5's messages are not
        // committed until the host delivers the next event.
        assert_eq!((s.seq, s.committed_seq), (Some(5), Some(1)));
        step(&mut s, text(json!({"op": 11})), &ctx());
        assert_eq!(s.committed_seq, Some(5));
        // A crash after seeing 6 (never committed): the next process's
        // first events come on a new connection and do not commit 6.
        step(
            &mut s,
            text(json!({"op": 0, "s": 6, "t": "MESSAGE_CREATE", "d": {}})),
            &ctx(),
        );
        step(&mut s, Event::Open, &ctx());
        let a = step(&mut s, hello(), &ctx());
        assert_eq!(s.committed_seq, Some(5));
        let Action::Send(resume) = &a[1] else {
            panic!("{a:?}")
        };
        assert_eq!(resume["d"]["seq"], 5, "event 6 is replayed");
    }

    #[test]
    fn heartbeat_requests_are_answered_at_once_with_the_seq() {
        let mut s = Session::default();
        ready(&mut s);
        let a = step(&mut s, text(json!({"op": 1})), &ctx());
        assert_eq!(a, vec![Action::Send(json!({"op": 1, "d": 1}))]);
    }

    #[test]
    fn op7_closes_to_resume_and_op9_forgets_the_session_unless_resumable() {
        let mut s = Session::default();
        ready(&mut s);
        let a = step(&mut s, text(json!({"op": 7, "d": null})), &ctx());
        assert!(matches!(a.last(), Some(Action::Close(4000, _))));
        assert!(s.resumable());
        step(&mut s, text(json!({"op": 9, "d": true})), &ctx());
        assert!(s.resumable());
        let a = step(&mut s, text(json!({"op": 9, "d": false})), &ctx());
        assert!(matches!(a.last(), Some(Action::Close(4000, _))));
        assert!(!s.resumable());
        let a = step(
            &mut s,
            Event::Close {
                code: 4000,
                reason: String::new(),
            },
            &ctx(),
        );
        assert_eq!(
            a.last(),
            Some(&Action::Open(
                "wss://gateway.discord.gg/?v=10&encoding=json".into()
            ))
        );
        let a = step(&mut s, hello(), &ctx());
        assert_eq!(sent(&a), vec![2], "identify after a lost session");
    }

    #[test]
    fn fatal_close_codes_stop_reconnecting_with_a_clear_error() {
        for code in [4004, 4010, 4011, 4012, 4013, 4014] {
            let mut s = Session::default();
            ready(&mut s);
            let a = step(
                &mut s,
                Event::Close {
                    code,
                    reason: "nope".into(),
                },
                &ctx(),
            );
            assert!(
                !a.iter().any(|a| matches!(a, Action::Open(_))),
                "{code}: {a:?}"
            );
            let Some(Action::Fatal(f)) = a.last() else {
                panic!("{a:?}")
            };
            assert_eq!(f.code, code);
            assert_eq!(f.auth, code == 4004);
            assert!(f.message.contains(&code.to_string()) && f.message.contains("nope"));
            assert!(s.fatal.is_some());
            let a = step(&mut s, Event::Timer(RECONNECT_TIMER.into()), &ctx());
            assert!(a.is_empty(), "no reconnect after {code}");
        }
        assert!(
            fatal_close(4014)
                .unwrap()
                .message
                .contains("MESSAGE CONTENT")
        );
        assert!(fatal_close(4000).is_none() && fatal_close(1006).is_none());
    }

    #[test]
    fn repeated_failures_back_off_with_jitter_and_ready_resets() {
        let mut s = Session::default();
        let close = || Event::Close {
            code: 1006,
            reason: String::new(),
        };
        assert!(matches!(
            step(&mut s, close(), &ctx()).last(),
            Some(Action::Open(_))
        ));
        let mut delays = Vec::new();
        for _ in 0..10 {
            match step(&mut s, close(), &ctx()).last() {
                Some(Action::SetTimer(RECONNECT_TIMER, d, 0)) => delays.push(*d),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays[0], 507, "1 s base: 500 + jitter");
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert!(*delays.last().unwrap() <= MAX_BACKOFF_MS);
        assert!(backoff_ms(3, 1000, u64::MAX) <= 4_000);
        ready(&mut s);
        assert_eq!(s.attempts, 0);
        step(
            &mut s,
            Event::Close {
                code: 4009,
                reason: String::new(),
            },
            &ctx(),
        );
        assert!(!s.resumable(), "4009: session timed out");
    }

    #[test]
    fn urls_get_the_version_query() {
        assert_eq!(
            with_query("ws://127.0.0.1:9/"),
            "ws://127.0.0.1:9/?v=10&encoding=json"
        );
        assert_eq!(with_query("wss://x/?v=9"), "wss://x/?v=9");
    }
}
