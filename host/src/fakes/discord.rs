//! A local fake of Discord (<https://discord.com/developers/docs>) on
//! loopback, for the Discord channel's tests and `pincer bench channels`:
//! the REST endpoints a bot answers with and the Gateway WebSocket it
//! listens on.
//!
//! REST at [`FakeDiscord::api_base`] (`/api/v10`): `GET /users/@me`,
//! `POST /channels/{id}/messages` (JSON or multipart `payload_json` +
//! `files[n]`; `message_reference`; `nonce` with `enforce_nonce`
//! answered with the first message; the 2,000 character limit),
//! `PATCH /channels/{id}/messages/{id}`, `POST /channels/{id}/typing`;
//! `Authorization: Bot <token>` checked; `X-RateLimit-*` headers on every
//! answer; scripted 429s with `retry_after` (per route or global).
//!
//! Gateway at [`FakeDiscord::gateway_url`]: Hello (op 10) with the
//! configured `heartbeat_interval`, Identify (op 2) checked (token,
//! intents; close 4004 / 4014 as Discord does), heartbeats (op 1) ACKed
//! (op 11) unless switched off, dispatches with sequence numbers (READY,
//! RESUMED, MESSAGE_CREATE), Resume (op 6) replaying every event after the
//! client's `seq`, and on command: op 7 Reconnect, op 9 Invalid Session, a
//! close with any code, or a dropped TCP connection (the client sees 1006).
//! Events dispatched while no connection is attached are kept and replayed
//! on resume, as Discord does.
//!
//! [`bare_bot`] is the gateway-less baseline bot of `pincer bench channels`;
//! [`plugin`] installs the bundled `discord` plugin pointed at the fake.

mod bare;
mod gateway;
pub mod plugin;
mod rest;

pub use bare::{BareDiscordBot, bare_bot};

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::WAIT_GUARD;
use super::recorder::{Call, Recorder, recent};
use super::server::Server;
use super::wait::Changes;

/// The default bot token.
pub const DEFAULT_TOKEN: &str = "MTAwMDAwMDAwMDAwMDAwMDAw.fake.discord-token-for-pincer-tests";
/// The default bot user id.
pub const DEFAULT_BOT_ID: &str = "100000000000000099";
/// Discord's message length limit.
pub const CONTENT_LIMIT: usize = 2000;
/// MESSAGE_CONTENT (1 << 15), the privileged intent a bot needs to read text.
pub const MESSAGE_CONTENT: u64 = 1 << 15;

/// Settings of the Discord fake.
#[derive(Debug, Clone)]
pub struct DiscordConfig {
    /// The bot token REST and Identify accept.
    pub token: String,
    /// The bot's user id (READY, `/users/@me`).
    pub bot_id: String,
    /// Hello's `heartbeat_interval`, ms. Default 41,250 (Discord's).
    pub heartbeat_interval_ms: u64,
    /// Whether MESSAGE_CONTENT is enabled for the bot; if not, an Identify
    /// asking for it is closed with 4014. Default true.
    pub message_content_allowed: bool,
    /// Record every REST call. Default true.
    pub record_calls: bool,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        DiscordConfig {
            token: DEFAULT_TOKEN.into(),
            bot_id: DEFAULT_BOT_ID.into(),
            heartbeat_interval_ms: 41_250,
            message_content_allowed: true,
            record_calls: true,
        }
    }
}

/// A message the bot posted (and its later edits).
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    /// The message id the fake gave it.
    pub id: String,
    /// The channel it went to.
    pub channel_id: String,
    /// Its current content.
    pub content: String,
    /// `message_reference.message_id`, if it replied.
    pub reply_to: Option<String>,
    /// The `nonce` it was sent with.
    pub nonce: Option<String>,
    /// How many times it was edited.
    pub edits: usize,
    /// File names it carried.
    pub files: Vec<String>,
}

/// An interaction the fake made (a slash command) and what the bot
/// answered through its follow-up webhook.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interaction {
    /// The interaction id.
    pub id: String,
    /// The application id (the follow-up webhook's id).
    pub app_id: String,
    /// The interaction token (the follow-up webhook's token).
    pub token: String,
    /// The original response's content once the bot replaced the deferred
    /// response (`PATCH .../messages/@original`).
    pub original: Option<String>,
    /// How many times the original response was edited.
    pub original_edits: usize,
    /// Follow-up messages (`POST /webhooks/{app}/{token}`): id and content.
    pub followups: Vec<(String, String)>,
}

/// What the gateway saw a client do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayStats {
    /// WebSocket connections accepted.
    pub connections: usize,
    /// Identify frames, with their `intents`.
    pub identifies: Vec<u64>,
    /// Resume frames: `(session_id, seq)`.
    pub resumes: Vec<(String, u64)>,
    /// Heartbeats received.
    pub heartbeats: usize,
    /// The sequence number (`d`) of each heartbeat received, in order.
    pub heartbeat_seqs: Vec<Option<u64>>,
    /// Sessions established (READY or RESUMED sent).
    pub established: usize,
    /// Close codes the fake sent.
    pub closes_sent: Vec<u16>,
    /// Whether a connection is attached to the session now.
    pub attached: bool,
}

/// A scripted REST failure.
#[derive(Debug, Clone, PartialEq)]
pub enum RestFault {
    /// 429 on this route's bucket with `retry_after` seconds.
    RateLimited(f64),
    /// 429 with `global: true`.
    GlobalRateLimited(f64),
    /// This HTTP status.
    Status(u16),
    /// Do the call, then answer 502 as if the answer were lost on the way
    /// back (a retry without a nonce posts twice).
    LostAnswer,
}

/// A command to the attached gateway connection.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Send this frame.
    Frame(Value),
    /// Send a close frame and end.
    Close(u16, String),
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// One gateway session (survives connections; resumable).
#[derive(Debug, Default)]
pub(crate) struct GwSession {
    pub(crate) seq: u64,
    /// Every dispatch of the session, `(seq, frame)`.
    pub(crate) log: Vec<(u64, Value)>,
    pub(crate) invalid: bool,
}

/// The attached connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::UnboundedSender<Cmd>,
    /// The session it identified or resumed, once it did.
    pub(crate) session: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) sent: Vec<SentMessage>,
    pub(crate) next_id: u64,
    pub(crate) nonces: HashMap<(String, String), String>,
    pub(crate) typing: Vec<String>,
    pub(crate) faults: HashMap<String, VecDeque<RestFault>>,
    pub(crate) sessions: HashMap<String, GwSession>,
    /// The bot's current session (the newest READY).
    pub(crate) session: Option<String>,
    pub(crate) conns: Vec<Conn>,
    pub(crate) next_conn: u64,
    pub(crate) acks: bool,
    pub(crate) close_next_identify: Option<(u16, String)>,
    pub(crate) stats: GatewayStats,
    /// Interactions made by [`FakeDiscord::slash_command`], by token.
    pub(crate) interactions: HashMap<String, Interaction>,
}

impl State {
    fn next_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}", 1_200_000_000_000_000_000u64 + self.next_id)
    }

    /// The connection attached to the current session.
    pub(crate) fn attached(&self) -> Option<&Conn> {
        let s = self.session.as_ref()?;
        self.conns
            .iter()
            .rev()
            .find(|c| c.session.as_ref() == Some(s))
    }
}

pub(crate) struct Shared {
    pub(crate) cfg: DiscordConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) recorder: Recorder,
    pub(crate) changes: Changes,
    pub(crate) gateway_url: String,
}

/// The running fake; dropping it stops both servers.
pub struct FakeDiscord {
    shared: Arc<Shared>,
    api_base: String,
    _rest: Server,
    gateway: JoinHandle<()>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.gateway.abort();
    }
}

impl FakeDiscord {
    /// Start both servers on `127.0.0.1`.
    pub async fn start(cfg: DiscordConfig) -> FakeDiscord {
        let rest_listener = Server::bind().await.expect("bind the fake's REST port");
        let gw_listener = Server::bind().await.expect("bind the fake's gateway port");
        let api_base = format!(
            "http://{}/api/v10",
            rest_listener.local_addr().expect("local addr")
        );
        let gateway_url = format!("ws://{}", gw_listener.local_addr().expect("local addr"));
        let shared = Arc::new(Shared {
            cfg,
            state: Mutex::new(State {
                acks: true,
                ..State::default()
            }),
            recorder: Recorder::default(),
            changes: Changes::default(),
            gateway_url,
        });
        let rest = Server::serve(rest_listener, rest::router(shared.clone()), "discord");
        let gateway = tokio::spawn(gateway::accept_loop(gw_listener, shared.clone()));
        FakeDiscord {
            shared,
            api_base,
            _rest: rest,
            gateway,
        }
    }

    /// The REST base (`http://127.0.0.1:P/api/v10`): the channel's `api_base`.
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// The gateway URL (`ws://127.0.0.1:Q`): the channel's `gateway_url`.
    pub fn gateway_url(&self) -> &str {
        &self.shared.gateway_url
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &DiscordConfig {
        &self.shared.cfg
    }

    // ----- the user side -----

    /// Dispatch event `t` with data `d` on the bot's session (sent now if a
    /// connection is attached, replayed on resume otherwise); its `seq`.
    ///
    /// # Panics
    /// If the bot never identified.
    pub fn dispatch(&self, t: &str, d: Value) -> u64 {
        let seq = {
            let mut st = self.shared.state.lock();
            let Some(sid) = st.session.clone() else {
                panic!("fake discord: dispatch of {t} before the bot identified");
            };
            let session = st.sessions.entry(sid).or_default();
            session.seq += 1;
            let seq = session.seq;
            let frame = json!({"op": 0, "s": seq, "t": t, "d": d});
            session.log.push((seq, frame.clone()));
            if let Some(c) = st.attached() {
                let _ = c.tx.send(Cmd::Frame(frame));
            }
            seq
        };
        self.shared.changes.bump();
        seq
    }

    fn message(&self, channel: &str, guild: Option<&str>, author: Value, content: &str) -> Value {
        let id = self.shared.state.lock().next_id();
        let mut d = json!({
            "id": id, "channel_id": channel, "type": 0, "author": author,
            "content": content, "mentions": [], "attachments": [], "embeds": [],
            "timestamp": "2026-01-01T00:00:00.000000+00:00", "tts": false,
            "mention_everyone": false, "pinned": false,
        });
        if let Some(g) = guild {
            d["guild_id"] = json!(g);
        }
        if content.contains(&format!("<@{}>", self.shared.cfg.bot_id)) {
            d["mentions"] =
                json!([{"id": self.shared.cfg.bot_id, "username": "pincer", "bot": true}]);
        }
        d
    }

    fn user(id: &str) -> Value {
        json!({"id": id, "username": format!("user{id}"), "global_name": format!("User {id}")})
    }

    /// A slash command `/name` with a string option `text` (when given),
    /// used by `user` in `channel` (in `guild`, or a DM): the interaction
    /// Discord would POST to the bot's interactions endpoint. The fake
    /// accepts its follow-up webhook from now on ([`FakeDiscord::interaction`]).
    pub fn slash_command(
        &self,
        guild: Option<&str>,
        channel: &str,
        user: &str,
        name: &str,
        text: Option<&str>,
    ) -> Value {
        let mut st = self.shared.state.lock();
        let id = st.next_id();
        let token = format!("aW50ZXJhY3Rpb24.fake-token-{id}");
        let app_id = self.shared.cfg.bot_id.clone();
        let options: Vec<Value> = text
            .map(|t| json!({"name": "text", "type": 3, "value": t}))
            .into_iter()
            .collect();
        let mut d = json!({
            "id": id, "application_id": app_id, "type": 2, "token": token, "version": 1,
            "channel_id": channel, "channel": {"id": channel, "type": if guild.is_some() { 0 } else { 1 }},
            "data": {"id": "1000", "name": name, "type": 1, "options": options},
            "locale": "en-US", "app_permissions": "0",
        });
        match guild {
            Some(g) => {
                d["guild_id"] = json!(g);
                d["member"] = json!({"user": Self::user(user), "roles": []});
            }
            None => d["user"] = Self::user(user),
        }
        st.interactions.insert(
            token.clone(),
            Interaction {
                id,
                app_id,
                token,
                ..Interaction::default()
            },
        );
        d
    }

    /// Discord's PING (type 1): what it POSTs when the endpoint URL is saved.
    pub fn ping_interaction(&self) -> Value {
        let id = self.shared.state.lock().next_id();
        json!({"id": id, "application_id": self.shared.cfg.bot_id, "type": 1,
            "token": format!("ping-token-{id}"), "version": 1})
    }

    /// Interaction `id` as the bot has answered it so far.
    pub fn interaction(&self, id: &str) -> Option<Interaction> {
        self.shared
            .state
            .lock()
            .interactions
            .values()
            .find(|i| i.id == id)
            .cloned()
    }

    /// A user's DM to the bot in DM channel `channel`; the message id.
    pub fn dm(&self, channel: &str, user: &str, content: &str) -> String {
        let d = self.message(channel, None, Self::user(user), content);
        self.dispatch("MESSAGE_CREATE", d.clone());
        d["id"].as_str().unwrap_or_default().to_string()
    }

    /// A user's message in a guild channel (mention the bot with
    /// [`FakeDiscord::mention`]); the message id.
    pub fn guild_message(&self, guild: &str, channel: &str, user: &str, content: &str) -> String {
        let d = self.message(channel, Some(guild), Self::user(user), content);
        self.dispatch("MESSAGE_CREATE", d.clone());
        d["id"].as_str().unwrap_or_default().to_string()
    }

    /// Another bot's message mentioning this one, in a guild; the message id.
    pub fn bot_message(&self, guild: &str, channel: &str, bot: &str, content: &str) -> String {
        let author = json!({"id": bot, "username": "otherbot", "bot": true});
        let d = self.message(channel, Some(guild), author, content);
        self.dispatch("MESSAGE_CREATE", d.clone());
        d["id"].as_str().unwrap_or_default().to_string()
    }

    /// `<@bot_id>`: the text that mentions the bot.
    pub fn mention(&self) -> String {
        format!("<@{}>", self.shared.cfg.bot_id)
    }

    // ----- gateway control -----

    fn command(&self, cmd: Cmd) -> bool {
        let st = self.shared.state.lock();
        st.attached().is_some_and(|c| c.tx.send(cmd).is_ok())
    }

    /// Switch heartbeat ACKs on or off.
    pub fn set_acks(&self, on: bool) {
        self.shared.state.lock().acks = on;
    }

    /// Close the attached connection with `code`; whether one was attached.
    pub fn close(&self, code: u16, reason: &str) -> bool {
        self.command(Cmd::Close(code, reason.into()))
    }

    /// Drop the attached connection's TCP stream without a close frame.
    pub fn drop_connection(&self) -> bool {
        self.command(Cmd::Drop)
    }

    /// Send op 7 Reconnect.
    pub fn reconnect(&self) -> bool {
        self.command(Cmd::Frame(json!({"op": 7, "d": null})))
    }

    /// Send op 9 Invalid Session (`resumable`); a non-resumable one also
    /// invalidates the session, so a Resume of it fails.
    pub fn invalid_session(&self, resumable: bool) -> bool {
        if !resumable {
            let mut st = self.shared.state.lock();
            if let Some(sid) = st.session.clone()
                && let Some(s) = st.sessions.get_mut(&sid)
            {
                s.invalid = true;
            }
        }
        self.command(Cmd::Frame(json!({"op": 9, "d": resumable})))
    }

    /// Close the connection of the next Identify with `code` instead of READY.
    pub fn close_next_identify(&self, code: u16, reason: &str) {
        self.shared.state.lock().close_next_identify = Some((code, reason.into()));
    }

    /// What the gateway saw.
    pub fn gateway_stats(&self) -> GatewayStats {
        let st = self.shared.state.lock();
        GatewayStats {
            attached: st.attached().is_some(),
            ..st.stats.clone()
        }
    }

    /// Wait until `check` holds on the gateway's stats.
    pub async fn wait_gateway(
        &self,
        what: &str,
        check: impl Fn(&GatewayStats) -> bool,
    ) -> GatewayStats {
        self.shared
            .changes
            .until(
                WAIT_GUARD,
                || format!("gateway: {what}"),
                || format!("{:?}", self.gateway_stats()),
                || {
                    let s = self.gateway_stats();
                    check(&s).then_some(s)
                },
            )
            .await
    }

    /// Wait until a connection is attached to a session (READY or RESUMED
    /// sent) for the `n`th time.
    pub async fn wait_established(&self, n: usize) -> GatewayStats {
        self.wait_gateway(&format!("{n} sessions established"), |s| {
            s.established >= n && s.attached
        })
        .await
    }

    // ----- REST side -----

    /// Every message the bot posted, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.shared.state.lock().sent.clone()
    }

    /// Channels the bot showed typing in, in order.
    pub fn typing(&self) -> Vec<String> {
        self.shared.state.lock().typing.clone()
    }

    /// Every REST call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.recorder.all()
    }

    /// REST calls of one route (`get_me`, `create_message`, `edit_message`,
    /// `typing`).
    pub fn calls_of(&self, route: &str) -> Vec<Call> {
        self.shared.recorder.of(route)
    }

    /// Forget every recorded REST call and sent message (benchmarks).
    pub fn clear(&self) {
        self.shared.recorder.clear();
        self.shared.state.lock().sent.clear();
    }

    /// Fail the next call of `route` as `fault`.
    pub fn fail_next(&self, route: &str, fault: RestFault) {
        self.shared
            .state
            .lock()
            .faults
            .entry(route.into())
            .or_default()
            .push_back(fault);
    }

    /// Wait until the bot posted at least `n` messages; all of them.
    pub async fn wait_for_sent(&self, n: usize) -> Vec<SentMessage> {
        self.until(&format!("{n} messages posted"), || {
            let s = self.sent();
            (s.len() >= n).then_some(s)
        })
        .await
    }

    /// Wait until `check` holds on the posted messages.
    pub async fn wait_sent(
        &self,
        what: &str,
        check: impl Fn(&[SentMessage]) -> bool,
    ) -> Vec<SentMessage> {
        self.until(what, || {
            let s = self.sent();
            check(&s).then_some(s)
        })
        .await
    }

    /// Wait until `n` calls of `route` were answered; them.
    pub async fn wait_for_calls(&self, route: &str, n: usize) -> Vec<Call> {
        self.until(&format!("{n} answered {route} calls"), || {
            (self.shared.recorder.answered(route) >= n).then(|| self.calls_of(route))
        })
        .await
    }

    async fn until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        self.shared
            .changes
            .until(
                WAIT_GUARD,
                || what.to_string(),
                || {
                    let sent: Vec<(String, String)> = self
                        .sent()
                        .iter()
                        .rev()
                        .take(8)
                        .map(|m| (m.channel_id.clone(), m.content.chars().take(40).collect()))
                        .collect();
                    format!(
                        "{} sent (newest first: {sent:?}); {}",
                        self.sent().len(),
                        recent(&self.shared.recorder.all(), 8)
                    )
                },
                check,
            )
            .await
    }
}
