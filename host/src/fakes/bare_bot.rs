//! Gateway-less bots: the baselines of `pincer bench channels`. Each does
//! the least a working bot must (receive a message, answer it with the
//! same text through the platform's API), so a benchmark can report the
//! gateway's cost as a ratio against the same fake in the same run.
//!
//! - [`telegram`]: a tokio loop long-polling `getUpdates` and answering each
//!   text message with `sendMessage`.
//! - [`whatsapp`]: a webhook receiver that checks `X-Hub-Signature-256`,
//!   acknowledges at once, and answers each text message through
//!   `POST .../messages`.
//!
//! Both stop when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::server::Server;
use super::whatsapp::verify;

/// Counters of a bare bot.
#[derive(Debug, Default)]
pub struct BareStats {
    /// Replies the platform accepted.
    pub answered: AtomicU64,
    /// Failed receive or send calls.
    pub errors: AtomicU64,
}

/// A running Telegram bare bot (stops when dropped).
pub struct BareTelegramBot {
    /// Its counters.
    pub stats: Arc<BareStats>,
    task: JoinHandle<()>,
}

impl Drop for BareTelegramBot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start a bare Telegram bot on `api_url` (`{base}/bot{token}`), long
/// polling with `timeout` = `poll_timeout_s`.
pub fn telegram(api_url: String, poll_timeout_s: u64) -> BareTelegramBot {
    let stats = Arc::new(BareStats::default());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(poll_timeout_s + 10))
        .build()
        .unwrap_or_default();
    let task = tokio::spawn(telegram_loop(
        api_url,
        poll_timeout_s,
        client,
        stats.clone(),
    ));
    BareTelegramBot { stats, task }
}

async fn telegram_loop(api: String, timeout: u64, client: reqwest::Client, stats: Arc<BareStats>) {
    let mut offset: i64 = 0;
    loop {
        let polled = client
            .post(format!("{api}/getUpdates"))
            .json(&json!({"offset": offset, "timeout": timeout}))
            .send()
            .await;
        let body: Value = match polled {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(e) => {
                debug!(error = %e, "bare bot getUpdates failed");
                Value::Null
            }
        };
        let Some(updates) = body["result"].as_array() else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            // A real bot's back-off after a failed poll.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for u in updates {
            offset = offset.max(u["update_id"].as_i64().unwrap_or(0) + 1);
            let m = &u["message"];
            let (Some(chat), Some(text)) = (m["chat"]["id"].as_i64(), m["text"].as_str()) else {
                continue;
            };
            let sent = client
                .post(format!("{api}/sendMessage"))
                .json(&json!({"chat_id": chat, "text": text}))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => stats.answered.fetch_add(1, Ordering::Relaxed),
                _ => stats.errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

/// A running WhatsApp bare bot (stops when dropped).
pub struct BareWhatsAppBot {
    /// Its counters.
    pub stats: Arc<BareStats>,
    url: String,
    _server: Server,
    worker: JoinHandle<()>,
}

impl BareWhatsAppBot {
    /// The webhook URL to push to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for BareWhatsAppBot {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

struct WaBot {
    app_secret: String,
    queue: mpsc::UnboundedSender<(String, String)>,
    stats: Arc<BareStats>,
}

/// Start a bare WhatsApp bot answering through `messages_url` with
/// `access_token`, verifying pushes with `app_secret`.
///
/// # Panics
/// If no loopback port can be bound.
pub async fn whatsapp(
    messages_url: String,
    access_token: String,
    app_secret: String,
) -> BareWhatsAppBot {
    let stats = Arc::new(BareStats::default());
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String)>();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default();
    let worker_stats = stats.clone();
    let worker = tokio::spawn(async move {
        while let Some((to, text)) = rx.recv().await {
            let sent = client
                .post(&messages_url)
                .bearer_auth(&access_token)
                .json(
                    &json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                    "to": to, "type": "text", "text": {"body": text}}),
                )
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    worker_stats.answered.fetch_add(1, Ordering::Relaxed)
                }
                _ => worker_stats.errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    });
    let state = Arc::new(WaBot {
        app_secret,
        queue: tx,
        stats: stats.clone(),
    });
    let listener = Server::bind()
        .await
        .expect("bind the bare WhatsApp bot on 127.0.0.1");
    let addr = listener.local_addr().expect("the bare bot's address");
    let app = Router::new()
        .route("/webhook", post(wa_push))
        .with_state(state);
    BareWhatsAppBot {
        stats,
        url: format!("http://{addr}/webhook"),
        _server: Server::serve(listener, app, "bare-whatsapp"),
        worker,
    }
}

async fn wa_push(State(bot): State<Arc<WaBot>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !verify(bot.app_secret.as_bytes(), &body, sig) {
        bot.stats.errors.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    for entry in v["entry"].as_array().into_iter().flatten() {
        for change in entry["changes"].as_array().into_iter().flatten() {
            for m in change["value"]["messages"].as_array().into_iter().flatten() {
                if let (Some(from), Some(text)) = (m["from"].as_str(), m["text"]["body"].as_str()) {
                    let _ = bot.queue.send((from.to_string(), text.to_string()));
                }
            }
        }
    }
    StatusCode::OK
}
