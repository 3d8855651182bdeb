//! The methods behind the Control UI's /skills, /settings/devices,
//! /settings/general, /settings/model-providers and /systems pages, over
//! the protocol: each answers in the shape OpenClaw 2026.9.6's UI reads,
//! with Pincer's real data where it has some (the host in `system.info`,
//! the provider's token counts in `sessions.usage`) and truthful empty
//! answers elsewhere, behind OpenClaw's scopes; the pages themselves in
//! headless Chromium (`tests/browser/issue10-gaps.mjs`) get no error
//! answer; and `/control-ui-config.json` is served only when the gateway
//! serves a Control UI.

use pincer_tests::fake_openai::{FakeOpenAi, Script};
use pincer_tests::gateway::{ALL, Client, TestGateway, connect_params};
use serde_json::{Value, json};

const TOKEN: &str = "pages-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_methods_answer_in_the_shapes_the_ui_reads() {
    let g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;

    let lib = c.call("skills.library.list", json!({"scope": "all"})).await;
    assert_eq!(lib["entries"], json!([]), "{lib}");
    assert_eq!(lib["defaultTarget"], "unavailable");
    assert_eq!(lib["canManageWorkspace"], false);
    let search = c
        .call("skills.search", json!({"query": "x", "limit": 20}))
        .await;
    assert_eq!(search["results"], json!([]));
    assert_eq!(
        c.call("skills.status", json!({})).await["skills"],
        json!([])
    );

    let exec = c.call("exec.approvals.get", json!({})).await;
    assert_eq!(exec["resolvedDefaults"]["security"], "deny", "{exec}");
    assert_eq!(exec["file"]["agents"], json!({}));
    assert_eq!(exec["exists"], false);

    let themes = c.call("themes.list", json!({})).await;
    let ids: Vec<&str> = themes["themes"]
        .as_array()
        .expect("themes")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 11, "{themes}");
    assert!(ids.contains(&"claw") && ids.contains(&"miami"));
    assert!(
        themes["themes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["source"] == "builtin")
    );
    assert_eq!(themes["current"]["id"], "claw");
    assert_eq!(themes["theme"]["id"], "claw");

    let usage = c.call("usage.status", json!({})).await;
    assert_eq!(usage["providers"], json!([]));
    assert!(usage["updatedAt"].as_i64().is_some_and(|t| t > 0));

    let envs = c
        .call("environments.list", json!({"includeDesktopSetup": true}))
        .await;
    let envs = envs["environments"].as_array().expect("environments");
    assert_eq!(envs.len(), 1, "{envs:?}");
    assert_eq!(envs[0]["id"], "gateway");
    assert_eq!(envs[0]["type"], "local");
    assert_eq!(envs[0]["status"], "available");
    let profiles = c
        .call("environments.list", json!({"projection": "profiles"}))
        .await;
    assert_eq!(profiles, json!({"environments": []}));

    let info = c.call("system.info", json!({})).await;
    assert_eq!(info["platform"], std::env::consts::OS, "{info}");
    assert_eq!(info["arch"], std::env::consts::ARCH);
    assert_eq!(info["port"], g.addr.port());
    assert_eq!(info["pid"], std::process::id());
    assert!(info["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(info["machineName"], info["hostname"]);
    assert!(info["uptimeMs"].as_u64().is_some());
    assert!(info["cpuCount"].as_u64().is_some_and(|n| n >= 1));
    assert!(
        info["serverVersion"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    if cfg!(target_os = "linux") {
        let total = info["memoryTotalBytes"].as_u64().expect("memory total");
        let free = info["memoryFreeBytes"].as_u64().expect("memory free");
        assert!(free <= total);
        assert!(
            info["processMemory"]["rssBytes"]
                .as_u64()
                .is_some_and(|b| b > 0)
        );
        let disk = &info["disks"][0];
        let total = disk["totalBytes"].as_u64().expect("disk total");
        assert!(disk["availableBytes"].as_u64().is_some_and(|a| a <= total));
        assert_eq!(info["diskTotalBytes"], total);
        assert_eq!(info["diskPath"], disk["path"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_methods_need_openclaws_scopes() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    let g = TestGateway::start_with(opts, dir).await;
    let mut reader = Client::connect(
        &g.url(),
        connect_params(3, 4, Some(TOKEN), &["operator.read"]),
    )
    .await;
    for m in [
        "skills.library.list",
        "skills.search",
        "skills.status",
        "themes.list",
        "usage.status",
        "sessions.usage",
        "environments.list",
        "system.info",
    ] {
        let r = reader.request(m, json!({})).await;
        assert_eq!(r["ok"], true, "{m} for a reader: {r}");
    }
    // Exec approvals are admin-only in OpenClaw's method table.
    let r = reader.request("exec.approvals.get", json!({})).await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("operator.admin")),
        "{r}"
    );
    let mut admin = Client::connect(&g.url(), connect_params(3, 4, Some(TOKEN), ALL)).await;
    assert_eq!(
        admin.request("exec.approvals.get", json!({})).await["ok"],
        true
    );
}

/// `YYYY-MM-DD` of a Unix ms time, UTC.
fn day(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_usage_sums_the_token_counts_the_provider_reported() {
    let fake = FakeOpenAi::start(vec![
        Script::text_with_usage(&["first ", "answer"], 11, 4),
        Script::text_with_usage(&["second"], 20, 7),
    ])
    .await;
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    opts.agent.provider = "openai".into();
    opts.agent.openai.base_url = fake.base_url();
    opts.agent.openai.model = "pages-model".into();
    opts.agent.openai.api_key = Some("sk-pages".into());
    let g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::connect(&g.url(), connect_params(3, 4, Some(TOKEN), ALL)).await;

    // Nothing recorded yet: zeros in the full shape.
    let empty = c.call("sessions.usage", json!({})).await;
    assert_eq!(empty["sessions"], json!([]), "{empty}");
    assert_eq!(empty["totals"]["totalTokens"], 0);
    assert_eq!(empty["aggregates"]["sessionCount"], 0);
    assert_eq!(empty["aggregates"]["costDaily"], json!([]));

    let before = pincer::gateway::now_ms();
    for (i, key) in ["main", "other"].iter().enumerate() {
        let run = format!("usage-{i}");
        c.call(
            "chat.send",
            json!({"sessionKey": key, "message": "hi", "idempotencyKey": run}),
        )
        .await;
        c.chat_run(&run).await;
        let w = c.call("agent.wait", json!({"runId": run})).await;
        assert_eq!(w["status"], "ok", "{w}");
    }
    let today = day(pincer::gateway::now_ms());
    let range = json!({"startDate": day(before), "endDate": today, "limit": 1000});
    let u = c.call("sessions.usage", range).await;
    assert_eq!(u["totals"]["input"], 31, "{u}");
    assert_eq!(u["totals"]["output"], 11);
    assert_eq!(u["totals"]["totalTokens"], 42);
    assert_eq!(u["totals"]["totalCost"], 0);
    assert_eq!(u["totals"]["missingCostEntries"], 2);
    assert_eq!(u["aggregates"]["sessionCount"], 2);
    assert_eq!(u["aggregates"]["messages"]["user"], 2);
    assert_eq!(u["aggregates"]["messages"]["assistant"], 2);
    let sessions = u["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2);
    let main = sessions
        .iter()
        .find(|s| s["key"] == "agent:main:main")
        .expect("main session row");
    assert_eq!(main["usage"]["totalTokens"], 15);
    assert_eq!(main["usage"]["messageCounts"]["total"], 2);

    // One session by key.
    let one = c
        .call("sessions.usage", json!({"key": "other", "limit": 1}))
        .await;
    assert_eq!(one["totals"]["totalTokens"], 27, "{one}");

    // A range before anything happened counts nothing.
    let old = c
        .call(
            "sessions.usage",
            json!({"startDate": "2001-01-01", "endDate": "2001-01-31"}),
        )
        .await;
    assert_eq!(old["sessions"], json!([]), "{old}");
    assert_eq!(old["totals"]["totalTokens"], 0);

    // A malformed date is refused clearly; the connection keeps serving.
    let bad = c
        .request("sessions.usage", json!({"startDate": "last week"}))
        .await;
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["error"]["code"], "INVALID_REQUEST");
    assert!(
        bad["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("startDate")),
        "{bad}"
    );
    assert_eq!(
        c.call("usage.status", json!({})).await["providers"],
        json!([])
    );
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("GET");
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_ui_config_is_served_only_with_a_control_ui() {
    let ui = tempfile::tempdir().expect("ui dir");
    std::fs::write(ui.path().join("index.html"), "<html><head></head></html>").expect("index");
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    opts.gateway.control_ui = Some(ui.path().to_path_buf());
    let g = TestGateway::start_with(opts, dir).await;
    let base = format!("http://{}", g.addr);

    // Like the UI's files, it needs no token (it holds no secret and no
    // version), and a wrong bearer (the UI tries its device token first)
    // is no auth failure: the address is not blocked after many.
    for _ in 0..20 {
        let (status, _) = get(&format!("{base}/control-ui-config.json"), Some("wrong")).await;
        assert_eq!(status, 200);
    }
    let (status, _) = get(&format!("{base}/v1/sessions"), Some(TOKEN)).await;
    assert_eq!(status, 200, "the address was blocked");
    for path in [
        "/control-ui-config.json",
        "/__openclaw/control-ui-config.json",
        "/__openclaw__/control-ui-config.json",
    ] {
        let (status, cfg) = get(&format!("{base}{path}"), None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(cfg["basePath"], "", "{cfg}");
        assert_eq!(cfg["assistantName"], "Pincer");
        assert_eq!(cfg["assistantAgentId"], "main");
        assert!(cfg["serverVersion"].is_null(), "no version to strangers");
        assert_eq!(cfg["terminalEnabled"], false);
        assert_eq!(cfg["pluginFrameGrants"], json!([]));
    }

    // Without a Control UI there is nothing to configure.
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    let plain = TestGateway::start_with(opts, dir).await;
    let (status, _) = get(
        &format!("http://{}/control-ui-config.json", plain.addr),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404);
}

/// The pages and the methods each must have had answered (OpenClaw's
/// Control UI 2026.9.6 route paths).
const PAGES: &[(&str, &str, &[&str])] = &[
    ("skills", "/skills", &["skills.library.list"]),
    ("devices", "/settings/devices", &["exec.approvals.get"]),
    ("general", "/settings/general", &["themes.list"]),
    (
        "model-providers",
        "/settings/model-providers",
        &["usage.status", "sessions.usage"],
    ),
    ("systems", "/systems", &["environments.list", "system.info"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_ui_pages_get_answers_not_errors() {
    use pincer_tests::browser;
    browser::require_tools();
    let ui = browser::control_ui_dir();
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    opts.gateway.control_ui = Some(ui);
    let g = TestGateway::start_with(opts, dir).await;
    // Something for the usage pages to count.
    let mut c = Client::connect(&g.url(), connect_params(3, 4, Some(TOKEN), ALL)).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "hello pages", "idempotencyKey": "pages-1"}),
    )
    .await;
    c.chat_run("pages-1").await;

    let gateway_url = format!("ws://{}", g.addr)
        .replace(':', "%3A")
        .replace('/', "%2F");
    let pages: Vec<Value> = PAGES
        .iter()
        .map(|(name, path, methods)| {
            json!({
                "name": name,
                "url": format!("http://{}{path}?gatewayUrl={gateway_url}#token={TOKEN}", g.addr),
                "methods": methods,
            })
        })
        .collect();
    let report = browser::drive_checked(
        "issue10-gaps.mjs",
        "control_ui_pages",
        json!({"pages": pages}),
    )
    .await;
    for (name, _, methods) in PAGES {
        let called = &report["pageMethods"][name];
        for m in *methods {
            assert!(
                called.as_array().is_some_and(|a| a.iter().any(|x| x == m)),
                "{name} did not call {m}: {called}"
            );
        }
    }
    // The UI's runtime settings were found (a 404 here is what this
    // change removed), every time.
    let fetches = report["uiConfig"].as_array().expect("uiConfig");
    assert!(!fetches.is_empty(), "the UI fetched no settings");
    assert!(fetches.iter().all(|f| f["status"] == 200), "{fetches:?}");
}
