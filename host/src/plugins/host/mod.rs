//! Host capabilities given to plugins, one small unit ("factor") each with its
//! configuration, its linking and its per-instance state: [`log`], [`kv`],
//! [`clock`], [`secrets`] (with host-[`generated`] ones), outbound [`http`]
//! (with its [`budget`] and connection pool), [`media`] uploads, the
//! `/data` directory ([`data`]) and, from the `pincer:socket` extension
//! package, host-managed WebSocket sessions and timers ([`socket`]). The 0.1.0 imports delegate to the same
//! factors (`v01`). [`HostState`] is
//! the `T` of
//! every plugin `Store<T>` and bundles the per-instance part of each factor
//! with the sandboxed WASI context.

pub mod budget;
pub mod clock;
pub mod data;
pub mod generated;
pub mod http;
pub mod kv;
pub mod log;
pub mod media;
mod pool;
pub mod secrets;
pub mod socket;
mod v01;

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings;

/// Per-store state of one plugin instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    pub(crate) http: http::OutboundHttp,
    pub(crate) log: log::PluginLog,
    pub(crate) kv: kv::PluginKv,
    pub(crate) clock: clock::PluginClock,
    pub(crate) secrets: secrets::PluginSecrets,
    pub(crate) media: media::PluginMedia,
    pub(crate) sockets: socket::PluginSockets,
    pub(crate) limiter: MemoryLimiter,
    /// CPU budget left for the current call, in epoch ticks.
    pub(crate) cpu_ticks_left: u64,
    /// Set when the epoch callback stopped a call for exceeding its CPU budget.
    pub(crate) cpu_exhausted: bool,
    /// The `/data` grant writes are metered against (if `/data` is granted).
    pub(crate) data_budget: Option<Arc<data::DataBudget>>,
}

/// Everything needed to build a [`HostState`] for one plugin.
#[derive(Clone)]
pub struct Capabilities {
    pub plugin: Arc<str>,
    /// `/data`, only when the manifest asked for it and the operator granted it.
    pub data: Option<Arc<data::DataBudget>>,
    pub http: Arc<http::HttpPolicy>,
    pub log: Arc<log::LogLimiter>,
    pub kv: kv::PluginKv,
    pub clock: crate::clock::SharedClock,
    pub secrets: Arc<secrets::SecretValues>,
    /// The host's blob store (for `media.upload`), if it has one.
    pub blobs: Option<Arc<crate::blobs::BlobStore>>,
    pub memory_bytes: usize,
    /// The effective limits (manifest request, operator, host ceilings).
    pub limits: crate::plugins::Limits,
    /// Host-managed WebSocket sessions and timers (`pincer:socket`).
    pub socket: socket::SocketCaps,
}

impl HostState {
    /// A fresh, default-deny sandbox for one instance: no environment, no
    /// arguments, no network sockets, stdio discarded, and only the plugin's
    /// own data directory preopened, if it was granted one.
    pub fn new(caps: &Capabilities) -> anyhow::Result<Self> {
        let mut wasi = WasiCtx::builder();
        if let Some(budget) = &caps.data {
            std::fs::create_dir_all(budget.dir())?;
            wasi.preopened_dir(budget.dir(), "/data", FsPerms::ReadWrite)?;
        }
        Ok(HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            http: http::OutboundHttp::new(
                caps.plugin.clone(),
                caps.http.clone(),
                caps.secrets.clone(),
            ),
            log: log::PluginLog::new(caps.plugin.clone(), caps.log.clone()),
            kv: caps.kv.clone(),
            clock: clock::PluginClock(caps.clock.clone()),
            secrets: secrets::PluginSecrets(caps.secrets.clone()),
            media: media::PluginMedia::from_caps(caps),
            sockets: socket::PluginSockets::new(
                caps.plugin.clone(),
                caps.socket.clone(),
                caps.secrets.clone(),
                caps.http.guard.clone(),
            ),
            limiter: MemoryLimiter::new(caps.memory_bytes),
            cpu_ticks_left: u64::MAX,
            cpu_exhausted: false,
            data_budget: caps.data.clone(),
        })
    }
}

/// Create a store for `state` with the memory limiter and the CPU-budget
/// epoch callback installed.
pub fn new_store(engine: &wasmtime::Engine, state: HostState) -> Store<HostState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|mut ctx| {
        let st = ctx.data_mut();
        if st.cpu_ticks_left == 0 {
            st.cpu_exhausted = true;
            Ok(wasmtime::UpdateDeadline::Interrupt)
        } else {
            st.cpu_ticks_left -= 1;
            // Yield to tokio at every tick so a busy guest never starves
            // other tasks on this worker thread.
            Ok(wasmtime::UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
    store
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

/// Caps the total linear memory of one store and records when it was hit.
#[derive(Debug)]
pub struct MemoryLimiter {
    max_bytes: usize,
    used: usize,
    pub(crate) hit: bool,
}

impl MemoryLimiter {
    fn new(max_bytes: usize) -> Self {
        MemoryLimiter {
            max_bytes,
            used: 0,
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        if self.used.saturating_add(grow) > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        self.used += grow;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        32
    }
}

/// Link WASI (p2), `wasi:http` and Pincer's host interfaces into `linker`.
///
/// `wasi:sockets` is linked (so components from toolchains that always import
/// it, such as componentize-py, still load) but the context grants no network,
/// so every socket operation is denied; outbound traffic must use `wasi:http`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    data::add_to_linker(linker)?;
    {
        use bindings::v02::channel::pincer::plugin as p;
        p::types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        p::log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        p::kv::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        p::clock::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        p::secrets::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        p::media::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    }
    {
        // The `pincer:socket` extension package (channels; tools are refused).
        use bindings::socket::pincer::socket as p;
        p::websocket::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        p::timer::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    }
    {
        // Plugins built against the 0.1.0 contract (see `v01`).
        use bindings::v01::channel::pincer::plugin as p;
        p::types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        p::log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        p::kv::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        p::clock::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        p::secrets::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    }
    Ok(())
}

impl bindings::v02::channel::pincer::plugin::types::Host for HostState {}

/// The data directory of plugin `name` below `root`.
pub fn data_dir(root: &Path, name: &str) -> std::path::PathBuf {
    root.join(name)
}
