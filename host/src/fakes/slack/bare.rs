//! Gateway-less Slack bots, the Slack baselines of `pincer bench
//! channels`: an Events API receiver ([`start`]) that checks
//! `X-Slack-Signature` and the timestamp window, acknowledges at once, and
//! answers each direct message with `chat.postMessage` (the same text, in
//! the same channel); and a Socket Mode client ([`socket`]) that opens a
//! connection with `apps.connections.open`, acknowledges every envelope and
//! answers the same way.

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

/// A running bare Socket Mode bot (stops when dropped).
pub struct BareSlackSocketBot {
    /// Its counters.
    pub stats: Arc<BareStats>,
    task: JoinHandle<()>,
}

impl Drop for BareSlackSocketBot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start a bare Socket Mode bot: `apps.connections.open` on `api_url` with
/// `app_token`, answers with `bot_token`.
pub fn socket(api_url: String, bot_token: String, app_token: String) -> BareSlackSocketBot {
    let stats = Arc::new(BareStats::default());
    let task = tokio::spawn(socket_loop(api_url, bot_token, app_token, stats.clone()));
    BareSlackSocketBot { stats, task }
}

async fn socket_loop(api: String, bot_token: String, app_token: String, stats: Arc<BareStats>) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default();
    let opened = client
        .post(format!("{api}/apps.connections.open"))
        .bearer_auth(&app_token)
        .send()
        .await;
    let url = match opened {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["url"].as_str().map(str::to_string)),
        Err(_) => None,
    };
    let Some(url) = url else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String)>();
    let worker_stats = stats.clone();
    let post_url = format!("{api}/chat.postMessage");
    let worker = tokio::spawn(async move {
        while let Some((channel, text)) = rx.recv().await {
            let ok = match client
                .post(&post_url)
                .bearer_auth(&bot_token)
                .json(&json!({"channel": channel, "text": text}))
                .send()
                .await
            {
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
    while let Some(Ok(frame)) = source.next().await {
        let Message::Text(text) = frame else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(id) = v["envelope_id"].as_str() {
            let ack = json!({"envelope_id": id}).to_string();
            if sink.send(Message::Text(ack.into())).await.is_err() {
                break;
            }
        }
        let ev = &v["payload"]["event"];
        if v["type"] == "events_api"
            && ev["type"] == "message"
            && ev["channel_type"] == "im"
            && ev.get("bot_id").is_none()
            && let (Some(channel), Some(text)) = (ev["channel"].as_str(), ev["text"].as_str())
        {
            let _ = tx.send((channel.to_string(), text.to_string()));
        }
    }
    worker.abort();
}
