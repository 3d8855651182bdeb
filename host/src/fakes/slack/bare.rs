//! A gateway-less Slack bot, the Slack baseline of `pincer bench
//! channels`: an Events API receiver that checks `X-Slack-Signature` and
//! the timestamp window, acknowledges at once, and answers each direct
//! message with `chat.postMessage` (the same text, in the same channel).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::super::bare_bot::BareStats;
use super::super::server::Server;
use super::{now_s, verify};

/// A running bare Slack bot (stops when dropped).
pub struct BareSlackBot {
    /// Its counters.
    pub stats: Arc<BareStats>,
    url: String,
    _server: Server,
    worker: JoinHandle<()>,
}

impl BareSlackBot {
    /// The Events API URL to push to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for BareSlackBot {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

struct Bot {
    signing_secret: String,
    queue: mpsc::UnboundedSender<(String, String)>,
    stats: Arc<BareStats>,
}

/// Start a bare Slack bot answering through `api_url` (`{base}/api`) with
/// `bot_token`, verifying pushes with `signing_secret`.
///
/// # Panics
/// If no loopback port can be bound.
pub async fn start(api_url: String, bot_token: String, signing_secret: String) -> BareSlackBot {
    let stats = Arc::new(BareStats::default());
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String)>();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default();
    let worker_stats = stats.clone();
    let worker = tokio::spawn(async move {
        let url = format!("{api_url}/chat.postMessage");
        while let Some((channel, text)) = rx.recv().await {
            let sent = client
                .post(&url)
                .bearer_auth(&bot_token)
                .json(&json!({"channel": channel, "text": text}))
                .send()
                .await;
            let ok = match sent {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["ok"].as_bool() == Some(true)),
                Err(_) => false,
            };
            let counter = if ok {
                &worker_stats.answered
            } else {
                &worker_stats.errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let state = Arc::new(Bot {
        signing_secret,
        queue: tx,
        stats: stats.clone(),
    });
    let listener = super::super::server::Server::bind()
        .await
        .expect("bind the bare Slack bot on 127.0.0.1");
    let addr = listener.local_addr().expect("the bare bot's address");
    let app = Router::new().route("/events", post(push)).with_state(state);
    BareSlackBot {
        stats,
        url: format!("http://{addr}/events"),
        _server: Server::serve(listener, app, "bare-slack"),
        worker,
    }
}

async fn push(State(bot): State<Arc<Bot>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let ts: i64 = header("x-slack-request-timestamp").parse().unwrap_or(0);
    let fresh = (now_s() as i64 - ts).abs() <= 300;
    if !fresh
        || !verify(
            bot.signing_secret.as_bytes(),
            ts,
            &body,
            &header("x-slack-signature"),
        )
    {
        bot.stats.errors.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let ev = &v["event"];
    if ev["type"] == "message"
        && ev["channel_type"] == "im"
        && ev.get("bot_id").is_none()
        && ev.get("subtype").is_none()
        && let (Some(channel), Some(text)) = (ev["channel"].as_str(), ev["text"].as_str())
    {
        let _ = bot.queue.send((channel.to_string(), text.to_string()));
    }
    StatusCode::OK
}
