//! One host-managed WebSocket session: its task connects, reads frames
//! (answering pings, closing 1009 on an oversized frame), sends what the
//! plugin queued (rate-limited per session, secrets filled), and turns
//! what happens into `WS-OPEN`/`WS-TEXT`/`WS-BINARY`/`WS-CLOSE` events for
//! the account's delivery task.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::AccountSockets;
use crate::plugins::bindings::{WebhookRequest, WitError};
use crate::plugins::host::socket::{Dial, Frames, SessionInfo, SessionState, Socket, rate_limited};
use crate::plugins::limits::SocketLimits;

/// Longest wait for the peer's close frame after ours.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(5);

/// What the plugin asked of a session.
pub(super) enum Command {
    /// Send a text frame (placeholders filled already).
    Text(String),
    /// Close with code and reason.
    Close(u16, String),
}

const CONNECTING: u8 = 0;
const OPEN: u8 = 1;
const CLOSING: u8 = 2;

/// A session as `channels.status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// The plugin's name for it.
    pub name: String,
    /// `connecting`, `open` or `closing`.
    pub state: &'static str,
    /// Unix ms the upgrade completed (0 while connecting).
    pub opened_at: u64,
    /// Unix ms of the last frame received (0: none yet).
    pub last_frame_at: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// How often the plugin opened this name again after the first time.
    pub reconnects: u64,
}

/// The outgoing frame budget of one session: a fixed window of
/// `frames_per_window` frames per `window_ms`.
struct Window {
    started: Instant,
    sent: u32,
}

impl Window {
    /// Take one frame at `now`, or say how long until the window resets.
    fn take(&mut self, now: Instant, limits: &SocketLimits) -> Result<(), Duration> {
        let window = Duration::from_millis(limits.window_ms.max(1));
        if now.saturating_duration_since(self.started) >= window {
            self.started = now;
            self.sent = 0;
        }
        if self.sent >= limits.frames_per_window {
            return Err(window.saturating_sub(now.saturating_duration_since(self.started)));
        }
        self.sent += 1;
        Ok(())
    }
}

/// One session (shared by the account's map and its task).
pub(super) struct Session {
    pub(super) id: u64,
    pub(super) name: String,
    /// The URL as the plugin wrote it.
    pub(super) url: String,
    state: AtomicU8,
    opened_at: AtomicU64,
    last_frame_at: AtomicU64,
    pub(super) frames_in: AtomicU64,
    pub(super) frames_out: AtomicU64,
    frames: Frames,
    window: Mutex<Window>,
    commands: mpsc::UnboundedSender<Command>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Session {
    /// Start connecting `dial` for `account`; events carry `generation`.
    pub(super) fn spawn(
        account: Arc<AccountSockets>,
        id: u64,
        generation: u64,
        dial: Dial,
    ) -> Arc<Session> {
        let (tx, rx) = mpsc::unbounded_channel();
        let session = Arc::new(Session {
            id,
            name: dial.name.clone(),
            url: dial.url.clone(),
            state: AtomicU8::new(CONNECTING),
            opened_at: AtomicU64::new(0),
            last_frame_at: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            frames: dial.frames.clone(),
            window: Mutex::new(Window {
                started: Instant::now(),
                sent: 0,
            }),
            commands: tx,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(account, session.clone(), generation, dial, rx));
        *session.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        session
    }

    pub(super) fn command(&self, command: Command) {
        // A session whose task ended has nothing to close or send.
        let _ = self.commands.send(command);
    }

    /// Wait up to `max` for the task to end, then stop it.
    pub(super) async fn join(&self, max: Duration) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut task) = task
            && tokio::time::timeout(max, &mut task).await.is_err()
        {
            task.abort();
        }
    }

    fn state(&self) -> SessionState {
        match self.state.load(Ordering::Relaxed) {
            CONNECTING => SessionState::Connecting,
            OPEN => SessionState::Open,
            _ => SessionState::Closing,
        }
    }

    pub(super) fn info(&self) -> SessionInfo {
        SessionInfo {
            name: self.name.clone(),
            state: self.state(),
            opened_at: self.opened_at.load(Ordering::Relaxed),
            last_frame_at: self.last_frame_at.load(Ordering::Relaxed),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_out: self.frames_out.load(Ordering::Relaxed),
        }
    }

    pub(super) fn status(&self, reconnects: u64) -> SessionStatus {
        SessionStatus {
            name: self.name.clone(),
            state: match self.state() {
                SessionState::Connecting => "connecting",
                SessionState::Open => "open",
                SessionState::Closing => "closing",
            },
            opened_at: self.opened_at.load(Ordering::Relaxed),
            last_frame_at: self.last_frame_at.load(Ordering::Relaxed),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_out: self.frames_out.load(Ordering::Relaxed),
            reconnects,
        }
    }

    /// Queue a text frame: the session must be open, the frame within the
    /// size limit and the session's frame rate, and its placeholders bound
    /// to this session's host.
    pub(super) fn send_text(&self, text: String) -> Result<(), WitError> {
        if self.state.load(Ordering::Relaxed) != OPEN {
            return Err(WitError::Transient(format!(
                "session `{}` is not open",
                self.name
            )));
        }
        let limits = self.frames.limits;
        if text.len() as u64 > limits.max_frame_bytes {
            return Err(WitError::Permanent(format!(
                "session `{}`: a frame of {} bytes is over the limit of {} bytes",
                self.name,
                text.len(),
                limits.max_frame_bytes
            )));
        }
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now(), &limits)
            .map_err(|wait| rate_limited(&self.name, wait, &limits))?;
        let filled = self.frames.fill(text)?;
        self.command(Command::Text(filled));
        Ok(())
    }
}

/// Build an event for session `name`.
fn event(method: &str, name: &str, query: String, body: Vec<u8>) -> WebhookRequest {
    WebhookRequest {
        method: method.to_string(),
        path: name.to_string(),
        query,
        headers: Vec::new(),
        body,
        verified: Some(super::VERIFIED.to_string()),
    }
}

/// `code=NNNN&reason=...` (reason percent-encoded).
fn close_query(code: u16, reason: &str) -> String {
    let reason: String = url::form_urlencoded::byte_serialize(reason.as_bytes()).collect();
    format!("code={code}&reason={reason}")
}

/// Why the frame loop ended.
struct Ended {
    code: u16,
    reason: String,
}

async fn run(
    account: Arc<AccountSockets>,
    session: Arc<Session>,
    generation: u64,
    dial: Dial,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let plugin = dial.plugin.clone();
    let name = session.name.clone();
    let ended = match dial.connect().await {
        Err(reason) => {
            tracing::warn!(channel = %account.key, %plugin, session = %name, %reason, "socket could not connect");
            Ended { code: 1006, reason }
        }
        Ok(socket) => {
            let now = account.shared.now();
            session.opened_at.store(now, Ordering::Relaxed);
            session.state.store(OPEN, Ordering::Relaxed);
            tracing::info!(channel = %account.key, %plugin, session = %name, "socket open");
            account
                .emit(
                    generation,
                    event("WS-OPEN", &name, String::new(), Vec::new()),
                )
                .await;
            frames(&account, &session, generation, socket, &mut commands).await
        }
    };
    session.state.store(CLOSING, Ordering::Relaxed);
    account.record_close(ended.code);
    tracing::info!(channel = %account.key, %plugin, session = %name, code = ended.code, reason = %ended.reason, "socket closed");
    // Forgotten before the plugin hears of it, so it can open the name again.
    account.remove_session(&name, session.id);
    account
        .emit(
            generation,
            event(
                "WS-CLOSE",
                &name,
                close_query(ended.code, &ended.reason),
                Vec::new(),
            ),
        )
        .await;
}

/// The frame loop of an open session.
async fn frames(
    account: &AccountSockets,
    session: &Session,
    generation: u64,
    mut socket: Socket,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Ended {
    let name = session.name.as_str();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Text(text)) => {
                    if let Err(e) = socket.send(Message::text(text)).await {
                        return Ended { code: 1006, reason: session.frames.scrub_text(&format!("send: {e}")) };
                    }
                    session.frames_out.fetch_add(1, Ordering::Relaxed);
                    account.frames_out.fetch_add(1, Ordering::Relaxed);
                }
                Some(Command::Close(code, reason)) => {
                    session.state.store(CLOSING, Ordering::Relaxed);
                    return close(&mut socket, code, reason).await;
                }
                None => {
                    return close(&mut socket, 1001, "going away".into()).await;
                }
            },
            frame = socket.next() => {
                let now = account.shared.now();
                match frame {
                    Some(Ok(message)) => {
                        session.frames_in.fetch_add(1, Ordering::Relaxed);
                        account.frames_in.fetch_add(1, Ordering::Relaxed);
                        session.last_frame_at.store(now, Ordering::Relaxed);
                        account.saw_frame(now);
                        match message {
                            Message::Text(text) => {
                                let body = session.frames.scrub(text.as_bytes().to_vec());
                                account.emit(generation, event("WS-TEXT", name, String::new(), body)).await;
                            }
                            Message::Binary(bytes) => {
                                let body = session.frames.scrub(bytes.to_vec());
                                account.emit(generation, event("WS-BINARY", name, String::new(), body)).await;
                            }
                            Message::Ping(_) => {
                                // tungstenite queued the pong; send it now.
                                let _ = socket.flush().await;
                            }
                            Message::Pong(_) | Message::Frame(_) => {}
                            Message::Close(frame) => {
                                session.state.store(CLOSING, Ordering::Relaxed);
                                let (code, reason) = frame
                                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                                    .unwrap_or((1005, String::new()));
                                // tungstenite answered the close; read to the end.
                                let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
                                    while socket.next().await.is_some() {}
                                })
                                .await;
                                return Ended { code, reason: session.frames.scrub_text(&reason) };
                            }
                        }
                    }
                    Some(Err(WsError::Capacity(e))) => {
                        tracing::warn!(channel = %account.key, session = name, error = %e, "socket frame over the size limit; closing 1009");
                        let mut ended = close(&mut socket, 1009, "frame too big".into()).await;
                        ended.code = 1009;
                        return ended;
                    }
                    Some(Err(e)) => {
                        return Ended { code: 1006, reason: session.frames.scrub_text(&e.to_string()) };
                    }
                    None => {
                        return Ended { code: 1006, reason: "connection closed without a close frame".into() };
                    }
                }
            }
        }
    }
}

/// Send a close frame and wait (bounded) for the peer's; the reported code
/// is ours.
async fn close(socket: &mut Socket, code: u16, reason: String) -> Ended {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.clone().into(),
    };
    let _ = socket.close(Some(frame)).await;
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    Ended { code, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_window_refuses_past_its_budget_and_resets() {
        let limits = SocketLimits {
            frames_per_window: 3,
            window_ms: 1000,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut w = Window {
            started: t0,
            sent: 0,
        };
        for _ in 0..3 {
            assert_eq!(w.take(t0, &limits), Ok(()));
        }
        let later = t0 + Duration::from_millis(400);
        assert_eq!(w.take(later, &limits), Err(Duration::from_millis(600)));
        let next = t0 + Duration::from_millis(1000);
        assert_eq!(w.take(next, &limits), Ok(()));
        let (a, b) = (close_query(1000, "bye now&"), "code=1000&reason=bye+now%26");
        assert_eq!(a, b);
    }
}
