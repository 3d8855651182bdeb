//! Attachments both ways, through the real host with plugins built from
//! source: an inbound image the test channel (`testchan`) reports is
//! fetched by the host through `fetch-attachment` (the plugin's secret
//! filled into the URL on the way) and reaches the agent (the echo provider
//! describes it; the OpenAI-compatible provider gets an `image_url` part);
//! files over the cap, declared or not, are refused while the message is
//! still answered with a note; and `media.upload` from a guest reaches a
//! loopback multipart receiver with a secret filled into a form field the
//! guest never sees.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use pincer::agent::openai::OpenAiConfig;
use pincer::blobs::MediaLimits;
use pincer::channels::access::DmPolicy;
use pincer::gateway::launch::Options;
use pincer::health::HealthConfig;
use pincer::plugins::manifest::{BoundSecret, SecretSource};
use pincer::plugins::{PluginSettings, RuntimeConfig};
use pincer_tests::fake_openai::{FakeOpenAi, Script};
use pincer_tests::gateway::{Client, TestGateway};
use pincer_tests::{TestRuntime, install_plugin};
use serde_json::{Value, json};

/// The bot token the operator grants `testchan` (it only ever holds a placeholder).
const BOT_TOKEN: &str = "tok-5ecret-123";
/// A tiny PNG (its bytes do not matter to the host; no sniffing).
const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot-really-an-image";

/// A loopback file server: `GET /file/{token}/{name}` answers `PNG` for
/// `cat.png`, 2 MiB without a length for `liar.bin` (its descriptor claims
/// 100 bytes), 404 otherwise; every requested path is recorded.
#[derive(Clone, Default)]
struct Files {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Files {
    async fn start() -> (SocketAddr, Files) {
        let files = Files::default();
        let app = Router::new()
            .route("/file/{token}/{name}", axum::routing::get(serve))
            .with_state(files.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, files)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    State(files): State<Files>,
    Path((token, name)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    files.seen.lock().unwrap().push(uri.path().to_string());
    if token != format!("bot{BOT_TOKEN}") {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    match name.as_str() {
        "cat.png" => ([("content-type", "image/png")], PNG).into_response(),
        "liar.bin" => {
            // Chunked (no Content-Length), and far over the 1 MiB cap.
            let chunks = futures::stream::iter(
                (0..32).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 64 * 1024]))),
            );
            Response::new(Body::from_stream(chunks))
        }
        _ => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// Gateway options with `testchan` installed, open to anyone, allowed to
/// reach the file server at `files` with the bot token bound to its URL path.
fn options(files: SocketAddr) -> (Options, tempfile::TempDir) {
    let (mut opts, dir) = TestGateway::options();
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    std::fs::create_dir_all(&opts.plugins_dir).unwrap();
    install_plugin(&opts.plugins_dir, "testchan", "testchan");
    opts.plugins.insert(
        "testchan".into(),
        PluginSettings {
            dm_policy: DmPolicy::Open,
            allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
            secrets: [(
                "bot_token".to_string(),
                SecretSource::Bound(BoundSecret {
                    value: BOT_TOKEN.into(),
                    hosts: Some(vec!["http://127.0.0.1:*".into()]),
                    places: Some(vec!["path".into()]),
                }),
            )]
            .into(),
            config: [(
                "attachment_base".to_string(),
                format!("http://{files}/file/bot{{{{secret:bot_token}}}}/"),
            )]
            .into(),
            ..Default::default()
        },
    );
    (opts, dir)
}

/// Queue `messages` in testchan's inbox (its next poll returns them).
fn inbox(g: &TestGateway, messages: Value) {
    g.gw()
        .runtime
        .plugins
        .kv()
        .set("testchan", "inbox", messages.to_string().as_bytes())
        .unwrap();
}

/// The final chat event of channel message `id`'s run; its answer text.
async fn answer(admin: &mut Client, id: &str) -> String {
    let events = admin.chat_run(&format!("testchan:{id}")).await;
    let last = events.last().expect("a terminal event").clone();
    assert_eq!(last["state"], "final", "run of {id}: {last}");
    last["message"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {last}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_image_is_fetched_with_the_hosts_secret_and_echo_describes_it() {
    let (addr, files) = Files::start().await;
    let (opts, dir) = options(addr);
    let g = TestGateway::start_with(opts, dir).await;
    let mut admin = Client::admin(&g.url()).await;
    inbox(
        &g,
        json!([{"id": "m1", "conversation": "c1", "text": "look at this",
                "attachments": [{"kind": "image", "handle": "cat.png",
                                 "mime_type": "image/png", "file_name": "cat.png"}]}]),
    );
    let text = answer(&mut admin, "m1").await;
    assert_eq!(
        text,
        format!(
            "look at this\n[image: cat.png, image/png, {} bytes]",
            PNG.len()
        )
    );
    // The host filled the token into the path; the plugin only had the placeholder.
    assert_eq!(files.seen(), vec![format!("/file/bot{BOT_TOKEN}/cat.png")]);
    let config = g
        .gw()
        .runtime
        .plugins
        .current("testchan")
        .unwrap()
        .settings
        .config
        .clone();
    assert!(!config.values().any(|v| v.contains(BOT_TOKEN)));
    // The downloaded file is a blob the host keeps.
    let blobs = g
        .gw()
        .runtime
        .plugins
        .blobs()
        .expect("a blob store")
        .clone();
    assert_eq!(blobs.used_bytes(), PNG.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_the_cap_are_refused_and_the_message_is_still_answered_with_a_note() {
    let (addr, files) = Files::start().await;
    let (mut opts, dir) = options(addr);
    opts.sandbox.media = MediaLimits {
        max_attachment_mb: 1,
        ..MediaLimits::default()
    };
    let g = TestGateway::start_with(opts, dir).await;
    let mut admin = Client::admin(&g.url()).await;
    inbox(
        &g,
        json!([{"id": "m2", "conversation": "c2", "text": "three files",
        "attachments": [
            // Declared over the cap: never even requested.
            {"kind": "video", "handle": "huge.mp4", "size": 5_000_000u64,
             "mime_type": "video/mp4", "file_name": "huge.mp4"},
            // Declared small, streams 2 MiB: cut off while reading.
            {"kind": "document", "handle": "liar.bin", "size": 100,
             "file_name": "liar.bin"},
            // The platform has no such file.
            {"kind": "document", "handle": "gone.pdf", "file_name": "gone.pdf"},
        ]}]),
    );
    let text = answer(&mut admin, "m2").await;
    let cap = 1u64 << 20;
    assert_eq!(
        text,
        format!(
            "three files\n\
             [video `huge.mp4` could not be received: it is larger than the {cap} byte limit]\n\
             [document `liar.bin` could not be received: it is larger than the {cap} byte limit]\n\
             [document `gone.pdf` could not be received: the download answered HTTP 404]"
        )
    );
    assert_eq!(
        files.seen(),
        vec![
            format!("/file/bot{BOT_TOKEN}/liar.bin"),
            format!("/file/bot{BOT_TOKEN}/gone.pdf")
        ],
        "the declared-too-large file is not requested"
    );
    // Nothing of the refused files is kept.
    let blobs = g
        .gw()
        .runtime
        .plugins
        .blobs()
        .expect("a blob store")
        .clone();
    assert_eq!(blobs.used_bytes(), 0);

    // The channel keeps serving: a plain message after it is answered.
    inbox(
        &g,
        json!([{"id": "m3", "conversation": "c2", "text": "still there?"}]),
    );
    assert_eq!(answer(&mut admin, "m3").await, "still there?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_image_reaches_an_openai_compatible_model_as_an_image_url_part() {
    let (addr, _files) = Files::start().await;
    let fake = FakeOpenAi::start(vec![Script::text(&["a cat"])]).await;
    let (mut opts, dir) = options(addr);
    opts.agent.provider = "openai".into();
    opts.agent.openai = OpenAiConfig {
        base_url: fake.base_url(),
        model: "vision-model".into(),
        ..OpenAiConfig::default()
    };
    let g = TestGateway::start_with(opts, dir).await;
    let mut admin = Client::admin(&g.url()).await;
    inbox(
        &g,
        json!([{"id": "m4", "conversation": "c4", "text": "what is it?",
                "attachments": [
                    {"kind": "image", "handle": "cat.png", "mime_type": "image/png"},
                    {"kind": "document", "handle": "huge.pdf", "size": 999_999_999u64,
                     "mime_type": "application/pdf", "file_name": "huge.pdf"}]}]),
    );
    assert_eq!(answer(&mut admin, "m4").await, "a cat");
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let user = requests[0]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(user["role"], "user");
    let parts = user["content"]
        .as_array()
        .unwrap_or_else(|| panic!("parts: {user}"));
    assert_eq!(parts.len(), 2, "{user}");
    assert_eq!(parts[0]["type"], "text");
    let text = parts[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "what is it?\n[document `huge.pdf` could not be received: it is larger than"
        ),
        "{text}"
    );
    assert_eq!(parts[1]["type"], "image_url");
    assert_eq!(
        parts[1]["image_url"]["url"],
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(PNG)
        )
    );
}

/// One multipart upload a [`Receiver`] got.
#[derive(Debug, Clone)]
struct Upload {
    headers: HeaderMap,
    len: usize,
    parts: Vec<pincer::fakes::multipart::Part>,
}

/// A loopback multipart receiver: records each upload and answers JSON
/// that echoes the `token` field (as a careless platform might).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Upload>>>,
}

impl Receiver {
    async fn start() -> (SocketAddr, Receiver) {
        let rx = Receiver::default();
        let app = Router::new()
            .route("/upload", axum::routing::post(receive))
            .with_state(rx.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, rx)
    }

    fn got(&self) -> Vec<Upload> {
        self.got.lock().unwrap().clone()
    }
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let len = body.len();
    let parts = match pincer::fakes::multipart::parse(&ct, body).await {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let token = parts
        .iter()
        .find(|p| p.name == "token")
        .map(|p| p.text())
        .unwrap_or_default();
    rx.got.lock().unwrap().push(Upload {
        headers,
        len,
        parts,
    });
    axum::Json(json!({"ok": true, "echo": token})).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_upload_from_a_guest_fills_the_form_secret_and_the_guest_never_sees_it() {
    const UPLOAD_TOKEN: &str = "up-s3cret-value";
    let (addr, rx) = Receiver::start().await;
    let settings = [(
        "uploader".to_string(),
        PluginSettings {
            secrets: [(
                "upload_token".to_string(),
                SecretSource::Value(UPLOAD_TOKEN.into()),
            )]
            .into(),
            ..Default::default()
        },
    )]
    .into();
    let t = TestRuntime::new(
        RuntimeConfig {
            settings,
            allow_cidrs: pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap(),
            ..Default::default()
        },
        HealthConfig::default(),
    );
    install_plugin(&t.plugins_dir(), "uploader", "uploader");
    assert!(t.runtime.load_dir().await.unwrap().is_empty());
    let blobs = t.runtime.plugins.blobs().expect("a blob store").clone();
    let file: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let blob = blobs
        .put(&file, "application/pdf", Some("report.pdf"))
        .await
        .unwrap();
    let url = format!("http://{addr}/upload");
    let args = |fields: Value, blob: &str| {
        json!({"url": url, "blob": blob, "file_field": "document",
               "file_name": "report \"final\".pdf", "mime_type": "application/pdf",
               "fields": fields})
        .to_string()
    };

    let out = t
        .runtime
        .plugins
        .invoke_tool(
            "uploader",
            &args(
                json!([["chat_id", "42"], ["token", {"secret": "upload_token"}]]),
                &blob.handle,
            ),
        )
        .await
        .expect("upload");
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["status"], 200);
    // The receiver echoed the token; the guest got the placeholder back.
    let body = out["body"].as_str().unwrap();
    assert!(!body.contains(UPLOAD_TOKEN), "{body}");
    assert!(body.contains("{{secret:upload_token}}"), "{body}");

    let got = rx.got();
    assert_eq!(got.len(), 1);
    let up = &got[0];
    // The host sent the whole body with its length (no chunking).
    assert_eq!(
        up.headers["content-length"].to_str().unwrap(),
        up.len.to_string()
    );
    let names: Vec<&str> = up.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["chat_id", "token", "document"]);
    assert_eq!(up.parts[0].text(), "42");
    assert_eq!(up.parts[1].text(), UPLOAD_TOKEN);
    let doc = &up.parts[2];
    assert_eq!(doc.file_name.as_deref(), Some("report \"final\".pdf"));
    assert_eq!(doc.content_type.as_deref(), Some("application/pdf"));
    assert_eq!(doc.data.as_ref(), file.as_slice());

    // The secret outside its binding (a `caption` field): refused, nothing sent.
    let e = t
        .runtime
        .plugins
        .invoke_tool(
            "uploader",
            &args(
                json!([["caption", {"secret": "upload_token"}]]),
                &blob.handle,
            ),
        )
        .await
        .expect_err("a secret outside its binding");
    assert!(e.to_string().contains("form field `caption`"), "{e}");
    // A blob the host does not hold: a clear error, nothing sent.
    let e = t
        .runtime
        .plugins
        .invoke_tool(
            "uploader",
            &args(json!([]), "0123456789abcdef0123456789abcdef"),
        )
        .await
        .expect_err("no such blob");
    assert!(e.to_string().contains("no blob"), "{e}");
    // A host outside the plugin's allowed hosts: denied, nothing sent.
    let elsewhere = json!({"url": format!("http://localhost:{}/upload", addr.port()),
                           "blob": blob.handle, "file_field": "document",
                           "file_name": "r.pdf", "mime_type": "application/pdf"});
    let e = t
        .runtime
        .plugins
        .invoke_tool("uploader", &elsewhere.to_string())
        .await
        .expect_err("a host that is not allowed");
    assert!(e.to_string().contains("allowed hosts"), "{e}");
    assert_eq!(rx.got().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_send_with_a_file_reaches_the_channel_as_a_blob_attachment() {
    let (addr, _files) = Files::start().await;
    let (mut opts, dir) = options(addr);
    opts.sandbox.media = MediaLimits {
        max_attachment_mb: 1,
        ..MediaLimits::default()
    };
    let g = TestGateway::start_with(opts, dir).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/channels/testchan/send", g.addr);
    let pdf: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let r = http
        .post(&url)
        .json(&json!({"conversation": "c9", "text": "the report",
                      "files": [{"fileName": "r.pdf", "mimeType": "application/pdf",
                                 "caption": "Q3", "dataBase64": b64(&pdf)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent: Value = r.json().await.unwrap();
    assert_eq!(sent["messageId"], "t1");
    let handle = sent["blobs"][0].as_str().unwrap().to_string();

    // The plugin got the blob handle (never the bytes); the host holds them.
    let record = g
        .gw()
        .runtime
        .plugins
        .kv()
        .get("testchan", "out/00000001")
        .unwrap()
        .expect("the send was recorded");
    let record: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["op"], "send");
    assert_eq!(record["conversation"], "c9");
    assert_eq!(record["text"], "the report");
    assert_eq!(
        record["attachments"],
        json!([{"blob": handle, "file_name": "r.pdf", "mime_type": "application/pdf",
                "size": pdf.len(), "caption": "Q3"}])
    );
    let blobs = g
        .gw()
        .runtime
        .plugins
        .blobs()
        .expect("a blob store")
        .clone();
    assert_eq!(blobs.read(&handle).await.unwrap(), pdf);

    // Over the cap: refused before the channel is called; bad input: 400.
    let big = vec![0u8; (1 << 20) + 1];
    let r = http
        .post(&url)
        .json(&json!({"conversation": "c9",
                      "files": [{"fileName": "big.bin", "mimeType": "application/octet-stream",
                                 "dataBase64": b64(&big)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http
        .post(&url)
        .json(&json!({"conversation": "c9",
                      "files": [{"fileName": "x", "mimeType": "text/plain", "dataBase64": "%%%"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("http://{}/v1/channels/nope/send", g.addr))
        .json(&json!({"conversation": "c9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        blobs.used_bytes(),
        pdf.len() as u64,
        "refused files are not kept"
    );
    assert!(
        g.gw()
            .runtime
            .plugins
            .kv()
            .get("testchan", "out/00000002")
            .unwrap()
            .is_none(),
        "the channel was called only once"
    );
}
