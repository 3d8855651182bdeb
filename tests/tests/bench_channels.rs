//! `pincer bench channels` runs end to end at tiny sizes (issue 9 §7): every
//! throughput phase through the gateway answers every message, and every
//! bot of the density runs is still long-polling at the end. No timing is
//! asserted; the figures belong in `BENCHMARKS.md`.

use pincer::bench::channels::{Sizes, channels};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_channels_smoke_runs_every_phase() {
    // The Discord runs' idle window: 1 s instead of the measurement's 65 s
    // (this smoke run checks the paths, not the figures).
    // SAFETY: the only test of this binary, set before it starts anything
    // that reads the environment.
    unsafe { std::env::set_var("PINCER_BENCH_IDLE_S", "1") };
    let sizes = Sizes::smoke();
    let report = channels(sizes.clone(), false).await.expect("bench runs");
    // Six channel runs (Telegram poll and webhook, WhatsApp, Discord, Slack
    // Events API and Socket Mode), each a burst and a sequential phase.
    assert_eq!(report.answered, 6 * (sizes.messages + sizes.sequential));
    assert_eq!(
        report.polling,
        sizes.bots.iter().map(|&n| (n, n)).collect::<Vec<_>>(),
        "bots stopped polling"
    );
    for heading in [
        "Telegram, poll",
        "Telegram, webhook",
        "WhatsApp",
        "Discord",
        "Slack, Events API",
        "Slack, Socket Mode",
        "| bots |",
    ] {
        assert!(report.markdown.contains(heading), "{}", report.markdown);
    }
}
