//! A C plugin (`plugins/c-hash`, written against the C SDK in `sdk/c`),
//! built from source in the test with `pincer plugin build`'s code (clang 19
//! and wasi-libc; a missing toolchain fails the test), checked with `pincer
//! plugin check`'s code, loaded into the real host and called directly and
//! through the agent (`/tool` with the echo provider). Its answers are
//! compared with digests computed here by independent code.

use pincer::health::HealthConfig;
use pincer::plugin_dev::{Lang, check};
use pincer::plugins::{PluginKind, RuntimeConfig};
use pincer_tests::TestRuntime;
use pincer_tests::guests::{build_repo_plugin, call_through_agent, install_built};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = (c >> 1) ^ (0xEDB8_8320 & (c & 1).wrapping_neg());
        }
    }
    !c
}

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

async fn invoke(t: &TestRuntime, args: Value) -> Result<Value, String> {
    t.runtime
        .plugins
        .invoke_tool("c-hash", &args.to_string())
        .await
        .map(|s| serde_json::from_str(&s).expect("the tool answers JSON"))
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_hash_is_built_from_source_checked_loaded_and_hashes_through_host_imports() {
    let (_src, built) = build_repo_plugin("c-hash").await;
    assert_eq!(built.lang, Lang::C);
    assert_eq!(built.name, "c-hash");

    // `pincer plugin check` agrees with the loader.
    let report = check::check(&built.wasm);
    assert!(report.loads(), "{}", report.render());
    assert_eq!(report.kind, Some(PluginKind::Tool));
    assert_eq!(
        report.world.as_deref(),
        Some("pincer:plugin/tool-plugin@0.2.0")
    );
    assert_eq!(report.contract_version.as_deref(), Some("0.2.0"));

    let t = TestRuntime::new(RuntimeConfig::default(), HealthConfig::default());
    install_built(&built, &t.plugins_dir());
    let failed = t.runtime.load_dir().await.expect("load dir");
    assert!(failed.is_empty(), "{failed:?}");
    let info = t.runtime.plugins.current("c-hash").expect("loaded");
    assert_eq!(info.kind, PluginKind::Tool);
    assert_eq!(info.reported_name, "c-hash");
    assert_eq!(info.tool_info().expect("tool").name, "c-hash");

    // SHA-256 (default) in hex; the counters live in the host's key-value store.
    let a = invoke(&t, json!({"text": "hello"})).await.expect("sha256");
    assert_eq!(a["algorithm"], "sha256");
    assert_eq!(a["digest"], hex::encode(Sha256::digest(b"hello")));
    assert_eq!(a["bytes"], 5);
    assert_eq!(a["calls"], 1);
    assert_eq!(a["bytes_total"], 5);

    // JSON escapes, including a surrogate pair, decode to the right UTF-8.
    let text = "h\u{e9}llo \"w\" \u{1F600}\n";
    let b = invoke(
        &t,
        json!({"text": text, "algorithm": "sha256", "encoding": "base64", "extra": [1, {"x": "}"}]}),
    )
    .await
    .expect("base64");
    use base64::Engine as _;
    assert_eq!(
        b["digest"],
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    );
    assert_eq!(b["bytes"], text.len());
    assert_eq!(b["calls"], 2);
    assert_eq!(b["bytes_total"], 5 + text.len());

    let c = invoke(&t, json!({"text": "hello", "algorithm": "crc32"}))
        .await
        .expect("crc32");
    assert_eq!(c["digest"], format!("{:08x}", crc32(b"hello")));
    let f = invoke(&t, json!({"text": "", "algorithm": "fnv1a64"}))
        .await
        .expect("fnv");
    assert_eq!(f["digest"], format!("{:016x}", fnv1a64(b"")));
    assert_eq!(f["calls"], 4);
    let kv = t
        .runtime
        .plugins
        .kv()
        .get("c-hash", "calls")
        .expect("kv get");
    assert!(kv.is_some(), "the counter is in the host's store");

    // Bad input is a clear error and the plugin keeps serving.
    let e = invoke(&t, json!({"text": "x", "algorithm": "md5"}))
        .await
        .expect_err("unknown algorithm");
    assert!(e.contains("unknown algorithm `md5`"), "{e}");
    let e = invoke(&t, json!({"algorithm": "crc32"}))
        .await
        .expect_err("no text");
    assert!(e.contains("`text` or `url` is required"), "{e}");
    let e = t
        .runtime
        .plugins
        .invoke_tool("c-hash", "[1,2")
        .await
        .expect_err("not an object");
    assert!(e.to_string().contains("JSON object"), "{e}");
    let again = invoke(&t, json!({"text": "hello"}))
        .await
        .expect("still serving");
    assert_eq!(again["digest"], a["digest"]);
    assert_eq!(again["calls"], 5, "failed calls count nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_hash_is_called_by_the_agent() {
    let (_src, built) = build_repo_plugin("c-hash").await;
    let result = call_through_agent(&built, r#"{"text":"abc"}"#).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(
        result["result"]["digest"],
        hex::encode(Sha256::digest(b"abc")),
        "{result}"
    );
}

/// The C SDK's HTTP helper: c-hash fetches a URL through wasi:http (only
/// once the operator allows the host and the loopback range), with the
/// operator's secret filled in by the host from the placeholder the plugin
/// put in its Authorization header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_hash_fetches_through_wasi_http_with_a_secret_placeholder() {
    use pincer::plugins::PluginSettings;
    use pincer::plugins::manifest::{BoundSecret, SecretSource};
    let (_src, built) = build_repo_plugin("c-hash").await;
    let (addr, mut requests) = pincer_tests::http_server(200, "pong").await;
    let settings = PluginSettings {
        allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
        secrets: [(
            "token".to_string(),
            SecretSource::Bound(BoundSecret {
                value: "s3cr3t-c".into(),
                hosts: Some(vec!["http://127.0.0.1:*".into()]),
                places: Some(vec!["header:authorization".into()]),
            }),
        )]
        .into(),
        ..Default::default()
    };
    let url = format!("http://{addr}/data?x=1");

    // Without the operator's allowance the request is refused, clearly.
    let t = TestRuntime::new(RuntimeConfig::default(), HealthConfig::default());
    install_built(&built, &t.plugins_dir());
    assert!(t.runtime.load_dir().await.expect("load").is_empty());
    let e = invoke(&t, json!({ "url": url })).await.expect_err("denied");
    assert!(e.contains("denied"), "{e}");

    let t = TestRuntime::new(
        RuntimeConfig {
            settings: [("c-hash".to_string(), settings)].into(),
            allow_cidrs: pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").expect("cidr"),
            ..Default::default()
        },
        HealthConfig::default(),
    );
    install_built(&built, &t.plugins_dir());
    assert!(t.runtime.load_dir().await.expect("load").is_empty());
    let v = invoke(&t, json!({ "url": url })).await.expect("fetched");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["digest"], hex::encode(Sha256::digest(b"pong")));
    assert_eq!(v["bytes"], 4);
    let request = requests.recv().await.expect("the server saw the request");
    assert!(request.starts_with("GET /data?x=1 "), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer s3cr3t-c"),
        "the host filled in the secret: {request}"
    );
}
