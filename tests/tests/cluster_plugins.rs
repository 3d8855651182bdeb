//! Cluster mode: a plugin uploaded to one node of three (real `pincer`
//! child processes on one real PostgreSQL) is stored once and hot-loaded by
//! every node; a file that cannot load leaves every node on its previous
//! version; a plugin removed through one node is removed from every node.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use pincer_tests::built_plugin;
use pincer_tests::cluster::{STEP_GUARD, TestCluster, node_main};

/// The child test every node runs.
const CHILD: &str = "cluster_plugins_node";

/// Not a test: one cluster node, started by the tests below.
#[test]
#[ignore = "a cluster node, run as a child process by the tests"]
fn cluster_plugins_node() {
    node_main();
}

/// `PUT /v1/plugins/{name}` on the node at `addr`: status and answer.
async fn upload(addr: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(format!("http://{addr}/v1/plugins/{name}"))
        .bearer_auth("secret")
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .expect("PUT");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Plugin `name` as the node at `addr` lists it (`GET /v1/plugins`).
async fn listed(addr: &str, name: &str) -> Option<Value> {
    let v: Value = reqwest::Client::new()
        .get(format!("http://{addr}/v1/plugins"))
        .bearer_auth("secret")
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// Wait until every node lists `name` satisfying `ok`; what they list.
async fn on_every_node(
    c: &TestCluster,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + STEP_GUARD;
    loop {
        let mut all = Vec::new();
        for n in &c.nodes {
            match listed(&n.addr, name).await {
                Some(p) if ok(&p) => all.push(p),
                _ => break,
            }
        }
        if all.len() == c.nodes.len() {
            return all;
        }
        assert!(tokio::time::Instant::now() < deadline, "hang guard: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_one_node_loads_on_all_and_a_bad_file_leaves_them_as_they_were() {
    let c = TestCluster::start(CHILD, &["a", "b", "c"]);
    let good = std::fs::read(built_plugin("clock")).expect("clock built");
    let sha = hex::encode(Sha256::digest(&good));
    let (status, answer) = upload(&c.nodes[0].addr, "ctool", good).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["sha256"], sha.as_str());
    // Every node, not only the one uploaded to, loads that very file.
    let all = on_every_node(&c, "ctool", "ctool loaded everywhere", |p| {
        p["sha256"] == sha.as_str() && p["state"] == "loaded"
    })
    .await;
    assert_eq!(all.len(), 3);

    // A file that is WebAssembly by its magic but no component: stored
    // and written everywhere, refused by every loader, and every node
    // keeps serving the version before it.
    let mut bad = b"\0asm\x0d\0\x01\0".to_vec();
    bad.extend(std::iter::repeat_n(0xAB, 256));
    let (status, answer) = upload(&c.nodes[1].addr, "ctool", bad).await;
    assert_eq!(status, 200, "{answer}");
    let all = on_every_node(&c, "ctool", "the bad file refused everywhere", |p| {
        !p["last_error"].is_null()
    })
    .await;
    for p in &all {
        assert_eq!(
            p["sha256"],
            sha.as_str(),
            "the previous version serves: {p}"
        );
        assert_eq!(p["state"], "loaded", "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_removed_on_one_node_is_removed_from_every_node() {
    let c = TestCluster::start(CHILD, &["a", "b", "c"]);
    let good = std::fs::read(built_plugin("clock")).expect("clock built");
    let (status, answer) = upload(&c.nodes[0].addr, "rtool", good.clone()).await;
    assert_eq!(status, 201, "{answer}");
    on_every_node(&c, "rtool", "rtool loaded everywhere", |p| {
        p["state"] == "loaded"
    })
    .await;

    // Removed through node c: every node unloads it and deletes its file.
    let r = reqwest::Client::new()
        .delete(format!("http://{}/v1/plugins/rtool", c.nodes[2].addr))
        .bearer_auth("secret")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 200);
    let deadline = tokio::time::Instant::now() + STEP_GUARD;
    loop {
        let mut still = Vec::new();
        for n in &c.nodes {
            if listed(&n.addr, "rtool").await.is_some() {
                still.push(n.addr.clone());
            }
        }
        if still.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hang guard: rtool still loaded on {still:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, n) in c.nodes.iter().enumerate() {
        assert!(
            !c.plugins_dir(i).join("rtool.wasm").exists(),
            "file left on {}",
            n.addr
        );
    }

    // Uploaded again after its removal: back on every node.
    let (status, answer) = upload(&c.nodes[1].addr, "rtool", good).await;
    assert_eq!(status, 201, "{answer}");
    on_every_node(&c, "rtool", "rtool loaded again everywhere", |p| {
        p["state"] == "loaded"
    })
    .await;
}
