//! Messages per second and latency through each channel, end to end: the
//! fake creates a user's message (a queued Telegram update, or a signed
//! WhatsApp push), the gateway (the real plugin in its sandbox, the durable
//! inbox, the echo agent, the outbox) answers it, and the fake records the
//! answer (`sendMessage`, `POST .../messages`). The same fakes driven by a
//! bare bot ([`crate::fakes::bare_bot`]) are the baseline.
//!
//! Every message comes from its own chat (its own sender and session), so
//! the gateway's per-conversation pacing, per-sender limits and session
//! queues never delay it: the figures are the gateway's own cost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;

use super::setup;
use super::{Sizes, mode_guard};
use crate::bench::Lat;
use crate::fakes::bare_bot;
use crate::fakes::recorder::Call;
use crate::fakes::slack::{FakeSlack, SlackConfig, dm_channel};
use crate::fakes::telegram::{Chat, FakeTelegram, TelegramConfig, User, UserMessage};
use crate::fakes::whatsapp::{Contact, FakeWhatsApp, WhatsAppConfig};

/// WhatsApp pushes in flight at once in the burst (Meta delivers
/// concurrently).
const WA_PUSHERS: usize = 8;

/// The long-poll `timeout` of the bare Telegram bot, in seconds.
const BARE_POLL_S: u64 = 25;

/// One measured phase: how many messages, their rate, their latencies.
#[derive(Debug, Clone)]
pub(super) struct Flow {
    /// Messages answered.
    pub(super) n: usize,
    /// Messages per second, from the first creation to the last receipt.
    pub(super) rate: f64,
    /// Median creation → receipt.
    pub(super) p50: Duration,
    /// 99th percentile creation → receipt.
    pub(super) p99: Duration,
    /// Answers accepted more than once for one message (should be 0).
    pub(super) doubled: usize,
}

/// A channel's burst (all messages at once) and sequential (one at a time)
/// phases.
#[derive(Debug, Clone)]
pub(super) struct Measured {
    /// All messages created at once.
    pub(super) burst: Flow,
    /// One message at a time, each after the previous answer.
    pub(super) sequential: Flow,
}

/// Latencies and rate from creation times and receipt times by text.
pub(super) fn flow(created: &[(String, Instant)], answers: &Answers) -> anyhow::Result<Flow> {
    let receipts = &answers.first;
    let mut lat = Vec::with_capacity(created.len());
    let mut last = None::<Instant>;
    for (text, at) in created {
        let got = receipts
            .get(text)
            .with_context(|| format!("no answer carried `{text}`"))?;
        lat.push(got.saturating_duration_since(*at));
        last = Some(last.map_or(*got, |l| l.max(*got)));
    }
    let first = created.first().map(|(_, t)| *t);
    let span = match (first, last) {
        (Some(f), Some(l)) => l.saturating_duration_since(f),
        _ => Duration::ZERO,
    };
    let mut lat = Lat(lat);
    Ok(Flow {
        n: created.len(),
        rate: if span.is_zero() {
            0.0
        } else {
            created.len() as f64 / span.as_secs_f64()
        },
        p50: lat.pct(0.5),
        p99: lat.pct(0.99),
        doubled: answers.doubled,
    })
}

/// The accepted answers of a phase.
pub(super) struct Answers {
    /// When the first answer carrying each text arrived.
    first: HashMap<String, Instant>,
    /// Accepted answers beyond the first for one text.
    doubled: usize,
}

/// The accepted answers among `calls`, by their text.
pub(super) fn receipts(calls: &[Call], text: impl Fn(&Call) -> Option<&str>) -> Answers {
    let mut first = HashMap::new();
    let mut doubled = 0;
    for c in calls.iter().filter(|c| c.status.is_some_and(|s| s < 300)) {
        if let Some(t) = text(c) {
            match first.entry(t.to_string()) {
                std::collections::hash_map::Entry::Occupied(_) => doubled += 1,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(c.at);
                }
            }
        }
    }
    Answers { first, doubled }
}

/// Every `sendMessage` call so far, once each has its answer recorded (the
/// fake updates the chat before it records the answer).
async fn all_answered_tg(fake: &FakeTelegram) -> Vec<Call> {
    let n = fake.calls_of("sendMessage").len();
    fake.wait_for_calls("sendMessage", n).await
}

/// Every `messages` call so far, once each has its answer recorded.
async fn all_answered_wa(wa: &FakeWhatsApp) -> Vec<Call> {
    let n = wa.calls_of("messages").len();
    wa.wait_for_calls("messages", n).await
}

/// Every `chat.postMessage` call so far, once each has its answer recorded.
async fn all_answered_slack(slack: &FakeSlack) -> Vec<Call> {
    let n = slack.calls_of("chat.postMessage").len();
    slack.wait_for_calls("chat.postMessage", n).await
}

fn slack_text(c: &Call) -> Option<&str> {
    c.params["text"].as_str()
}

fn tg_text(c: &Call) -> Option<&str> {
    c.params["text"].as_str()
}

fn wa_text(c: &Call) -> Option<&str> {
    c.params["text"]["body"].as_str()
}

/// A Telegram fake for the throughput runs.
pub(super) async fn telegram_fake() -> FakeTelegram {
    FakeTelegram::start_with(TelegramConfig {
        wait_guard: mode_guard(),
        ..Default::default()
    })
    .await
}

/// A WhatsApp fake for the throughput runs.
pub(super) async fn whatsapp_fake() -> FakeWhatsApp {
    FakeWhatsApp::start(WhatsAppConfig {
        wait_guard: mode_guard(),
        ..Default::default()
    })
    .await
}

/// A Slack fake for the throughput runs.
pub(super) async fn slack_fake() -> FakeSlack {
    FakeSlack::start(SlackConfig {
        wait_guard: mode_guard(),
        ..Default::default()
    })
    .await
}

/// How the Slack fake delivers events.
#[derive(Clone, Copy)]
enum Via<'a> {
    /// Signed Events API pushes to this URL.
    Push(&'a str),
    /// `events_api` envelopes on this Socket Mode connection.
    Socket(u64),
}

/// Deliver one direct message from `user` (a push must be acknowledged).
async fn slack_push(slack: &FakeSlack, via: Via<'_>, user: &str, text: &str) -> anyhow::Result<()> {
    let push = slack.dm(user, text);
    match via {
        Via::Push(url) => {
            let answer = slack.push(url, &push).await;
            anyhow::ensure!(
                answer.status == 200,
                "push refused: {} {}",
                answer.status,
                answer.body
            );
        }
        Via::Socket(conn) => {
            slack.envelope(conn, &push, 0);
        }
    }
    Ok(())
}

/// Drive the fake's Slack app (served at `url` by a gateway or a bare
/// bot), as [`drive_whatsapp`]: signed Events API pushes of direct
/// messages, each from a fresh user (its own DM channel) from `next_user`.
async fn drive_slack(
    slack: &FakeSlack,
    url: Via<'_>,
    sizes: &Sizes,
    next_user: &mut u64,
) -> anyhow::Result<Measured> {
    let mut user = || {
        *next_user += 1;
        format!("U{:010}", *next_user)
    };
    let warm = user();
    slack_push(slack, url, &warm, "warm").await?;
    slack.wait_for_posted(&dm_channel(&warm), 1).await;
    slack.clear_records();

    let batch: Vec<(String, String)> = (0..sizes.messages)
        .map(|i| (user(), format!("b{i}")))
        .collect();
    let created: Vec<anyhow::Result<(String, Instant)>> = futures::stream::iter(&batch)
        .map(|(u, text)| async move {
            let at = Instant::now();
            slack_push(slack, url, u, text).await?;
            Ok((text.clone(), at))
        })
        .buffered(WA_PUSHERS)
        .collect()
        .await;
    let created: Vec<(String, Instant)> = created.into_iter().collect::<anyhow::Result<_>>()?;
    for (u, _) in &batch {
        slack.wait_for_posted(&dm_channel(u), 1).await;
    }
    let burst = flow(
        &created,
        &receipts(&all_answered_slack(slack).await, slack_text),
    )?;
    slack.clear_records();

    let mut created = Vec::with_capacity(sizes.sequential);
    for i in 0..sizes.sequential {
        let u = user();
        let text = format!("s{i}");
        created.push((text.clone(), Instant::now()));
        slack_push(slack, url, &u, &text).await?;
        slack.wait_for_posted(&dm_channel(&u), 1).await;
    }
    let sequential = flow(
        &created,
        &receipts(&all_answered_slack(slack).await, slack_text),
    )?;
    slack.clear_records();
    Ok(Measured { burst, sequential })
}

/// Drive the default bot of `fake` (served by a gateway or a bare bot):
/// one warm-up message, the burst, then the sequential phase. Chats get
/// fresh ids from `next_chat`.
async fn drive_telegram(
    fake: &FakeTelegram,
    sizes: &Sizes,
    next_chat: &mut i64,
) -> anyhow::Result<Measured> {
    let mut chat = || {
        *next_chat += 1;
        let id = *next_chat;
        (Chat::private(id, "Bench"), User::new(id, "Bench"))
    };
    let (c, u) = chat();
    fake.push(UserMessage::text(&c, &u, "warm"));
    fake.wait_for_sent(c.id, 1).await;
    fake.clear_records();

    // Each chat gets one message; an answer counts once the fake accepted
    // it (a refused send retried later is not an answer yet).
    let mut created = Vec::with_capacity(sizes.messages);
    let mut chats = Vec::with_capacity(sizes.messages);
    for i in 0..sizes.messages {
        let (c, u) = chat();
        let text = format!("b{i}");
        created.push((text.clone(), Instant::now()));
        fake.push(UserMessage::text(&c, &u, &text));
        chats.push(c.id);
    }
    for id in chats {
        fake.wait_for_sent(id, 1).await;
    }
    let calls = all_answered_tg(fake).await;
    let burst = flow(&created, &receipts(&calls, tg_text))?;
    fake.clear_records();

    let mut created = Vec::with_capacity(sizes.sequential);
    for i in 0..sizes.sequential {
        let (c, u) = chat();
        let text = format!("s{i}");
        created.push((text.clone(), Instant::now()));
        fake.push(UserMessage::text(&c, &u, &text));
        fake.wait_for_sent(c.id, 1).await;
    }
    let calls = all_answered_tg(fake).await;
    let sequential = flow(&created, &receipts(&calls, tg_text))?;
    fake.clear_records();
    Ok(Measured { burst, sequential })
}

/// Push one text from `contact` and check it was accepted.
async fn wa_push(
    wa: &FakeWhatsApp,
    url: &str,
    contact: &Contact,
    text: &str,
) -> anyhow::Result<()> {
    let push = wa.batch().text(contact, text).build();
    let answer = wa.push(url, &push).await;
    anyhow::ensure!(
        answer.status == 200,
        "push refused: {} {}",
        answer.status,
        answer.body
    );
    Ok(())
}

/// Drive the WhatsApp fake's account (served at `url` by a gateway or a
/// bare bot), as [`drive_telegram`]; contacts get fresh numbers from
/// `next_contact`.
async fn drive_whatsapp(
    wa: &FakeWhatsApp,
    url: &str,
    sizes: &Sizes,
    next_contact: &mut u64,
) -> anyhow::Result<Measured> {
    let mut contact = || {
        *next_contact += 1;
        Contact::new(&format!("49{:010}", *next_contact), "Bench")
    };
    let warm = contact();
    wa_push(wa, url, &warm, "warm").await?;
    wa.wait_for_sent(&warm.wa_id, 1).await;
    wa.clear_records();

    let batch: Vec<(Contact, String)> = (0..sizes.messages)
        .map(|i| (contact(), format!("b{i}")))
        .collect();
    let created: Vec<anyhow::Result<(String, Instant)>> = futures::stream::iter(&batch)
        .map(|(c, text)| async move {
            let at = Instant::now();
            wa_push(wa, url, c, text).await?;
            Ok((text.clone(), at))
        })
        .buffered(WA_PUSHERS)
        .collect()
        .await;
    let created: Vec<(String, Instant)> = created.into_iter().collect::<anyhow::Result<_>>()?;
    for (c, _) in &batch {
        wa.wait_for_sent(&c.wa_id, 1).await;
    }
    let burst = flow(&created, &receipts(&all_answered_wa(wa).await, wa_text))?;
    wa.clear_records();

    let mut created = Vec::with_capacity(sizes.sequential);
    for i in 0..sizes.sequential {
        let c = contact();
        let text = format!("s{i}");
        created.push((text.clone(), Instant::now()));
        wa_push(wa, url, &c, &text).await?;
        wa.wait_for_sent(&c.wa_id, 1).await;
    }
    let sequential = flow(&created, &receipts(&all_answered_wa(wa).await, wa_text))?;
    wa.clear_records();
    Ok(Measured { burst, sequential })
}

/// Telegram in poll mode through the gateway.
pub(super) async fn telegram_poll(sizes: &Sizes) -> anyhow::Result<Measured> {
    let fake = telegram_fake().await;
    let dir = setup::DataDir::new()?;
    setup::install_telegram(&dir.path().join("plugins"), &["telegram".into()])?;
    let mut opts = setup::options(dir.path(), 0)?;
    opts.plugins.insert(
        "telegram".into(),
        setup::telegram_settings(&fake, &fake, &[]),
    );
    let running = setup::start(opts).await?;
    fake.wait_for_pollers(1).await;
    let mut chats = 1_000_000;
    let r = drive_telegram(&fake, sizes, &mut chats).await;
    running.stop().await?;
    r
}

/// Telegram in webhook mode through the gateway (the fake delivers one
/// update at a time, in order, as Telegram does per bot).
pub(super) async fn telegram_webhook(sizes: &Sizes) -> anyhow::Result<Measured> {
    let fake = telegram_fake().await;
    let dir = setup::DataDir::new()?;
    setup::install_telegram(&dir.path().join("plugins"), &["telegram".into()])?;
    let port = setup::free_port()?;
    let hook = format!("http://127.0.0.1:{port}/channels/telegram/webhook");
    let mut opts = setup::options(dir.path(), port)?;
    opts.plugins.insert(
        "telegram".into(),
        setup::telegram_settings(&fake, &fake, &[("mode", "webhook"), ("webhook_url", &hook)]),
    );
    let running = setup::start(opts).await?;
    fake.wait_for_calls("setWebhook", 1).await;
    let mut chats = 2_000_000;
    let r = drive_telegram(&fake, sizes, &mut chats).await;
    running.stop().await?;
    r
}

/// The bare Telegram bot (long polling) against the same fake.
pub(super) async fn telegram_bare(sizes: &Sizes) -> anyhow::Result<Measured> {
    let fake = telegram_fake().await;
    let _bot = bare_bot::telegram(fake.api_url(), BARE_POLL_S);
    fake.wait_for_pollers(1).await;
    let mut chats = 3_000_000;
    drive_telegram(&fake, sizes, &mut chats).await
}

/// WhatsApp through the gateway.
pub(super) async fn whatsapp(sizes: &Sizes) -> anyhow::Result<Measured> {
    let wa = whatsapp_fake().await;
    let dir = setup::DataDir::new()?;
    setup::install_whatsapp(&dir.path().join("plugins"), wa.base_url())?;
    let mut opts = setup::options(dir.path(), 0)?;
    opts.plugins
        .insert("whatsapp".into(), setup::whatsapp_settings(&wa));
    let running = setup::start(opts).await?;
    let url = format!("http://{}/channels/whatsapp/webhook", running.addr);
    let mut contacts = 1_000_000;
    let r = drive_whatsapp(&wa, &url, sizes, &mut contacts).await;
    running.stop().await?;
    r
}

/// The bare WhatsApp bot against the same fake.
pub(super) async fn whatsapp_bare(sizes: &Sizes) -> anyhow::Result<Measured> {
    let wa = whatsapp_fake().await;
    let c = wa.config().clone();
    let bot = bare_bot::whatsapp(wa.messages_url(), c.access_token, c.app_secret).await;
    let mut contacts = 2_000_000;
    drive_whatsapp(&wa, bot.url(), sizes, &mut contacts).await
}

/// Slack (Events API) through the gateway.
pub(super) async fn slack_events(sizes: &Sizes) -> anyhow::Result<Measured> {
    let slack = slack_fake().await;
    let dir = setup::DataDir::new()?;
    setup::install_slack(&dir.path().join("plugins"), slack.base_url())?;
    let mut opts = setup::options(dir.path(), 0)?;
    opts.plugins
        .insert("slack".into(), setup::slack_settings(&slack));
    let running = setup::start(opts).await?;
    let url = format!("http://{}/channels/slack/webhook", running.addr);
    let mut users = 1_000_000;
    let r = drive_slack(&slack, Via::Push(&url), sizes, &mut users).await;
    running.stop().await?;
    r
}

/// The bare Slack bot against the same fake.
pub(super) async fn slack_bare(sizes: &Sizes) -> anyhow::Result<Measured> {
    let slack = slack_fake().await;
    let c = slack.config().clone();
    let bot =
        crate::fakes::slack::bare::start(slack.api_url(), c.bot_token, c.signing_secret).await;
    let mut users = 2_000_000;
    drive_slack(&slack, Via::Push(bot.url()), sizes, &mut users).await
}

/// Slack in Socket Mode through the gateway (the host's WebSocket session).
pub(super) async fn slack_socket(sizes: &Sizes) -> anyhow::Result<Measured> {
    let slack = slack_fake().await;
    let dir = setup::DataDir::new()?;
    setup::install_slack(&dir.path().join("plugins"), slack.base_url())?;
    let mut opts = setup::options(dir.path(), 0)?;
    let mut settings = setup::slack_settings(&slack);
    settings.config.insert("mode".into(), "socket".into());
    settings.allowed_hosts = Some(vec![
        slack.base_url().to_string(),
        slack.socket_base().to_string(),
    ]);
    // One acknowledgement frame per envelope: the host's default frame
    // budget (120 a minute, Discord's) would refuse most of the burst's.
    settings.socket = Some(crate::plugins::SocketOverrides {
        frames_per_window: Some(1_000_000),
        ..Default::default()
    });
    opts.plugins.insert("slack".into(), settings);
    let running = setup::start(opts).await?;
    let conn = slack.wait_for_open(1).await[0];
    let mut users = 3_000_000;
    let r = drive_slack(&slack, Via::Socket(conn), sizes, &mut users).await;
    running.stop().await?;
    r
}

/// The bare Socket Mode bot against the same fake.
pub(super) async fn slack_socket_bare(sizes: &Sizes) -> anyhow::Result<Measured> {
    let slack = slack_fake().await;
    let c = slack.config().clone();
    let _bot = crate::fakes::slack::bare::socket(slack.api_url(), c.bot_token, c.app_token);
    let conn = slack.wait_for_open(1).await[0];
    let mut users = 4_000_000;
    drive_slack(&slack, Via::Socket(conn), sizes, &mut users).await
}
