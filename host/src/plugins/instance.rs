//! One sandboxed plugin instance, and calls into it with every limit applied.
//!
//! Each call gets a fresh CPU budget (epoch ticks), a wall-clock timeout that
//! also covers time blocked in host calls, and the store's memory limit. A
//! trap, timeout or exhausted limit returns a classified [`CallError`] and
//! poisons the instance (wasmtime stores cannot be re-entered after a trap);
//! its owner drops it and instantiates a fresh one. Typed errors returned by
//! the plugin ([`PluginError`]) leave the instance usable.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use wasmtime::Store;

use super::bindings::{
    self, Capabilities, ChatTarget, DownloadRequest, OutboundMessage, PollBatch, TextFormat,
    ToolInfo, WebhookRequest, WebhookResponse, WitError,
};
use super::compat;
use super::engine::EPOCH_TICK;
use super::gate::Admission;
use super::host::{self, HostState};
use super::loader::{PluginVersion, Pre};
use super::manifest::PluginKind;

/// A typed error returned by a plugin (the WIT `error` variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PluginError {
    /// Bad configuration.
    #[error("config: {message}")]
    Config { message: String },
    /// Credentials rejected.
    #[error("auth: {message}")]
    Auth { message: String },
    /// Temporary failure.
    #[error("transient: {message}")]
    Transient { message: String },
    /// Rate-limited.
    #[error("rate limited, retry after {retry_after_ms} ms: {message}")]
    RateLimited {
        retry_after_ms: u64,
        message: String,
    },
    /// Permanent failure.
    #[error("permanent: {message}")]
    Permanent { message: String },
    /// Not supported.
    #[error("unsupported: {message}")]
    Unsupported { message: String },
    /// The platform rejected the formatting; resend as plain text.
    #[error("formatting rejected: {message}")]
    Formatting { message: String },
}

impl From<WitError> for PluginError {
    fn from(e: WitError) -> Self {
        match e {
            WitError::Config(message) => PluginError::Config { message },
            WitError::Auth(message) => PluginError::Auth { message },
            WitError::Transient(message) => PluginError::Transient { message },
            WitError::RateLimited(r) => PluginError::RateLimited {
                retry_after_ms: r.retry_after_ms,
                message: r.message,
            },
            WitError::Permanent(message) => PluginError::Permanent { message },
            WitError::Unsupported(message) => PluginError::Unsupported { message },
            WitError::Formatting(message) => PluginError::Formatting { message },
        }
    }
}

/// Why a call into a plugin failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The wall-clock limit passed.
    #[error("`{call}` timed out after {ms} ms")]
    Timeout { call: &'static str, ms: u64 },
    /// The CPU budget ran out (epoch interruption).
    #[error("`{call}` exceeded its CPU budget of {ms} ms")]
    CpuLimit { call: &'static str, ms: u64 },
    /// The memory limit was hit (the guest then failed or trapped).
    #[error("`{call}` exceeded the memory limit of {mb} MiB")]
    MemoryLimit { call: &'static str, mb: u64 },
    /// The guest trapped (panic, unreachable, bad memory access, ...).
    #[error("`{call}` trapped: {message}")]
    Trap { call: &'static str, message: String },
    /// The plugin returned a typed error.
    #[error("`{call}` failed: {error}")]
    Plugin {
        call: &'static str,
        error: PluginError,
    },
    /// A fresh instance could not be created.
    #[error("instantiating failed: {0}")]
    Instantiate(String),
    /// No such plugin is loaded.
    #[error("plugin `{0}` is not loaded")]
    NotLoaded(String),
    /// Every instance the plugin may have is in use; retry later (HTTP 503
    /// with `Retry-After`).
    #[error(
        "plugin `{plugin}` is busy: all {cap} of its instances are in use; retry in {retry_after_ms} ms"
    )]
    Busy {
        plugin: String,
        cap: usize,
        retry_after_ms: u64,
    },
    /// The plugin is of the other kind.
    #[error("plugin `{name}` is a {actual}, not a {wanted}")]
    WrongKind {
        name: String,
        actual: PluginKind,
        wanted: PluginKind,
    },
}

impl CallError {
    /// The plugin's typed error, if that is what this is.
    pub fn plugin_error(&self) -> Option<&PluginError> {
        match self {
            CallError::Plugin { error, .. } => Some(error),
            _ => None,
        }
    }
    /// Whether the instance is unusable after this error (a trap or limit).
    pub fn poisons_instance(&self) -> bool {
        matches!(
            self,
            CallError::Timeout { .. }
                | CallError::CpuLimit { .. }
                | CallError::MemoryLimit { .. }
                | CallError::Trap { .. }
                | CallError::Instantiate(_)
        )
    }
}

enum Bindings {
    Channel(bindings::v02::channel::ChannelPlugin),
    Tool(bindings::v02::tool::ToolPlugin),
    ChannelV01(bindings::v01::channel::ChannelPlugin),
    ToolV01(bindings::v01::tool::ToolPlugin),
}

type V01Error = bindings::v01::channel::pincer::plugin::types::Error;

/// A live instance of one plugin version.
pub struct Instance {
    store: Store<HostState>,
    bindings: Bindings,
    version: Arc<PluginVersion>,
    /// A channel account's capabilities (`None`: the version's).
    caps: Option<Arc<host::Capabilities>>,
    poisoned: bool,
    /// The place in the plugin's gate (`None` for load-time smoke tests).
    _admission: Option<Admission>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("plugin", &self.version.name)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn cpu_ticks(ms: u64) -> u64 {
    (ms / EPOCH_TICK.as_millis() as u64).max(1)
}

impl Instance {
    /// Instantiate `version` in a fresh sandbox, waiting in line while the
    /// plugin is at its instance cap (for channel traffic: queued, not dropped).
    pub async fn new(version: Arc<PluginVersion>) -> Result<Self, CallError> {
        let admission = version.gate.admit(None).await?;
        Self::create(version, Some(admission)).await
    }

    /// Instantiate `version`, waiting at most `max_wait` for a place.
    pub async fn new_within(
        version: Arc<PluginVersion>,
        max_wait: Duration,
    ) -> Result<Self, CallError> {
        let admission = version.gate.admit(Some(max_wait)).await?;
        Self::create(version, Some(admission)).await
    }

    /// Instantiate `version` with `caps` (a channel account's own secrets
    /// and key-value namespace, see `PluginRegistry::account_capabilities`)
    /// instead of the version's, waiting at most `max_wait` (`None`: as
    /// long as it takes) for a place under the plugin's cap.
    pub async fn new_with_caps(
        version: Arc<PluginVersion>,
        caps: Arc<host::Capabilities>,
        max_wait: Option<Duration>,
    ) -> Result<Self, CallError> {
        let admission = version.gate.admit(max_wait).await?;
        let mut inst = Self::create_with(version, Some(&caps), Some(admission)).await?;
        inst.caps = Some(caps);
        Ok(inst)
    }

    /// Instantiate `version`, or [`CallError::Busy`] at once if the plugin is
    /// at its instance cap (tool calls).
    pub async fn try_new(version: Arc<PluginVersion>) -> Result<Self, CallError> {
        let admission = version.gate.try_admit()?;
        Self::create(version, Some(admission)).await
    }

    /// An instance outside the plugin's cap, for the load-time smoke test
    /// (covered by the engine's reserve).
    pub(crate) async fn new_unmetered(version: Arc<PluginVersion>) -> Result<Self, CallError> {
        Self::create(version, None).await
    }

    async fn create(
        version: Arc<PluginVersion>,
        admission: Option<Admission>,
    ) -> Result<Self, CallError> {
        Self::create_with(version, None, admission).await
    }

    async fn create_with(
        version: Arc<PluginVersion>,
        caps: Option<&host::Capabilities>,
        admission: Option<Admission>,
    ) -> Result<Self, CallError> {
        let state = HostState::new(caps.unwrap_or(&version.caps))
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        let mut store = host::new_store(version.component.engine(), state);
        store.data_mut().cpu_ticks_left = cpu_ticks(version.limits.cpu_ms);
        let timeout = Duration::from_millis(version.limits.call_timeout_ms);
        let made = match &version.pre {
            Pre::Channel(pre) => tokio::time::timeout(timeout, pre.instantiate_async(&mut store))
                .await
                .map(|r| r.map(Bindings::Channel)),
            Pre::Tool(pre) => tokio::time::timeout(timeout, pre.instantiate_async(&mut store))
                .await
                .map(|r| r.map(Bindings::Tool)),
            Pre::ChannelV01(pre) => {
                tokio::time::timeout(timeout, pre.instantiate_async(&mut store))
                    .await
                    .map(|r| r.map(Bindings::ChannelV01))
            }
            Pre::ToolV01(pre) => tokio::time::timeout(timeout, pre.instantiate_async(&mut store))
                .await
                .map(|r| r.map(Bindings::ToolV01)),
        };
        let bindings = match made {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Err(CallError::Instantiate(format!("{e:#}"))),
            Err(_) => return Err(CallError::Instantiate("timed out".into())),
        };
        Ok(Instance {
            store,
            bindings,
            version,
            caps: None,
            poisoned: false,
            _admission: admission,
        })
    }

    /// The capabilities this instance was made with (a channel account's,
    /// or its version's).
    pub fn caps(&self) -> &host::Capabilities {
        self.caps.as_deref().unwrap_or(&self.version.caps)
    }

    /// The version this instance runs.
    pub fn version(&self) -> &Arc<PluginVersion> {
        &self.version
    }

    /// Whether a trap or limit made this instance unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.version.limits.call_timeout_ms)
    }

    fn begin(&mut self, call: &'static str) -> Result<(), CallError> {
        if self.poisoned {
            return Err(CallError::Trap {
                call,
                message: "instance is unusable after an earlier failure".into(),
            });
        }
        let ticks = cpu_ticks(self.version.limits.cpu_ms);
        let st = self.store.data_mut();
        st.cpu_ticks_left = ticks;
        st.cpu_exhausted = false;
        self.store.set_epoch_deadline(1);
        Ok(())
    }

    fn finish<T>(
        &mut self,
        call: &'static str,
        timeout: Duration,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallError> {
        let err = match outcome {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => {
                self.poisoned = true;
                return Err(CallError::Timeout {
                    call,
                    ms: timeout.as_millis() as u64,
                });
            }
        };
        self.poisoned = true;
        let st = self.store.data();
        if st.cpu_exhausted {
            return Err(CallError::CpuLimit {
                call,
                ms: self.version.limits.cpu_ms,
            });
        }
        if st.limiter.hit {
            return Err(CallError::MemoryLimit {
                call,
                mb: self.version.limits.memory_mb,
            });
        }
        let message = trap_message(&err);
        let message = self.version.caps.secrets.scrub(&message);
        Err(CallError::Trap { call, message })
    }

    fn wrong_kind(&self, wanted: PluginKind) -> CallError {
        CallError::WrongKind {
            name: self.version.name.clone(),
            actual: self.version.kind,
            wanted,
        }
    }
}

/// Flatten a WIT `result<T, error>` into a [`CallError`].
fn typed<T>(call: &'static str, r: Result<T, WitError>) -> Result<T, CallError> {
    r.map_err(|e| CallError::Plugin {
        call,
        error: e.into(),
    })
}

macro_rules! guarded {
    ($self:ident, $call:literal, $timeout:expr, |$b:ident, $s:ident| $body:expr) => {{
        $self.begin($call)?;
        let timeout = $timeout;
        let outcome = {
            let $s = &mut $self.store;
            let $b = &$self.bindings;
            tokio::time::timeout(timeout, $body).await
        };
        $self.finish($call, timeout, outcome)
    }};
}

impl Instance {
    /// `name()`.
    pub async fn name(&mut self) -> Result<String, CallError> {
        guarded!(self, "name", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => c.pincer_plugin_plugin().call_name(s).await,
                Bindings::Tool(t) => t.pincer_plugin_plugin().call_name(s).await,
                Bindings::ChannelV01(c) => c.pincer_plugin_plugin().call_name(s).await,
                Bindings::ToolV01(t) => t.pincer_plugin_plugin().call_name(s).await,
            }
        })
    }

    /// `last-activity()`, Unix ms.
    pub async fn last_activity(&mut self) -> Result<u64, CallError> {
        guarded!(self, "last-activity", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => c.pincer_plugin_plugin().call_last_activity(s).await,
                Bindings::Tool(t) => t.pincer_plugin_plugin().call_last_activity(s).await,
                Bindings::ChannelV01(c) => c.pincer_plugin_plugin().call_last_activity(s).await,
                Bindings::ToolV01(t) => t.pincer_plugin_plugin().call_last_activity(s).await,
            }
        })
    }

    /// `restart()` with its own time limit.
    pub async fn restart(&mut self, timeout: Duration) -> Result<(), CallError> {
        let r = guarded!(self, "restart", timeout, |b, s| async {
            match b {
                Bindings::Channel(c) => c.pincer_plugin_plugin().call_restart(s).await,
                Bindings::Tool(t) => t.pincer_plugin_plugin().call_restart(s).await,
                Bindings::ChannelV01(c) => v01(c.pincer_plugin_plugin().call_restart(s).await),
                Bindings::ToolV01(t) => v01(t.pincer_plugin_plugin().call_restart(s).await),
            }
        })?;
        typed("restart", r)
    }

    fn channel(&self) -> Result<(), CallError> {
        match &self.bindings {
            Bindings::Channel(_) | Bindings::ChannelV01(_) => Ok(()),
            Bindings::Tool(_) | Bindings::ToolV01(_) => Err(self.wrong_kind(PluginKind::Channel)),
        }
    }

    fn tool(&self) -> Result<(), CallError> {
        match &self.bindings {
            Bindings::Tool(_) | Bindings::ToolV01(_) => Ok(()),
            Bindings::Channel(_) | Bindings::ChannelV01(_) => {
                Err(self.wrong_kind(PluginKind::Tool))
            }
        }
    }

    /// Channel `describe()` (0.1.0 capabilities converted).
    pub async fn describe_channel(&mut self) -> Result<Capabilities, CallError> {
        self.channel()?;
        guarded!(self, "describe", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => c.pincer_plugin_channel().call_describe(s).await,
                Bindings::ChannelV01(c) => c
                    .pincer_plugin_channel()
                    .call_describe(s)
                    .await
                    .map(compat::capabilities),
                _ => unreachable!("checked by channel()"),
            }
        })
    }

    /// Channel `start(config)`.
    pub async fn start(&mut self, config: &[(String, String)]) -> Result<(), CallError> {
        self.channel()?;
        let r = guarded!(self, "start", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => c.pincer_plugin_channel().call_start(s, config).await,
                Bindings::ChannelV01(c) => {
                    v01(c.pincer_plugin_channel().call_start(s, config).await)
                }
                _ => unreachable!("checked by channel()"),
            }
        })?;
        typed("start", r)
    }

    /// Channel `poll(cursor, wait_ms)`; the time limit is the wait plus the
    /// call timeout. A 0.1.0 plugin keeps its own cursor (the batch's is `None`).
    pub async fn poll(
        &mut self,
        cursor: Option<&str>,
        wait_ms: u32,
    ) -> Result<PollBatch, CallError> {
        self.channel()?;
        let timeout = self.timeout() + Duration::from_millis(u64::from(wait_ms));
        let r = guarded!(self, "poll", timeout, |b, s| async {
            match b {
                Bindings::Channel(c) => {
                    c.pincer_plugin_channel()
                        .call_poll(s, cursor, wait_ms)
                        .await
                }
                Bindings::ChannelV01(c) => {
                    v01(c.pincer_plugin_channel().call_poll(s, wait_ms).await).map(|r| {
                        r.map(|messages| PollBatch {
                            messages: messages.into_iter().map(compat::inbound).collect(),
                            cursor: None,
                        })
                    })
                }
                _ => unreachable!("checked by channel()"),
            }
        })?;
        typed("poll", r)
    }

    /// Channel `handle-webhook(request)`.
    pub async fn handle_webhook(
        &mut self,
        request: &WebhookRequest,
    ) -> Result<WebhookResponse, CallError> {
        self.channel()?;
        let r = guarded!(self, "handle-webhook", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => {
                    c.pincer_plugin_channel()
                        .call_handle_webhook(s, request)
                        .await
                }
                Bindings::ChannelV01(c) => v01(c
                    .pincer_plugin_channel()
                    .call_handle_webhook(s, &compat::webhook_request(request))
                    .await)
                .map(|r| r.map(compat::webhook_response)),
                _ => unreachable!("checked by channel()"),
            }
        })?;
        typed("handle-webhook", r)
    }

    /// Channel `send(message)`, returning the platform message id.
    pub async fn send(&mut self, message: &OutboundMessage) -> Result<String, CallError> {
        self.send_keyed(message, None).await
    }

    /// Channel `send(message)` with `key` as the call's `pincer:delivery`
    /// idempotency key (see [`host::delivery`]).
    pub async fn send_keyed(
        &mut self,
        message: &OutboundMessage,
        key: Option<String>,
    ) -> Result<String, CallError> {
        self.channel()?;
        self.store.data_mut().delivery.set(key);
        let r = self.send_call(message).await;
        self.store.data_mut().delivery.set(None);
        r
    }

    async fn send_call(&mut self, message: &OutboundMessage) -> Result<String, CallError> {
        let r = guarded!(self, "send", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => c.pincer_plugin_channel().call_send(s, message).await,
                Bindings::ChannelV01(c) => v01(c
                    .pincer_plugin_channel()
                    .call_send(s, &compat::outbound(message))
                    .await),
                _ => unreachable!("checked by channel()"),
            }
        })?;
        typed("send", r)
    }

    /// Channel `edit(conversation, message_id, text, format)`.
    pub async fn edit(
        &mut self,
        conversation: &str,
        message_id: &str,
        text: &str,
        format: TextFormat,
    ) -> Result<(), CallError> {
        self.channel()?;
        // The same edit (message and text) always has the same key.
        let key = host::delivery::derived_key('e', &[conversation, message_id, text]);
        self.store.data_mut().delivery.set(Some(key));
        let r = self.edit_call(conversation, message_id, text, format).await;
        self.store.data_mut().delivery.set(None);
        r
    }

    async fn edit_call(
        &mut self,
        conversation: &str,
        message_id: &str,
        text: &str,
        format: TextFormat,
    ) -> Result<(), CallError> {
        let r = guarded!(self, "edit", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => {
                    c.pincer_plugin_channel()
                        .call_edit(s, conversation, message_id, text, format)
                        .await
                }
                Bindings::ChannelV01(c) => v01(c
                    .pincer_plugin_channel()
                    .call_edit(s, conversation, message_id, text)
                    .await),
                _ => unreachable!("checked by channel()"),
            }
        })?;
        typed("edit", r)
    }

    /// Channel `draft(target, draft_id, text)` (unsupported before 0.2.0).
    pub async fn draft(
        &mut self,
        target: &ChatTarget,
        draft_id: u64,
        text: &str,
    ) -> Result<(), CallError> {
        self.channel()?;
        // The same draft state (chat, draft id and text) has the same key.
        let id = draft_id.to_string();
        let thread = target.thread.as_deref().unwrap_or_default();
        let key = host::delivery::derived_key('d', &[&target.conversation, thread, &id, text]);
        self.store.data_mut().delivery.set(Some(key));
        let r = self.draft_call(target, draft_id, text).await;
        self.store.data_mut().delivery.set(None);
        r
    }

    async fn draft_call(
        &mut self,
        target: &ChatTarget,
        draft_id: u64,
        text: &str,
    ) -> Result<(), CallError> {
        let r = guarded!(self, "draft", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => {
                    c.pincer_plugin_channel()
                        .call_draft(s, target, draft_id, text)
                        .await
                }
                Bindings::ChannelV01(_) => Ok(Err(unsupported_v01("draft"))),
                _ => unreachable!("checked by channel()"),
            }
        })?;
        typed("draft", r)
    }

    /// Channel `typing(target)`.
    pub async fn typing(&mut self, target: &ChatTarget) -> Result<(), CallError> {
        self.channel()?;
        let r = guarded!(self, "typing", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => c.pincer_plugin_channel().call_typing(s, target).await,
                Bindings::ChannelV01(c) => v01(c
                    .pincer_plugin_channel()
                    .call_typing(s, &target.conversation)
                    .await),
                _ => unreachable!("checked by channel()"),
            }
        })?;
        typed("typing", r)
    }

    /// Channel `mark-read(target)` (unsupported before 0.2.0).
    pub async fn mark_read(&mut self, target: &ChatTarget) -> Result<(), CallError> {
        self.channel()?;
        let r = guarded!(self, "mark-read", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => c.pincer_plugin_channel().call_mark_read(s, target).await,
                Bindings::ChannelV01(_) => Ok(Err(unsupported_v01("mark-read"))),
                _ => unreachable!("checked by channel()"),
            }
        })?;
        typed("mark-read", r)
    }

    /// Channel `fetch-attachment(handle)` (unsupported before 0.2.0).
    pub async fn fetch_attachment(&mut self, handle: &str) -> Result<DownloadRequest, CallError> {
        self.channel()?;
        let r = guarded!(self, "fetch-attachment", self.timeout(), |b, s| async {
            match b {
                Bindings::Channel(c) => {
                    c.pincer_plugin_channel()
                        .call_fetch_attachment(s, handle)
                        .await
                }
                Bindings::ChannelV01(_) => Ok(Err(unsupported_v01("fetch-attachment"))),
                _ => unreachable!("checked by channel()"),
            }
        })?;
        typed("fetch-attachment", r)
    }

    /// Tool `describe()`.
    pub async fn describe_tool(&mut self) -> Result<ToolInfo, CallError> {
        self.tool()?;
        guarded!(self, "describe", self.timeout(), |b, s| async {
            match b {
                Bindings::Tool(t) => t.pincer_plugin_tool().call_describe(s).await,
                Bindings::ToolV01(t) => t
                    .pincer_plugin_tool()
                    .call_describe(s)
                    .await
                    .map(compat::tool_info),
                _ => unreachable!("checked by tool()"),
            }
        })
    }

    /// Tool `invoke(arguments)` with JSON text in and out.
    pub async fn invoke(&mut self, arguments: &str) -> Result<String, CallError> {
        self.tool()?;
        let r = guarded!(self, "invoke", self.timeout(), |b, s| async {
            match b {
                Bindings::Tool(t) => t.pincer_plugin_tool().call_invoke(s, arguments).await,
                Bindings::ToolV01(t) => v01(t.pincer_plugin_tool().call_invoke(s, arguments).await),
                _ => unreachable!("checked by tool()"),
            }
        })?;
        typed("invoke", r)
    }
}

/// A 0.1.0 call's result with its typed error converted to 0.2.0.
fn v01<T>(r: wasmtime::Result<Result<T, V01Error>>) -> wasmtime::Result<Result<T, WitError>> {
    r.map(|r| r.map_err(Into::into))
}

fn unsupported_v01(call: &str) -> WitError {
    WitError::Unsupported(format!(
        "`{call}` is not part of pincer:plugin@0.1.0 (the plugin was built against it)"
    ))
}

/// Most bytes of a wasm backtrace kept in a trap's message.
const MAX_BACKTRACE_BYTES: usize = 4096;

/// A trap's message: what happened, then wasmtime's wasm backtrace with
/// the frames named from the component's name section where it has one
/// (cut to [`MAX_BACKTRACE_BYTES`]), so a plugin author sees where it
/// trapped.
fn trap_message(err: &wasmtime::Error) -> String {
    let mut message = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    if let Some(trace) = err.downcast_ref::<wasmtime::WasmBacktrace>()
        && !trace.frames().is_empty()
    {
        let mut text = trace.to_string();
        if text.len() > MAX_BACKTRACE_BYTES {
            let mut cut = MAX_BACKTRACE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n  ...");
        }
        message.push('\n');
        message.push_str(&text);
    }
    message
}
