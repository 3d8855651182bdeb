//! Operators get their own lane (issue 8, the attack benchmark's slow
//! channel): channel runs together never hold the `operator_reserve` slots
//! of the global run cap, and one channel never holds more than
//! `channel_max_concurrent`, so an operator's run starts while a channel
//! flood holds every slot channels may have, and a second channel still
//! gets a slot while the first one's backlog waits.

use pincer::gateway::launch::ProviderOverride;
use pincer::plugins::PluginSettings;
use pincer_tests::gateway::{Client, TestGateway};
use pincer_tests::runs::{GateProvider, GateState};
use serde_json::json;

/// A gateway whose runs wait at `gate`, with the echo channel and (when
/// `echo2`) a second copy of it, both open to strangers, and run limits
/// `(max_concurrent, operator_reserve, channel_max_concurrent)`.
async fn gated_gateway(
    gate: &std::sync::Arc<GateProvider>,
    limits: (usize, usize, usize),
    echo2: bool,
) -> TestGateway {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.provider = Some(ProviderOverride(gate.clone()));
    let runs = &mut opts.gateway.runs;
    (
        runs.max_concurrent,
        runs.operator_reserve,
        runs.channel_max_concurrent,
    ) = limits;
    if echo2 {
        pincer::bundled::install(&opts.plugins_dir, true).expect("bundled plugins");
        let (_, wasm, toml) = pincer::bundled::BUNDLED
            .iter()
            .find(|(n, _, _)| *n == "echo")
            .expect("echo is bundled");
        std::fs::write(
            opts.plugins_dir.join("echo2.toml"),
            toml.replace("name = \"echo\"", "name = \"echo2\""),
        )
        .expect("write echo2.toml");
        std::fs::write(opts.plugins_dir.join("echo2.wasm"), wasm).expect("write echo2.wasm");
        opts.plugins.insert(
            "echo2".into(),
            PluginSettings {
                dm_policy: pincer::channels::access::DmPolicy::Open,
                ..Default::default()
            },
        );
    }
    TestGateway::start_with(opts, dir).await
}

/// One message from its own sender in its own chat to `channel`.
async fn push(g: &TestGateway, channel: &str, i: usize) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/channels/{channel}/webhook", g.addr))
        .json(&json!({
            "conversation": format!("{channel}-c{i}"),
            "sender": format!("{channel}-u{i}"),
            "text": format!("{channel} flood {i}"),
            "id": format!("m{i}"),
        }))
        .send()
        .await
        .expect("webhook push");
    assert_eq!(r.status(), 200);
}

fn entered(s: &GateState, needle: &str) -> usize {
    s.entered.iter().filter(|m| m.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_run_starts_while_a_channel_flood_holds_every_channel_slot() {
    let gate = GateProvider::new();
    // 3 slots, 1 reserved for operators: channels share 2.
    let g = gated_gateway(&gate, (3, 1, 0), false).await;
    let mut c = Client::admin(&g.url()).await;
    for i in 0..6 {
        push(&g, "echo", i).await;
    }
    // Two channel runs hold the channel share (they stay at the gate).
    gate.until(|s| entered(s, "echo flood") == 2).await;
    let ack = c
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": "operator", "idempotencyKey": "op1"}),
        )
        .await;
    assert_eq!(ack["status"], "started");
    // The operator's run executes beside the flood (without the reserve
    // it would wait behind all six channel runs).
    let s = gate.until(|s| entered(s, "operator") == 1).await;
    assert_eq!(
        entered(&s, "echo flood"),
        2,
        "no channel run took the reserve: {s:?}"
    );
    assert_eq!(g.gw().runs.counts().running, 3);
    gate.open(7);
    assert_eq!(c.chat_run("op1").await.last().unwrap()["state"], "final");
    let s = gate.until(|s| s.left == 7).await;
    assert_eq!(entered(&s, "echo flood"), 6, "every channel run ran: {s:?}");
    assert!(s.high_water <= 3, "never more than the cap at once: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_channel_cannot_take_every_channel_slot() {
    let gate = GateProvider::new();
    // 4 slots, 1 reserved for operators, at most 2 per channel.
    let g = gated_gateway(&gate, (4, 1, 2), true).await;
    let mut c = Client::admin(&g.url()).await;
    for i in 0..5 {
        push(&g, "echo", i).await;
    }
    gate.until(|s| entered(s, "echo flood") == 2).await;
    // Another channel still gets the third channel slot.
    push(&g, "echo2", 0).await;
    gate.until(|s| entered(s, "echo2 flood") == 1).await;
    // And the operator the reserve.
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "operator", "idempotencyKey": "op1"}),
    )
    .await;
    let s = gate.until(|s| entered(s, "operator") == 1).await;
    assert_eq!(
        entered(&s, "echo flood"),
        2,
        "echo stayed at its cap: {s:?}"
    );
    assert_eq!(g.gw().runs.counts().running, 4);
    gate.open(9);
    let s = gate.until(|s| s.left == 7).await;
    assert_eq!(entered(&s, "echo flood"), 5, "every echo run ran: {s:?}");
    assert!(s.high_water <= 4, "never more than the cap at once: {s:?}");
}
