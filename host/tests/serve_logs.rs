//! The real binary's logs on a stderr that is no terminal (a pipe, as when
//! redirected to a file): `--log-format json` gives one JSON object per
//! line, including the notice of a newly generated gateway token (it was
//! a multi-line text banner in the middle of the JSON lines); the default
//! text format has no colour escapes. (The formats themselves are tested
//! in `tests/tests/ops_logging.rs`.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;
use common::{Gateway, free_port};

/// Start `pincer serve` (no token given: it generates one) with `args`,
/// and return its stderr lines up to and including the "pincer running"
/// line, which comes after the token notice.
fn start_logs(data: &std::path::Path, args: &[&str]) -> Vec<String> {
    std::fs::create_dir_all(data.join("plugins")).expect("plugins dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pincer"))
        .args(args)
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(data)
        .arg("--plugins-dir")
        .arg(data.join("plugins"))
        .env_remove("RUST_LOG")
        .env_remove("PINCER_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pincer serve");
    let stderr = child.stderr.take().expect("stderr");
    let _gw = Gateway(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let last = line.contains("pincer running");
            lines.push(line);
            if last {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    // A hang guard only: the lines end with the "running" line or EOF.
    let lines = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the gateway's start-up logs");
    assert!(
        lines.last().is_some_and(|l| l.contains("pincer running")),
        "the gateway did not start: {lines:#?}"
    );
    lines
}

#[test]
fn json_logs_are_json_lines_token_notice_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = start_logs(dir.path(), &["--log-format", "json"]);
    let mut notice = None;
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nall: {lines:#?}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("generated a gateway token"))
        {
            notice = Some(v);
        }
    }
    let notice = notice.unwrap_or_else(|| panic!("no token notice: {lines:#?}"));
    let token_file = dir.path().join("gateway-token");
    assert_eq!(
        notice["fields"]["path"],
        token_file.display().to_string(),
        "{notice}"
    );
    let token = std::fs::read_to_string(&token_file).expect("token file");
    assert!(
        notice["fields"]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("#token={}", token.trim()))),
        "{notice}"
    );
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "{lines:#?}");
}

#[test]
fn text_logs_on_a_pipe_have_no_colour_escapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = start_logs(dir.path(), &[]);
    // (The server task's own "gateway listening" line may come after
    // "pincer running", where reading stops: not asserted.)
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("pincer running")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Generated a gateway token")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "{lines:#?}");
}
