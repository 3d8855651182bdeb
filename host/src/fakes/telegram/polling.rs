//! Getting updates in the Telegram fake: `getUpdates` (offset
//! confirmation, limit, a long poll woken by the next queued update, sticky
//! `allowed_updates`, 409 Conflict), and webhook mode (`setWebhook`,
//! `deleteWebhook`, `getWebhookInfo`, and the delivery task that POSTs
//! queued updates one at a time, in order, retrying with backoff).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::debug;

use super::api::{ApiError, ApiRequest, ok};
use super::state::{Delivery, WebhookCfg};
use super::{BotCore, Shared};

/// Counts an open `getUpdates` while alive.
struct Poller<'a>(&'a BotCore);

impl<'a> Poller<'a> {
    fn new(bot: &'a BotCore) -> Self {
        {
            let mut s = bot.state.lock();
            if s.pollers > 0 {
                s.overlapping_polls += 1;
            }
            s.pollers += 1;
            s.max_pollers = s.max_pollers.max(s.pollers);
        }
        bot.changes.bump();
        Poller(bot)
    }
}

impl Drop for Poller<'_> {
    fn drop(&mut self) {
        self.0.state.lock().pollers -= 1;
        self.0.changes.bump();
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn allowed_list(req: &ApiRequest) -> Result<Option<Vec<String>>, ApiError> {
    match req.json("allowed_updates")? {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        )),
        Some(_) => Err(ApiError::bad("can't parse allowed_updates JSON array")),
    }
}

/// `getUpdates`.
pub(super) async fn get_updates(bot: &Arc<BotCore>, req: &ApiRequest) -> Result<Value, ApiError> {
    let offset = req.int("offset")?.unwrap_or(0);
    let limit = req.int("limit")?.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = req.int("timeout")?.unwrap_or(0).max(0) as u64;
    let allowed = allowed_list(req)?;
    if bot.state.lock().webhook.is_some() {
        return Err(ApiError::conflict_webhook());
    }
    let _poller = Poller::new(bot);
    let generation = {
        let mut s = bot.state.lock();
        if s.webhook.is_some() {
            return Err(ApiError::conflict_webhook());
        }
        if let Some(a) = allowed {
            s.allowed_updates = Some(a);
        }
        s.confirm(offset);
        s.poll_generation += 1;
        s.poll_generation
    };
    // Wake any older poll: it is now overtaken.
    bot.changes.bump();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let mut rx = bot.changes.subscribe();
        {
            let s = bot.state.lock();
            if s.poll_generation != generation {
                return Err(ApiError::conflict_poller());
            }
            if s.webhook.is_some() {
                return Err(ApiError::conflict_webhook());
            }
            let batch = s.batch(limit);
            if !batch.is_empty() || timeout == 0 {
                return Ok(ok(Value::Array(batch)));
            }
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return Ok(ok(json!([])));
        }
    }
}

/// `setWebhook` (an empty `url` removes the webhook).
pub(super) fn set_webhook(
    shared: &Arc<Shared>,
    bot: &Arc<BotCore>,
    req: &ApiRequest,
) -> Result<Value, ApiError> {
    let url = req.str("url").unwrap_or_default();
    if url.is_empty() {
        return delete_webhook(bot, req);
    }
    let parsed =
        url::Url::parse(&url).map_err(|_| ApiError::bad("bad webhook: invalid URL specified"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(ApiError::bad(
            "bad webhook: An HTTPS URL must be provided for webhook",
        ));
    }
    let secret_token = req.str("secret_token").filter(|s| !s.is_empty());
    if let Some(s) = &secret_token {
        let valid = s.len() <= 256
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ApiError::bad("secret token contains unallowed characters"));
        }
    }
    let max_connections = req.int("max_connections")?.unwrap_or(40);
    if !(1..=100).contains(&max_connections) {
        return Err(ApiError::bad("invalid max_connections specified"));
    }
    let allowed = allowed_list(req)?;
    let start_task = {
        let mut s = bot.state.lock();
        let same = s.webhook.as_ref().is_some_and(|w| {
            w.url == url && w.secret_token == secret_token && w.max_connections == max_connections
        });
        s.webhook = Some(WebhookCfg {
            url,
            secret_token,
            max_connections,
        });
        if let Some(a) = allowed {
            s.allowed_updates = Some(a);
        }
        if req.flag("drop_pending_updates") {
            s.pending.clear();
        }
        s.last_error = None;
        let start = !s.delivering;
        s.delivering = true;
        if same && !start {
            drop(s);
            bot.changes.bump();
            return Ok(
                json!({"ok": true, "result": true, "description": "Webhook is already set"}),
            );
        }
        start
    };
    if start_task {
        let handle = tokio::spawn(deliver(shared.clone(), bot.clone()));
        shared.tasks.lock().push(handle.abort_handle());
    }
    bot.changes.bump();
    Ok(json!({"ok": true, "result": true, "description": "Webhook was set"}))
}

/// `deleteWebhook`.
pub(super) fn delete_webhook(bot: &Arc<BotCore>, req: &ApiRequest) -> Result<Value, ApiError> {
    let had = {
        let mut s = bot.state.lock();
        if req.flag("drop_pending_updates") {
            s.pending.clear();
        }
        s.webhook.take().is_some()
    };
    bot.changes.bump();
    let description = if had {
        "Webhook was deleted"
    } else {
        "Webhook is already deleted"
    };
    Ok(json!({"ok": true, "result": true, "description": description}))
}

/// `getWebhookInfo`.
pub(super) fn webhook_info(bot: &Arc<BotCore>) -> Value {
    let s = bot.state.lock();
    let pending = s.pending.iter().filter(|u| s.allowed(u)).count();
    let mut info = json!({
        "url": s.webhook.as_ref().map(|w| w.url.clone()).unwrap_or_default(),
        "has_custom_certificate": false,
        "pending_update_count": pending,
    });
    if let Some(w) = &s.webhook {
        info["max_connections"] = json!(w.max_connections);
        info["ip_address"] = json!("127.0.0.1");
        if let Some(a) = &s.allowed_updates {
            info["allowed_updates"] = json!(a);
        }
    }
    if let Some((date, msg)) = &s.last_error {
        info["last_error_date"] = json!(date);
        info["last_error_message"] = json!(msg);
    }
    ok(info)
}

/// The webhook delivery task of one bot: while a webhook is set, POST the
/// oldest allowed pending update; a 2xx confirms it, anything else (or a
/// timeout) is recorded and retried after a doubling, capped backoff.
async fn deliver(shared: Arc<Shared>, bot: Arc<BotCore>) {
    let cfg = shared.cfg.clone();
    let mut backoff = cfg.webhook_retry_initial;
    let mut attempt: (i64, u32) = (0, 0);
    loop {
        let mut rx = bot.changes.subscribe();
        let next = {
            let mut s = bot.state.lock();
            let Some(hook) = s.webhook.clone() else {
                s.delivering = false;
                return;
            };
            // Updates of types not allowed are dropped, as Telegram does.
            while let Some(front) = s.pending.front() {
                if s.allowed(front) {
                    break;
                }
                s.pending.pop_front();
            }
            s.pending.front().cloned().map(|u| (u, hook))
        };
        let Some((update, hook)) = next else {
            let _ = rx.changed().await;
            continue;
        };
        let update_id = update["update_id"].as_i64().unwrap_or(0);
        attempt = if attempt.0 == update_id {
            (update_id, attempt.1 + 1)
        } else {
            (update_id, 1)
        };
        let mut request = shared
            .http
            .post(&hook.url)
            .timeout(cfg.webhook_timeout)
            .json(&update);
        if let Some(secret) = &hook.secret_token {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        let at = Instant::now();
        let outcome = request.send().await;
        let latency = at.elapsed();
        let (status, error) = match &outcome {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => (
                Some(r.status().as_u16()),
                Some(format!("Wrong response from the webhook: {}", r.status())),
            ),
            Err(e) if e.is_timeout() => (None, Some("Read timeout expired".to_string())),
            Err(e) if e.is_connect() => (None, Some("Connection refused".to_string())),
            Err(e) => (None, Some(format!("Webhook delivery failed: {e}"))),
        };
        debug!(
            bot = bot.username,
            update_id,
            ?status,
            "fake webhook delivery"
        );
        let delivered = error.is_none();
        {
            let mut s = bot.state.lock();
            s.deliveries.push(Delivery {
                update_id,
                attempt: attempt.1,
                url: hook.url.clone(),
                secret_token: hook.secret_token.clone(),
                status,
                error: error.clone(),
                latency,
                at,
            });
            if delivered {
                s.pending
                    .retain(|u| u["update_id"].as_i64() != Some(update_id));
            } else if let Some(e) = error {
                s.last_error = Some((now_unix(), e));
            }
        }
        bot.changes.bump();
        if delivered {
            backoff = cfg.webhook_retry_initial;
        } else {
            // The platform's retry delay: modelled behaviour, not a wait
            // for an event.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(cfg.webhook_retry_max);
        }
    }
}
