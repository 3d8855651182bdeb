//! A local fake of Slack on loopback, for the Slack channel's tests and
//! `pincer bench channels`.
//!
//! The plugin side talks to it as to `https://slack.com/api`: `auth.test`,
//! `chat.postMessage`, `chat.update`, `files.getUploadURLExternal`, the
//! upload URL it returns, `files.completeUploadExternal`, and downloads of
//! `url_private_download`, each with `Authorization: Bearer {bot_token}`
//! (a wrong token is `ok: false, invalid_auth`, a missing one
//! `not_authed`, as Slack answers). Every call is recorded; faults are
//! scripted per method: 429 with `Retry-After`, an `ok: false` error code,
//! a server status, or a hang.
//!
//! The test side builds Events API payloads ([`FakeSlack::dm`],
//! [`FakeSlack::mention`], [`FakeSlack::event`]), signs them as Slack does
//! (`v0=` HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret,
//! [`sign`]) and POSTs them, also as a retry (`X-Slack-Retry-Num`), forged
//! or stale; reads what the bot posted, edited and uploaded; and waits
//! without sleeping.

mod api;
pub mod bare;
mod socket;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;

use super::WAIT_GUARD;
use super::faults::Faults;
use super::recorder::{Call, Recorder};
use super::server::Server;
use super::wait::Changes;

pub use socket::{Connection, Envelope};

/// Settings of the Slack fake (the workspace and app it plays).
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// The bot token (`xoxb-`) every Web API call must carry.
    pub bot_token: String,
    /// The app-level token (`xapp-`) of `apps.connections.open`.
    pub app_token: String,
    /// The signing secret of Events API pushes.
    pub signing_secret: String,
    /// The workspace id.
    pub team_id: String,
    /// The bot user's id (mentions are `<@{bot_user_id}>`).
    pub bot_user_id: String,
    /// The bot's id (`bot_id` on its own messages).
    pub bot_id: String,
    /// Socket Mode: how often each connection is pinged (Slack pings its
    /// clients). Default 5 s; `None` never.
    pub ping_interval: Option<Duration>,
    /// Record every call. Default true.
    pub record_calls: bool,
    /// The hang guard of the `wait_for_*` helpers. Default [`WAIT_GUARD`].
    pub wait_guard: Duration,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            bot_token: "xoxb-1111-2222-FakeBotTokenForPincer".into(),
            app_token: "xapp-1-A111-3333-FakeAppTokenForPincer".into(),
            signing_secret: "8f742231b10e8888abcd99yyyzzz85a5".into(),
            team_id: "T0PINCER1".into(),
            bot_user_id: "U0PINCERBOT".into(),
            bot_id: "B0PINCERBOT".into(),
            ping_interval: Some(Duration::from_secs(5)),
            record_calls: true,
            wait_guard: WAIT_GUARD,
        }
    }
}

/// How the next call(s) of a method fail.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackFault {
    /// HTTP 429 with `Retry-After: {0}` (seconds), as Slack rate-limits.
    RateLimited(u64),
    /// HTTP 200 with `{"ok": false, "error": code}`.
    Error(String),
    /// A server failure with this status.
    Status(u16),
    /// Stop answering this call until [`FakeSlack::resume`].
    Hang,
}

/// A message the bot posted (`chat.postMessage`), with its current text
/// after any `chat.update`.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The `ts` the fake answered with (the message id).
    pub ts: String,
    /// `channel`.
    pub channel: String,
    /// `thread_ts`, if the message went to a thread.
    pub thread_ts: Option<String>,
    /// The text as first posted.
    pub text: String,
    /// The text now (after every `chat.update`).
    pub current: String,
    /// How many times it was updated.
    pub updates: usize,
    /// The whole request body.
    pub body: Value,
}

/// Files shared by `files.completeUploadExternal`.
#[derive(Debug, Clone)]
pub struct FileShare {
    /// `channel_id`.
    pub channel: String,
    /// `thread_ts`.
    pub thread_ts: Option<String>,
    /// `initial_comment`.
    pub initial_comment: Option<String>,
    /// The files: `(file_id, title, name, bytes)`.
    pub files: Vec<(String, String, String, Bytes)>,
}

/// A file a user shared (for inbound file events).
#[derive(Debug, Clone)]
pub struct FileRef {
    /// `F…`.
    pub id: String,
    /// `name`.
    pub name: String,
    /// `mimetype`.
    pub mimetype: String,
    /// `size`.
    pub size: usize,
    /// The download URL (served by the fake, needs the bot token).
    pub url_private_download: String,
}

impl FileRef {
    /// The file object of a message event.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "title": self.name, "mimetype": self.mimetype,
            "filetype": self.mimetype.rsplit('/').next().unwrap_or("binary"),
            "size": self.size, "mode": "hosted", "is_external": false,
            "url_private": self.url_private_download,
            "url_private_download": self.url_private_download,
        })
    }
}

#[derive(Debug, Default)]
struct State {
    posted: Vec<Posted>,
    /// Index into `posted` by `(channel, ts)`.
    by_ts: HashMap<(String, String), usize>,
    /// Posts per channel (cheap waits on big runs).
    per_channel: HashMap<String, usize>,
    /// Upload URLs handed out and not completed: id → (filename, length).
    pending: HashMap<String, (String, u64)>,
    /// Uploaded bytes by file id.
    uploaded: HashMap<String, (String, Bytes)>,
    shares: Vec<FileShare>,
    /// Files users shared, by id: (name, mime, bytes).
    user_files: HashMap<String, (String, String, Bytes)>,
    counter: u64,
    /// The `ts` clock: seconds part of the next `ts`.
    clock_s: u64,
}

struct Inner {
    cfg: SlackConfig,
    socket: socket::SocketServer,
    base_url: String,
    state: Mutex<State>,
    changes: Changes,
    recorder: Recorder,
    faults: Faults<SlackFault>,
    http: reqwest::Client,
}

impl Inner {
    fn next(&self) -> u64 {
        let mut s = self.state.lock();
        s.counter += 1;
        s.counter
    }

    /// A fresh, increasing `ts` (`"<secs>.<6 digits>"`).
    fn next_ts(&self) -> String {
        let mut s = self.state.lock();
        if s.clock_s == 0 {
            s.clock_s = now_s();
        }
        s.counter += 1;
        format!(
            "{}.{:06}",
            s.clock_s + s.counter / 1_000_000,
            s.counter % 1_000_000
        )
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `X-Slack-Signature` of `body` at `timestamp` under `secret`:
/// `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the valid `X-Slack-Signature` of `body` at
/// `timestamp` under `secret` (constant time).
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(sig) = header.strip_prefix("v0=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// One Events API payload: the exact bytes (re-sent unchanged on a retry)
/// and what identifies it.
#[derive(Debug, Clone)]
pub struct EventPush {
    /// The JSON body as sent.
    pub body: Bytes,
    /// `event_id`.
    pub event_id: String,
    /// The message's `channel`.
    pub channel: String,
    /// The message's `ts`.
    pub ts: String,
}

/// How a push is signed and stamped.
#[derive(Debug, Clone, PartialEq)]
pub enum Signing {
    /// Signed with the signing secret, stamped now.
    Valid,
    /// Signed with another secret.
    WrongSecret,
    /// No `X-Slack-Signature` header.
    Missing,
    /// Correctly signed, but stamped this many seconds in the past (a
    /// replayed capture).
    Stale(i64),
}

/// What the gateway answered to a push.
#[derive(Debug, Clone)]
pub struct PushAnswer {
    /// HTTP status (0 if the request failed before an answer).
    pub status: u16,
    /// Body text (or the error).
    pub body: String,
    /// From sending to the answer.
    pub latency: Duration,
}

/// The running fake; dropping it stops the server and every open request.
pub struct FakeSlack {
    inner: Arc<Inner>,
    _server: Server,
}

impl FakeSlack {
    /// Start a fake playing the workspace in `cfg`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(cfg: SlackConfig) -> FakeSlack {
        let listener = Server::bind()
            .await
            .expect("bind the Slack fake on 127.0.0.1");
        let addr = listener.local_addr().expect("the Slack fake's address");
        let socket = socket::SocketServer::start("A0PINCERAPP", cfg.ping_interval)
            .await
            .expect("bind the Slack fake's Socket Mode listener on 127.0.0.1");
        let inner = Arc::new(Inner {
            cfg,
            socket,
            base_url: format!("http://{addr}"),
            state: Mutex::new(State::default()),
            changes: Changes::default(),
            recorder: Recorder::default(),
            faults: Faults::default(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        });
        let server = Server::serve(listener, api::router(inner.clone()), "slack");
        FakeSlack {
            inner,
            _server: server,
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &SlackConfig {
        &self.inner.cfg
    }

    /// `http://127.0.0.1:{port}`: what replaces `https://slack.com` and
    /// `https://files.slack.com`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// `{base}/api`: what replaces `https://slack.com/api`.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.inner.base_url)
    }

    /// A file a user shares (for [`FakeSlack::dm_with_files`]).
    pub fn add_user_file(&self, data: &[u8], mimetype: &str, name: &str) -> FileRef {
        let n = self.inner.next();
        let id = format!("F0USER{n:05}");
        self.inner.state.lock().user_files.insert(
            id.clone(),
            (name.into(), mimetype.into(), Bytes::copy_from_slice(data)),
        );
        FileRef {
            url_private_download: format!(
                "{}/files-pri/{}-{id}/download/{name}",
                self.inner.base_url, self.inner.cfg.team_id
            ),
            id,
            name: name.into(),
            mimetype: mimetype.into(),
            size: data.len(),
        }
    }

    /// An `event_callback` payload carrying `event` (a fresh `event_id`;
    /// `channel`/`ts` read from the event).
    pub fn event(&self, event: Value) -> EventPush {
        let n = self.inner.next();
        let event_id = format!("Ev0PINCER{n:06}");
        let channel = event["channel"].as_str().unwrap_or("").to_string();
        let ts = event["ts"].as_str().unwrap_or("").to_string();
        let c = &self.inner.cfg;
        let body = json!({
            "token": "XXYYZZ-verification-token-deprecated",
            "team_id": c.team_id,
            "api_app_id": "A0PINCERAPP",
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": now_s(),
            "authorizations": [{"enterprise_id": null, "team_id": c.team_id,
                "user_id": c.bot_user_id, "is_bot": true, "is_enterprise_install": false}],
            "is_ext_shared_channel": false,
            "event_context": format!("4-eyJldCI6Im1lc3NhZ2UifQ-{n}"),
        });
        EventPush {
            body: Bytes::from(body.to_string()),
            event_id,
            channel,
            ts,
        }
    }

    /// A direct message (`message.im`) from `user` in DM channel
    /// `D{user}`.
    pub fn dm(&self, user: &str, text: &str) -> EventPush {
        self.dm_with_files(user, text, &[])
    }

    /// A direct message with shared files (`subtype: file_share`).
    pub fn dm_with_files(&self, user: &str, text: &str, files: &[FileRef]) -> EventPush {
        let ts = self.inner.next_ts();
        let mut ev = json!({
            "type": "message", "channel": dm_channel(user), "user": user, "text": text,
            "ts": ts, "event_ts": ts, "channel_type": "im", "team": self.inner.cfg.team_id,
            "client_msg_id": format!("{:08x}-0000-4000-8000-000000000000", self.inner.next()),
        });
        if !files.is_empty() {
            ev["subtype"] = json!("file_share");
            ev["files"] = Value::Array(files.iter().map(FileRef::json).collect());
        }
        self.event(ev)
    }

    /// An `app_mention` of the bot by `user` in `channel` (the text starts
    /// with the mention), in thread `thread_ts` if given.
    pub fn mention(
        &self,
        channel: &str,
        user: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> EventPush {
        let ts = self.inner.next_ts();
        let mut ev = json!({
            "type": "app_mention", "channel": channel, "user": user,
            "text": format!("<@{}> {text}", self.inner.cfg.bot_user_id),
            "ts": ts, "event_ts": ts, "team": self.inner.cfg.team_id,
        });
        if let Some(t) = thread_ts {
            ev["thread_ts"] = json!(t);
        }
        self.event(ev)
    }

    /// A message event as another bot (or this bot) posts it in a DM:
    /// `bot_id` set, `subtype: bot_message` when `subtype` is set.
    pub fn bot_dm(&self, user: &str, bot_id: &str, text: &str, subtype: bool) -> EventPush {
        let ts = self.inner.next_ts();
        let mut ev = json!({
            "type": "message", "channel": dm_channel(user), "text": text, "ts": ts,
            "event_ts": ts, "channel_type": "im", "bot_id": bot_id,
        });
        if subtype {
            ev["subtype"] = json!("bot_message");
        } else {
            ev["user"] = json!(self.inner.cfg.bot_user_id);
        }
        self.event(ev)
    }

    /// The `url_verification` payload Slack sends when an Events URL is set.
    pub fn url_verification(&self, challenge: &str) -> Bytes {
        Bytes::from(
            json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge, "type": "url_verification"})
                .to_string(),
        )
    }

    /// POST `push` to `url`, correctly signed and stamped now.
    pub async fn push(&self, url: &str, push: &EventPush) -> PushAnswer {
        self.push_raw(url, &push.body, Signing::Valid, None).await
    }

    /// POST `body` to `url` signed as `signing` says; `retry` adds
    /// `X-Slack-Retry-Num` and `X-Slack-Retry-Reason` (Slack's redelivery
    /// after a slow or failed answer).
    pub async fn push_raw(
        &self,
        url: &str,
        body: &[u8],
        signing: Signing,
        retry: Option<u32>,
    ) -> PushAnswer {
        let now = now_s() as i64;
        let secret = self.inner.cfg.signing_secret.as_bytes();
        let (ts, sig) = match signing {
            Signing::Valid => (now, Some(sign(secret, now, body))),
            Signing::WrongSecret => (now, Some(sign(b"not-the-signing-secret", now, body))),
            Signing::Missing => (now, None),
            Signing::Stale(age) => (now - age, Some(sign(secret, now - age, body))),
        };
        let mut req = self
            .inner
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .body(body.to_vec());
        if let Some(s) = sig {
            req = req.header("x-slack-signature", s);
        }
        if let Some(n) = retry {
            req = req
                .header("x-slack-retry-num", n.to_string())
                .header("x-slack-retry-reason", "http_timeout");
        }
        let at = Instant::now();
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                PushAnswer {
                    status,
                    body,
                    latency: at.elapsed(),
                }
            }
            Err(e) => PushAnswer {
                status: 0,
                body: e.to_string(),
                latency: at.elapsed(),
            },
        }
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.recorder.all()
    }

    /// Calls of `method` (`chat.postMessage`, `file_upload`,
    /// `file_download`, ...).
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.inner.recorder.of(method)
    }

    /// Forget recorded calls and posts.
    pub fn clear_records(&self) {
        self.inner.recorder.clear();
        let mut s = self.inner.state.lock();
        s.posted.clear();
        s.by_ts.clear();
        s.per_channel.clear();
        s.shares.clear();
    }

    /// Every message the bot posted, in order (with current texts).
    pub fn posted_all(&self) -> Vec<Posted> {
        self.inner.state.lock().posted.clone()
    }

    /// Messages the bot posted in `channel`, in order.
    pub fn posted(&self, channel: &str) -> Vec<Posted> {
        self.inner
            .state
            .lock()
            .posted
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// How many messages the bot posted in `channel` (cheap).
    pub fn posted_count(&self, channel: &str) -> usize {
        self.inner
            .state
            .lock()
            .per_channel
            .get(channel)
            .copied()
            .unwrap_or(0)
    }

    /// File shares, in order.
    pub fn shares(&self) -> Vec<FileShare> {
        self.inner.state.lock().shares.clone()
    }

    /// The next `n` calls of `method` fail with `fault`.
    pub fn fail_next(&self, method: &str, n: usize, fault: SlackFault) {
        self.inner.faults.push(method, n, fault);
    }

    /// Stop answering every call until [`FakeSlack::resume`].
    pub fn hold(&self) {
        self.inner.faults.hold();
    }

    /// Answer again: hanging calls proceed normally.
    pub fn resume(&self) {
        self.inner.faults.resume();
        self.inner.changes.bump();
    }

    /// Calls hanging right now.
    pub fn hanging(&self) -> usize {
        self.inner.faults.hanging()
    }

    async fn until<T>(&self, what: impl Fn() -> String, check: impl FnMut() -> Option<T>) -> T {
        let seen = || crate::fakes::recorder::recent(&self.calls(), 8);
        self.inner
            .changes
            .until(self.inner.cfg.wait_guard, what, seen, check)
            .await
    }

    /// `ws://127.0.0.1:{port}`: the Socket Mode host (what replaces
    /// `wss://wss-primary.slack.com`).
    pub fn socket_base(&self) -> &str {
        &self.inner.socket.base
    }

    /// Every Socket Mode connection so far, in accept order.
    pub fn connections(&self) -> Vec<Connection> {
        self.inner.socket.connections()
    }

    /// Ids of the Socket Mode connections open now (oldest first).
    pub fn open_connections(&self) -> Vec<u64> {
        self.inner.socket.open_ids()
    }

    /// Deliver `push`'s payload as an `events_api` envelope on connection
    /// `conn` (Slack's retries have `retry_attempt` > 0).
    pub fn envelope(&self, conn: u64, push: &EventPush, retry_attempt: u32) -> Envelope {
        let payload: Value = serde_json::from_slice(&push.body).unwrap_or(Value::Null);
        self.inner.socket.envelope(conn, payload, retry_attempt)
    }

    /// Send a `disconnect` (`refresh_requested`, `warning`,
    /// `link_disabled`) on connection `conn`.
    pub fn disconnect(&self, conn: u64, reason: &str) -> bool {
        self.inner.socket.send(
            conn,
            &json!({"type": "disconnect", "reason": reason,
                "debug_info": {"host": format!("applink-pincer-{conn}")}}),
        )
    }

    /// Connection `conn` goes quiet: no frames, no pings, but the TCP
    /// connection stays up (a dead link the client must notice itself).
    pub fn silence(&self, conn: u64) {
        self.inner.socket.silence(conn);
    }

    /// End connection `conn` without a close frame (a dead link).
    pub fn drop_connection(&self, conn: u64) {
        self.inner.socket.drop_connection(conn);
    }

    /// Every envelope sent so far.
    pub fn envelopes(&self) -> Vec<Envelope> {
        self.inner.socket.envelopes()
    }

    /// How many times envelope `envelope_id` was acknowledged.
    pub fn acks(&self, envelope_id: &str) -> usize {
        self.inner.socket.acks(envelope_id)
    }

    /// Frames the clients sent that acknowledged no envelope.
    pub fn stray_frames(&self) -> Vec<String> {
        self.inner.socket.stray()
    }

    /// Wait until `check` (re-run after every Socket Mode change) returns
    /// `Some`.
    ///
    /// # Panics
    /// After the hang guard, with `what` and the connections seen.
    pub async fn wait_socket<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        let seen = || format!("connections {:?}", self.connections());
        self.inner
            .socket
            .changes()
            .until(self.inner.cfg.wait_guard, || what.to_string(), seen, check)
            .await
    }

    /// Wait until `n` connections are open; their ids.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_open(&self, n: usize) -> Vec<u64> {
        self.wait_socket(&format!("{n} open connections"), || {
            let ids = self.open_connections();
            (ids.len() == n).then_some(ids)
        })
        .await
    }

    /// Wait until envelope `envelope_id` was acknowledged.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_ack(&self, envelope_id: &str) {
        self.wait_socket(&format!("the ack of {envelope_id}"), || {
            (self.acks(envelope_id) > 0).then_some(())
        })
        .await
    }

    /// Wait until `check` (re-run after every change the fake sees)
    /// returns `Some`.
    ///
    /// # Panics
    /// After the hang guard, with `what`.
    pub async fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        self.until(|| what.to_string(), check).await
    }

    /// Wait until the bot has posted `n` messages in `channel`.
    ///
    /// # Panics
    /// After the hang guard, saying what was posted.
    pub async fn wait_for_posted(&self, channel: &str, n: usize) -> Vec<Posted> {
        self.until(
            || {
                let texts: Vec<_> = self
                    .posted(channel)
                    .into_iter()
                    .map(|m| m.current)
                    .collect();
                format!("{n} messages posted in {channel} (have {texts:?})")
            },
            || (self.posted_count(channel) >= n).then(|| self.posted(channel)),
        )
        .await
    }

    /// Wait until `n` calls of `method` were answered; returns them all.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_calls(&self, method: &str, n: usize) -> Vec<Call> {
        self.until(
            || format!("{n} answered {method} calls"),
            || (self.inner.recorder.answered(method) >= n).then(|| self.calls_of(method)),
        )
        .await
    }

    /// Wait until some posted message in `channel` reads `text` now.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_text(&self, channel: &str, text: &str) -> Posted {
        self.until(
            || {
                format!(
                    "a message in {channel} reading {text:?} (have {:?})",
                    self.posted(channel)
                        .into_iter()
                        .map(|m| m.current)
                        .collect::<Vec<_>>()
                )
            },
            || self.posted(channel).into_iter().find(|m| m.current == text),
        )
        .await
    }

    /// Wait until `n` file shares happened.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_shares(&self, n: usize) -> Vec<FileShare> {
        self.until(
            || format!("{n} file shares"),
            || {
                let s = self.shares();
                (s.len() >= n).then_some(s)
            },
        )
        .await
    }

    /// Wait until `n` calls are hanging.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_hanging(&self, n: usize) {
        self.until(
            || format!("{n} hanging calls (have {})", self.hanging()),
            || (self.hanging() >= n).then_some(()),
        )
        .await
    }
}

/// The DM channel id the fake uses for `user`.
pub fn dm_channel(user: &str) -> String {
    format!("D{}", user.trim_start_matches('U'))
}
