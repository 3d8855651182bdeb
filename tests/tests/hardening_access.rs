//! Who may drive the agent through a channel (issue 8, item A2): the access
//! policy (`dm_policy`, `allow_from`) applied to every channel message
//! before it reaches a run, sender pairing approved over the protocol, HTTP
//! and the `pincer pairing` command, test channels only from loopback,
//! `/tool` only for operators, and bundled tools with no hosts granted.
//!
//! Everything runs through a real gateway on loopback with the bundled
//! plugins built from source; pairing replies are observed where a platform
//! would see them: the echo channel POSTs every message it sends to its
//! `reply_url`, a local receiver.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use pincer::channels::access::DmPolicy;
use pincer::channels::pairing::{self, Pairing};
use pincer::clock::ManualClock;
use pincer::gateway::launch::{ClockOverride, Options};
use pincer::health::HealthConfig;
use pincer::plugins::{PluginSettings, RuntimeConfig};
use pincer_tests::TestRuntime;
use pincer_tests::gateway::{Client, TestGateway, connect_params};
use pincer_tests::webhook_receiver::Receiver;
use serde_json::{Value, json};

const SECRET: &str = "secret";

/// Echo settings: `dm` policy, `allow` list, replies POSTed to `rx`.
fn echo_settings(rx: &Receiver, dm: DmPolicy, allow: &[&str]) -> PluginSettings {
    PluginSettings {
        dm_policy: dm,
        allow_from: allow.iter().map(|s| s.to_string()).collect(),
        allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
        config: BTreeMap::from([("reply_url".to_string(), rx.url())]),
        ..Default::default()
    }
}

/// A gateway with a token, echo replies going to a receiver, and echo on
/// its default access policy unless `adjust` changes it.
struct Rig {
    g: TestGateway,
    rx: Arc<Receiver>,
    http: reqwest::Client,
}

fn options(rx: &Receiver) -> (Options, tempfile::TempDir) {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(SECRET.into());
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    // The default policy (pairing), replacing the test helpers' `open`.
    opts.plugins
        .insert("echo".into(), echo_settings(rx, DmPolicy::default(), &[]));
    (opts, dir)
}

async fn rig_with(adjust: impl FnOnce(&mut Options, &Path, &Receiver)) -> Rig {
    let rx = Arc::new(Receiver::start().await);
    let (mut opts, dir) = options(&rx);
    adjust(&mut opts, dir.path(), &rx);
    let g = TestGateway::start_with(opts, dir).await;
    Rig {
        g,
        rx,
        http: reqwest::Client::new(),
    }
}

async fn rig() -> Rig {
    rig_with(|_, _, _| {}).await
}

fn session_key(channel: &str, conversation: &str) -> String {
    format!("agent:main:{channel}:direct:{conversation}")
}

/// The code in a pairing reply.
fn code_in(text: &str) -> String {
    let at = text
        .find("Pairing code: ")
        .unwrap_or_else(|| panic!("no pairing code in {text:?}"));
    let code: String = text[at + "Pairing code: ".len()..]
        .chars()
        .take(8)
        .collect();
    assert_eq!(
        pairing::normalize_code(&code).as_deref(),
        Some(code.as_str())
    );
    code
}

impl Rig {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.g.addr)
    }

    /// Push one message to `channel` as `sender` in `conversation`; the
    /// push is answered 200 whatever the policy decides.
    async fn push(&self, channel: &str, sender: &str, conversation: &str, id: &str, text: &str) {
        let r = self
            .http
            .post(self.url(&format!("/channels/{channel}/webhook")))
            .json(&json!({"conversation": conversation, "sender": sender, "id": id, "text": text}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(
            status,
            200,
            "push answered {status}: {}",
            r.text().await.unwrap()
        );
    }

    /// Wait until every push to `channel` was processed: a push is answered
    /// once it is committed to the durable inbox, before the access policy
    /// looks at it.
    async fn settled(&self, channel: &str) {
        let inbox = self.g.gw().runtime.channels.inbox().clone();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while inbox.pending(channel).unwrap() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "inbox never settled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Everything the echo channel sent so far, in order.
    fn sent(&self) -> Vec<Value> {
        self.rx.received().iter().map(|r| r.json()).collect()
    }

    /// Messages sent into `conversation`.
    fn sent_to(&self, conversation: &str) -> Vec<Value> {
        self.sent()
            .into_iter()
            .filter(|m| m["conversation"] == conversation)
            .collect()
    }

    /// Wait until at least `n` messages were sent into `conversation`;
    /// returns them.
    async fn wait_sent_to(&self, conversation: &str, n: usize) -> Vec<Value> {
        let mut total = self.sent().len();
        loop {
            let to = self.sent_to(conversation);
            if to.len() >= n {
                return to;
            }
            total += 1;
            self.rx.wait_for(total).await;
        }
    }

    /// Wait until `n` messages were sent in total; the one pairing code
    /// sent into `conversation`.
    async fn code_for(&self, n: usize, conversation: &str) -> String {
        self.rx.wait_for(n).await;
        self.wait_sent_to(conversation, 1).await;
        let sent = self.sent_to(conversation);
        assert_eq!(
            sent.len(),
            1,
            "one pairing reply to {conversation}: {sent:?}"
        );
        code_in(sent[0]["text"].as_str().expect("text"))
    }

    /// An admin client subscribed to session changes.
    async fn admin(&self) -> Client {
        let mut c = Client::admin(&self.g.url()).await;
        c.call("sessions.subscribe", json!({})).await;
        c
    }

    async fn status(&self, path: &str) -> u16 {
        self.http
            .get(self.url(path))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(SECRET)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Calls made to plugin `name` so far.
    fn calls(&self, name: &str) -> u64 {
        self.g
            .gw()
            .runtime
            .plugins
            .info(name)
            .expect("plugin")
            .calls
    }
}

/// The text of the next final chat answer in session `key`.
async fn final_text(c: &mut Client, key: &str) -> String {
    let key = key.to_string();
    let e = c
        .event(move |e| {
            e["event"] == "chat"
                && e["payload"]["sessionKey"] == key.as_str()
                && e["payload"]["state"] == "final"
        })
        .await;
    text_of(&e["payload"]["message"])
}

fn text_of(msg: &Value) -> String {
    msg["content"]
        .as_array()
        .map(|c| c.iter().filter_map(|b| b["text"].as_str()).collect())
        .unwrap_or_default()
}

/// Texts of the transcript of `key`.
async fn transcript(c: &mut Client, key: &str) -> Vec<String> {
    let h = c.call("chat.history", json!({"sessionKey": key})).await;
    h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(text_of)
        .collect()
}

/// Session keys that exist.
async fn session_keys(c: &mut Client) -> Vec<String> {
    let l = c.call("sessions.list", json!({})).await;
    l["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["key"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sender_gets_one_code_no_run_until_approved_over_the_protocol() {
    let r = rig().await;
    let mut admin = r.admin().await;
    let key = session_key("echo", "c-mallory");

    // An unauthenticated push from a stranger, asking for a tool call.
    r.push("echo", "mallory", "c-mallory", "m1", "/tool clock {}")
        .await;
    let code = r.code_for(1, "c-mallory").await;
    let reply = &r.sent_to("c-mallory")[0];
    assert_eq!(reply["reply_to"], "m1", "{reply}");
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("pincer pairing approve echo"),
        "{reply}"
    );

    // A second message: still not processed, and no second code (once
    // the inbox has settled it, the access decision is made: before that,
    // an approval below could still let it through).
    r.push("echo", "mallory", "c-mallory", "m2", "hello?").await;
    r.settled("echo").await;
    assert_eq!(r.sent().len(), 1, "one reply only: {:?}", r.sent());

    // No run: no session, nothing in a transcript, no tool call.
    assert!(!session_keys(&mut admin).await.contains(&key));
    assert!(transcript(&mut admin, &key).await.is_empty());
    assert_eq!(r.calls("clock"), 0);

    let list = admin
        .call("channels.pairing.list", json!({"channel": "echo"}))
        .await;
    let pending = list["pending"].as_array().expect("pending");
    assert_eq!(pending.len(), 1, "{list}");
    assert_eq!(pending[0]["code"], code.as_str());
    assert_eq!(pending[0]["sender"], "mallory");
    assert_eq!(pending[0]["accountId"], "default");
    assert_eq!(
        pending[0]["expiresMs"].as_i64().unwrap() - pending[0]["createdMs"].as_i64().unwrap(),
        pairing::CODE_TTL_MS as i64
    );

    // Approving needs the pairing scope: read + write is not enough.
    let mut rw = Client::connect(
        &r.g.url(),
        connect_params(3, 4, Some(SECRET), &["operator.read", "operator.write"]),
    )
    .await;
    let refused = rw
        .request(
            "channels.pairing.approve",
            json!({"channel": "echo", "code": code}),
        )
        .await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"].to_string().contains("operator.pairing"),
        "{refused}"
    );
    let wrong = admin
        .request(
            "channels.pairing.approve",
            json!({"channel": "echo", "code": "ZZZZ2222"}),
        )
        .await;
    assert_eq!(wrong["ok"], false, "{wrong}");

    let mut pairer = Client::connect(
        &r.g.url(),
        connect_params(3, 4, Some(SECRET), &["operator.pairing"]),
    )
    .await;
    let ok = pairer
        .call(
            "channels.pairing.approve",
            json!({"channel": "echo", "code": code.to_lowercase()}),
        )
        .await;
    assert_eq!(ok["approved"]["sender"], "mallory", "{ok}");

    // The next message is answered; the earlier ones never were.
    r.push("echo", "mallory", "c-mallory", "m3", "hello again")
        .await;
    assert_eq!(final_text(&mut admin, &key).await, "hello again");
    assert_eq!(
        transcript(&mut admin, &key).await,
        ["hello again", "hello again"]
    );
    let list = admin
        .call("channels.pairing.list", json!({"channel": "echo"}))
        .await;
    assert!(list["pending"].as_array().unwrap().is_empty(), "{list}");
    assert_eq!(list["approved"][0]["sender"], "mallory", "{list}");
    // The code is spent.
    let again = pairer
        .request(
            "channels.pairing.approve",
            json!({"channel": "echo", "code": code}),
        )
        .await;
    assert_eq!(again["ok"], false, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_cli_approvals_work_and_persist_across_a_restart() {
    let mut r = rig().await;
    for (i, who) in ["hugo", "clio", "dana"].iter().enumerate() {
        r.push("echo", who, &format!("c-{who}"), &format!("{who}-1"), "hi")
            .await;
        r.rx.wait_for(i + 1).await;
    }
    let hugo = r.code_for(3, "c-hugo").await;
    let clio = r.code_for(3, "c-clio").await;
    let dana = r.code_for(3, "c-dana").await;

    // HTTP: the list needs the token; three pending.
    let anon = r
        .http
        .get(r.url("/v1/channels/echo/pairing"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let list: Value = r
        .http
        .get(r.url("/v1/channels/echo/pairing"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["pending"].as_array().unwrap().len(), 3, "{list}");
    assert_eq!(r.status("/v1/channels/nope/pairing").await, 404);

    let (s, v) = r
        .post_json("/v1/channels/echo/pairing/approve", json!({"code": hugo}))
        .await;
    assert_eq!((s, &v["approved"]["sender"]), (200, &json!("hugo")), "{v}");
    let (s, v) = r
        .post_json("/v1/channels/echo/pairing/approve", json!({"code": hugo}))
        .await;
    assert_eq!(s, 404, "a spent code: {v}");
    let (s, v) = r
        .post_json(
            "/v1/channels/echo/pairing/approve",
            json!({"code": "ABCD1234"}),
        )
        .await;
    assert_eq!(s, 400, "not a code (has a 1): {v}");
    let (s, _) = r
        .post_json("/v1/channels/nope/pairing/approve", json!({"code": clio}))
        .await;
    assert_eq!(s, 404);
    let (s, v) = r
        .post_json("/v1/channels/echo/pairing/dismiss", json!({"code": dana}))
        .await;
    assert_eq!((s, &v["dismissed"]["sender"]), (200, &json!("dana")), "{v}");

    // The CLI's path (`pincer pairing approve echo CODE`): the gateway's
    // store (its data directory's database, or its PostgreSQL database
    // with `--store`), opened beside the running gateway.
    let cli = Pairing::open(
        r.g.dir.path(),
        &pincer_tests::test_store::config_for(r.g.dir.path()),
    )
    .expect("open the gateway's store");
    let approved = cli.approve("echo", None, &clio).expect("CLI approve");
    assert_eq!(approved.sender, "clio");
    let listed = cli.list("echo", None).unwrap();
    let senders: Vec<_> = listed.approved.iter().map(|a| a.sender.as_str()).collect();
    assert_eq!(senders.len(), 2, "{listed:?}");
    assert!(senders.contains(&"hugo") && senders.contains(&"clio"));
    assert!(listed.pending.is_empty(), "{listed:?}");
    assert!(matches!(
        Pairing::open_data_dir(&r.g.dir.path().join("missing")),
        Err(pairing::PairingError::NoDatabase(_))
    ));

    // Both approved senders are answered now; dana is not.
    let mut admin = r.admin().await;
    r.push("echo", "hugo", "c-hugo", "hugo-2", "from hugo")
        .await;
    assert_eq!(
        final_text(&mut admin, &session_key("echo", "c-hugo")).await,
        "from hugo"
    );
    r.push("echo", "clio", "c-clio", "clio-2", "from clio")
        .await;
    assert_eq!(
        final_text(&mut admin, &session_key("echo", "c-clio")).await,
        "from clio"
    );
    // Dismissed is not approved: dana's next message gets a new code.
    r.push("echo", "dana", "c-dana", "dana-2", "from dana")
        .await;
    let dana_codes: Vec<_> = r
        .wait_sent_to("c-dana", 2)
        .await
        .iter()
        .map(|m| code_in(m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(dana_codes.len(), 2);
    assert_ne!(dana_codes[0], dana_codes[1]);
    assert!(
        !session_keys(&mut admin)
            .await
            .contains(&session_key("echo", "c-dana"))
    );
    drop(admin);

    // Approvals persist: a new gateway on the same data directory answers
    // hugo at once, with no new code. (Let the outbox settle first: a
    // notice delivered but not yet marked sent when the gateway stops is
    // sent again after the restart, by design at least once.)
    let outbox = r.g.gw().runtime.channels.outbox().clone();
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while outbox.stats("echo").map(|s| s.depth).unwrap_or(1) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the echo outbox drains");
    r.g.stop().await;
    let sent_before = r.sent().len();
    let TestGateway { dir, .. } = std::mem::replace(
        &mut r.g,
        TestGateway {
            running: None,
            addr: "127.0.0.1:9".parse().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        },
    );
    let (mut opts, _unused) = options(&r.rx);
    opts.data_dir = dir.path().to_path_buf();
    opts.plugins_dir = dir.path().join("plugins");
    r.g = TestGateway::start_with(opts, dir).await;
    let mut admin = r.admin().await;
    r.push("echo", "hugo", "c-hugo", "hugo-3", "after restart")
        .await;
    assert_eq!(
        final_text(&mut admin, &session_key("echo", "c-hugo")).await,
        "after restart"
    );
    // Answered (a run happened), so the policy allowed hugo: no new code.
    let after: Vec<_> = r.sent()[sent_before..].to_vec();
    assert!(
        after
            .iter()
            .all(|m| !m["text"].as_str().unwrap_or("").contains("Pairing code")),
        "no new code after the restart: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_expire_after_an_hour_and_an_account_has_at_most_three_pending() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = ManualClock::new(now);
    let c2 = clock.clone();
    let r = rig_with(move |opts, _, _| opts.clock = Some(ClockOverride(c2))).await;
    let mut admin = r.admin().await;

    for (i, s) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
        r.push("echo", s, &format!("c-{s}"), &format!("{s}-1"), "hi")
            .await;
        if i < 3 {
            r.rx.wait_for(i + 1).await;
        }
    }
    let s1 = r.code_for(3, "c-s1").await;
    let s2 = r.code_for(3, "c-s2").await;
    // The fourth sender got no code and is not pending; asking again
    // changes nothing.
    r.push("echo", "s4", "c-s4", "s4-2", "hi?").await;
    r.settled("echo").await;
    assert!(r.sent_to("c-s4").is_empty(), "{:?}", r.sent());
    assert_eq!(r.sent().len(), 3);
    let list = admin
        .call("channels.pairing.list", json!({"channel": "echo"}))
        .await;
    let mut pending: Vec<_> = list["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sender"].as_str().unwrap().to_string())
        .collect();
    pending.sort();
    assert_eq!(pending, ["s1", "s2", "s3"], "{list}");

    // An hour later the codes are refused, over the protocol and HTTP.
    clock.advance(pairing::CODE_TTL_MS);
    let expired = admin
        .request(
            "channels.pairing.approve",
            json!({"channel": "echo", "code": s1}),
        )
        .await;
    assert_eq!(expired["ok"], false, "{expired}");
    assert!(
        expired["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{expired}"
    );
    let (s, v) = r
        .post_json("/v1/channels/echo/pairing/approve", json!({"code": s2}))
        .await;
    assert_eq!(s, 410, "{v}");
    let list = admin
        .call("channels.pairing.list", json!({"channel": "echo"}))
        .await;
    assert!(list["pending"].as_array().unwrap().is_empty(), "{list}");
    assert!(list["approved"].as_array().unwrap().is_empty(), "{list}");

    // Room again: s4 gets a code now, and s1 a new one.
    r.push("echo", "s4", "c-s4", "s4-3", "hi again").await;
    let s4 = r.code_for(4, "c-s4").await;
    r.push("echo", "s1", "c-s1", "s1-2", "hi again").await;
    let s1_codes: Vec<_> = r
        .wait_sent_to("c-s1", 2)
        .await
        .iter()
        .map(|m| code_in(m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(s1_codes.len(), 2);
    assert_ne!(s1_codes[0], s1_codes[1]);
    admin
        .call(
            "channels.pairing.approve",
            json!({"channel": "echo", "code": s4}),
        )
        .await;
    r.push("echo", "s4", "c-s4", "s4-4", "finally").await;
    assert_eq!(
        final_text(&mut admin, &session_key("echo", "c-s4")).await,
        "finally"
    );
}

/// A copy of the bundled echo channel named `name` in `plugins`.
fn install_echo_copy(plugins: &Path, name: &str) {
    let wasm = pincer_tests::built_plugin("echo");
    std::fs::copy(&wasm, plugins.join(format!("{name}.wasm"))).unwrap();
    let manifest = std::fs::read_to_string(wasm.with_extension("toml")).unwrap();
    let manifest = manifest.replace("name = \"echo\"", &format!("name = \"{name}\""));
    assert!(manifest.contains(&format!("name = \"{name}\"")));
    std::fs::write(plugins.join(format!("{name}.toml")), manifest).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_disabled_and_open_policies() {
    let r = rig_with(|opts, dir, rx| {
        let plugins = dir.join("plugins");
        pincer::bundled::install(&plugins, false).unwrap();
        for (name, dm) in [
            ("echo-allow", DmPolicy::Allowlist),
            ("echo-off", DmPolicy::Disabled),
            ("echo-open", DmPolicy::Open),
        ] {
            install_echo_copy(&plugins, name);
            opts.plugins
                .insert(name.into(), echo_settings(rx, dm, &["alice"]));
        }
    })
    .await;
    let mut admin = r.admin().await;

    // allowlist: alice (listed) is answered, bob is dropped without a code.
    r.push("echo-allow", "alice", "a1", "a1", "hi from alice")
        .await;
    assert_eq!(
        final_text(&mut admin, &session_key("echo-allow", "a1")).await,
        "hi from alice"
    );
    r.push("echo-allow", "bob", "b1", "b1", "hi from bob").await;
    // disabled: even alice is dropped.
    r.push("echo-off", "alice", "a2", "a2", "hi").await;
    // open: anyone.
    r.push("echo-open", "bob", "b2", "b2", "open to bob").await;
    assert_eq!(
        final_text(&mut admin, &session_key("echo-open", "b2")).await,
        "open to bob"
    );

    let keys = session_keys(&mut admin).await;
    assert!(keys.contains(&session_key("echo-allow", "a1")), "{keys:?}");
    assert!(keys.contains(&session_key("echo-open", "b2")), "{keys:?}");
    assert!(!keys.contains(&session_key("echo-allow", "b1")), "{keys:?}");
    assert!(!keys.contains(&session_key("echo-off", "a2")), "{keys:?}");
    // Refused senders got nothing at all (no code: only pairing offers one).
    assert!(r.sent_to("b1").is_empty() && r.sent_to("a2").is_empty());
    for ch in ["echo-allow", "echo-off"] {
        let l = admin
            .call("channels.pairing.list", json!({"channel": ch}))
            .await;
        assert!(l["pending"].as_array().unwrap().is_empty(), "{ch}: {l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_command_is_for_operators_only() {
    let r = rig_with(|opts, _, rx| {
        opts.plugins
            .insert("echo".into(), echo_settings(rx, DmPolicy::Open, &[]));
    })
    .await;
    let mut admin = r.admin().await;
    let key = session_key("echo", "c-eve");
    r.push("echo", "eve", "c-eve", "e1", "/tool clock {}").await;
    assert_eq!(
        final_text(&mut admin, &key).await,
        pincer::agent::echo::TOOL_REFUSED
    );
    r.push(
        "echo",
        "eve",
        "c-eve",
        "e2",
        r#"/tool http-fetch {"url":"https://example.com/"}"#,
    )
    .await;
    assert_eq!(
        final_text(&mut admin, &key).await,
        pincer::agent::echo::TOOL_REFUSED
    );
    assert_eq!(r.calls("clock"), 0, "no tool call for a channel sender");
    assert_eq!(r.calls("http-fetch"), 0);
    assert!(
        !admin
            .events
            .iter()
            .any(|e| e["event"] == "session.tool" || e["payload"]["stream"] == "tool"),
        "no tool events: {:?}",
        admin.events
    );

    // An operator may.
    let mut op = Client::connect(
        &r.g.url(),
        connect_params(3, 4, Some(SECRET), &["operator.write"]),
    )
    .await;
    op.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "/tool clock {}", "idempotencyKey": "op-tool"}),
    )
    .await;
    let events = op.chat_run("op-tool").await;
    let last = events.last().unwrap();
    assert_eq!(last["state"], "final", "{last}");
    assert!(text_of(&last["message"]).contains("unix_ms"), "{last}");
    assert_eq!(r.calls("clock"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_ships_with_no_allowed_hosts() {
    let t = TestRuntime::new(RuntimeConfig::default(), HealthConfig::default());
    pincer::bundled::install(&t.plugins_dir(), false).unwrap();
    assert!(t.runtime.load_dir().await.unwrap().is_empty());
    let err = t
        .runtime
        .plugins
        .invoke_tool("http-fetch", r#"{"url":"https://example.com/"}"#)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("host not allowed"), "{err}");
}

/// A local address that is not loopback (the machine's own interface), if
/// it has one.
fn non_loopback_ip() -> Option<IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the source
    // address the kernel would use.
    for target in ["192.0.2.123:9", "198.51.100.1:9", "10.255.255.1:9"] {
        let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0") else {
            continue;
        };
        if s.connect(target).is_ok()
            && let Ok(a) = s.local_addr()
            && !a.ip().is_loopback()
            && !a.ip().is_unspecified()
        {
            return Some(a.ip());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_channel_takes_pushes_only_from_loopback_unless_public() {
    let Some(ip) = non_loopback_ip() else {
        // The decision itself (127.0.0.0/8, ::1 and mapped loopback vs the
        // rest) is covered by channels::access's unit tests.
        eprintln!("no non-loopback local address: only the unit tests cover this");
        return;
    };
    let r = rig_with(|opts, dir, rx| {
        opts.gateway.listen = "0.0.0.0:0".parse().unwrap();
        let plugins = dir.join("plugins");
        pincer::bundled::install(&plugins, false).unwrap();
        install_echo_copy(&plugins, "echo-public");
        opts.plugins
            .insert("echo".into(), echo_settings(rx, DmPolicy::Open, &[]));
        let public = PluginSettings {
            public: true,
            ..echo_settings(rx, DmPolicy::Open, &[])
        };
        opts.plugins.insert("echo-public".into(), public);
    })
    .await;
    let port = r.g.addr.port();
    let echo_calls = r.calls("echo");
    let remote = reqwest::Client::builder()
        .local_address(ip)
        .build()
        .unwrap();
    let body = json!({"conversation": "far", "sender": "far", "id": "f1", "text": "from afar"});
    let resp = remote
        .post(format!("http://{ip}:{port}/channels/echo/webhook"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("loopback"),
        "{v}"
    );
    assert_eq!(r.calls("echo"), echo_calls, "the plugin was never called");

    // The same push from loopback is accepted; so is the remote push to a
    // test channel the operator made public.
    let mut admin = Client::admin(&format!("ws://127.0.0.1:{port}/")).await;
    admin.call("sessions.subscribe", json!({})).await;
    let resp = remote
        .post(format!("http://{ip}:{port}/channels/echo-public/webhook"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        final_text(&mut admin, &session_key("echo-public", "far")).await,
        "from afar"
    );
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/channels/echo/webhook"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        final_text(&mut admin, &session_key("echo", "far")).await,
        "from afar"
    );
}
