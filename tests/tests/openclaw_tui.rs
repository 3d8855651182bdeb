//! OpenClaw's own terminal client, `openclaw tui` (the pinned `openclaw`
//! package run with Node 24, see `tests/browser/fetch-openclaw-cli.sh`),
//! against a Pincer gateway on loopback, driven in tmux: it connects,
//! sends, shows the echo agent's reply, sees each run end and takes the
//! next message without "agent is busy" (each run starts once the TUI's
//! Pong proves it read the `chat.send` answer), and a long run is stopped
//! with Esc, after which the next message is answered again.

use pincer_tests::gateway::TestGateway;
use pincer_tests::openclaw_cli::{OpenclawCli, Tmux, require_tmux};

const TOKEN: &str = "tui-secret";
const BUSY: &str = "agent is busy";

/// How often `text` occurs on `screen`.
fn count(screen: &str, text: &str) -> usize {
    screen.matches(text).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_tui_chats_several_turns_and_aborts() {
    require_tmux();
    let cli = OpenclawCli::get();
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    // Slow enough that the long message below still streams when Esc is
    // pressed; a short message ends at once.
    opts.agent.echo_word_delay_ms = 40;
    let mut gw = TestGateway::start_with(opts, dir).await;
    let home = tempfile::tempdir().expect("home for the TUI");
    let url = format!("ws://{}", gw.addr);
    let tmux = Tmux::start(&cli.shell_line(home.path(), &["tui", "--url", &url, "--token", TOKEN]));

    tmux.wait_for("the TUI connected to Pincer", |s| {
        s.contains("gateway connected") || s.contains("connected | idle")
    })
    .await;

    // Several turns: each message appears twice (the user's line and the
    // echo reply), the run ends (`idle`), and the next one is taken.
    for turn in [
        "first turn alpha",
        "second turn bravo",
        "third turn charlie",
    ] {
        tmux.type_text(turn);
        tmux.key("Enter");
        let screen = tmux
            .wait_for(&format!("the echo of {turn:?} and the run's end"), |s| {
                count(s, turn) >= 2 && s.contains("| idle")
            })
            .await;
        assert!(!screen.contains(BUSY), "{screen}");
    }

    // A long run, stopped with Esc once it streams.
    let long: String = (0..400).map(|i| format!("w{i} ")).collect();
    tmux.type_text(long.trim_end());
    tmux.key("Enter");
    tmux.wait_for("the long reply streaming", |s| s.contains("w3 w4 w5"))
        .await;
    tmux.key("Escape");
    tmux.wait_for("the run aborted", |s| s.contains("aborted"))
        .await;

    // The session takes the next message after the abort.
    let after = "after the abort delta";
    tmux.type_text(after);
    tmux.key("Enter");
    let screen = tmux
        .wait_for("the echo after the abort", |s| {
            count(s, after) >= 2 && s.contains("| idle")
        })
        .await;
    assert!(!screen.contains(BUSY), "{screen}");

    // Pincer's transcript has every turn and the aborted run.
    let history = gw
        .gw()
        .sessions
        .history(pincer::gateway::MAIN_SESSION, 100)
        .expect("history");
    let texts: Vec<String> = history.iter().map(|m| format!("{:?}", m.content)).collect();
    for turn in [
        "first turn alpha",
        "second turn bravo",
        "third turn charlie",
        after,
    ] {
        assert_eq!(
            texts.iter().filter(|t| t.contains(turn)).count(),
            2,
            "{turn}: {texts:#?}"
        );
    }
    let aborted = history
        .iter()
        .any(|m| m.role == "assistant" && m.stop_reason.as_deref() == Some("aborted"));
    assert!(aborted, "no aborted reply in the transcript: {texts:#?}");
    // Every run waited for the TUI's Pong (it read the `chat.send` answer
    // first), none for the fallback bound.
    let counters = &gw.gw().counters;
    let ponged = counters
        .pong_barriers
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(ponged >= 5, "{ponged} runs released by a Pong");
    assert_eq!(
        counters
            .pong_barrier_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    drop(tmux);
    gw.stop().await;
}
