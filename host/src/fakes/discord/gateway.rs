//! The Discord fake's Gateway: one task per WebSocket connection speaking
//! Discord's opcodes, driven by the client's frames and the test's
//! commands ([`super::Cmd`]).

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::debug;

use super::{Cmd, Conn, MESSAGE_CONTENT, Shared, State};

/// How long a closing connection waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(stream, shared.clone()));
                }
                Err(e) => {
                    debug!(error = %e, "fake discord: accept failed");
                    tokio::task::yield_now().await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// What handling a client frame asks the connection to do.
enum Reply {
    Frames(Vec<Value>),
    Close(u16, String),
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    // The host's session buffers (4 KiB read buffer) rather than
    // tungstenite's 128 KiB default: the sockets bench counts this end of
    // every bot's connection, and a real Discord's end is not ours.
    let config = crate::plugins::host::socket::session_config(1 << 20);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = {
        let mut st = shared.state.lock();
        st.next_conn += 1;
        st.stats.connections += 1;
        let id = st.next_conn;
        st.conns.push(Conn {
            id,
            tx,
            session: None,
        });
        id
    };
    shared.changes.bump();
    let hello = json!({"op": 10, "d": {"heartbeat_interval": shared.cfg.heartbeat_interval_ms}});
    let mut close: Option<(u16, String)> = None;
    if sink.send(Message::text(hello.to_string())).await.is_ok() {
        loop {
            tokio::select! {
                frame = source.next() => match frame {
                    Some(Ok(Message::Text(t))) => {
                        let reply = on_frame(&shared, id, t.as_str());
                        shared.changes.bump();
                        match reply {
                            Reply::Frames(frames) => {
                                for f in frames {
                                    if sink.send(Message::text(f.to_string())).await.is_err() {
                                        break;
                                    }
                                }
                            }
                            Reply::Close(code, reason) => {
                                close = Some((code, reason));
                                break;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Frame(f)) => {
                        if sink.send(Message::text(f.to_string())).await.is_err() {
                            break;
                        }
                    }
                    Some(Cmd::Close(code, reason)) => {
                        close = Some((code, reason));
                        break;
                    }
                    Some(Cmd::Drop) | None => break,
                },
            }
        }
    }
    // Detach before closing, so nothing more is sent on this connection.
    {
        let mut st = shared.state.lock();
        st.conns.retain(|c| c.id != id);
        if let Some((code, _)) = &close {
            st.stats.closes_sent.push(*code);
        }
    }
    shared.changes.bump();
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        if sink.send(Message::Close(Some(frame))).await.is_ok() {
            // Wait (bounded) for the client's close, as a server does.
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while let Some(Ok(m)) = source.next().await {
                    if m.is_close() {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

fn token_ok(shared: &Shared, d: &Value) -> bool {
    d["token"].as_str().is_some_and(|t| {
        subtle::ConstantTimeEq::ct_eq(t.as_bytes(), shared.cfg.token.as_bytes()).into()
    })
}

fn on_frame(shared: &Shared, conn: u64, text: &str) -> Reply {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return Reply::Close(4002, "Error while decoding payload.".into());
    };
    let d = &frame["d"];
    let mut st = shared.state.lock();
    match frame["op"].as_u64() {
        Some(1) => {
            st.stats.heartbeats += 1;
            st.stats.heartbeat_seqs.push(d.as_u64());
            if st.acks {
                Reply::Frames(vec![json!({"op": 11})])
            } else {
                Reply::Frames(Vec::new())
            }
        }
        Some(2) => identify(shared, &mut st, conn, d),
        Some(6) => resume(shared, &mut st, conn, d),
        Some(_) => Reply::Frames(Vec::new()),
        None => Reply::Close(4001, "Unknown opcode.".into()),
    }
}

fn identify(shared: &Shared, st: &mut State, conn: u64, d: &Value) -> Reply {
    let intents = d["intents"].as_u64().unwrap_or(0);
    st.stats.identifies.push(intents);
    if !token_ok(shared, d) {
        return Reply::Close(4004, "Authentication failed.".into());
    }
    if let Some((code, reason)) = st.close_next_identify.take() {
        return Reply::Close(code, reason);
    }
    if intents & MESSAGE_CONTENT != 0 && !shared.cfg.message_content_allowed {
        return Reply::Close(4014, "Disallowed intent(s).".into());
    }
    let sid = format!("fake-session-{conn}");
    st.sessions.insert(sid.clone(), super::GwSession::default());
    st.session = Some(sid.clone());
    if let Some(c) = st.conns.iter_mut().find(|c| c.id == conn) {
        c.session = Some(sid.clone());
    }
    st.stats.established += 1;
    let session = st.sessions.entry(sid.clone()).or_default();
    session.seq += 1;
    let ready = json!({"op": 0, "s": session.seq, "t": "READY", "d": {
        "v": 10,
        "user": {"id": shared.cfg.bot_id, "username": "pincer", "bot": true},
        "guilds": [],
        "session_id": sid,
        "resume_gateway_url": shared.gateway_url,
        "application": {"id": shared.cfg.bot_id},
    }});
    // READY and RESUMED are never replayed: not kept in the log (a bench
    // with 1,000 bots would hold a READY each).
    Reply::Frames(vec![ready])
}

fn resume(shared: &Shared, st: &mut State, conn: u64, d: &Value) -> Reply {
    let sid = d["session_id"].as_str().unwrap_or_default().to_string();
    let seq = d["seq"].as_u64().unwrap_or(0);
    st.stats.resumes.push((sid.clone(), seq));
    if !token_ok(shared, d) {
        return Reply::Close(4004, "Authentication failed.".into());
    }
    let valid = st.session.as_deref() == Some(sid.as_str())
        && st.sessions.get(&sid).is_some_and(|s| !s.invalid);
    if !valid {
        return Reply::Frames(vec![json!({"op": 9, "d": false})]);
    }
    if let Some(c) = st.conns.iter_mut().find(|c| c.id == conn) {
        c.session = Some(sid.clone());
    }
    st.stats.established += 1;
    let session = st.sessions.entry(sid).or_default();
    let mut frames: Vec<Value> = session
        .log
        .iter()
        .filter(|(s, _)| *s > seq)
        .map(|(_, f)| f.clone())
        .collect();
    session.seq += 1;
    frames.push(json!({"op": 0, "s": session.seq, "t": "RESUMED", "d": null}));
    Reply::Frames(frames)
}
