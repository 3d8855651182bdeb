//! Issue 8, plugin side (B11-B14 and the name-ownership rule of B9): instance
//! caps, storage quotas, unique tool names and untrusted plugin files, each
//! with real plugins built from source, real wasmtime sandboxes and real
//! SQLite files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use pincer::gateway::runs::RegistryTools;
use pincer::health::HealthConfig;
use pincer::plugins::watcher::Change;
use pincer::plugins::{
    CallError, LoadError, PluginSettings, PluginState, QuotaSettings, Quotas, RuntimeConfig,
};
use pincer_tests::registry::{count_plugin_logs, install_named, runtime_at};
use pincer_tests::{TestRuntime, install_plugin};

fn settings(entries: &[(&str, QuotaSettings)]) -> BTreeMap<String, PluginSettings> {
    entries
        .iter()
        .map(|(name, q)| {
            (
                name.to_string(),
                PluginSettings {
                    quotas: *q,
                    ..Default::default()
                },
            )
        })
        .collect()
}

fn runtime(settings: BTreeMap<String, PluginSettings>) -> TestRuntime {
    TestRuntime::new(
        RuntimeConfig {
            settings,
            ..Default::default()
        },
        HealthConfig::default(),
    )
}

async fn call(t: &TestRuntime, plugin: &str, args: serde_json::Value) -> Result<String, CallError> {
    t.runtime
        .plugins
        .invoke_tool(plugin, &args.to_string())
        .await
}

/// Install the hostile plugin as `name`, with its own tool name (tool names
/// are unique, so its `describe` must not say `hostile`).
fn install_hostile_as(t: &TestRuntime, name: &str, extra: &str) {
    install_named(&t.plugins_dir(), "hostile", name, extra);
    t.runtime
        .plugins
        .kv()
        .set(name, "describe_name", name.as_bytes())
        .unwrap();
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("tool answers JSON")
}

async fn clock_answers(t: &TestRuntime) {
    let out = call(t, "clock", serde_json::json!({}))
        .await
        .expect("clock answers");
    assert!(out.contains("unix_ms"), "{out}");
}

// ---------------------------------------------------------------- B11

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_over_the_instance_cap_are_refused_busy_and_nothing_hangs() {
    let mut s = settings(&[(
        "hostile",
        QuotaSettings {
            max_instances: Some(2),
            ..Default::default()
        },
    )]);
    // Calls may last 30 s, so the two admitted calls (8 s each) are still
    // in flight however slowly the other four are scheduled.
    s.get_mut("hostile").unwrap().limits = Some(pincer::plugins::Limits {
        memory_mb: 32,
        call_timeout_ms: 30_000,
        cpu_ms: 500,
        poll_wait_ms: 1_000,
    });
    let t = runtime(s);
    install_plugin(&t.plugins_dir(), "hostile", "hostile");
    install_plugin(&t.plugins_dir(), "clock", "clock");
    assert!(t.runtime.load_dir().await.unwrap().is_empty());
    assert_eq!(t.runtime.plugins.instances("hostile"), Some((0, 2)));

    // Six calls at once to a plugin that holds each call for a while: two
    // run, four are refused at once as busy.
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let rt = t.runtime.clone();
            tokio::spawn(async move {
                rt.plugins
                    .invoke_tool("hostile", r#"{"mode":"sleep","ms":8000}"#)
                    .await
            })
        })
        .collect();
    // While they are in flight another plugin keeps answering.
    clock_answers(&t).await;
    let mut slept = 0;
    let mut busy = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(out) => {
                assert_eq!(json(&out)["slept"], 8000);
                slept += 1;
            }
            Err(e @ CallError::Busy { cap: 2, .. }) => {
                assert!(e.to_string().contains("busy"), "{e}");
                busy += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((slept, busy), (2, 4));
    // The places were given back: the plugin serves again.
    assert_eq!(t.runtime.plugins.instances("hostile"), Some((0, 2)));
    let out = call(&t, "hostile", serde_json::json!({"mode": "ok"}))
        .await
        .unwrap();
    assert_eq!(out, r#"{"ok":true}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_whose_cap_does_not_fit_the_engine_pool_is_refused() {
    let t = runtime(settings(&[
        (
            "clock",
            QuotaSettings {
                max_instances: Some(5_000),
                ..Default::default()
            },
        ),
        (
            "testchan",
            QuotaSettings {
                max_instances: Some(1),
                ..Default::default()
            },
        ),
    ]));
    install_plugin(&t.plugins_dir(), "clock", "clock");
    // A poll channel with one instance could never send: refused too.
    install_plugin(&t.plugins_dir(), "testchan", "testchan");
    let failures = t.runtime.load_dir().await.unwrap();
    assert_eq!(failures.len(), 2, "{failures:?}");
    for (path, e) in &failures {
        assert!(
            matches!(e, LoadError::Capacity(m) if m.contains("max_instances")),
            "{path:?}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_channel_sends_queues_at_the_cap_and_loses_no_reply() {
    let t = runtime(settings(&[(
        "testchan",
        QuotaSettings {
            max_instances: Some(3),
            ..Default::default()
        },
    )]));
    install_plugin(&t.plugins_dir(), "testchan", "testchan");
    assert!(t.runtime.load_dir().await.unwrap().is_empty());
    let sends: Vec<_> = (0..40)
        .map(|i| {
            let rt = t.runtime.clone();
            tokio::spawn(async move {
                let r = rt
                    .channels
                    .send(
                        "testchan",
                        pincer::plugins::bindings::OutboundMessage::plain(
                            "c",
                            format!("reply {i}"),
                        ),
                    )
                    .await;
                let (in_use, cap) = rt.plugins.instances("testchan").unwrap();
                assert!(in_use <= cap, "{in_use} instances over the cap of {cap}");
                r
            })
        })
        .collect();
    for s in sends {
        let id = s.await.unwrap().expect("every send is delivered");
        assert!(id.starts_with('t'), "{id}");
    }
}

// ---------------------------------------------------------------- B12

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_flood_stops_at_the_quota_with_a_permanent_error_and_others_still_write() {
    let t = runtime(settings(&[(
        "hostile",
        QuotaSettings {
            kv_max_keys: Some(40),
            ..Default::default()
        },
    )]));
    install_plugin(&t.plugins_dir(), "hostile", "hostile");
    install_hostile_as(&t, "bystander", "");
    assert!(t.runtime.load_dir().await.unwrap().is_empty());

    let out = json(
        &call(&t, "hostile", serde_json::json!({"mode": "kvflood"}))
            .await
            .unwrap(),
    );
    assert_eq!(out["written"], 40, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains("Permanent") && error.contains("quota"),
        "{error}"
    );
    let kv = t.runtime.plugins.kv();
    assert_eq!(kv.usage("hostile").unwrap().keys, 40);
    // Again: the existing keys may be overwritten, a new one is refused.
    let out = json(
        &call(&t, "hostile", serde_json::json!({"mode": "kvflood"}))
            .await
            .unwrap(),
    );
    assert_eq!(out["written"], 40, "{out}");
    assert!(out["error"].as_str().unwrap().contains("quota"), "{out}");
    assert_eq!(kv.usage("hostile").unwrap().keys, 40);
    // Another plugin still writes.
    call(&t, "bystander", serde_json::json!({"mode": "kvset"}))
        .await
        .expect("the bystander can still write");
    assert_eq!(
        kv.get("bystander", "one").unwrap().as_deref(),
        Some(&b"value"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_bytes_quota_counts_keys_and_values() {
    let t = runtime(settings(&[(
        "hostile",
        QuotaSettings {
            kv_max_bytes: Some(10 * 1024),
            ..Default::default()
        },
    )]));
    install_plugin(&t.plugins_dir(), "hostile", "hostile");
    assert!(t.runtime.load_dir().await.unwrap().is_empty());
    let out = json(
        &call(&t, "hostile", serde_json::json!({"mode": "kvflood"}))
            .await
            .unwrap(),
    );
    // 1 KiB values with 13-byte keys: nine fit in 10 KiB, the tenth does not.
    assert_eq!(out["written"], 9, "{out}");
    assert!(out["error"].as_str().unwrap().contains("bytes"), "{out}");
    assert!(t.runtime.plugins.kv().usage("hostile").unwrap().bytes <= 10 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_preopened_only_when_asked_and_granted_and_its_size_is_enforced() {
    let t = runtime(settings(&[
        (
            "granted",
            QuotaSettings {
                data_mb: Some(1),
                ..Default::default()
            },
        ),
        (
            "ungranted",
            QuotaSettings {
                data_mb: Some(0),
                ..Default::default()
            },
        ),
        (
            "files",
            QuotaSettings {
                data_mb: Some(1),
                ..Default::default()
            },
        ),
        (
            "hostile",
            QuotaSettings {
                data_mb: Some(8),
                ..Default::default()
            },
        ),
    ]));
    // hostile: granted by the operator but its manifest does not ask.
    install_plugin(&t.plugins_dir(), "hostile", "hostile");
    // asks for 4 MiB, the operator grants 1.
    install_hostile_as(&t, "granted", "data_mb = 4");
    // asks, no grant.
    install_hostile_as(&t, "ungranted", "data_mb = 4");
    install_hostile_as(&t, "files", "data_mb = 1");
    // Filling 1 MiB and creating files until the grant stops them is real
    // work: the hostile tool's 500 ms CPU limit (which counts wall-clock
    // epochs) was hit on a loaded machine. This test is about the grant.
    for name in ["granted", "files"] {
        let path = t.plugins_dir().join(format!("{name}.toml"));
        let manifest = std::fs::read_to_string(&path).expect("manifest");
        std::fs::write(&path, manifest.replace("cpu_ms = 500", "cpu_ms = 5000")).expect("manifest");
    }
    assert!(t.runtime.load_dir().await.unwrap().is_empty());

    for plugin in ["hostile", "ungranted"] {
        let out = json(
            &call(&t, plugin, serde_json::json!({"mode": "datals"}))
                .await
                .unwrap(),
        );
        assert_eq!(out["data"], false, "{plugin} sees /data");
        let out = json(
            &call(&t, plugin, serde_json::json!({"mode": "datafill"}))
                .await
                .unwrap(),
        );
        assert_eq!(out["written"], 0, "{plugin}: {out}");
    }

    let out = json(
        &call(&t, "granted", serde_json::json!({"mode": "datals"}))
            .await
            .unwrap(),
    );
    assert_eq!(out["data"], true);
    let out = json(
        &call(&t, "granted", serde_json::json!({"mode": "datafill"}))
            .await
            .unwrap(),
    );
    let written = out["written"].as_u64().unwrap();
    assert!(
        out["error"].is_string(),
        "the fill was never refused: {out}"
    );
    assert!(
        written <= 1 << 20,
        "wrote {written} bytes past a 1 MiB grant"
    );
    assert!(written >= 512 << 10, "refused too early: {out}");
    let on_disk = std::fs::metadata(t.dir.path().join("plugin-data/granted/fill"))
        .unwrap()
        .len();
    assert!(on_disk <= 1 << 20, "{on_disk} bytes on disk");
    // Empty files cost their entry too: a flood of them stops within the grant.
    let out = json(
        &call(&t, "files", serde_json::json!({"mode": "datafiles"}))
            .await
            .unwrap(),
    );
    let created = out["created"].as_u64().unwrap();
    assert!(out["error"].is_string(), "{out}");
    assert!((1..=256).contains(&created), "{out}");
    // The refusal is final for later calls too.
    let out = json(
        &call(&t, "granted", serde_json::json!({"mode": "datafill"}))
            .await
            .unwrap(),
    );
    assert!(out["written"].as_u64().unwrap() <= 1 << 20, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_bounded_in_bytes() {
    let logs = count_plugin_logs();
    let t = runtime(BTreeMap::new());
    install_plugin(&t.plugins_dir(), "hostile", "hostile");
    install_plugin(&t.plugins_dir(), "clock", "clock");
    assert!(t.runtime.load_dir().await.unwrap().is_empty());
    let started = Instant::now();
    let out = call(&t, "hostile", serde_json::json!({"mode": "logflood"}))
        .await
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(out.contains("flooded"));
    clock_answers(&t).await;
    // 20,000 records of 10,000 bytes were offered; what reached the log is
    // the burst plus the rate for the time the call took (plus one record).
    let q = Quotas::default();
    let bound = q.log_burst_bytes as f64 + q.log_bytes_per_sec as f64 * elapsed + 4096.0;
    let logged = logs.get("hostile") as f64;
    assert!(logged > 0.0, "nothing was logged");
    assert!(
        logged <= bound,
        "logged {logged} bytes in {elapsed:.2} s (bound {bound})"
    );
}

// ---------------------------------------------------------------- B13

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_claiming_another_tools_name_is_refused_naming_both_files() {
    let t = runtime(BTreeMap::new());
    install_plugin(&t.plugins_dir(), "clock", "clock");
    install_named(&t.plugins_dir(), "hostile", "impostor", "");
    // The impostor's `describe` answers with the name stored here.
    t.runtime
        .plugins
        .kv()
        .set("impostor", "describe_name", b"clock")
        .unwrap();
    let failures = t.runtime.load_dir().await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (path, e) = &failures[0];
    assert!(path.ends_with("impostor.wasm"));
    let msg = e.to_string();
    assert!(matches!(e, LoadError::ToolClash { .. }), "{msg}");
    assert!(
        msg.contains("impostor.wasm") && msg.contains("clock.wasm"),
        "{msg}"
    );
    let info = t.runtime.plugins.info("impostor").unwrap();
    assert_eq!(info.state, PluginState::Failed);
    // The real tool keeps its calls.
    let tools = RegistryTools::new(t.runtime.plugins.clone());
    use pincer::agent::ToolHost;
    let specs: Vec<_> = tools
        .tools()
        .into_iter()
        .filter(|s| s.name == "clock")
        .collect();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].plugin, "clock");
    let out = tools.invoke("clock", "{}").await.unwrap();
    assert!(out.contains("unix_ms"), "{out}");
}

// ---------------------------------------------------------------- B14 and B9

fn sparse(path: &std::path::Path, len: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_escaping_plugin_files_are_refused_unread() {
    let t = runtime(BTreeMap::new());
    let dir = t.plugins_dir();
    let outside = tempfile::tempdir().unwrap();
    // A 1 GiB sparse file in the directory, and a symlink to one outside.
    sparse(&dir.join("huge.wasm"), 1 << 30);
    sparse(&outside.path().join("big"), 1 << 30);
    std::os::unix::fs::symlink(outside.path().join("big"), dir.join("escape.wasm")).unwrap();
    // A symlink inside the directory is followed (to a real plugin).
    std::fs::copy(
        pincer_tests::built_plugin("clock"),
        dir.join(".clock-build"),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.join(".clock-build"), dir.join("clock.wasm")).unwrap();
    let failures = t.runtime.load_dir().await.unwrap();
    let by_file = |f: &str| {
        failures
            .iter()
            .find(|(p, _)| p.ends_with(f))
            .map(|(_, e)| e.to_string())
            .unwrap_or_else(|| panic!("{f} did not fail: {failures:?}"))
    };
    assert!(
        by_file("huge.wasm").contains("larger than"),
        "{}",
        by_file("huge.wasm")
    );
    assert!(
        by_file("escape.wasm").contains("outside the plugins directory"),
        "{}",
        by_file("escape.wasm")
    );
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(
        t.runtime.plugins.info("clock").unwrap().state,
        PluginState::Loaded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_errors_never_echo_the_file() {
    let t = runtime(BTreeMap::new());
    let dir = t.plugins_dir();
    let outside = tempfile::tempdir().unwrap();
    let key = outside.path().join("id_ed25519");
    std::fs::write(
        &key,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n",
    )
    .unwrap();
    // A symlinked manifest pointing at a private key outside the directory.
    std::fs::copy(pincer_tests::built_plugin("clock"), dir.join("linked.wasm")).unwrap();
    std::os::unix::fs::symlink(&key, dir.join("linked.toml")).unwrap();
    // A manifest in the directory whose first line is a secret.
    std::fs::copy(pincer_tests::built_plugin("clock"), dir.join("pasted.wasm")).unwrap();
    std::fs::write(
        dir.join("pasted.toml"),
        "sk-live-TOPSECRET-0123456789\nname = \"pasted\"\n",
    )
    .unwrap();
    // A secret value in a field of the wrong type.
    std::fs::copy(pincer_tests::built_plugin("clock"), dir.join("typed.wasm")).unwrap();
    std::fs::write(
        dir.join("typed.toml"),
        "name = \"typed\"\n[limits]\nmemory_mb = \"hunter2-TOPSECRET\"\n",
    )
    .unwrap();
    let failures = t.runtime.load_dir().await.unwrap();
    assert_eq!(failures.len(), 3, "{failures:?}");
    let listed = serde_json::to_string(&t.runtime.plugins.list()).unwrap();
    for (path, e) in &failures {
        let msg = e.to_string();
        for secret in ["PRIVATE", "b3BlbnNz", "TOPSECRET", "hunter2"] {
            assert!(!msg.contains(secret), "{path:?}: {msg}");
            assert!(!listed.contains(secret), "{listed}");
        }
    }
    let pasted = failures
        .iter()
        .find(|(p, _)| p.ends_with("pasted.wasm"))
        .unwrap()
        .1
        .to_string();
    assert!(pasted.contains("line 1"), "{pasted}");
    let typed = failures
        .iter()
        .find(|(p, _)| p.ends_with("typed.wasm"))
        .unwrap()
        .1
        .to_string();
    assert!(typed.contains("line 3"), "{typed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_stems_must_be_plugin_names() {
    let t = runtime(BTreeMap::new());
    let dir = t.plugins_dir();
    let forged = "evil\n2026-01-01T00:00:00Z  INFO plugin loaded plugin=clock";
    std::fs::copy(
        pincer_tests::built_plugin("clock"),
        dir.join(format!("{forged}.wasm")),
    )
    .unwrap();
    let failures = t.runtime.load_dir().await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let e = &failures[0].1;
    assert!(matches!(e, LoadError::BadName { .. }), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    for p in t.runtime.plugins.list() {
        assert!(!p.name.contains('\n'), "{:?}", p.name);
        assert_eq!(p.state, PluginState::Failed);
    }
    assert!(t.runtime.plugins.current("evil").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_files_claiming_one_name_are_both_refused_until_one_goes() {
    let t = runtime(BTreeMap::new());
    let dir = t.plugins_dir();
    install_plugin(&dir, "clock", "clock");
    // A second file whose manifest claims `clock` (sorts first).
    install_plugin(&dir, "clock", "a-clock");
    let failures = t.runtime.load_dir().await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let msg = failures[0].1.to_string();
    assert!(
        matches!(failures[0].1, LoadError::NameClash { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("a-clock.wasm") && msg.contains("/clock.wasm"),
        "{msg}"
    );
    // Neither serves the name: no secrets, hosts or data reach either file.
    assert!(t.runtime.plugins.current("clock").is_none());
    let info = t.runtime.plugins.info("clock").unwrap();
    assert_eq!(info.state, PluginState::Failed);
    assert!(
        info.last_error
            .unwrap()
            .contains("claimed by more than one file")
    );
    assert!(matches!(
        t.runtime.plugins.invoke_tool("clock", "{}").await,
        Err(CallError::NotLoaded(_))
    ));
    // Reloading either keeps refusing.
    assert!(
        t.runtime
            .apply(&Change::Upsert(dir.join("clock.wasm")))
            .await
            .is_err()
    );
    // Removing one file resolves the clash: the other loads.
    std::fs::remove_file(dir.join("a-clock.wasm")).unwrap();
    std::fs::remove_file(dir.join("a-clock.toml")).unwrap();
    t.runtime
        .apply(&Change::Remove(dir.join("a-clock.wasm")))
        .await
        .unwrap();
    let info = t.runtime.plugins.info("clock").unwrap();
    assert_eq!(info.state, PluginState::Loaded, "{info:?}");
    assert!(info.path.ends_with("clock.wasm"));
    clock_answers(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_at_startup_serves_the_last_good_version() {
    let data = tempfile::tempdir().unwrap();
    let plugins = data.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    install_plugin(&plugins, "clock", "clock");
    let good_sha = {
        let rt = runtime_at(data.path(), RuntimeConfig::default());
        assert!(rt.load_dir().await.unwrap().is_empty());
        rt.plugins.info("clock").unwrap().sha256.unwrap()
    };
    // kill -9 during a non-atomic copy of a new version: half a file.
    let bytes = std::fs::read(plugins.join("clock.wasm")).unwrap();
    std::fs::write(plugins.join("clock.wasm"), &bytes[..bytes.len() / 2]).unwrap();

    let rt = runtime_at(data.path(), RuntimeConfig::default());
    assert!(rt.load_dir().await.unwrap().is_empty());
    let info = rt.plugins.info("clock").unwrap();
    assert_eq!(info.state, PluginState::Loaded);
    assert_eq!(info.sha256.as_deref(), Some(good_sha.as_str()));
    let last_error = info.last_error.unwrap();
    assert!(last_error.contains("last good"), "{last_error}");
    let out = rt.plugins.invoke_tool("clock", "{}").await.unwrap();
    assert!(out.contains("unix_ms"));

    // A complete file loads over it and clears the error.
    std::fs::write(plugins.join("clock.wasm"), &bytes).unwrap();
    rt.apply(&Change::Upsert(plugins.join("clock.wasm")))
        .await
        .unwrap();
    let info = rt.plugins.info("clock").unwrap();
    assert!(info.last_error.is_none(), "{info:?}");
    let _ = Arc::clone(&rt);
}

// ---------------------------------------------------------------- measurement

/// Not a test (no timing assertions): prints a healthy client's `health`
/// latency while 8 tool calls spin on the CPU, with the calls on the
/// gateway's own runtime (as before) and on the plugin runtime (now).
/// `cargo test -p pincer-tests --test hardening_registry -- --ignored --nocapture measure`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_health_latency_while_tool_calls_spin() {
    use pincer_tests::gateway::{Client, TestGateway};
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    std::fs::create_dir_all(&opts.plugins_dir).unwrap();
    install_plugin(&opts.plugins_dir, "hostile", "hostile");
    let mut gw = TestGateway::start_with(opts, dir).await;
    let registry = gw.gw().runtime.plugins.clone();
    let mut client = Client::admin(&gw.url()).await;

    async fn sample(client: &mut Client) -> (f64, f64) {
        let mut ms = Vec::new();
        for _ in 0..300 {
            let t = Instant::now();
            assert_eq!(
                client.call("health", serde_json::json!({})).await["ok"],
                true
            );
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        (ms[ms.len() / 2], ms[ms.len() * 99 / 100])
    }

    let idle = sample(&mut client).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spin = |inline: bool| {
        (0..8)
            .map(|_| {
                let registry = registry.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let args = r#"{"mode":"loop"}"#;
                        if inline {
                            let v = registry.current("hostile").unwrap();
                            let mut inst = pincer::plugins::Instance::new(v).await.unwrap();
                            let _ = inst.invoke(args).await;
                        } else {
                            let _ = registry.invoke_tool("hostile", args).await;
                        }
                    }
                })
            })
            .collect::<Vec<_>>()
    };
    let tasks = spin(true);
    let inline = sample(&mut client).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let tasks = spin(false);
    let dedicated = sample(&mut client).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "health p50/p99 ms: idle {idle:.2?}; 8 spinning calls on the gateway runtime {inline:.2?}; on the plugin runtime {dedicated:.2?}"
    );
    gw.stop().await;
}
