//! A real gateway on loopback and a protocol client for end-to-end tests.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use pincer::gateway::launch::{self, Options, Running};

/// How long a test waits for any one frame before failing (a hang guard,
/// not a timing assertion).
pub const FRAME_WAIT: Duration = Duration::from_secs(30);

/// A gateway in a temporary data directory with the bundled plugins.
pub struct TestGateway {
    /// The running server.
    pub running: Option<Running>,
    /// Its address.
    pub addr: std::net::SocketAddr,
    /// The data directory (kept alive with the gateway).
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    /// [`TestGateway::options`] for the browser tests of the console:
    /// token `token`, loopback allowed, strangers paired on the echo
    /// channel, whose messages go to `reply_url`; the plugins directory
    /// exists.
    pub fn console_options(token: &str, reply_url: String) -> (Options, tempfile::TempDir) {
        let (mut opts, dir) = Self::options();
        opts.gateway.token = Some(token.into());
        opts.allow_cidrs =
            pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").expect("loopback CIDR");
        opts.plugins.insert(
            "echo".into(),
            pincer::plugins::PluginSettings {
                dm_policy: pincer::channels::access::DmPolicy::Pairing,
                allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
                config: [("reply_url".to_string(), reply_url)].into(),
                ..Default::default()
            },
        );
        std::fs::create_dir_all(&opts.plugins_dir).expect("plugins dir");
        (opts, dir)
    }

    /// Options for a gateway in a fresh temp dir on an ephemeral port.
    pub fn options() -> (Options, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = Options::new(dir.path());
        opts.gateway.listen = "127.0.0.1:0".parse().expect("addr");
        opts.watch_settle = Duration::from_millis(100);
        // Tests push as strangers through the echo channel: let anyone in
        // (the default access policy, pairing, has its own tests).
        opts.plugins.insert(
            "echo".into(),
            pincer::plugins::PluginSettings {
                dm_policy: pincer::channels::access::DmPolicy::Open,
                ..Default::default()
            },
        );
        (opts, dir)
    }

    /// Start with `opts` (from [`TestGateway::options`]), on the suite's
    /// store (see [`crate::test_store`]).
    pub async fn start_with(opts: Options, dir: tempfile::TempDir) -> TestGateway {
        let running = start(opts).await.expect("gateway starts");
        TestGateway {
            addr: running.addr,
            running: Some(running),
            dir,
        }
    }

    /// Start with defaults and token `secret`.
    pub async fn start() -> TestGateway {
        let (mut opts, dir) = Self::options();
        opts.gateway.token = Some("secret".into());
        Self::start_with(opts, dir).await
    }

    /// `ws://addr/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The gateway state.
    pub fn gw(&self) -> &std::sync::Arc<pincer::gateway::Gateway> {
        &self.running.as_ref().expect("running").gateway
    }

    /// Shut down and wait.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean shutdown");
        }
    }
}

/// [`launch::start`] on the suite's store: in the PostgreSQL pass, the
/// database of `opts.data_dir` unless the test chose a store (see
/// [`crate::test_store::apply`]). Every test gateway starts through here.
pub async fn start(mut opts: Options) -> anyhow::Result<Running> {
    crate::test_store::apply(&mut opts);
    launch::start(opts).await
}

/// Connect params for a CLI-like client with `scopes`, speaking
/// `min..=max`, with token `token`.
pub fn connect_params(min: u32, max: u32, token: Option<&str>, scopes: &[&str]) -> Value {
    let mut p = json!({
        "minProtocol": min, "maxProtocol": max,
        "client": {"id": "test", "version": "1.0.0", "platform": "linux", "mode": "test"},
        "caps": ["tool-events"],
        "role": "operator",
        "scopes": scopes,
    });
    if let Some(t) = token {
        p["auth"] = json!({"token": t});
    }
    p
}

/// Every operator scope.
pub const ALL: &[&str] = &[
    "operator.admin",
    "operator.read",
    "operator.write",
    "operator.pairing",
];

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client that buffers events while waiting for responses.
pub struct Client {
    /// The socket.
    pub ws: Ws,
    /// Events received and not yet consumed.
    pub events: VecDeque<Value>,
    /// The challenge nonce.
    pub nonce: String,
    /// The hello-ok payload (after a successful connect).
    pub hello: Value,
    next_id: u64,
    last_seq: u64,
}

/// How a socket ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    /// Close code (1006 when there was no close frame).
    pub code: u16,
    /// Reason.
    pub reason: String,
}

impl Client {
    /// Open a socket and read the challenge.
    pub async fn open(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client::after_upgrade(ws).await
    }

    /// Like [`Client::open`] on a socket whose receive buffer is fixed at
    /// `bytes` (no kernel autotuning), so a client that stops reading makes
    /// the server's writes back up after a known, small amount.
    pub async fn open_with_recv_buffer(url: &str, bytes: u32) -> Client {
        let addr: std::net::SocketAddr = url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .parse()
            .expect("ws://ADDR/ url");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade");
        Client::after_upgrade(ws).await
    }

    /// Read the challenge on a freshly upgraded socket.
    async fn after_upgrade(ws: Ws) -> Client {
        let mut c = Client {
            ws,
            events: VecDeque::new(),
            nonce: String::new(),
            hello: Value::Null,
            next_id: 0,
            last_seq: 0,
        };
        let challenge = c.raw_next().await.expect("challenge");
        assert_eq!(challenge["type"], "event");
        assert_eq!(challenge["event"], "connect.challenge");
        assert!(challenge.get("seq").is_none());
        c.nonce = challenge["payload"]["nonce"]
            .as_str()
            .expect("nonce")
            .to_string();
        c
    }

    /// Open and connect with `params`; panics unless hello-ok.
    pub async fn connect(url: &str, params: Value) -> Client {
        Client::open(url).await.handshake(params).await
    }

    /// Send `connect` with `params` on an opened socket; panics unless
    /// hello-ok.
    pub async fn handshake(self, params: Value) -> Client {
        let mut c = self;
        let res = c.request("connect", params).await;
        assert_eq!(res["ok"], true, "connect failed: {res}");
        assert_eq!(res["payload"]["type"], "hello-ok");
        c.hello = res["payload"].clone();
        c
    }

    /// Connect as an admin with token `secret` at protocol 3..4.
    pub async fn admin(url: &str) -> Client {
        Client::connect(url, connect_params(3, 4, Some("secret"), ALL)).await
    }

    /// Send raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    /// The next JSON frame, or how the socket closed.
    pub async fn raw_next(&mut self) -> Result<Value, Closed> {
        loop {
            let msg = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await
                .expect("a frame within the hang guard");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("server sends JSON");
                    return Ok(v);
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(f.map_or(
                        Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                        |f| Closed {
                            code: f.code.into(),
                            reason: f.reason.to_string(),
                        },
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    return Err(Closed {
                        code: 1006,
                        reason: String::new(),
                    });
                }
            }
        }
    }

    fn note_event(&mut self, v: &Value) {
        if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
            assert_eq!(seq, self.last_seq + 1, "event seq must be contiguous: {v}");
            self.last_seq = seq;
        }
    }

    /// Send a request with a fresh id.
    pub async fn send_req(&mut self, method: &str, params: Value) -> String {
        self.next_id += 1;
        let id = format!("{}:{}", self.next_id, method);
        let frame = json!({"type": "req", "id": id, "method": method, "params": params});
        self.send_text(&frame.to_string()).await;
        id
    }

    /// Wait for the response with `id`, buffering events.
    pub async fn response(&mut self, id: &str) -> Value {
        loop {
            let v = self
                .raw_next()
                .await
                .unwrap_or_else(|c| panic!("closed waiting for {id}: {c:?}"));
            if v["type"] == "res" && v["id"] == id {
                return v;
            }
            if v["type"] == "event" {
                self.note_event(&v);
                self.events.push_back(v);
            }
        }
    }

    /// Request and wait for its response.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_req(method, params).await;
        self.response(&id).await
    }

    /// Request; panics unless ok; returns the payload.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let r = self.request(method, params).await;
        assert_eq!(r["ok"], true, "{method} failed: {r}");
        r["payload"].clone()
    }

    /// The next event matching `pred` (earlier non-matching ones are kept).
    pub async fn event(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.events.iter().position(&pred) {
            return self.events.remove(i).expect("index");
        }
        loop {
            let v = self
                .raw_next()
                .await
                .unwrap_or_else(|c| panic!("closed waiting for event: {c:?}"));
            if v["type"] != "event" {
                continue;
            }
            self.note_event(&v);
            if pred(&v) {
                return v;
            }
            self.events.push_back(v);
        }
    }

    /// Chat events of `run_id` up to and including its terminal event.
    pub async fn chat_run(&mut self, run_id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let rid = run_id.to_string();
            let e = self
                .event(move |e| e["event"] == "chat" && e["payload"]["runId"] == rid.as_str())
                .await;
            let state = e["payload"]["state"].as_str().unwrap_or("").to_string();
            out.push(e["payload"].clone());
            if state != "delta" {
                return out;
            }
        }
    }

    /// Read until the socket closes; how it closed.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match self.raw_next().await {
                Ok(_) => continue,
                Err(c) => return c,
            }
        }
    }
}

/// A gateway in a child process (this test binary re-executed with one
/// ignored test selected), for kill -9 tests.
pub struct ChildGateway {
    /// The child process.
    pub child: std::process::Child,
    /// `ws://addr/`.
    pub url: String,
    /// Its address.
    pub addr: String,
}

impl ChildGateway {
    /// Re-run the current test binary with only `test` (an `#[ignore]`d
    /// test that starts a gateway and prints `LISTENING <addr>`), with `env`
    /// set (and, in the PostgreSQL pass, this process's server: see
    /// [`crate::test_store::child_env`]); returns once the child is
    /// listening.
    pub fn spawn(test: &str, env: &[(&str, &str)]) -> ChildGateway {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe().expect("test exe");
        let mut cmd = Command::new(exe);
        cmd.args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::piped())
        .stderr(child_log());
        for (k, v) in crate::test_store::child_env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child gateway");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("child printed its address before exiting")
                .expect("read child stdout");
            // libtest prints `test NAME ... ` without a newline first.
            if let Some(i) = line.find("LISTENING ") {
                break line[i + "LISTENING ".len()..].trim().to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ChildGateway {
            child,
            url: format!("ws://{addr}/"),
            addr,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix.
        self.child.wait().expect("reaped");
    }
}

/// Where a child gateway's stderr goes: appended to the file
/// `PINCER_CHILD_LOG` names (to read its logs after a failure; the child
/// logs at `RUST_LOG` when its test calls `pincer::logging` or a
/// subscriber), else nowhere.
fn child_log() -> std::process::Stdio {
    std::env::var_os("PINCER_CHILD_LOG")
        .and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        })
        .map_or_else(std::process::Stdio::null, std::process::Stdio::from)
}

/// The runtime a child gateway (see [`ChildGateway::spawn`]) runs on:
/// multi-threaded with two workers, like the tests' own.
pub fn child_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("child gateway runtime")
}

/// In a child gateway (see [`ChildGateway::spawn`]): log to stderr at
/// `RUST_LOG` when the parent set `PINCER_CHILD_LOG`.
pub fn child_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    if std::env::var_os("PINCER_CHILD_LOG").is_none() {
        return;
    }
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| pincer::logging::DEFAULT_FILTER.into()),
        )
        .with(pincer::logging::fmt_layer(
            pincer::logging::LogFormat::Text,
            false,
            std::io::stderr,
        ))
        .try_init();
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
