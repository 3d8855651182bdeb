//! The OpenClaw handshake over real sockets: negotiation (v3, v4, 3..4,
//! mismatch), auth (token, missing, wrong), framing limits and rules,
//! device signatures (valid, invalid, wrong nonce), scopes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use pincer_tests::gateway::{ALL, Client, TestGateway, connect_params};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_v3_v4_and_ranges() {
    let g = TestGateway::start().await;
    for (min, max, want) in [(3, 3, 3), (4, 4, 4), (3, 4, 4), (1, 9, 4)] {
        let c = Client::connect(&g.url(), connect_params(min, max, Some("secret"), ALL)).await;
        let h = &c.hello;
        assert_eq!(h["protocol"], want, "{min}..{max}");
        // Every field strict clients require.
        for k in ["server", "features", "snapshot", "auth", "policy"] {
            assert!(h.get(k).is_some(), "hello-ok lacks {k}");
        }
        assert!(h["server"]["connId"].is_string() && h["server"]["version"].is_string());
        assert!(
            h["features"]["methods"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m == "chat.send")
        );
        let snap = &h["snapshot"];
        assert!(snap["presence"].is_array());
        assert!(snap["health"].is_object());
        assert!(snap["stateVersion"]["presence"].as_u64().unwrap() >= 1);
        assert!(snap["stateVersion"]["health"].as_u64().unwrap() >= 1);
        assert!(snap["uptimeMs"].is_u64());
        assert_eq!(snap["sessionDefaults"]["mainSessionKey"], "agent:main:main");
        assert_eq!(h["auth"]["role"], "operator");
        assert_eq!(h["policy"]["maxPayload"], 26_214_400);
        assert_eq!(h["policy"]["maxBufferedBytes"], 52_428_800);
        assert_eq!(h["policy"]["tickIntervalMs"], 30_000);
        // hello-ok and snapshot fields are never null (payload data may be).
        for (k, v) in h
            .as_object()
            .unwrap()
            .iter()
            .chain(snap.as_object().unwrap())
        {
            assert!(!v.is_null(), "hello-ok field {k} is null");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_mismatch_closes_1002() {
    let g = TestGateway::start().await;
    let mut c = Client::open(&g.url()).await;
    let r = c
        .request("connect", connect_params(5, 6, Some("secret"), ALL))
        .await;
    assert_eq!(r["ok"], false);
    assert_eq!(r["error"]["code"], "INVALID_REQUEST");
    assert_eq!(r["error"]["message"], "protocol mismatch");
    assert_eq!(r["error"]["details"]["code"], "PROTOCOL_MISMATCH");
    assert_eq!(r["error"]["details"]["clientMinProtocol"], 5);
    let closed = c.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1002, "protocol mismatch")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_missing_and_wrong() {
    let g = TestGateway::start().await;
    for (token, detail) in [
        (None, "AUTH_TOKEN_MISSING"),
        (Some("nope"), "AUTH_TOKEN_MISMATCH"),
    ] {
        let mut c = Client::open(&g.url()).await;
        let r = c.request("connect", connect_params(3, 4, token, ALL)).await;
        assert_eq!(r["ok"], false);
        assert_eq!(r["error"]["details"]["code"], detail);
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("unauthorized")
        );
        assert_eq!(c.closed().await.code, 1008);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_rules_and_preauth_limit() {
    let g = TestGateway::start().await;
    // Not connect first.
    let mut c = Client::open(&g.url()).await;
    let r = c.request("health", json!({})).await;
    assert_eq!(
        r["error"]["message"],
        "invalid handshake: first request must be connect"
    );
    assert_eq!(c.closed().await.code, 1008);
    // Bad connect params.
    let mut c = Client::open(&g.url()).await;
    let r = c.request("connect", json!({"minProtocol": 3})).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid connect params")
    );
    assert_eq!(c.closed().await.code, 1008);
    // Not JSON before the handshake: closed without a reply.
    let mut c = Client::open(&g.url()).await;
    c.send_text("not json").await;
    assert_eq!(c.closed().await.code, 1008);
    // Over 64 KiB before the handshake.
    let mut c = Client::open(&g.url()).await;
    c.send_text(&format!(
        r#"{{"type":"req","id":"1","method":"connect","params":{{"pad":"{}"}}}}"#,
        "x".repeat(70_000)
    ))
    .await;
    let closed = c.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1009, "preauth payload too large")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_handshake_bad_frames_get_errors_and_the_socket_stays() {
    let g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;
    c.send_text("garbage").await; // ignored
    c.send_text(r#"{"type":"req","id":"x1"}"#).await;
    let r = c.response("x1").await;
    assert_eq!(r["error"]["code"], "INVALID_REQUEST");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid request frame")
    );
    c.send_text(r#"{"type":"cancel","id":"nothing"}"#).await; // v4 cancel tolerated
    let r = c.request("no.such", json!({})).await;
    assert_eq!(r["error"]["message"], "unknown method: no.such");
    let r = c
        .request("connect", connect_params(3, 4, Some("secret"), ALL))
        .await;
    assert_eq!(
        r["error"]["message"],
        "connect is only valid as the first request"
    );
    let h = c.call("health", json!({})).await;
    assert_eq!(h["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_are_enforced_per_version() {
    let g = TestGateway::start().await;
    let mut v3 = Client::connect(
        &g.url(),
        connect_params(3, 3, Some("secret"), &["operator.read"]),
    )
    .await;
    assert_eq!(v3.call("health", json!({})).await["ok"], true);
    v3.call("status", json!({})).await;
    let r = v3.request("sessions.delete", json!({"key": "main"})).await;
    assert_eq!(r["error"]["code"], "INVALID_REQUEST");
    assert_eq!(r["error"]["message"], "missing scope: operator.admin");
    let mut v4 = Client::connect(
        &g.url(),
        connect_params(4, 4, Some("secret"), &["operator.read"]),
    )
    .await;
    let r = v4
        .request(
            "chat.send",
            json!({"sessionKey":"main","message":"hi","idempotencyKey":"k"}),
        )
        .await;
    assert_eq!(r["error"]["code"], "FORBIDDEN");
    assert_eq!(r["error"]["details"]["missingScope"], "operator.write");
    let mut none = Client::connect(&g.url(), connect_params(4, 4, Some("secret"), &[])).await;
    assert_eq!(none.call("health", json!({})).await["ok"], true);
    assert_eq!(none.request("status", json!({})).await["ok"], false);
}

fn signed_device(
    key: &SigningKey,
    nonce: &str,
    token: &str,
    scopes: &[&str],
    version: u8,
) -> Value {
    let pubkey = key.verifying_key().to_bytes();
    let id = hex::encode(Sha256::digest(pubkey));
    let signed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut payload = format!(
        "v{version}|{id}|test|test|operator|{}|{signed_at}|{token}|{nonce}",
        scopes.join(",")
    );
    if version == 3 {
        payload.push_str("|linux|");
    }
    let sig = key.sign(payload.as_bytes());
    json!({
        "id": id,
        "publicKey": URL_SAFE_NO_PAD.encode(pubkey),
        "signature": URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        "signedAt": signed_at,
        "nonce": nonce,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_signatures_valid_invalid_and_device_tokens() {
    let g = TestGateway::start().await;
    let key = SigningKey::from_bytes(&[7u8; 32]);
    for version in [3u8, 2] {
        let mut c = Client::open(&g.url()).await;
        let mut p = connect_params(4, 4, Some("secret"), &["operator.read"]);
        p["device"] = signed_device(&key, &c.nonce, "secret", &["operator.read"], version);
        let r = c.request("connect", p).await;
        assert_eq!(r["ok"], true, "v{version} signature: {r}");
        let token = r["payload"]["auth"]["deviceToken"]
            .as_str()
            .unwrap()
            .to_string();
        // The device token alone (no shared token) connects next time.
        let mut c2 = Client::open(&g.url()).await;
        let mut p = connect_params(4, 4, None, &["operator.read"]);
        p["auth"] = json!({"deviceToken": token});
        p["device"] = signed_device(&key, &c2.nonce, &token, &["operator.read"], 3);
        let r = c2.request("connect", p).await;
        assert_eq!(r["ok"], true, "device token: {r}");
        assert_eq!(r["payload"]["auth"]["scopes"], json!(["operator.read"]));
    }
    // Signed over another nonce.
    let mut c = Client::open(&g.url()).await;
    let mut p = connect_params(4, 4, Some("secret"), &["operator.read"]);
    p["device"] = signed_device(&key, &c.nonce, "secret", &["operator.read"], 3);
    p["device"]["nonce"] = json!("another-nonce");
    let r = c.request("connect", p).await;
    assert_eq!(r["error"]["details"]["code"], "DEVICE_AUTH_NONCE_MISMATCH");
    assert_eq!(c.closed().await.code, 1008);
    // Tampered signature.
    let mut c = Client::open(&g.url()).await;
    let mut p = connect_params(4, 4, Some("secret"), &["operator.read"]);
    p["device"] = signed_device(&key, &c.nonce, "secret", &["operator.admin"], 3);
    let r = c.request("connect", p).await;
    assert_eq!(
        r["error"]["details"]["code"],
        "DEVICE_AUTH_SIGNATURE_INVALID"
    );
    // Device id that is not the key's hash.
    let mut c = Client::open(&g.url()).await;
    let mut p = connect_params(4, 4, Some("secret"), &["operator.read"]);
    p["device"] = signed_device(&key, &c.nonce, "secret", &["operator.read"], 3);
    p["device"]["id"] = json!("00".repeat(32));
    let r = c.request("connect", p).await;
    assert_eq!(
        r["error"]["details"]["code"],
        "DEVICE_AUTH_DEVICE_ID_MISMATCH"
    );
    // The paired device is listed.
    let mut admin = Client::admin(&g.url()).await;
    let list = admin.call("device.pair.list", json!({})).await;
    assert_eq!(list["paired"].as_array().unwrap().len(), 1);
}
