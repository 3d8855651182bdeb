//! Plugins: the host side of the WIT contract (`wit/pincer.wit`).
//!
//! - [`bindings`] and [`compat`]: the contract versions the host links (0.2.0
//!   and 0.1.0) and the conversions between them;
//! - [`engine`]: the one wasmtime `Engine` (epochs, pooling) and its `Linker`;
//! - [`host`]: the capabilities plugins import (log, kv, clock, secrets, http);
//! - [`manifest`]: the plugin manifest and the operator's per-plugin settings;
//! - [`limits`]: host-wide ceilings and outbound budgets, and effective limits;
//! - [`cache`]: compiled artifacts on disk, so restarts load in milliseconds;
//! - [`files`]: reading plugin files with size caps and name checks;
//! - [`gate`]: per-plugin instance caps (busy when full);
//! - [`heap`]: giving freed heap back to the kernel after bursts of instances;
//! - [`nice`]: lower OS priority for the plugin call runtime's threads;
//! - [`quotas`]: what one plugin may use (instances, key-value, `/data`, logs);
//! - [`loader`]: a file on disk to a checked, pre-instantiated [`PluginVersion`];
//! - [`instance`]: one sandboxed instance and limited, classified calls into it;
//! - [`registry`]: the loaded plugins, version swaps and the plugin list API
//!   (with `accounts`: the capabilities of a channel's further accounts);
//! - [`watcher`]: hot-load from the plugins directory.

mod accounts;
pub mod bindings;
pub mod cache;
pub mod compat;
pub mod engine;
pub mod files;
pub mod gate;
pub mod heap;
pub mod host;
pub mod instance;
pub mod limits;
pub mod loader;
pub mod manifest;
pub mod nice;
pub mod quotas;
pub mod registry;
pub mod watcher;

pub use instance::{CallError, Instance, PluginError};
pub use limits::{HttpLimits, HttpOverrides, SandboxConfig, SocketLimits, SocketOverrides};
pub use loader::{LoadError, PluginVersion};
pub use manifest::{AccountSettings, Limits, Manifest, PluginKind, PluginSettings};
pub use quotas::{QuotaSettings, Quotas};
pub use registry::{PluginInfo, PluginRegistry, PluginState, RuntimeConfig};
