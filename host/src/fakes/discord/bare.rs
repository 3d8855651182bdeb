//! A gateway-less Discord bot, the baseline of `pincer bench channels`:
//! one tokio task holding the Gateway WebSocket (Hello, Identify,
//! heartbeats) and answering every `MESSAGE_CREATE` from a person with the
//! same text through `POST /channels/{id}/messages`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use super::super::bare_bot::BareStats;

/// Replies sent at once.
const CONCURRENCY: usize = 32;

/// A running bare Discord bot (stops when dropped).
pub struct BareDiscordBot {
    /// Its counters.
    pub stats: Arc<BareStats>,
    task: JoinHandle<()>,
}

impl Drop for BareDiscordBot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start a bare bot with `token` on the fake's `gateway_url` and `api_base`.
pub fn bare_bot(api_base: String, gateway_url: String, token: String) -> BareDiscordBot {
    let stats = Arc::new(BareStats::default());
    let task = tokio::spawn(run(api_base, gateway_url, token, stats.clone()));
    BareDiscordBot { stats, task }
}

async fn run(api_base: String, gateway_url: String, token: String, stats: Arc<BareStats>) {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "bare discord bot: no HTTP client");
            return;
        }
    };
    let url = format!("{}/?v=10&encoding=json", gateway_url.trim_end_matches('/'));
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (replies_tx, replies_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let sender = {
        let (client, stats, token, api_base) = (
            client.clone(),
            stats.clone(),
            token.clone(),
            api_base.clone(),
        );
        tokio::spawn(async move {
            tokio_stream_unbounded(replies_rx)
                .for_each_concurrent(CONCURRENCY, |(channel, content)| {
                    let (client, stats, token, api_base) = (
                        client.clone(),
                        stats.clone(),
                        token.clone(),
                        api_base.clone(),
                    );
                    async move {
                        let r = client
                            .post(format!("{api_base}/channels/{channel}/messages"))
                            .header("Authorization", format!("Bot {token}"))
                            .json(&json!({"content": content}))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status().is_success() => {
                                stats.answered.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                stats.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
                .await;
        })
    };
    let mut seq: Option<u64> = None;
    let mut beat = tokio::time::interval(Duration::from_secs(3600));
    beat.tick().await;
    loop {
        tokio::select! {
            frame = source.next() => {
                let Some(Ok(Message::Text(text))) = frame else { break };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if let Some(s) = v["s"].as_u64() {
                    seq = Some(s);
                }
                match v["op"].as_u64() {
                    Some(10) => {
                        let ms = v["d"]["heartbeat_interval"].as_u64().unwrap_or(41_250).max(100);
                        beat = tokio::time::interval(Duration::from_millis(ms));
                        beat.tick().await;
                        let identify = json!({"op": 2, "d": {"token": token, "intents": (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15),
                            "properties": {"os": "linux", "browser": "bare", "device": "bare"}}});
                        if sink.send(Message::text(identify.to_string())).await.is_err() {
                            break;
                        }
                    }
                    Some(0) if v["t"] == "MESSAGE_CREATE" => {
                        let d = &v["d"];
                        if d["author"]["bot"].as_bool() == Some(true) {
                            continue;
                        }
                        if let (Some(c), Some(t)) = (d["channel_id"].as_str(), d["content"].as_str()) {
                            let _ = replies_tx.send((c.to_string(), t.to_string()));
                        }
                    }
                    _ => {}
                }
            }
            _ = beat.tick() => {
                if sink.send(Message::text(json!({"op": 1, "d": seq}).to_string())).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(replies_tx);
    let _ = sender.await;
}

/// An unbounded receiver as a stream.
fn tokio_stream_unbounded<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
