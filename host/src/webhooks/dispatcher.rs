//! The delivery engine: claims due deliveries from the outbox, signs and
//! POSTs them through the SSRF-guarded client, and settles each attempt
//! (delivered, retry on the schedule or at `Retry-After`, or failed), with a
//! per-endpoint concurrency limit so one slow receiver never delays others.
//!
//! Time comes from a [`Clock`](crate::clock::Clock), so tests drive the retry
//! schedule with a manual clock and [`Dispatcher::run_due`] instead of
//! sleeping; the background loop ([`Dispatcher::spawn`]) sleeps until the
//! next delivery is due or the store signals new ones.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::WebhookConfig;
use super::signing::{Secret, signature_header};
use super::ssrf::SsrfGuard;
use crate::clock::SharedClock;
use crate::store::{
    Attempt, AttemptClaim, Delivery, DueDelivery, Settle, SharedSessions, SharedWebhooks,
    StoreError, WebhookEndpoint,
};

/// Deliveries claimed per pass.
const BATCH: usize = 256;
/// Longest the loop sleeps without looking at the outbox, by default (a
/// safety net; the store's signal normally wakes it, in a cluster also for
/// deliveries queued on other nodes).
const MAX_IDLE: Duration = Duration::from_secs(5);
/// Characters of a response body kept in an attempt's error.
const ERROR_BODY_CHARS: usize = 200;

/// Sends webhook deliveries.
pub struct Dispatcher {
    store: SharedWebhooks,
    events: SharedSessions,
    config: WebhookConfig,
    clock: SharedClock,
    guard: SsrfGuard,
    client: reqwest::Client,
    /// Attempts in flight per endpoint.
    busy: Mutex<HashMap<String, usize>>,
    /// Wakes the loop: deliveries written (the store's signal).
    outbox: Arc<Notify>,
    /// Serialises disabling (see [`Dispatcher::disable`]).
    disabling: Mutex<()>,
    /// Attempts in flight (for [`Dispatcher::settled`]).
    in_flight: watch::Sender<usize>,
    /// The safety-net period of the loop, ms (see [`MAX_IDLE`]).
    max_idle_ms: AtomicU64,
    /// Endpoints whose limit of attempts in flight other nodes hold (a
    /// shared store): skipped until the next wake-up.
    cluster_busy: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// How one attempt ended, before it is settled.
#[derive(Debug)]
struct Outcome {
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
    /// The receiver asked for no more retries (`webhook-delivery:
    /// abort-message`).
    abort: bool,
}

impl Dispatcher {
    /// A dispatcher over `store`, logging `webhook.disabled` events into
    /// `events`, with its HTTP client built from `config` and `guard`.
    pub fn new(
        store: SharedWebhooks,
        events: SharedSessions,
        config: WebhookConfig,
        clock: SharedClock,
        guard: SsrfGuard,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let client = reqwest::Client::builder()
            // 3xx is a failure; following a redirect could lead anywhere.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, past the guard.
            .no_proxy()
            // Every name resolves through the guard, and only checked
            // addresses are dialled (no DNS-rebinding window).
            .dns_resolver(guard.reqwest_resolver())
            .timeout(config.request_timeout())
            .connect_timeout(config.request_timeout().min(Duration::from_secs(10)))
            .user_agent(concat!("pincer-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Arc::new(Dispatcher {
            outbox: store.outbox_signal(),
            store,
            events,
            config,
            clock,
            guard,
            client,
            busy: Mutex::new(HashMap::new()),
            in_flight: watch::Sender::new(0),
            disabling: Mutex::new(()),
            max_idle_ms: AtomicU64::new(MAX_IDLE.as_millis() as u64),
            cluster_busy: Mutex::new(HashSet::new()),
        }))
    }

    /// The configuration in use.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Look at the outbox at least every `every` without a wake-up
    /// (`[store] safety_poll_ms` in cluster mode; default 5 s).
    pub fn set_safety_poll(&self, every: Duration) {
        self.max_idle_ms.store(
            every.as_millis().clamp(10, u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    fn max_idle(&self) -> Duration {
        Duration::from_millis(self.max_idle_ms.load(Ordering::Relaxed))
    }

    /// Start the background loop: deliveries left in flight by a previous
    /// process are queued again first, then due deliveries are sent as they
    /// come. Abort the handle to stop it (attempts in flight are dropped and
    /// retried after the next start).
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            match this.store.recover_in_flight(this.now()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(deliveries = n, "webhook deliveries resumed after restart"),
                Err(e) => {
                    tracing::error!(error = %e, "webhook outbox: recovering in-flight deliveries")
                }
            }
            let mut last_prune = None::<Instant>;
            // The hourly prune runs beside the loop (in bounded batches, on
            // a blocking thread), so a big one never delays deliveries.
            let mut pruning = None::<JoinHandle<()>>;
            let mut running = this.in_flight.subscribe();
            loop {
                if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600))
                    && pruning.as_ref().is_none_or(JoinHandle::is_finished)
                {
                    last_prune = Some(Instant::now());
                    let me = this.clone();
                    pruning = Some(tokio::task::spawn_blocking(move || me.prune()));
                }
                let wait = match this.pump() {
                    Ok((_started, next)) => this.idle_time(next),
                    Err(e) => {
                        tracing::error!(error = %e, "webhook outbox unreadable; retrying");
                        Duration::from_secs(1)
                    }
                };
                // Only attempts finishing change the count from here on
                // (this loop is the one that starts them): capacity freed.
                running.borrow_and_update();
                tokio::select! {
                    _ = this.outbox.notified() => this.cluster_busy().clear(),
                    _ = running.changed() => {}
                    _ = tokio::time::sleep(wait) => this.cluster_busy().clear(),
                }
            }
        })
    }

    /// Send everything due now and wait for those attempts (and any that
    /// become due meanwhile) to settle. Returns how many attempts were made.
    /// For tests on a manual clock and for draining.
    pub async fn run_due(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let (started, _) = self.pump()?;
            if started.is_empty() {
                // Nothing startable: done, unless attempts of saturated
                // endpoints are still running.
                let mut rx = self.in_flight.subscribe();
                let running = *rx.borrow_and_update();
                if running == 0 {
                    return Ok(total);
                }
                let _ = rx.wait_for(|n| *n < running).await;
                continue;
            }
            for attempts in futures::future::join_all(started).await {
                total += attempts.unwrap_or(0);
            }
        }
    }

    /// Wait until no attempt is in flight (deliveries already received by
    /// a receiver are then also recorded).
    pub async fn settled(&self) {
        let _ = self.in_flight.subscribe().wait_for(|n| *n == 0).await;
    }

    /// How long the loop may sleep given the next due time.
    fn idle_time(&self, next_due: Option<i64>) -> Duration {
        match next_due {
            Some(at) => {
                let ms = at.saturating_sub(self.now());
                if ms <= 0 {
                    // Due but blocked by a concurrency limit: wait for an
                    // attempt to finish.
                    self.max_idle()
                } else {
                    Duration::from_millis(ms as u64).min(self.max_idle())
                }
            }
            None => self.max_idle(),
        }
    }

    /// Claim due deliveries within the concurrency limits and start an
    /// attempt task for each (which goes on with its endpoint's next due
    /// deliveries). Returns the tasks (each yielding how many attempts it
    /// made) and when the next delivery is due.
    fn pump(self: &Arc<Self>) -> Result<(Vec<JoinHandle<usize>>, Option<i64>), StoreError> {
        let mut started = Vec::new();
        let per_endpoint = self.config.concurrency_per_endpoint.max(1);
        let max_total = self.config.max_in_flight.max(1);
        let mut saturated: Vec<String> = self
            .busy()
            .iter()
            .filter(|(_, n)| **n >= per_endpoint)
            .map(|(id, _)| id.clone())
            .collect();
        saturated.extend(self.cluster_busy().iter().cloned());
        let room = max_total.saturating_sub(self.busy_total());
        if room > 0 {
            let due = self
                .store
                .due_deliveries(self.now(), BATCH.min(room), &saturated)?;
            for delivery in due {
                if self.busy_total() >= max_total {
                    break;
                }
                {
                    let mut busy = self.busy();
                    let n = busy.entry(delivery.endpoint_id.clone()).or_insert(0);
                    if *n >= per_endpoint {
                        continue;
                    }
                    *n += 1;
                }
                self.in_flight.send_modify(|n| *n += 1);
                let this = self.clone();
                started.push(tokio::spawn(async move {
                    let endpoint_id = delivery.endpoint_id.clone();
                    // The slot stays with its endpoint while the endpoint
                    // has due deliveries: no round trip through the loop
                    // between one attempt and the next.
                    let mut attempts = 0;
                    let mut next = Some(delivery);
                    while let Some(d) = next.take() {
                        if !this.attempt(d).await {
                            // Other nodes hold the endpoint's limit.
                            this.cluster_busy().insert(endpoint_id.clone());
                            break;
                        }
                        attempts += 1;
                        next = match this.store.due_deliveries_of(&endpoint_id, this.now()) {
                            Ok(d) => d,
                            Err(e) => {
                                tracing::error!(error = %e, "webhook outbox unreadable");
                                None
                            }
                        };
                    }
                    {
                        let mut busy = this.busy();
                        if let Some(n) = busy.get_mut(&endpoint_id) {
                            *n -= 1;
                            if *n == 0 {
                                busy.remove(&endpoint_id);
                            }
                        }
                    }
                    this.in_flight.send_modify(|n| *n -= 1);
                    attempts
                }));
            }
        }
        Ok((started, self.store.next_due_ms()?))
    }

    /// One attempt of one delivery, settled in the store; `false` if the
    /// endpoint's limit of attempts in flight is held by other nodes (the
    /// delivery stays pending).
    async fn attempt(&self, delivery: DueDelivery) -> bool {
        let id = delivery.id;
        match self.try_attempt(delivery).await {
            Ok(sent) => sent,
            Err(e) => {
                tracing::error!(delivery = id, error = %e, "webhook attempt could not be recorded");
                true
            }
        }
    }

    async fn try_attempt(&self, delivery: DueDelivery) -> Result<bool, StoreError> {
        let started_ms = self.now();
        // Counted before sending: a crash after this point makes the retry
        // a new attempt number, never a repeat of this one.
        // The claim outlasts the request (its timeout) twice over: only a
        // node that died or stalled loses it to another node.
        let claim_ms = self.config.request_timeout_ms.max(1).saturating_mul(2);
        // The per-endpoint limit holds across nodes: the claim counts the
        // attempts in flight everywhere.
        let per_endpoint = self.config.concurrency_per_endpoint.max(1);
        let delivery = match self.store.begin_attempt_capped(
            delivery.id,
            started_ms,
            claim_ms,
            per_endpoint,
        )? {
            AttemptClaim::Claimed(d) => d,
            AttemptClaim::Gone => return Ok(true),
            AttemptClaim::EndpointBusy => {
                tracing::debug!(endpoint = %delivery.endpoint_id, delivery = delivery.id, "endpoint busy on other nodes; the delivery waits");
                return Ok(false);
            }
        };
        let endpoint = self.store.get_endpoint(&delivery.endpoint_id)?;
        let started = Instant::now();
        let outcome = match &endpoint {
            Some(ep) if ep.enabled => self.send(ep, &delivery, started_ms).await,
            Some(ep) => Outcome::error(format!(
                "endpoint disabled: {}",
                ep.disabled_reason.as_deref().unwrap_or("by the operator")
            )),
            None => Outcome::error("endpoint deleted".into()),
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let now = self.now();
        let success = outcome.status.is_some_and(|s| (200..300).contains(&s));
        let gone = outcome.status == Some(410);
        let settle = if success {
            Settle::Delivered
        } else if gone || outcome.abort || !endpoint.as_ref().is_some_and(|e| e.enabled) {
            Settle::Failed
        } else {
            match self
                .config
                .retry_delay(delivery.attempts, outcome.retry_after)
            {
                Some(delay) => Settle::RetryAt(now + delay.as_millis() as i64),
                None => Settle::Failed,
            }
        };
        let attempt = Attempt {
            delivery_id: delivery.id,
            attempt: delivery.attempts,
            ts_ms: started_ms,
            status: outcome.status,
            latency_ms,
            error: outcome.error.clone(),
        };
        let settled = self.store.finish_attempt(&attempt, settle)?;
        metrics::counter!(
            "pincer_webhook_attempts_total",
            "result" => if success { "delivered" } else { "failed" }
        )
        .increment(1);
        metrics::histogram!("pincer_webhook_attempt_seconds").record(latency_ms as f64 / 1000.0);
        let span = (&delivery.endpoint_id, delivery.id, delivery.attempts);
        match settle {
            Settle::Delivered => tracing::debug!(
                endpoint = span.0,
                delivery = span.1,
                attempt = span.2,
                latency_ms,
                "webhook delivered"
            ),
            Settle::RetryAt(at) => tracing::info!(
                endpoint = span.0, delivery = span.1, attempt = span.2,
                status = ?outcome.status, error = ?outcome.error, retry_in_ms = at - now,
                "webhook attempt failed; will retry"
            ),
            Settle::Failed => tracing::warn!(
                endpoint = span.0, delivery = span.1, attempt = span.2,
                status = ?outcome.status, error = ?outcome.error,
                "webhook delivery failed; giving up (replayable)"
            ),
        }
        if let Some(ep) = endpoint.filter(|e| e.enabled) {
            if gone {
                self.disable(&ep, "the endpoint answered 410 Gone")?;
            } else if let Some(since) = settled.failing_since_ms
                && now - since >= self.config.disable_after().as_millis() as i64
            {
                let reason = format!(
                    "every attempt failed for {} (since {})",
                    humantime::format_duration(Duration::from_secs(((now - since) / 1000) as u64)),
                    super::rfc3339(since)
                );
                self.disable(&ep, &reason)?;
            }
        }
        Ok(true)
    }

    /// Sign and POST one delivery.
    async fn send(&self, ep: &WebhookEndpoint, d: &Delivery, now_ms: i64) -> Outcome {
        let url = match super::ssrf::parse_endpoint_url(&ep.url) {
            Ok(url) => url,
            Err(e) => return Outcome::error(e.to_string()),
        };
        // IP-literal hosts skip the resolver, so check them here.
        if matches!(
            url.host(),
            Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_))
        ) && let Err(e) = self.guard.check_url(&url).await
        {
            return Outcome::error(e.to_string());
        }
        let mut secrets = Vec::with_capacity(2);
        match Secret::parse(&ep.secret) {
            Ok(s) => secrets.push(s),
            Err(e) => return Outcome::error(format!("endpoint secret unusable: {e}")),
        }
        if let (Some(old), Some(until)) = (&ep.previous_secret, ep.previous_secret_expires_ms)
            && until > now_ms
            && let Ok(old) = Secret::parse(old)
        {
            secrets.push(old);
        }
        let ts = now_ms / 1000;
        let refs: Vec<&Secret> = secrets.iter().collect();
        let signature = signature_header(&refs, &d.msg_id, ts, d.body.as_bytes());
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        put("content-type", "application/json".into());
        put("webhook-id", d.msg_id.clone());
        put("webhook-timestamp", ts.to_string());
        put("webhook-signature", signature);
        put("webhook-attempt", d.attempts.to_string());
        let sent = self
            .client
            .post(url)
            .headers(headers)
            .body(d.body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = (status == 429 || status == 503)
                    .then(|| resp.headers().get("retry-after"))
                    .flatten()
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, now_ms));
                let abort = resp
                    .headers()
                    .get("webhook-delivery")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"abort-message"));
                let error = if (200..300).contains(&status) {
                    None
                } else if (300..400).contains(&status) {
                    let to = resp
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_owned();
                    Some(format!("HTTP {status}: redirect to {to} not followed"))
                } else {
                    let body = resp.text().await.unwrap_or_default();
                    let body: String = body.chars().take(ERROR_BODY_CHARS).collect();
                    Some(format!("HTTP {status}: {}", body.trim()))
                };
                Outcome {
                    status: Some(status),
                    error,
                    retry_after,
                    abort,
                }
            }
            Err(e) => Outcome::error(describe_reqwest(&e)),
        }
    }

    /// Disable an endpoint, log it, and record a `webhook.disabled` event.
    fn disable(&self, ep: &WebhookEndpoint, reason: &str) -> Result<(), StoreError> {
        // One report per disable, even when several attempts in flight
        // reach the same verdict.
        let _one = self.disabling.lock().unwrap_or_else(|p| p.into_inner());
        if !self
            .store
            .get_endpoint(&ep.id)?
            .is_some_and(|current| current.enabled)
        {
            return Ok(());
        }
        if self
            .store
            .set_endpoint_enabled(&ep.id, Some(false), Some(reason), self.now())?
            .is_none()
        {
            return Ok(());
        }
        tracing::warn!(endpoint = %ep.id, url = %ep.url, reason, "webhook endpoint disabled");
        self.events.append_event(
            "webhook.disabled",
            None,
            serde_json::json!({"webhook": ep.id, "url": ep.url, "reason": reason}),
        )?;
        Ok(())
    }

    fn prune(&self) {
        let before = self.now() - self.config.retention().as_millis() as i64;
        match self.store.prune_deliveries(before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "pruned old webhook deliveries"),
            Err(e) => tracing::warn!(error = %e, "pruning webhook deliveries"),
        }
        match self.events.prune_events(before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "pruned old event-log rows"),
            Err(e) => tracing::warn!(error = %e, "pruning the event log"),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms() as i64
    }

    fn cluster_busy(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.cluster_busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn busy_total(&self) -> usize {
        *self.in_flight.borrow()
    }
}

impl Outcome {
    fn error(error: String) -> Self {
        Outcome {
            status: None,
            error: Some(error),
            retry_after: None,
            abort: false,
        }
    }
}

/// A `Retry-After` value (delay seconds or an HTTP date) as a delay from
/// `now_ms`.
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(Duration::from_millis(
        at_ms.saturating_sub(now_ms).max(0) as u64
    ))
}

/// A reqwest error with its causes, and a plain word for the common cases.
fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        // Causes often repeat their own cause in their message.
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now),
            Some(Duration::from_secs(20))
        );
        // A date in the past means now.
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
