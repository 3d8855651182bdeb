//! OpenClaw's own CLI (`openclaw tui`, `openclaw gateway call`) at the
//! pinned version with Node 24, installed by
//! `tests/browser/fetch-openclaw-cli.sh`, and a tmux session to drive the
//! TUI in: keys go in with `send-keys`, the screen comes back with
//! `capture-pane`, and every wait polls the screen for content. A missing
//! tool fails the test with the command that installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a wait for screen content may take before the test fails.
pub const SCREEN_WAIT: Duration = Duration::from_secs(90);

/// Node 24 and the `openclaw.mjs` entry point.
#[derive(Debug, Clone)]
pub struct OpenclawCli {
    /// The Node 24 binary.
    pub node: PathBuf,
    /// `node_modules/openclaw/openclaw.mjs`.
    pub entry: PathBuf,
}

impl OpenclawCli {
    /// Fetch (once, cached) and locate the CLI.
    pub fn get() -> OpenclawCli {
        let script = crate::browser::browser_dir().join("fetch-openclaw-cli.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed (it needs python3 with pip, PyPI and the npm registry on first use):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut lines = stdout.lines().rev();
        let entry = PathBuf::from(lines.next().unwrap_or_default().trim());
        let node = PathBuf::from(lines.next().unwrap_or_default().trim());
        assert!(entry.is_file(), "no openclaw entry at {}", entry.display());
        assert!(node.is_file(), "no node at {}", node.display());
        OpenclawCli { node, entry }
    }

    /// A command running `openclaw ARGS` with `home` as its home directory
    /// (OpenClaw keeps its state under `~/.openclaw`).
    pub fn command(&self, home: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.node);
        c.arg(&self.entry)
            .args(args)
            .env("HOME", home)
            .env("NO_COLOR", "1")
            .env_remove("OPENCLAW_GATEWAY_TOKEN");
        c
    }

    /// The shell line running `openclaw ARGS` (for tmux).
    pub fn shell_line(&self, home: &Path, args: &[&str]) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let mut line = format!(
            "env HOME={} {} {}",
            q(&home.to_string_lossy()),
            q(&self.node.to_string_lossy()),
            q(&self.entry.to_string_lossy())
        );
        for a in args {
            line.push(' ');
            line.push_str(&q(a));
        }
        line
    }
}

/// Fail unless tmux is installed.
pub fn require_tmux() {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "tmux is missing: install Debian's tmux (`apt-get install -y tmux`, see .ci/run)"
    );
}

/// A detached tmux session on its own server socket, killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Start `shell_line` in a new 160x50 session.
    pub fn start(shell_line: &str) -> Tmux {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("pincer-test-{}-{n}", std::process::id());
        let t = Tmux { socket };
        t.tmux(&[
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            "160",
            "-y",
            "50",
            shell_line,
        ]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen plus the scrollback.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-500", "-t", "main"])
    }

    /// Type `text` literally.
    pub fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "main", "-l", text]);
    }

    /// Press a key (`Enter`, `Escape`, ...).
    pub fn key(&self, key: &str) {
        self.tmux(&["send-keys", "-t", "main", key]);
    }

    /// Poll the screen until `pred` holds (or fail after [`SCREEN_WAIT`]
    /// with the screen); returns that screen.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_WAIT;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}
