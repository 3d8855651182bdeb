//! The Slack fake's Socket Mode server: `apps.connections.open` hands out
//! single-use `ws://` URLs to this WebSocket listener; each connection gets
//! `hello`, then whatever the test sends (`events_api` envelopes carrying
//! the same payload as Events API pushes, `disconnect`), and every frame
//! the client sends is recorded (acknowledgements `{"envelope_id": ..}`
//! counted per envelope).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::super::wait::Changes;

/// One Socket Mode connection the fake accepted.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Its number (1, 2, ... in accept order).
    pub id: u64,
    /// The ticket of its URL.
    pub ticket: String,
    /// When it was accepted.
    pub opened_at: Instant,
    /// When it ended (either side), if it did.
    pub closed_at: Option<Instant>,
    /// Text frames the client sent, in order.
    pub received: Vec<String>,
}

/// An envelope the fake sent.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `envelope_id`.
    pub envelope_id: String,
    /// The connection it went to.
    pub connection: u64,
    /// The whole frame.
    pub frame: Value,
}

#[derive(Default)]
struct State {
    /// Tickets handed out and not yet used.
    tickets: HashMap<String, bool>,
    conns: Vec<Connection>,
    /// Senders of the open connections, by id.
    senders: HashMap<u64, mpsc::UnboundedSender<Message>>,
    envelopes: Vec<Envelope>,
    /// Acknowledgements per envelope id.
    acks: HashMap<String, usize>,
    /// Frames that were not a known acknowledgement.
    stray: Vec<String>,
    /// Connections that send nothing any more (a half-dead link).
    silent: std::collections::HashSet<u64>,
    counter: u64,
}

/// The Socket Mode listener and its record.
pub(super) struct SocketServer {
    state: Arc<Mutex<State>>,
    changes: Arc<Changes>,
    /// `ws://127.0.0.1:{port}`.
    pub(super) base: String,
    app_id: String,
    task: JoinHandle<()>,
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SocketServer {
    /// Bind and serve on `127.0.0.1:0`.
    pub(super) async fn start(
        app_id: &str,
        ping: Option<std::time::Duration>,
    ) -> std::io::Result<SocketServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("ws://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let changes = Arc::new(Changes::default());
        let task = tokio::spawn(accept_loop(
            listener,
            state.clone(),
            changes.clone(),
            app_id.to_string(),
            ping,
        ));
        Ok(SocketServer {
            state,
            changes,
            base,
            app_id: app_id.to_string(),
            task,
        })
    }

    /// The change counter waits re-check on.
    pub(super) fn changes(&self) -> &Changes {
        &self.changes
    }

    /// A new single-use connection URL (what `apps.connections.open`
    /// answers).
    pub(super) fn new_url(&self) -> String {
        let mut s = self.state.lock();
        s.counter += 1;
        let ticket = format!("{:08x}-pincer-ticket-{}", s.counter * 7919, s.counter);
        s.tickets.insert(ticket.clone(), false);
        format!("{}/link/?ticket={ticket}&app_id={}", self.base, self.app_id)
    }

    /// Every connection so far.
    pub(super) fn connections(&self) -> Vec<Connection> {
        self.state.lock().conns.clone()
    }

    /// Ids of the connections open now.
    pub(super) fn open_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.state.lock().senders.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Send `frame` on connection `id`; false if it is not open.
    pub(super) fn send(&self, id: u64, frame: &Value) -> bool {
        let sent = self
            .state
            .lock()
            .senders
            .get(&id)
            .is_some_and(|tx| tx.send(Message::Text(frame.to_string().into())).is_ok());
        self.changes.bump();
        sent
    }

    /// Send an `events_api` envelope carrying `payload` on connection `id`
    /// (`retry_attempt` as given); the envelope.
    pub(super) fn envelope(&self, id: u64, payload: Value, retry_attempt: u32) -> Envelope {
        let envelope_id = {
            let mut s = self.state.lock();
            s.counter += 1;
            format!(
                "{:08x}-{:04x}-4e0b-9d7e-pincer{:06}",
                s.counter * 104_729,
                s.counter % 0xffff,
                s.counter
            )
        };
        let frame = json!({
            "envelope_id": envelope_id,
            "payload": payload,
            "type": "events_api",
            "accepts_response_payload": false,
            "retry_attempt": retry_attempt,
            "retry_reason": if retry_attempt > 0 { "timeout" } else { "" },
        });
        let env = Envelope {
            envelope_id,
            connection: id,
            frame: frame.clone(),
        };
        self.state.lock().envelopes.push(env.clone());
        self.send(id, &frame);
        env
    }

    /// Close connection `id` abruptly (no close frame: a dead link).
    pub(super) fn drop_connection(&self, id: u64) {
        self.state.lock().senders.remove(&id);
        self.changes.bump();
    }

    /// Connection `id` stops sending anything, pings included, but stays
    /// connected (what a dead NAT mapping looks like from the client).
    pub(super) fn silence(&self, id: u64) {
        self.state.lock().silent.insert(id);
        self.changes.bump();
    }

    /// Every envelope sent.
    pub(super) fn envelopes(&self) -> Vec<Envelope> {
        self.state.lock().envelopes.clone()
    }

    /// Acknowledgements of `envelope_id`.
    pub(super) fn acks(&self, envelope_id: &str) -> usize {
        self.state
            .lock()
            .acks
            .get(envelope_id)
            .copied()
            .unwrap_or(0)
    }

    /// Frames that were not an acknowledgement of a sent envelope.
    pub(super) fn stray(&self) -> Vec<String> {
        self.state.lock().stray.clone()
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    changes: Arc<Changes>,
    app_id: String,
    ping: Option<std::time::Duration>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::task::yield_now().await;
                    continue;
                };
                conns.spawn(serve(stream, state.clone(), changes.clone(), app_id.clone(), ping));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

// The handshake callback's error type is tungstenite's (an HTTP response).
#[allow(clippy::result_large_err)]
async fn serve(
    stream: tokio::net::TcpStream,
    state: Arc<Mutex<State>>,
    changes: Arc<Changes>,
    app_id: String,
    ping: Option<std::time::Duration>,
) {
    let mut ticket = String::new();
    let check =
        |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
         resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
            let query = req.uri().query().unwrap_or("");
            ticket = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "ticket")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            Ok(resp)
        };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    // Slack's tickets are single use.
    let fresh = {
        let mut s = state.lock();
        match s.tickets.get_mut(&ticket) {
            Some(used) if !*used => {
                *used = true;
                true
            }
            _ => false,
        }
    };
    if !fresh {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "invalid or used ticket".into(),
            })))
            .await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let id = {
        let mut s = state.lock();
        let id = s.conns.len() as u64 + 1;
        s.conns.push(Connection {
            id,
            ticket: ticket.clone(),
            opened_at: Instant::now(),
            closed_at: None,
            received: Vec::new(),
        });
        s.senders.insert(id, tx.clone());
        id
    };
    let hello = json!({
        "type": "hello",
        "num_connections": state.lock().senders.len(),
        "debug_info": {"host": format!("applink-pincer-{id}"), "build_number": 118, "approximate_connection_time": 18060},
        "connection_info": {"app_id": app_id},
    });
    let _ = tx.send(Message::Text(hello.to_string().into()));
    // The map holds the only sender: removing it ends the connection.
    drop(tx);
    changes.bump();
    // Slack pings every connection; a silenced one gets nothing.
    let mut pings = tokio::time::interval(ping.unwrap_or(std::time::Duration::from_secs(3600)));
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let silent = state.lock().silent.contains(&id);
        tokio::select! {
            _ = pings.tick(), if ping.is_some() && !silent => {
                if sink.send(Message::Ping(bytes::Bytes::from_static(b"slack"))).await.is_err() {
                    break;
                }
            }
            out = rx.recv() => match out {
                Some(_) if state.lock().silent.contains(&id) => {}
                Some(m) => {
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
                // Dropped by the test: end without a close frame.
                None => break,
            },
            inbound = source.next() => match inbound {
                Some(Ok(Message::Text(t))) => {
                    let text = t.to_string();
                    let mut s = state.lock();
                    if let Some(c) = s.conns.iter_mut().find(|c| c.id == id) {
                        c.received.push(text.clone());
                    }
                    let acked = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["envelope_id"].as_str().map(str::to_string))
                        .filter(|e| s.envelopes.iter().any(|x| &x.envelope_id == e));
                    match acked {
                        Some(e) => *s.acks.entry(e).or_default() += 1,
                        None => s.stray.push(text),
                    }
                    drop(s);
                    changes.bump();
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
        if !state.lock().senders.contains_key(&id) {
            break;
        }
    }
    let mut s = state.lock();
    s.senders.remove(&id);
    if let Some(c) = s.conns.iter_mut().find(|c| c.id == id) {
        c.closed_at = Some(Instant::now());
    }
    drop(s);
    changes.bump();
}
