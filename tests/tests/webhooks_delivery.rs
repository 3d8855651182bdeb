//! The webhook dispatcher against real parts: a SQLite file, the real HTTP
//! client and SSRF guard, and a scriptable receiver on loopback that checks
//! signatures with the `standardwebhooks` crate. Time is a manual clock:
//! each test moves it and calls `run_due`, so the retry schedule is checked
//! exactly with no sleeping.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use pincer::clock::{Clock, ManualClock, SystemClock};
use pincer::netguard::NetGuard;
use pincer::store::{Delivery, DeliveryStatus, SessionStore, SqliteStore, WebhookStore};
use pincer::webhooks::ssrf::{Resolver, SsrfGuard, StaticResolver, SystemResolver};
use pincer::webhooks::{Dispatcher, NewWebhook, WebhookConfig, WebhookError, Webhooks};
use pincer_tests::webhook_receiver::{Receiver, Reply};
use serde_json::json;

struct Rig {
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    hooks: Arc<Webhooks>,
    dispatcher: Arc<Dispatcher>,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Register an endpoint; its id.
    async fn endpoint(&self, url: String, events: &[&str]) -> String {
        self.hooks.add(hook(url, events)).await.unwrap().endpoint.id
    }
    /// The endpoint's only delivery.
    fn delivery(&self, ep: &str) -> Delivery {
        let list = self.store.list_deliveries(ep, None, None, 10).unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        list[0].clone()
    }
}

fn loopback() -> NetGuard {
    NetGuard::new(NetGuard::parse_cidrs("127.0.0.0/8").unwrap())
}

fn rig_with(config: WebhookConfig, registry_guard: SsrfGuard, delivery_guard: SsrfGuard) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("pincer.db")).unwrap());
    // Ahead of the system clock, so events the store stamps with the system
    // time are due at once.
    let clock = ManualClock::new(SystemClock.now_ms() + 60_000);
    let hooks = Webhooks::new(
        store.clone(),
        registry_guard,
        clock.clone(),
        config.rotation_grace(),
    );
    let dispatcher = Dispatcher::new(
        store.clone(),
        store.clone(),
        config,
        clock.clone(),
        delivery_guard,
    )
    .unwrap();
    Rig {
        store,
        clock,
        hooks,
        dispatcher,
        _dir: dir,
    }
}

fn rig(config: WebhookConfig) -> Rig {
    rig_with(
        config,
        SsrfGuard::new(loopback(), Arc::new(SystemResolver)),
        SsrfGuard::new(loopback(), Arc::new(SystemResolver)),
    )
}

fn hook(url: String, events: &[&str]) -> NewWebhook {
    NewWebhook {
        url,
        events: Some(events.iter().map(|s| s.to_string()).collect()),
        description: None,
        enabled: None,
    }
}

fn plugin_loaded(store: &SqliteStore, n: u32) {
    store
        .append_event(
            "plugin.loaded",
            None,
            json!({"plugin": "echo", "version": format!("1.0.{n}")}),
        )
        .unwrap();
}

fn now(rig: &Rig) -> i64 {
    rig.clock.now_ms() as i64
}

#[tokio::test]
async fn flaky_receiver_follows_the_schedule_and_retry_after() {
    let rx = Receiver::start().await;
    rx.script([
        Reply::Status(500),
        Reply::Status(500),
        Reply::With(429, vec![("retry-after", "7".into())]),
        Reply::Status(200),
    ]);
    let rig = rig(WebhookConfig::default());
    let created = rig.hooks.add(hook(rx.url(), &["plugin.*"])).await.unwrap();
    let ep = created.endpoint.id.clone();
    plugin_loaded(&rig.store, 1);

    // Attempt 1 at once: 500, retry 5 s later (+-10% jitter).
    let t1 = now(&rig);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let d = rig.delivery(&ep);
    assert_eq!(
        (d.status, d.attempts, d.last_status),
        (DeliveryStatus::Pending, 1, Some(500))
    );
    assert!(
        (t1 + 4_500..=t1 + 5_500).contains(&d.next_attempt_ms),
        "{}",
        d.next_attempt_ms - t1
    );

    // Not due a millisecond early.
    rig.clock.set(d.next_attempt_ms as u64 - 1);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 0);

    // Attempt 2: 500 again, retry 5 min later.
    rig.clock.set(d.next_attempt_ms as u64);
    let t2 = now(&rig);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let d = rig.delivery(&ep);
    assert_eq!(d.attempts, 2);
    assert!(
        (t2 + 270_000..=t2 + 330_000).contains(&d.next_attempt_ms),
        "{}",
        d.next_attempt_ms - t2
    );

    // Attempt 3: 429 with Retry-After: 7 replaces the 30 min step.
    rig.clock.set(d.next_attempt_ms as u64);
    let t3 = now(&rig);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let d = rig.delivery(&ep);
    assert_eq!((d.attempts, d.last_status), (3, Some(429)));
    assert_eq!(d.next_attempt_ms, t3 + 7_000);
    assert!(rig.hooks.get(&ep).unwrap().failing_since_ms == Some(t1));

    // Attempt 4: delivered; the failing streak ends.
    rig.clock.advance(7_000);
    let t4 = now(&rig);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let d = rig.delivery(&ep);
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 4));
    assert_eq!(rig.hooks.get(&ep).unwrap().failing_since_ms, None);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 0);

    // The log has every attempt; the receiver saw one id, four attempts,
    // each stamped with the clock at that attempt and signed.
    let log = rig.store.list_attempts(d.id).unwrap();
    let statuses: Vec<_> = log.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(429), Some(200)]);
    assert_eq!(
        log.iter().map(|a| a.ts_ms).collect::<Vec<_>>(),
        [t1, t2, t3, t4]
    );
    let got = rx.received();
    assert_eq!(got.len(), 4);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.msg_id(), d.msg_id);
        assert_eq!(r.attempt(), i as u32 + 1);
        assert_eq!(r.timestamp(), [t1, t2, t3, t4][i] / 1000);
        r.verify_signature(&created.secret).unwrap();
        assert_eq!(r.kind(), "plugin.loaded");
        assert_eq!(r.json()["data"]["plugin"], "echo");
        assert_eq!(r.json()["data"]["seq"], 1);
    }
}

#[tokio::test]
async fn schedule_exhaustion_fails_the_delivery_and_replay_resends_it() {
    let rx = Receiver::start().await;
    rx.set_default(Reply::Status(503));
    let config = WebhookConfig {
        retry_schedule_secs: vec![1, 2],
        jitter: 0.0,
        ..WebhookConfig::default()
    };
    let rig = rig(config);
    let ep = rig.endpoint(rx.url(), &["*"]).await;
    plugin_loaded(&rig.store, 1);
    let since = now(&rig) - 120_000;
    for step in [0, 1_000, 2_000] {
        rig.clock.advance(step);
        assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    }
    let d = &rig.delivery(&ep);
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Failed, 3));
    assert!(d.last_error.as_deref().unwrap().contains("503"), "{d:?}");
    rig.clock.advance(3_600_000);
    assert_eq!(
        rig.dispatcher.run_due().await.unwrap(),
        0,
        "no attempt after giving up"
    );

    // Replay of everything failed since a time: a fourth attempt, same id.
    rx.set_default(Reply::Status(204));
    assert_eq!(rig.hooks.replay(&ep, None, Some(since)).unwrap(), 1);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let d2 = &rig.delivery(&ep);
    assert_eq!((d2.status, d2.attempts), (DeliveryStatus::Delivered, 4));
    let got = rx.received();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|r| r.msg_id() == d.msg_id));
    assert_eq!(got[3].attempt(), 4);

    // Replaying one delivery by id works too; an unknown id is refused.
    assert_eq!(rig.hooks.replay(&ep, Some(d.id), None).unwrap(), 1);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    assert!(matches!(
        rig.hooks.replay(&ep, Some(999_999), None),
        Err(WebhookError::NotFound(_))
    ));
    assert!(rig.hooks.replay(&ep, None, None).is_err());
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_reports_it() {
    let rx = Receiver::start().await;
    rx.script([Reply::Status(410)]);
    let rig = rig(WebhookConfig::default());
    let ep = rig.endpoint(rx.url(), &["plugin.*"]).await;
    plugin_loaded(&rig.store, 1);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);

    let endpoint = rig.hooks.get(&ep).unwrap();
    assert!(!endpoint.enabled);
    assert!(endpoint.disabled_reason.as_deref().unwrap().contains("410"));
    let d = &rig.delivery(&ep);
    assert_eq!(d.status, DeliveryStatus::Failed);
    let disabled: Vec<_> = rig
        .store
        .events_after(0, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "webhook.disabled")
        .collect();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].data["webhook"], ep.as_str());

    // Nothing more is queued or sent to it.
    plugin_loaded(&rig.store, 2);
    rig.delivery(&ep); // still only the first
    rig.clock.advance(86_400_000);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 0);
    assert_eq!(rx.received().len(), 1);
    // Replay needs it enabled again.
    assert!(matches!(
        rig.hooks.replay(&ep, Some(d.id), None),
        Err(WebhookError::Invalid(_))
    ));
}

#[tokio::test]
async fn an_endpoint_failing_for_the_configured_period_is_disabled() {
    let rx = Receiver::start().await;
    rx.set_default(Reply::Status(500));
    let config = WebhookConfig {
        retry_schedule_secs: vec![600; 20],
        jitter: 0.0,
        disable_after_secs: 3_600,
        ..WebhookConfig::default()
    };
    let rig = rig(config);
    let ep = rig.endpoint(rx.url(), &["plugin.loaded"]).await;
    plugin_loaded(&rig.store, 1);
    let start = now(&rig);
    let mut attempts = 0;
    while rig.hooks.get(&ep).unwrap().enabled {
        assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
        attempts += 1;
        rig.clock.advance(600_000);
        assert!(attempts < 20, "never disabled");
    }
    // Attempts at 0, 10, ..., 60 min: the one at 60 min finds an hour of
    // failure and disables.
    assert_eq!(attempts, 7);
    let endpoint = rig.hooks.get(&ep).unwrap();
    assert!(
        endpoint
            .disabled_reason
            .unwrap()
            .contains("every attempt failed")
    );
    assert_eq!(endpoint.failing_since_ms, Some(start));

    // Enabling clears the streak; replay delivers.
    let endpoint = rig.hooks.toggle(&ep, Some(true)).unwrap();
    assert!(endpoint.enabled && endpoint.failing_since_ms.is_none());
    rx.set_default(Reply::Status(200));
    assert_eq!(rig.hooks.replay(&ep, None, Some(0)).unwrap(), 1);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let d = &rig.delivery(&ep);
    assert_eq!(d.status, DeliveryStatus::Delivered);
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_for_the_grace_period() {
    let rx = Receiver::start().await;
    let rig = rig(WebhookConfig::default());
    let first = rig.hooks.add(hook(rx.url(), &["plugin.*"])).await.unwrap();
    let ep = first.endpoint.id.clone();
    let second = rig
        .hooks
        .rotate(&ep, Some(Duration::from_secs(3_600)))
        .unwrap();
    assert_ne!(first.secret, second.secret);
    assert!(second.secret.starts_with("whsec_"));

    plugin_loaded(&rig.store, 1);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let r = &rx.received()[0];
    assert_eq!(
        r.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    r.verify_signature(&first.secret).unwrap();
    r.verify_signature(&second.secret).unwrap();

    // After the grace period only the new secret signs.
    rig.clock.advance(3_600_001);
    plugin_loaded(&rig.store, 2);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let r = &rx.received()[1];
    assert_eq!(
        r.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    r.verify_signature(&second.secret).unwrap();
    assert!(r.verify_signature(&first.secret).is_err());
}

#[tokio::test]
async fn redirects_are_failures_and_are_not_followed() {
    let rx = Receiver::start().await;
    rx.script([Reply::With(
        302,
        vec![(
            "location",
            "http://169.254.169.254/latest/meta-data/".into(),
        )],
    )]);
    let rig = rig(WebhookConfig::default());
    let ep = rig.endpoint(rx.url(), &["*"]).await;
    plugin_loaded(&rig.store, 1);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let d = &rig.delivery(&ep);
    assert_eq!(
        (d.status, d.last_status),
        (DeliveryStatus::Pending, Some(302))
    );
    let error = d.last_error.clone().unwrap();
    assert!(
        error.contains("redirect") && error.contains("169.254.169.254"),
        "{error}"
    );
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test]
async fn the_receiver_can_stop_retries() {
    let rx = Receiver::start().await;
    rx.script([Reply::With(
        500,
        vec![("webhook-delivery", "abort-message".into())],
    )]);
    let rig = rig(WebhookConfig::default());
    let ep = rig.endpoint(rx.url(), &["*"]).await;
    plugin_loaded(&rig.store, 1);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let d = &rig.delivery(&ep);
    assert_eq!(d.status, DeliveryStatus::Failed);
}

/// A name that resolved to a public address when it was registered and to a
/// private one at delivery time (DNS rebinding) is refused at delivery,
/// before any connection.
#[tokio::test]
async fn delivery_time_resolution_is_checked_again() {
    let public: Arc<dyn Resolver> = Arc::new(StaticResolver::new([(
        "hooks.example.com",
        vec!["93.184.216.34".parse::<IpAddr>().unwrap()],
    )]));
    let rebound: Arc<dyn Resolver> = Arc::new(StaticResolver::new([(
        "hooks.example.com",
        vec!["10.0.0.1".parse::<IpAddr>().unwrap()],
    )]));
    let rig = rig_with(
        WebhookConfig::default(),
        SsrfGuard::new(NetGuard::default(), public),
        SsrfGuard::new(NetGuard::default(), rebound),
    );
    let ep = rig
        .endpoint("http://hooks.example.com/in".into(), &["*"])
        .await;
    plugin_loaded(&rig.store, 1);
    assert_eq!(rig.dispatcher.run_due().await.unwrap(), 1);
    let d = &rig.delivery(&ep);
    assert_eq!((d.status, d.last_status), (DeliveryStatus::Pending, None));
    let error = d.last_error.clone().unwrap();
    assert!(error.contains("10.0.0.1"), "{error}");
}

/// Registration refuses every SSRF vector with a clear error.
#[tokio::test]
async fn registration_refuses_ssrf_vectors_and_bad_input() {
    let resolver: Arc<dyn Resolver> = Arc::new(StaticResolver::new([
        (
            "internal.example",
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()],
        ),
        ("localhost", vec!["127.0.0.1".parse::<IpAddr>().unwrap()]),
        (
            "metadata.example",
            vec!["169.254.169.254".parse::<IpAddr>().unwrap()],
        ),
    ]));
    let guard = SsrfGuard::new(NetGuard::default(), resolver);
    let rig = rig_with(WebhookConfig::default(), guard.clone(), guard);
    for url in [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/",
        "http://0/",
        "http://[::]/",
        "http://10.0.0.1/",
        "http://100.64.0.1/",
        "http://192.168.0.1/",
        "http://172.16.0.1/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://internal.example/",
        "http://localhost:8080/",
        "http://metadata.example/",
    ] {
        let err = rig.hooks.add(hook(url.into(), &["*"])).await.unwrap_err();
        assert!(matches!(err, WebhookError::Url(_)), "{url}: {err}");
    }
    for (url, words) in [
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("javascript:alert(1)", ""),
        ("not a url", ""),
        ("http://user:pw@example.com/", "credentials"),
    ] {
        let err = rig.hooks.add(hook(url.into(), &["*"])).await.unwrap_err();
        assert!(matches!(err, WebhookError::Url(_)), "{url}: {err}");
        assert!(
            err.to_string().to_lowercase().contains(words),
            "{url}: {err}"
        );
    }
    let err = rig
        .hooks
        .add(hook("https://example.org/".into(), &["message.nope"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("message.nope"), "{err}");
    assert!(
        rig.hooks.list().unwrap().is_empty(),
        "nothing was registered"
    );
}

/// A receiver that never answers ties up only its own endpoint's slots:
/// another endpoint gets every delivery meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_receiver_delays_only_its_own_endpoint() {
    let stuck = Receiver::start().await;
    stuck.set_default(Reply::Hold);
    let healthy = Receiver::start().await;
    let rig = rig(WebhookConfig::default());
    let stuck_ep = rig.endpoint(stuck.url(), &["*"]).await;
    rig.hooks.add(hook(healthy.url(), &["*"])).await.unwrap();
    let loop_task = rig.dispatcher.spawn();
    for n in 0..10 {
        plugin_loaded(&rig.store, n);
    }
    // All ten reach the healthy endpoint while the stuck one holds its
    // four concurrent attempts open.
    let got = healthy.wait_for(10).await;
    assert_eq!(got.len(), 10);
    let held = stuck.wait_for(4).await;
    assert_eq!(held.len(), 4, "at most 4 attempts in flight per endpoint");
    let waiting = rig
        .store
        .list_deliveries(&stuck_ep, Some(DeliveryStatus::Pending), None, 100)
        .unwrap();
    assert_eq!(waiting.len(), 6);
    // Once it answers, the rest follow.
    stuck.set_default(Reply::Status(200));
    stuck.release();
    assert_eq!(stuck.wait_for(10).await.len(), 10);
    loop_task.abort();
}
