//! A local fake of the WhatsApp Cloud API on Meta's Graph, on loopback,
//! for the WhatsApp channel's tests and `pincer bench channels`.
//!
//! The plugin side talks to it as to `https://graph.facebook.com`:
//! `POST /{version}/{phone_number_id}/messages` (text, media by id or link,
//! templates, reactions, `context.message_id` quotes, and the read +
//! typing form), `POST /{version}/{phone_number_id}/media` (multipart
//! upload), `GET /{version}/{media_id}` and the download URL it returns
//! (the fake's own lookaside path), every one with
//! `Authorization: Bearer {access_token}`. Errors have Graph's shape and
//! documented statuses; free-form messages to a user who has not written
//! in the last 24 hours fail with 131047 (unless
//! [`WhatsAppConfig::enforce_window`] is off).
//!
//! The test side builds signed webhook pushes ([`FakeWhatsApp::batch`],
//! [`FakeWhatsApp::push`]), runs the GET verification handshake, reads
//! what the business sent and read, waits without sleeping, and injects
//! faults by Graph error code, 5xx, or hangs.

mod api;
mod graph_error;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::WAIT_GUARD;
use super::faults::Faults;
use super::recorder::{Call, Recorder};
use super::server::Server;
use super::wait::Changes;

pub use webhook::{Batch, Contact, PushAnswer, Signature, WebhookPush, sign, verify};

/// The free-form messaging window after a user's last message.
const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Settings of the WhatsApp fake (the account it plays).
#[derive(Debug, Clone)]
pub struct WhatsAppConfig {
    /// The bearer token every Graph call must carry.
    pub access_token: String,
    /// The App Secret that signs webhook pushes.
    pub app_secret: String,
    /// The verify token of the GET handshake.
    pub verify_token: String,
    /// The business phone number id (in the messages URL and payloads).
    pub phone_number_id: String,
    /// `metadata.display_phone_number` in payloads.
    pub display_phone_number: String,
    /// The WhatsApp Business Account id (`entry[].id`).
    pub waba_id: String,
    /// The Graph version the URL helpers use (any `vN.M` is accepted).
    pub api_version: String,
    /// Refuse free-form messages outside the 24-hour window (131047).
    /// Default true.
    pub enforce_window: bool,
    /// Record every call. Default true.
    pub record_calls: bool,
    /// The hang guard of the `wait_for_*` helpers. Default [`WAIT_GUARD`].
    pub wait_guard: Duration,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        WhatsAppConfig {
            access_token: "EAAFakeAccessTokenForPincerTests".into(),
            app_secret: "fake-app-secret".into(),
            verify_token: "fake-verify-token".into(),
            phone_number_id: "106540352242922".into(),
            display_phone_number: "15550783881".into(),
            waba_id: "102290129340398".into(),
            api_version: "v21.0".into(),
            enforce_window: true,
            record_calls: true,
            wait_guard: WAIT_GUARD,
        }
    }
}

/// How the next call(s) of an endpoint fail.
#[derive(Debug, Clone, PartialEq)]
pub enum WaFault {
    /// The documented error for this Graph code (130429, 131056, 131047,
    /// 131026, 131048, 190, 4, 80007, ...) with its HTTP status.
    Code(i64),
    /// A server failure with this status (Graph code 1, or 2 for 503).
    Status(u16),
    /// Stop answering this call until [`FakeWhatsApp::resume`].
    Hang,
}

/// Media the fake holds (added by a test or uploaded by the business).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRef {
    /// The media id.
    pub id: String,
    /// `mime_type`.
    pub mime_type: String,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub size: usize,
    /// The file name (documents).
    pub file_name: String,
}

/// A message the business sent (`POST .../messages`, not the read form).
#[derive(Debug, Clone)]
pub struct SentMessage {
    /// The `wamid` the fake answered with.
    pub id: String,
    /// `to`, normalised to digits (the `wa_id`).
    pub to: String,
    /// `type`.
    pub kind: String,
    /// The whole request body.
    pub body: Value,
}

impl SentMessage {
    /// `text.body` (or a media caption), if any.
    pub fn text(&self) -> Option<&str> {
        self.body["text"]["body"]
            .as_str()
            .or_else(|| self.body[&self.kind]["caption"].as_str())
    }

    /// `context.message_id` (the quoted message), if any.
    pub fn reply_to(&self) -> Option<&str> {
        self.body["context"]["message_id"].as_str()
    }
}

/// A read receipt (`status: "read"`), with or without typing.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadReceipt {
    /// `message_id` (an inbound `wamid`).
    pub message_id: String,
    /// Whether `typing_indicator` was set.
    pub typing: bool,
}

/// A media upload (`POST .../media`).
#[derive(Debug, Clone)]
pub struct MediaUpload {
    /// The id answered.
    pub id: String,
    /// The `type` field.
    pub kind: String,
    /// The file part's name.
    pub file_name: Option<String>,
    /// The file part's `Content-Type`.
    pub content_type: Option<String>,
    /// The bytes.
    pub data: Bytes,
}

#[derive(Debug, Default)]
struct State {
    media: HashMap<String, (MediaRef, Bytes)>,
    /// Inbound wamids the fake generated, and their sender.
    inbound: HashMap<String, String>,
    /// Last inbound message time per `wa_id`.
    last_inbound: HashMap<String, Instant>,
    sent: Vec<SentMessage>,
    /// Messages sent per `wa_id` (cheap waits on big runs).
    sent_per: HashMap<String, usize>,
    reads: Vec<ReadReceipt>,
    uploads: Vec<MediaUpload>,
    counter: u64,
}

struct Shared {
    cfg: WhatsAppConfig,
    base_url: String,
    state: Mutex<State>,
    changes: Changes,
    recorder: Recorder,
    faults: Faults<WaFault>,
    http: reqwest::Client,
}

impl Shared {
    fn next(&self) -> u64 {
        let mut s = self.state.lock();
        s.counter += 1;
        s.counter
    }

    /// A new inbound wamid from `wa_id` (opens that user's window).
    fn new_inbound_id(&self, wa_id: &str) -> String {
        let n = self.next();
        let id = format!("wamid.HBgL{wa_id}FQIAEhgUM0E{n:012X}");
        let mut s = self.state.lock();
        s.inbound.insert(id.clone(), wa_id.to_string());
        s.last_inbound.insert(wa_id.to_string(), Instant::now());
        drop(s);
        self.changes.bump();
        id
    }

    fn add_media(&self, data: Bytes, mime_type: &str, file_name: &str) -> MediaRef {
        let n = self.next();
        let m = MediaRef {
            id: format!("{}", 1_037_543_291_543_000u64 + n),
            mime_type: mime_type.into(),
            sha256: Sha256::digest(&data).into(),
            size: data.len(),
            file_name: file_name.into(),
        };
        self.state
            .lock()
            .media
            .insert(m.id.clone(), (m.clone(), data));
        m
    }
}

/// The running fake; dropping it stops the server and every open request.
pub struct FakeWhatsApp {
    shared: Arc<Shared>,
    _server: Server,
}

impl FakeWhatsApp {
    /// Start a fake playing the account in `cfg`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(cfg: WhatsAppConfig) -> FakeWhatsApp {
        let listener = Server::bind()
            .await
            .expect("bind the WhatsApp fake on 127.0.0.1");
        let addr = listener.local_addr().expect("the WhatsApp fake's address");
        let shared = Arc::new(Shared {
            cfg,
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
        let server = Server::serve(listener, api::router(shared.clone()), "whatsapp");
        FakeWhatsApp {
            shared,
            _server: server,
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &WhatsAppConfig {
        &self.shared.cfg
    }

    /// `http://127.0.0.1:{port}`: what replaces `https://graph.facebook.com`.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// `{base}/{api_version}/{phone_number_id}/messages`.
    pub fn messages_url(&self) -> String {
        let c = &self.shared.cfg;
        format!(
            "{}/{}/{}/messages",
            self.shared.base_url, c.api_version, c.phone_number_id
        )
    }

    /// Media the users send: returns its id for [`Batch::image`] etc.
    pub fn add_media(&self, data: &[u8], mime_type: &str, file_name: &str) -> MediaRef {
        self.shared
            .add_media(Bytes::copy_from_slice(data), mime_type, file_name)
    }

    /// The bytes of media `id`.
    pub fn media_bytes(&self, id: &str) -> Option<Bytes> {
        self.shared
            .state
            .lock()
            .media
            .get(id)
            .map(|(_, b)| b.clone())
    }

    /// A new webhook push for this account.
    pub fn batch(&self) -> Batch {
        Batch::new(self.shared.clone())
    }

    /// The `X-Hub-Signature-256` of `body` under this account's App Secret.
    pub fn signature_of(&self, body: &[u8]) -> String {
        sign(self.shared.cfg.app_secret.as_bytes(), body)
    }

    /// POST `push` to `url`, correctly signed (call again with the same
    /// push for a Meta-style redelivery: identical bytes and signature).
    pub async fn push(&self, url: &str, push: &WebhookPush) -> PushAnswer {
        self.push_with(url, push, Signature::Valid).await
    }

    /// POST `push` to `url` signed as `signature` says.
    pub async fn push_with(
        &self,
        url: &str,
        push: &WebhookPush,
        signature: Signature,
    ) -> PushAnswer {
        let header = match signature {
            Signature::Valid => Some(self.signature_of(&push.body)),
            Signature::Missing => None,
            Signature::WrongKey => Some(sign(b"not-the-app-secret", &push.body)),
            Signature::Header(h) => Some(h),
        };
        let mut req = self
            .shared
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(push.body.clone());
        if let Some(h) = header {
            req = req.header("x-hub-signature-256", h);
        }
        answer(req).await
    }

    /// The GET verification handshake Meta runs when a webhook URL is
    /// configured: `hub.mode`, `hub.verify_token`, `hub.challenge`.
    pub async fn verify_handshake(
        &self,
        url: &str,
        mode: &str,
        verify_token: &str,
        challenge: &str,
    ) -> PushAnswer {
        let req = self.shared.http.get(url).query(&[
            ("hub.mode", mode),
            ("hub.verify_token", verify_token),
            ("hub.challenge", challenge),
        ]);
        answer(req).await
    }

    /// Every call made to the Graph side, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.recorder.all()
    }

    /// Calls of `endpoint` (`messages`, `media_upload`, `media`,
    /// `media_download`).
    pub fn calls_of(&self, endpoint: &str) -> Vec<Call> {
        self.shared.recorder.of(endpoint)
    }

    /// Forget recorded calls, sent messages, reads and uploads.
    pub fn clear_records(&self) {
        self.shared.recorder.clear();
        let mut s = self.shared.state.lock();
        s.sent.clear();
        s.sent_per.clear();
        s.reads.clear();
        s.uploads.clear();
    }

    /// Every message the business sent, in order.
    pub fn sent_all(&self) -> Vec<SentMessage> {
        self.shared.state.lock().sent.clone()
    }

    /// Messages the business sent to `wa_id`, in order.
    pub fn sent(&self, wa_id: &str) -> Vec<SentMessage> {
        let wa = normalise(wa_id);
        self.shared
            .state
            .lock()
            .sent
            .iter()
            .filter(|m| m.to == wa)
            .cloned()
            .collect()
    }

    /// How many messages the business sent to `wa_id` (cheap).
    pub fn sent_count(&self, wa_id: &str) -> usize {
        let wa = normalise(wa_id);
        self.shared
            .state
            .lock()
            .sent_per
            .get(&wa)
            .copied()
            .unwrap_or(0)
    }

    /// Read receipts (with or without typing), in order.
    pub fn reads(&self) -> Vec<ReadReceipt> {
        self.shared.state.lock().reads.clone()
    }

    /// Media uploads, in order.
    pub fn uploads(&self) -> Vec<MediaUpload> {
        self.shared.state.lock().uploads.clone()
    }

    /// The next `n` calls of `endpoint` fail with `fault`.
    pub fn fail_next(&self, endpoint: &str, n: usize, fault: WaFault) {
        self.shared.faults.push(endpoint, n, fault);
    }

    /// Drop every queued fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Stop answering every call until [`FakeWhatsApp::resume`].
    pub fn hold(&self) {
        self.shared.faults.hold();
    }

    /// Answer again: hanging calls proceed normally.
    pub fn resume(&self) {
        self.shared.faults.resume();
        self.shared.changes.bump();
    }

    /// Calls hanging right now.
    pub fn hanging(&self) -> usize {
        self.shared.faults.hanging()
    }

    async fn until<T>(&self, what: impl Fn() -> String, check: impl FnMut() -> Option<T>) -> T {
        let seen = || crate::fakes::recorder::recent(&self.calls(), 8);
        self.shared
            .changes
            .until(self.shared.cfg.wait_guard, what, seen, check)
            .await
    }

    /// Wait until the business has sent `n` messages to `wa_id`.
    ///
    /// # Panics
    /// After the hang guard, saying what was sent.
    pub async fn wait_for_sent(&self, wa_id: &str, n: usize) -> Vec<SentMessage> {
        self.until(
            || {
                let texts: Vec<_> = self
                    .sent(wa_id)
                    .iter()
                    .map(|m| m.text().unwrap_or_default().to_string())
                    .collect();
                format!("{n} messages sent to {wa_id} (have {texts:?})")
            },
            || (self.sent_count(wa_id) >= n).then(|| self.sent(wa_id)),
        )
        .await
    }

    /// Wait until `n` read receipts arrived.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_reads(&self, n: usize) -> Vec<ReadReceipt> {
        self.until(
            || format!("{n} read receipts (have {:?})", self.reads()),
            || {
                let have = self.shared.state.lock().reads.len();
                (have >= n).then(|| self.reads())
            },
        )
        .await
    }

    /// Wait until `n` calls of `endpoint` were answered; returns them all.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_calls(&self, endpoint: &str, n: usize) -> Vec<Call> {
        self.until(
            || format!("{n} answered {endpoint} calls"),
            || (self.shared.recorder.answered(endpoint) >= n).then(|| self.calls_of(endpoint)),
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

/// Digits only, as Graph reports `wa_id`.
fn normalise(to: &str) -> String {
    to.chars().filter(char::is_ascii_digit).collect()
}

async fn answer(req: reqwest::RequestBuilder) -> PushAnswer {
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
