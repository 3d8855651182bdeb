//! `pincer bench channels`: the Telegram and WhatsApp channels end to end
//! through the real gateway (bundled plugins in their sandboxes, the echo
//! agent, the durable inbox and outbox) against the loopback fakes, each
//! figure beside the same fake driven by a bare bot in the same run.
//!
//! - [`throughput`]: messages per second and creation → answer latency for
//!   Telegram (poll and webhook), WhatsApp and Slack (Events API and
//!   Socket Mode);
//! - [`discord`]: the same for Discord (Gateway WebSocket held by the
//!   host, replies by REST);
//! - [`density`]: many idle long-polling Telegram bots: memory per bot and
//!   idle CPU, at two sizes to separate fixed from per-bot cost;
//! - [`sockets`]: memory per idle host-managed WebSocket session (one
//!   socket channel account each) beside plain client sockets.
//!
//! The density runs each get a fresh process (this binary with a hidden
//! `--part`), so memory freed by one run cannot hide another's; the smoke
//! test runs them in-process. Results are printed as Markdown tables
//! (copied into `BENCHMARKS.md`).

mod density;
mod discord;
mod procstat;
mod setup;
mod sockets;
mod throughput;

use std::time::Duration;

use anyhow::Context;

use super::{ms, ratio};
use density::{Density, Driver};
use throughput::Measured;

/// How big a run is.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Messages in each burst.
    pub messages: usize,
    /// Messages sent one at a time for the latency phase.
    pub sequential: usize,
    /// Bot counts of the density runs (the issue's: 100 and 1000).
    pub bots: Vec<usize>,
    /// The idle window of each density run.
    pub idle_window: Duration,
    /// Host-managed WebSocket sessions of the sockets run (the issue's: 1000).
    pub sessions: usize,
}

impl Sizes {
    /// The recorded run: bursts of 2000, 200 one at a time, 100 and 1000
    /// bots idle for 60 s.
    pub fn full() -> Sizes {
        Sizes {
            messages: 2000,
            sequential: 200,
            bots: vec![100, 1000],
            idle_window: Duration::from_secs(60),
            sessions: 1000,
        }
    }

    /// About a minute on 2 cores: bursts of 500, 50 one at a time, 50 and
    /// 200 bots idle for 15 s.
    pub fn quick() -> Sizes {
        Sizes {
            messages: 500,
            sequential: 50,
            bots: vec![50, 200],
            idle_window: Duration::from_secs(15),
            sessions: 200,
        }
    }

    /// Just enough to run every path (the smoke test).
    pub fn smoke() -> Sizes {
        Sizes {
            messages: 5,
            sequential: 3,
            bots: vec![2, 3],
            idle_window: Duration::from_millis(200),
            sessions: 3,
        }
    }
}

/// How long any wait on a fake may take before the run fails (a hang
/// guard, not a measurement).
pub(crate) fn mode_guard() -> Duration {
    Duration::from_secs(600)
}

/// What [`channels`] measured (also returned for the smoke test).
#[derive(Debug)]
pub struct Report {
    /// Markdown tables.
    pub markdown: String,
    /// Messages answered through the gateway over all throughput phases.
    pub answered: usize,
    /// Bots polling at the end of each gateway density run.
    pub polling: Vec<(usize, usize)>,
}

/// Run everything with `sizes`; `isolate` runs each density measurement in
/// a child process of this binary (what the CLI does). Prints and returns
/// the tables.
pub async fn channels(sizes: Sizes, isolate: bool) -> anyhow::Result<Report> {
    crate::gateway::fdlimit::raise();
    let mut out = String::new();
    let mut answered = 0;

    let tg_poll = throughput::telegram_poll(&sizes).await?;
    let tg_hook = throughput::telegram_webhook(&sizes).await?;
    let tg_bare = throughput::telegram_bare(&sizes).await?;
    let wa = throughput::whatsapp(&sizes).await?;
    let wa_bare = throughput::whatsapp_bare(&sizes).await?;
    let dc = discord::gateway(&sizes).await?;
    let dc_bare = discord::bare(&sizes).await?;
    let slack = throughput::slack_events(&sizes).await?;
    let slack_bare = throughput::slack_bare(&sizes).await?;
    let slack_sm = throughput::slack_socket(&sizes).await?;
    let slack_sm_bare = throughput::slack_socket_bare(&sizes).await?;
    for m in [&tg_poll, &tg_hook, &wa, &dc, &slack, &slack_sm] {
        answered += m.burst.n + m.sequential.n;
    }
    out.push_str(&throughput_table(&[
        (
            "Telegram, poll",
            &tg_poll,
            &tg_bare,
            "update",
            "sendMessage",
        ),
        (
            "Telegram, webhook",
            &tg_hook,
            &tg_bare,
            "update",
            "sendMessage",
        ),
        ("WhatsApp", &wa, &wa_bare, "push", "messages"),
        (
            "Discord",
            &dc,
            &dc_bare,
            "MESSAGE_CREATE",
            "POST /channels/{id}/messages",
        ),
        (
            "Slack, Events API",
            &slack,
            &slack_bare,
            "push",
            "chat.postMessage",
        ),
        (
            "Slack, Socket Mode",
            &slack_sm,
            &slack_sm_bare,
            "envelope",
            "chat.postMessage",
        ),
    ]));

    let mut runs = Vec::new();
    for &n in &sizes.bots {
        for driver in [Driver::Gateway, Driver::Bare] {
            let d = if isolate {
                in_child(driver, n, sizes.idle_window).await?
            } else {
                density::run(driver, n, sizes.idle_window).await?
            };
            runs.push((driver, d));
        }
    }
    let polling = runs
        .iter()
        .filter(|(d, _)| *d == Driver::Gateway)
        .map(|(_, r)| (r.bots, r.polling))
        .collect();
    out.push('\n');
    out.push_str(&density_table(&runs));
    out.push('\n');
    out.push_str(&sockets_section(sizes.sessions, isolate).await?);
    println!("{out}");
    Ok(Report {
        markdown: out,
        answered,
        polling,
    })
}

/// Only the Discord rows of the throughput table (through the gateway and
/// the bare bot, in this run). Returns (and prints) the table.
pub async fn discord_only(sizes: Sizes) -> anyhow::Result<String> {
    crate::gateway::fdlimit::raise();
    let dc = discord::gateway(&sizes).await?;
    let dc_bare = discord::bare(&sizes).await?;
    let table = throughput_table(&[(
        "Discord",
        &dc,
        &dc_bare,
        "MESSAGE_CREATE",
        "POST /channels/{id}/messages",
    )]);
    println!("{table}");
    Ok(table)
}

/// Only the sockets section: `sessions` idle host-managed sessions
/// through the gateway and as plain client sockets (each in a child
/// process when `isolate`). Returns (and prints) the table.
pub async fn sockets_only(sessions: usize, isolate: bool) -> anyhow::Result<String> {
    crate::gateway::fdlimit::raise();
    let table = sockets_section(sessions, isolate).await?;
    println!("{table}");
    Ok(table)
}

async fn sockets_section(n: usize, isolate: bool) -> anyhow::Result<String> {
    use sockets::Holder;
    // Each gateway variant at a tenth of the size too, to separate the
    // gateway's fixed cost from the cost per session.
    let small = (n / 10).max(1);
    let mut plan = Vec::new();
    for holder in [Holder::Discord, Holder::Gateway, Holder::OneAccount] {
        if small < n {
            plan.push((holder, small));
        }
        plan.push((holder, n));
    }
    plan.push((Holder::Bare, n));
    let mut runs = Vec::new();
    for (holder, size) in plan {
        let r = if isolate {
            let name = match holder {
                Holder::Gateway => "sockets-gateway",
                Holder::OneAccount => "sockets-one-account",
                Holder::Bare => "sockets-bare",
                Holder::Discord => "sockets-discord",
            };
            child_line(&format!("{name}:{size}:0")).await?
        } else {
            sockets::run(holder, size).await?
        };
        runs.push((holder, r));
    }
    Ok(sockets_table(&runs))
}

fn holder_name(h: sockets::Holder) -> &'static str {
    match h {
        sockets::Holder::Gateway => "gateway, a `ws-probe` account each",
        sockets::Holder::OneAccount => "gateway, one `ws-probe` account",
        sockets::Holder::Bare => "bare tokio-tungstenite clients",
        sockets::Holder::Discord => "gateway, a `discord` bot account each (heartbeating)",
    }
}

fn sockets_table(runs: &[(sockets::Holder, sockets::Sockets)]) -> String {
    let mut t = String::from(
        "| idle WebSocket sessions | held by | added per session: RSS (anon + file) / PSS | process RSS | all open after |\n|---|---|---|---|---|\n",
    );
    for (holder, r) in runs {
        t.push_str(&format!(
            "| {} | {} | {} ({} + {}) / {} | {} | {:.1} s |\n",
            r.sessions,
            holder_name(*holder),
            kib(r.per_session(r.added.rss)),
            kib(r.per_session(r.added.anon)),
            kib(r.per_session(r.added.file)),
            kib(r.per_session(r.added.pss)),
            mib(r.total.rss),
            r.start_s,
        ));
    }
    // Marginal cost per session between the two sizes of a holder.
    let marginal = |h: sockets::Holder| {
        let of: Vec<&sockets::Sockets> = runs
            .iter()
            .filter(|(x, _)| *x == h)
            .map(|(_, r)| r)
            .collect();
        match (of.first(), of.last()) {
            (Some(a), Some(b)) if b.sessions > a.sessions => {
                Some((b.added.rss as f64 - a.added.rss as f64) / (b.sessions - a.sessions) as f64)
            }
            (_, Some(b)) => Some(b.per_session(b.added.rss)),
            _ => None,
        }
    };
    if let (Some(each), Some(one), Some(bare)) = (
        marginal(sockets::Holder::Gateway),
        marginal(sockets::Holder::OneAccount),
        marginal(sockets::Holder::Bare),
    ) {
        t.push_str(&format!(
            "\nRSS per added idle session (between the two sizes): an account each {} ({} the bare socket's), all on one account {} ({}), bare {} (client and server end).\n",
            kib(each),
            ratio(each, bare),
            kib(one),
            ratio(one, bare),
            kib(bare),
        ));
        if let Some(discord) = marginal(sockets::Holder::Discord) {
            t.push_str(&format!(
                "Discord bots (an account, its session and its plugin's share each): {} per added bot ({} the bare socket's; aim: under 64 KiB).\n",
                kib(discord),
                ratio(discord, bare),
            ));
        }
    }
    for (h, r) in runs {
        if let Some(p) = &r.parts {
            t.push_str(&format!(
                "{} sessions, {}: heap live {} and free in malloc's arenas {}, {} threads, RSS {} after malloc_trim.\n",
                r.sessions,
                holder_name(*h),
                mib(p.heap_live),
                mib(p.heap_free),
                p.threads,
                mib(p.rss_trimmed),
            ));
        }
    }
    for (_, r) in runs.iter().filter(|(h, _)| *h == sockets::Holder::Discord) {
        if let Some(idle) = &r.idle {
            t.push_str(&format!(
                "{} Discord bots idle for {:.0} s: {:.2} CPU s ({:.2}% of one core, gateway and fake), {} heartbeats, {} reconnects; {} plugin instances alive at the memory reading.\n",
                r.sessions,
                idle.window_s,
                idle.cpu_s,
                100.0 * idle.cpu_s / idle.window_s.max(1e-9),
                idle.heartbeats,
                idle.reconnects,
                idle.live_instances,
            ));
        }
    }
    t
}

/// The prefix of the line a child prints its result on.
const CHILD_LINE: &str = "BENCH-CHANNELS-JSON ";

fn driver_name(d: Driver) -> &'static str {
    match d {
        Driver::Gateway => "gateway",
        Driver::Bare => "bare",
    }
}

/// Run one density measurement in a child process.
async fn in_child(driver: Driver, n: usize, window: Duration) -> anyhow::Result<Density> {
    let spec = format!("{}:{n}:{}", driver_name(driver), window.as_millis());
    child_line(&spec).await
}

/// Run `--part spec` in a child process and parse its result line.
async fn child_line<T: serde::de::DeserializeOwned>(spec: &str) -> anyhow::Result<T> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let out = tokio::process::Command::new(exe)
        .args(["bench", "channels", "--part", spec])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("running a density child")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "density child `{spec}` failed ({}): {stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(CHILD_LINE))
        .with_context(|| format!("density child `{spec}` printed no result: {stdout}"))?;
    serde_json::from_str(line).context("parsing a density child's result")
}

/// The child side of [`in_child`]: run `spec`
/// (`gateway|bare|sockets-gateway|sockets-bare:N:window_ms`) and print its
/// result on one line.
pub async fn part(spec: &str) -> anyhow::Result<()> {
    crate::gateway::fdlimit::raise();
    if let Some(rest) = spec.strip_prefix("slack:") {
        return slack_part(rest).await;
    }
    let mut it = spec.split(':');
    let (Some(driver), Some(n), Some(window), None) = (it.next(), it.next(), it.next(), it.next())
    else {
        anyhow::bail!("--part wants `gateway|bare:BOTS:WINDOW_MS`, got `{spec}`");
    };
    let n: usize = n.parse().context("BOTS")?;
    let holder = match driver {
        "sockets-gateway" => Some(sockets::Holder::Gateway),
        "sockets-one-account" => Some(sockets::Holder::OneAccount),
        "sockets-bare" => Some(sockets::Holder::Bare),
        "sockets-discord" => Some(sockets::Holder::Discord),
        _ => None,
    };
    if let Some(holder) = holder {
        let r = sockets::run(holder, n).await?;
        println!("{CHILD_LINE}{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let driver = match driver {
        "gateway" => Driver::Gateway,
        "bare" => Driver::Bare,
        other => anyhow::bail!("unknown density driver `{other}`"),
    };
    let window = Duration::from_millis(window.parse().context("WINDOW_MS")?);
    let d = density::run(driver, n, window).await?;
    println!("{CHILD_LINE}{}", serde_json::to_string(&d)?);
    Ok(())
}

/// `--part slack:MESSAGES:SEQUENTIAL`: only the Slack throughput rows
/// (gateway and bare bot), printed as their table.
async fn slack_part(spec: &str) -> anyhow::Result<()> {
    let (Some(messages), Some(sequential)) = spec
        .split_once(':')
        .map(|(m, s)| (m.parse().ok(), s.parse().ok()))
        .unwrap_or((None, None))
    else {
        anyhow::bail!("--part wants `slack:MESSAGES:SEQUENTIAL`, got `slack:{spec}`");
    };
    let sizes = Sizes {
        messages,
        sequential,
        ..Sizes::smoke()
    };
    let slack = throughput::slack_events(&sizes).await?;
    let slack_bare = throughput::slack_bare(&sizes).await?;
    let slack_sm = throughput::slack_socket(&sizes).await?;
    let slack_sm_bare = throughput::slack_socket_bare(&sizes).await?;
    println!(
        "{}",
        throughput_table(&[
            (
                "Slack, Events API",
                &slack,
                &slack_bare,
                "push",
                "chat.postMessage",
            ),
            (
                "Slack, Socket Mode",
                &slack_sm,
                &slack_sm_bare,
                "envelope",
                "chat.postMessage",
            ),
        ])
    );
    Ok(())
}

fn flow_cell(f: &throughput::Flow) -> String {
    format!("{:.0} msg/s (p50 {}, p99 {})", f.rate, ms(f.p50), ms(f.p99))
}

fn lat_cell(f: &throughput::Flow) -> String {
    format!("p50 {}, p99 {}", ms(f.p50), ms(f.p99))
}

type Row<'a> = (
    &'a str,
    &'a Measured,
    &'a Measured,
    &'static str,
    &'static str,
);

fn throughput_table(rows: &[Row<'_>]) -> String {
    let mut t = String::from(
        "| measure | through the gateway | bare bot, same fake | ratio |\n|---|---|---|---|\n",
    );
    for (name, g, b, from, to) in rows {
        t.push_str(&format!(
            "| {name}: burst of {}, {from} → `{to}` | {} | {} | {} of the rate |\n",
            g.burst.n,
            flow_cell(&g.burst),
            flow_cell(&b.burst),
            ratio(g.burst.rate, b.burst.rate)
        ));
        t.push_str(&format!(
            "| {name}: {} one at a time, {from} → `{to}` | {} | {} | {} the p50 |\n",
            g.sequential.n,
            lat_cell(&g.sequential),
            lat_cell(&b.sequential),
            ratio(
                g.sequential.p50.as_secs_f64(),
                b.sequential.p50.as_secs_f64()
            )
        ));
    }
    let doubled: Vec<String> = rows
        .iter()
        .flat_map(|(name, g, _, _, _)| {
            [("burst", &g.burst), ("one at a time", &g.sequential)]
                .into_iter()
                .map(move |(phase, f)| format!("{name} {phase}: {}", f.doubled))
        })
        .collect();
    t.push_str(&format!(
        "\nAnswers accepted twice for one message (should be 0): {}.\n",
        doubled.join("; ")
    ));
    t
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn density_table(runs: &[(Driver, Density)]) -> String {
    let mut t = String::from(
        "| bots | served by | added per bot: RSS (anon + file) / PSS | process RSS | idle CPU over the window (share of one core) | fake's CPU | all polling after |\n|---|---|---|---|---|---|---|\n",
    );
    for (driver, d) in runs {
        t.push_str(&format!(
            "| {} | {} | {} ({} + {}) / {} | {} | {:.2} s in {:.1} s ({:.2}%) | {:.2} s | {:.1} s ({} of {} polling at the end) |\n",
            d.bots,
            driver_name(*driver),
            kib(d.per_bot(d.added.rss)),
            kib(d.per_bot(d.added.anon)),
            kib(d.per_bot(d.added.file)),
            kib(d.per_bot(d.added.pss)),
            mib(d.total.rss),
            d.cpu_s,
            d.window_s,
            d.core_share() * 100.0,
            d.fake_cpu_s,
            d.start_s,
            d.polling,
            d.bots,
        ));
    }
    // Fixed and marginal cost from the smallest and largest size.
    let pick = |drv: Driver| {
        let mut v: Vec<&Density> = runs
            .iter()
            .filter(|(d, _)| *d == drv)
            .map(|(_, r)| r)
            .collect();
        v.sort_by_key(|r| r.bots);
        match (v.first(), v.last()) {
            (Some(a), Some(b)) if b.bots > a.bots => Some((*a, *b)),
            _ => None,
        }
    };
    let split = |a: &Density, b: &Density, f: fn(&Memory) -> u64| {
        let per = (f(&b.added) as f64 - f(&a.added) as f64) / (b.bots - a.bots) as f64;
        let fixed = f(&a.added) as f64 - per * a.bots as f64;
        (per, fixed)
    };
    use procstat::Memory;
    if let (Some((ga, gb)), Some((ba, bb))) = (pick(Driver::Gateway), pick(Driver::Bare)) {
        let (g_rss, g_fixed) = split(ga, gb, |m| m.rss);
        let (g_pss, _) = split(ga, gb, |m| m.pss);
        let (b_rss, b_fixed) = split(ba, bb, |m| m.rss);
        let (b_pss, _) = split(ba, bb, |m| m.pss);
        t.push_str(&format!(
            "\nPer polling bot from {} to {} bots (RSS; PSS): gateway {} ; {} (fixed {}), bare {} ; {} (fixed {}): {} the bare bot's RSS per bot.\n",
            ga.bots,
            gb.bots,
            kib(g_rss),
            kib(g_pss),
            kib(g_fixed),
            kib(b_rss),
            kib(b_pss),
            kib(b_fixed),
            ratio(g_rss, b_rss),
        ));
    }
    t
}
