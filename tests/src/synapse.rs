//! A throwaway Synapse homeserver for the Matrix tests: installed from PyPI
//! by `tests/install-synapse.sh` (run by `tests/setup.sh`), started per test
//! on a free loopback port with a generated config (SQLite in a temp dir,
//! registration only through the shared-secret admin API, rate limits off,
//! no federation), awaited on `/_matrix/client/versions`, and killed on
//! drop. A missing Synapse fails the test with the command that installs it.
//!
//! [`MatrixUser`] is a small client-server API client for the test's own
//! users (register, log in, rooms, messages, waiting by `/sync`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// The registration shared secret of every test homeserver.
const SHARED_SECRET: &str = "pincer-test-registration-secret";
/// The homeserver's name (user ids are `@name:localhost`).
pub const SERVER_NAME: &str = "localhost";
/// Longest a test waits for the homeserver or for a condition (a hang
/// guard, not a timing assertion).
pub const HANG_GUARD: Duration = Duration::from_secs(180);

/// The virtualenv Synapse is installed in (`PINCER_SYNAPSE_VENV`, default
/// `~/.cache/pincer/synapse/venv`).
pub fn venv() -> PathBuf {
    if let Ok(v) = std::env::var("PINCER_SYNAPSE_VENV") {
        return PathBuf::from(v);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/pincer/synapse/venv")
}

/// A Synapse process on loopback.
pub struct Synapse {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Config, database, media store and log.
    pub dir: tempfile::TempDir,
    /// From spawning the process to `/_matrix/client/versions` answering.
    pub started_in: Duration,
    http: reqwest::Client,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A limit no test reaches (`per_second`, `burst_count`).
fn unlimited() -> Value {
    json!({"per_second": 100000, "burst_count": 1000000})
}

fn config(dir: &std::path::Path, port: u16) -> Value {
    let p = |name: &str| dir.join(name).display().to_string();
    json!({
        "server_name": SERVER_NAME,
        "pid_file": p("homeserver.pid"),
        "listeners": [{
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": false,
            "x_forwarded": false,
            "resources": [{"names": ["client", "media"], "compress": false}],
        }],
        "database": {"name": "sqlite3", "args": {"database": p("homeserver.db")}},
        "log_config": p("log.yaml"),
        "media_store_path": p("media_store"),
        "signing_key_path": p("signing.key"),
        "registration_shared_secret": SHARED_SECRET,
        "enable_registration": false,
        "report_stats": false,
        "suppress_key_server_warning": true,
        "trusted_key_servers": [],
        "federation_domain_whitelist": [],
        "macaroon_secret_key": "pincer-test-macaroon",
        "form_secret": "pincer-test-form",
        "presence": {"enabled": false},
        "rc_message": unlimited(),
        "rc_registration": unlimited(),
        "rc_login": {"address": unlimited(), "account": unlimited(), "failed_attempts": unlimited()},
        "rc_joins": {"local": unlimited(), "remote": unlimited()},
        "rc_joins_per_room": unlimited(),
        "rc_invites": {"per_room": unlimited(), "per_user": unlimited(), "per_issuer": unlimited()},
        "rc_admin_redaction": unlimited(),
        "rc_media_create": unlimited(),
    })
}

const LOG_CONFIG: &str = "version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: LOGFILE
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
";

impl Synapse {
    /// Start a fresh homeserver and wait until it answers.
    pub async fn start() -> Synapse {
        let python = venv().join("bin/python");
        assert!(
            python.is_file(),
            "Synapse is not installed ({} missing): run tests/install-synapse.sh (or tests/setup.sh)",
            python.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        // YAML is a superset of JSON.
        let cfg = dir.path().join("homeserver.yaml");
        std::fs::write(&cfg, config(dir.path(), port).to_string()).expect("config");
        let log = dir.path().join("homeserver.log");
        std::fs::write(
            dir.path().join("log.yaml"),
            LOG_CONFIG.replace("LOGFILE", &log.display().to_string()),
        )
        .expect("log config");
        // A signing key in Synapse's format (`ed25519 <id> <unpadded
        // base64 seed>`), so no second Python start generates one.
        let seed: [u8; 32] = rand_seed();
        let key = base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed);
        std::fs::write(
            dir.path().join("signing.key"),
            format!("ed25519 a_test {key}\n"),
        )
        .expect("signing key");
        let out = std::fs::File::create(dir.path().join("stdout.log")).expect("stdout log");
        let t0 = Instant::now();
        let child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&cfg)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("dup")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn synapse");
        let mut s = Synapse {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            started_in: Duration::ZERO,
            http: reqwest::Client::new(),
        };
        s.wait_ready(t0).await;
        s.started_in = t0.elapsed();
        s
    }

    /// Poll `/_matrix/client/versions` until it answers, failing with the
    /// server's log if the process exits or the hang guard passes.
    async fn wait_ready(&mut self, t0: Instant) {
        let url = format!("{}/_matrix/client/versions", self.base);
        let mut pause = Duration::from_millis(20);
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "synapse exited ({status}) before answering:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                t0.elapsed() < HANG_GUARD,
                "synapse did not answer within {HANG_GUARD:?}:\n{}",
                self.log_tail()
            );
            // Readiness has no event to await: poll with a growing pause.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The end of the server's output and log (for failure messages).
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for f in ["stdout.log", "homeserver.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {f}\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Register `name` through the shared-secret admin API
    /// (`/_synapse/admin/v1/register`, HMAC-SHA1 over the nonce), then log
    /// in with the password for an access token of a fresh device.
    pub async fn register(&self, name: &str) -> MatrixUser {
        let url = format!("{}/_synapse/admin/v1/register", self.base);
        let nonce: Value = self
            .http
            .get(&url)
            .send()
            .await
            .expect("nonce")
            .json()
            .await
            .expect("nonce json");
        let nonce = nonce["nonce"].as_str().expect("nonce").to_string();
        let password = format!("pw-{name}");
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).expect("key");
        for (i, part) in [nonce.as_str(), name, password.as_str(), "notadmin"]
            .iter()
            .enumerate()
        {
            if i > 0 {
                mac.update(b"\x00");
            }
            mac.update(part.as_bytes());
        }
        let r = self
            .http
            .post(&url)
            .json(&json!({
                "nonce": nonce,
                "username": name,
                "password": password,
                "admin": false,
                "mac": hex::encode(mac.finalize().into_bytes()),
            }))
            .send()
            .await
            .expect("register");
        assert!(
            r.status().is_success(),
            "register {name}: {}",
            r.text().await.unwrap_or_default()
        );
        let login: Value = self
            .http
            .post(format!("{}/_matrix/client/v3/login", self.base))
            .json(&json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": name},
                "password": password,
            }))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login json");
        MatrixUser {
            base: self.base.clone(),
            user_id: login["user_id"].as_str().expect("user_id").to_string(),
            token: login["access_token"]
                .as_str()
                .expect("access_token")
                .to_string(),
            http: self.http.clone(),
            since: tokio::sync::Mutex::new(None),
            txn: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

fn rand_seed() -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
    h.update(format!("{:p}", &h).as_bytes());
    h.finalize().into()
}

/// Percent-encode a path segment.
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A logged-in user of the test homeserver.
pub struct MatrixUser {
    /// Homeserver base URL.
    pub base: String,
    /// `@name:localhost`.
    pub user_id: String,
    /// Access token.
    pub token: String,
    http: reqwest::Client,
    since: tokio::sync::Mutex<Option<String>>,
    txn: std::sync::atomic::AtomicU64,
}

impl MatrixUser {
    /// A client-server API call; panics on an error answer.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.try_call(method, path, body).await;
        assert!(status < 300, "{method} {path}: {status} {v}");
        v
    }

    /// A client-server API call: status and JSON answer.
    pub async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Set the display name.
    pub async fn set_display_name(&self, name: &str) {
        let path = format!(
            "/_matrix/client/v3/profile/{}/displayname",
            seg(&self.user_id)
        );
        self.call("PUT", &path, Some(json!({"displayname": name})))
            .await;
    }

    /// Create a room inviting `invite`; `direct` marks the invites
    /// `is_direct`; `encrypted` turns on end-to-end encryption.
    pub async fn create_room(&self, invite: &[&str], direct: bool, encrypted: bool) -> String {
        let mut body = json!({
            "preset": if direct { "trusted_private_chat" } else { "private_chat" },
            "invite": invite,
            "is_direct": direct,
        });
        if encrypted {
            body["initial_state"] = json!([{
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }]);
        }
        let v = self
            .call("POST", "/_matrix/client/v3/createRoom", Some(body))
            .await;
        v["room_id"].as_str().expect("room_id").to_string()
    }

    /// Invite `user` to `room`.
    pub async fn invite(&self, room: &str, user: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", seg(room));
        self.call("POST", &path, Some(json!({"user_id": user})))
            .await;
    }

    /// Join `room`.
    pub async fn join(&self, room: &str) {
        let path = format!("/_matrix/client/v3/join/{}", seg(room));
        self.call("POST", &path, Some(json!({}))).await;
    }

    /// Send an event of `kind` with `content`; its event id.
    pub async fn send(&self, room: &str, kind: &str, content: Value) -> String {
        let n = self.txn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{kind}/t{n}-{}",
            seg(room),
            std::process::id()
        );
        let v = self.call("PUT", &path, Some(content)).await;
        v["event_id"].as_str().expect("event_id").to_string()
    }

    /// Send a plain `m.text`; its event id.
    pub async fn send_text(&self, room: &str, body: &str) -> String {
        self.send(
            room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": body}),
        )
        .await
    }

    /// The membership of `user` in `room` (`join`, `invite`, ...), if any.
    pub async fn membership(&self, room: &str, user: &str) -> Option<String> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            seg(room),
            seg(user)
        );
        let (status, v) = self.try_call("GET", &path, None).await;
        (status == 200).then(|| v["membership"].as_str().unwrap_or_default().to_string())
    }

    /// Every `m.room.message` event in `room`, oldest first.
    pub async fn messages(&self, room: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=500",
                seg(room)
            );
            if let Some(f) = &from {
                path.push_str(&format!("&from={}", seg(f)));
            }
            let v = self.call("GET", &path, None).await;
            let chunk = v["chunk"].as_array().cloned().unwrap_or_default();
            out.extend(chunk.into_iter().filter(|e| e["type"] == "m.room.message"));
            match v["end"].as_str() {
                Some(end) if Some(end) != from.as_deref() => from = Some(end.to_string()),
                _ => break,
            }
        }
        out.reverse();
        out
    }

    /// `sender`'s messages in `room`, oldest first, each as its latest
    /// edit shows it: (event id, event content as shown, number of edits).
    pub async fn shown_messages(&self, room: &str, sender: &str) -> Vec<Shown> {
        let all = self.messages(room).await;
        let mut shown: Vec<Shown> = Vec::new();
        for e in all.iter().filter(|e| e["sender"] == sender) {
            let rel = &e["content"]["m.relates_to"];
            if rel["rel_type"] == "m.replace" {
                let target = rel["event_id"].as_str().unwrap_or_default();
                if let Some(s) = shown.iter_mut().find(|s| s.event_id == target) {
                    s.content = e["content"]["m.new_content"].clone();
                    s.edits += 1;
                }
            } else {
                shown.push(Shown {
                    event_id: e["event_id"].as_str().unwrap_or_default().to_string(),
                    original: e["content"].clone(),
                    content: e["content"].clone(),
                    edits: 0,
                });
            }
        }
        shown
    }

    /// Wait until `check` gives a value, looking again whenever this user's
    /// `/sync` reports news (a long poll: no fixed sleeps).
    pub async fn wait_until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let t0 = Instant::now();
        loop {
            let since = self.since.lock().await.clone();
            if let Some(v) = check().await {
                return v;
            }
            assert!(t0.elapsed() < HANG_GUARD, "timed out waiting for {what}");
            let mut path = "/_matrix/client/v3/sync?timeout=5000&filter=%7B%22presence%22%3A%7B%22types%22%3A%5B%5D%7D%7D".to_string();
            if let Some(s) = &since {
                path.push_str(&format!("&since={}", seg(s)));
            } else {
                path = path.replace("timeout=5000", "timeout=0");
            }
            let v = self.call("GET", &path, None).await;
            if let Some(next) = v["next_batch"].as_str() {
                *self.since.lock().await = Some(next.to_string());
            }
        }
    }
}

/// One message as the room shows it.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The original event's id.
    pub event_id: String,
    /// The original event's content.
    pub original: Value,
    /// The content its latest edit shows (the original's if none).
    pub content: Value,
    /// How many edits it had.
    pub edits: usize,
}

impl Shown {
    /// The body shown.
    pub fn body(&self) -> &str {
        self.content["body"].as_str().unwrap_or_default()
    }
}
