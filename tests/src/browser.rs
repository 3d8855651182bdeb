//! Running the headless-browser drivers in `tests/browser/` (Node +
//! Playwright with Debian's Chromium) and getting OpenClaw's Control UI.
//! A missing Chromium, Node, Playwright or Control UI fails the test with
//! the command that installs it; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The system Chromium the drivers use.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// `tests/browser/`.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// `target/test-artifacts/<name>/`, created empty.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the artifacts directory");
    dir
}

/// Fail with a clear message unless Chromium, Node and Playwright are
/// installed.
pub fn require_tools() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: install Debian's Chromium with `apt-get install -y chromium` (see .ci/run)"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing: install Node.js (Debian's nodejs package) to run the browser tests"
    );
    assert!(
        browser_dir()
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is missing: run `npm ci` in tests/browser (see .ci/run)"
    );
}

/// The Control UI directory of the pinned `openclaw` package, fetched (and
/// verified) by `tests/browser/fetch-control-ui.sh` when not cached yet.
pub fn control_ui_dir() -> PathBuf {
    let script = browser_dir().join("fetch-control-ui.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed (it needs npm and the npm registry on first use):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        dir.join("index.html").is_file(),
        "no Control UI in {}",
        dir.display()
    );
    dir
}

/// Run driver `script` (in `tests/browser/`) with `opts` as its JSON
/// argument, on a blocking thread; returns its JSON report and whether it
/// exited 0. The driver's stderr is passed through.
pub async fn run_driver(script: &str, opts: &Value) -> (Value, bool) {
    let path = browser_dir().join(script);
    let arg = opts.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&path)
            .arg(arg)
            .current_dir(browser_dir())
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await
    .expect("driver thread")
    .expect("starting node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{script} printed no JSON report:\n{stdout}"));
    (report, out.status.success())
}

/// Run driver `script` with `opts` plus the artifacts directory `name`
/// (where its `report.json` is written), and check the run: it finished
/// without a failure or an uncaught page exception, and every request the
/// pages made was answered, none with an error. Its report.
pub async fn drive_checked(script: &str, name: &str, mut opts: Value) -> Value {
    require_tools();
    let artifacts = artifacts_dir(name);
    opts["artifacts"] = serde_json::json!(artifacts);
    let (report, exited_ok) = run_driver(script, &opts).await;
    let pretty = serde_json::to_string_pretty(&report).unwrap_or_default();
    std::fs::write(artifacts.join("report.json"), &pretty).expect("writing the report");
    assert!(
        exited_ok && report["failed"].is_null(),
        "the browser run failed: {}\n(report and screenshots in {})",
        report["failed"],
        artifacts.display()
    );
    assert_eq!(
        report["pageErrors"],
        serde_json::json!([]),
        "uncaught exceptions"
    );
    let errors: Vec<&Value> = report["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter(|c| c["ok"] != true)
        .collect();
    assert!(errors.is_empty(), "error answers: {errors:#?}");
    assert_eq!(
        report["pendingMethods"],
        serde_json::json!([]),
        "unanswered requests"
    );
    report
}
