//! A webhook receiver on loopback for the outgoing-webhook tests: it records
//! every request (headers, body, attempt) and answers from a script (status
//! codes, headers such as `Retry-After` or `Location`, or holding the request
//! open). Signatures are checked with the `standardwebhooks` crate, an
//! implementation independent of Pincer's signer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::{Notify, watch};

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, empty body.
    Status(u16),
    /// This status with these headers.
    With(u16, Vec<(&'static str, String)>),
    /// Never answer (until [`Receiver::release`]; then 200).
    Hold,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// The status it was (or will be) answered with.
    pub answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
    /// `webhook-id`.
    pub fn msg_id(&self) -> &str {
        self.header("webhook-id")
    }
    /// `webhook-attempt`.
    pub fn attempt(&self) -> u32 {
        self.header("webhook-attempt").parse().unwrap_or(0)
    }
    /// `webhook-timestamp`.
    pub fn timestamp(&self) -> i64 {
        self.header("webhook-timestamp").parse().unwrap_or(0)
    }
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// The event type in the body.
    pub fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }
    /// Full Standard Webhooks verification (signature and timestamp
    /// tolerance) with the oracle.
    pub fn verify(&self, secret: &str) -> Result<(), String> {
        standardwebhooks::Webhook::new(secret)
            .map_err(|e| format!("secret: {e:?}"))?
            .verify(&self.body, &self.headers)
            .map_err(|e| format!("{e:?}"))
    }
    /// Signature only (for tests on a manual clock, whose timestamps are
    /// outside the oracle's tolerance): the oracle's signature for this
    /// id, timestamp and body is one of the header's signatures.
    pub fn verify_signature(&self, secret: &str) -> Result<(), String> {
        let expected = standardwebhooks::Webhook::new(secret)
            .map_err(|e| format!("secret: {e:?}"))?
            .sign(self.msg_id(), self.timestamp(), &self.body)
            .map_err(|e| format!("{e:?}"))?;
        if self
            .header("webhook-signature")
            .split(' ')
            .any(|s| s == expected)
        {
            Ok(())
        } else {
            Err(format!(
                "no signature matches: header `{}`, expected `{expected}`",
                self.header("webhook-signature")
            ))
        }
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    /// Answer for requests once the script is used up.
    default: Mutex<Option<Reply>>,
    received: Mutex<Vec<Received>>,
    count: Option<watch::Sender<usize>>,
    release: Notify,
}

/// The receiver.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    count: watch::Receiver<usize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listen on 127.0.0.1 (a free port), answering 200 by default.
    pub async fn start() -> Self {
        let (tx, rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            count: Some(tx),
            ..Shared::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            shared,
            count: rx,
            _task: task,
        }
    }

    /// The URL to register (`http://127.0.0.1:PORT/hook`).
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answer the next requests with these replies, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    /// The answer once the script is used up (200 when never set).
    pub fn set_default(&self, reply: Reply) {
        *self.shared.default.lock().unwrap() = Some(reply);
    }

    /// Let held requests finish (with 200).
    pub fn release(&self) {
        self.shared.release.notify_waiters();
    }

    /// The texts an echo channel pointed here (`reply_url`) sent into
    /// `conversation`, in order.
    pub fn texts_to(&self, conversation: &str) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.json())
            .filter(|m| m["conversation"] == conversation)
            .filter_map(|m| m["text"].as_str().map(str::to_string))
            .collect()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Wait until at least `n` requests have arrived (panics after 60 s,
    /// which only a broken dispatcher reaches).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let mut rx = self.count.clone();
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(60), rx.wait_for(|c| *c >= n))
                .await;
        let got = self.received();
        assert!(
            waited.is_ok(),
            "receiver got {} requests, expected {n}: {:?}",
            got.len(),
            got.iter().map(Received::kind).collect::<Vec<_>>()
        );
        got
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| shared.default.lock().unwrap().clone())
        .unwrap_or(Reply::Status(200));
    let answered = match &reply {
        Reply::Status(s) | Reply::With(s, _) => *s,
        Reply::Hold => 200,
    };
    // Registered before the count moves, so a test that saw the request
    // and then releases cannot miss this one.
    let released = shared.release.notified();
    {
        let mut received = shared.received.lock().unwrap();
        received.push(Received {
            headers,
            body,
            answered,
        });
        if let Some(tx) = &shared.count {
            tx.send_replace(received.len());
        }
    }
    match reply {
        Reply::Status(s) => status(s).into_response(),
        Reply::With(s, hs) => {
            let mut r = status(s).into_response();
            for (name, value) in hs {
                if let Ok(v) = value.parse() {
                    r.headers_mut().insert(name, v);
                }
            }
            r
        }
        Reply::Hold => {
            released.await;
            StatusCode::OK.into_response()
        }
    }
}

fn status(s: u16) -> StatusCode {
    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
