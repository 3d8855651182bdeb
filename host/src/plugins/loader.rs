//! From a file on disk to a checked, pre-instantiated [`PluginVersion`].
//!
//! A plugin is `<name>.wasm` with an optional `<name>.toml` manifest beside
//! it. Loading compiles (or loads from the cache), checks that the component
//! exports a supported version of the contract, resolves its imports once
//! (`InstancePre`), and smoke-tests one instance (`name`, `describe`), so a
//! version that is swapped in is known to instantiate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::{
    self, Capabilities, SUPPORTED_WIT_VERSIONS, ToolInfo, WIT_PACKAGE, WitTrack,
};
use super::cache::{CompileCache, Source};
use super::files;
use super::gate::Gate;
use super::host::{self, HostState};
use super::manifest::{Limits, Manifest, PluginKind, PluginSettings};

/// Why a plugin file could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading {path}: {message}")]
    Io { path: PathBuf, message: String },
    /// The manifest is invalid.
    #[error("manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    /// Not a valid component (corrupt, truncated, not wasm).
    #[error("compiling {path}: {message}")]
    Compile { path: PathBuf, message: String },
    /// Built against a contract version this host does not support.
    #[error(
        "plugin uses {interface}@{found}, but this host supports {WIT_PACKAGE}@{supported}; rebuild the plugin against a supported version"
    )]
    WitVersion {
        interface: String,
        found: String,
        supported: String,
    },
    /// Exports neither the channel nor the tool interface.
    #[error(
        "not a Pincer plugin: it must export {WIT_PACKAGE}/plugin and {WIT_PACKAGE}/channel or {WIT_PACKAGE}/tool (it exports: {exports})"
    )]
    NotAPlugin { exports: String },
    /// Manifest says one kind, component is the other.
    #[error("manifest says kind `{manifest}` but the component is a {component}")]
    KindMismatch {
        manifest: PluginKind,
        component: PluginKind,
    },
    /// An import the host does not provide, or a type mismatch.
    #[error("linking: {0}")]
    Link(String),
    /// Instantiating or calling `name`/`describe` failed.
    #[error("smoke test failed: {0}")]
    Smoke(String),
    /// The file stem is not a valid plugin name (shown escaped).
    #[error(
        "invalid plugin file name `{name}` (a plugin file is <name>.wasm with letters, digits, `-` and `_`)"
    )]
    BadName { name: String },
    /// More than one file claims one plugin name: all of them are refused
    /// until only one is left.
    #[error("plugin name `{name}` is claimed by more than one file ({}); none of them is loaded until only one remains", .paths.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", "))]
    NameClash { name: String, paths: Vec<PathBuf> },
    /// The tool name (or plugin name) is already served by another tool.
    #[error(
        "tool name `{tool}` in {path:?} is already provided by plugin `{owner}` ({owner_path:?})"
    )]
    ToolClash {
        tool: String,
        path: PathBuf,
        owner: String,
        owner_path: PathBuf,
    },
    /// The plugin's instance cap does not fit in the engine's instance pool.
    #[error("{0}")]
    Capacity(String),
}

/// Pre-instantiated component of either kind, for the contract version it
/// was built against.
#[derive(Clone)]
pub enum Pre {
    /// A channel built against 0.2.x.
    Channel(bindings::v02::channel::ChannelPluginPre<HostState>),
    /// A tool built against 0.2.x.
    Tool(bindings::v02::tool::ToolPluginPre<HostState>),
    /// A channel built against 0.1.x.
    ChannelV01(bindings::v01::channel::ChannelPluginPre<HostState>),
    /// A tool built against 0.1.x.
    ToolV01(bindings::v01::tool::ToolPluginPre<HostState>),
}

impl Pre {
    /// The contract track the component was built against.
    pub fn track(&self) -> WitTrack {
        match self {
            Pre::Channel(_) | Pre::Tool(_) => WitTrack::V02,
            Pre::ChannelV01(_) | Pre::ToolV01(_) => WitTrack::V01,
        }
    }
}

/// What the smoke test learned.
#[derive(Debug, Clone)]
pub enum Describe {
    /// A channel's capabilities.
    Channel(Capabilities),
    /// A tool's description.
    Tool(ToolInfo),
}

/// One loaded, ready-to-instantiate version of a plugin.
pub struct PluginVersion {
    /// Registry name.
    pub name: String,
    /// The manifest (implicit if none was shipped).
    pub manifest: Manifest,
    /// Channel or tool.
    pub kind: PluginKind,
    /// Hex SHA-256 of the component file.
    pub sha256: String,
    /// The file it came from.
    pub path: PathBuf,
    /// Compiled now or loaded from the cache.
    pub source: Source,
    /// Time to compile or deserialize.
    pub compile_time: Duration,
    /// Limits in force (manifest or operator, capped by the host ceilings).
    pub limits: Limits,
    /// The operator's settings when loaded.
    pub settings: PluginSettings,
    /// What the plugin reported at load.
    pub describe: Describe,
    /// The `name()` the plugin reported at load.
    pub reported_name: String,
    pub(crate) pre: Pre,
    pub(crate) caps: host::Capabilities,
    /// The plugin's instance gate (shared by all its versions).
    pub(crate) gate: Arc<Gate>,
    /// The component (cheap to clone).
    pub component: Component,
}

impl std::fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVersion")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("version", &self.manifest.version)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl PluginVersion {
    /// Channel capabilities, if this is a channel.
    pub fn channel_capabilities(&self) -> Option<&Capabilities> {
        match &self.describe {
            Describe::Channel(c) => Some(c),
            Describe::Tool(_) => None,
        }
    }
    /// Tool description, if this is a tool.
    pub fn tool_info(&self) -> Option<&ToolInfo> {
        match &self.describe {
            Describe::Tool(t) => Some(t),
            Describe::Channel(_) => None,
        }
    }

    /// Whether the component imports host-managed WebSocket sessions
    /// (`pincer:socket/websocket`): a socket channel, whose `start` opens
    /// its sessions, which only the holder of the account's lease may do
    /// in cluster mode.
    pub fn uses_sockets(&self) -> bool {
        let engine = self.component.engine();
        self.component
            .component_type()
            .imports(engine)
            .any(|(name, _)| name.starts_with("pincer:socket/websocket"))
    }
}

/// The manifest path for a component path (`x.wasm` → `x.toml`).
pub fn manifest_path(wasm: &Path) -> PathBuf {
    wasm.with_extension("toml")
}

/// What [`prepare`] produces.
pub(crate) struct Prepared {
    /// The manifest it was prepared with.
    pub manifest: Manifest,
    /// The compiled component.
    pub component: Component,
    /// Its pre-instantiated linking.
    pub pre: Pre,
    /// Channel or tool.
    pub kind: PluginKind,
    /// Hex SHA-256 of the component that is served.
    pub sha256: String,
    /// Where the compiled code came from.
    pub source: Source,
    /// Time to compile or deserialize.
    pub compile_time: Duration,
    /// Set when the file failed and the last good version is served instead.
    pub fallback_from: Option<LoadError>,
}

/// Read and validate the manifest of the plugin in `path` (or the implicit
/// one named by the file stem). The stem must be a valid plugin name; the
/// manifest is read with a size cap and its errors never quote its text.
pub(crate) fn read_manifest(path: &Path) -> Result<Manifest, LoadError> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let stem = match stem {
        Some(s) if files::valid_name(&s) => s,
        other => {
            return Err(LoadError::BadName {
                name: files::printable(other.as_deref().unwrap_or("")),
            });
        }
    };
    let mpath = manifest_path(path);
    match files::read_capped(&mpath, files::MAX_MANIFEST_BYTES) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| LoadError::Manifest {
                path: mpath.clone(),
                message: "not UTF-8 text".into(),
            })?;
            Manifest::parse(&text).map_err(|message| LoadError::Manifest {
                path: mpath.clone(),
                message,
            })
        }
        Err(files::FileError::NotFound) => Ok(Manifest::implicit(&stem)),
        Err(e) => Err(LoadError::Io {
            path: mpath,
            message: e.to_string(),
        }),
    }
}

/// Read the component (size-capped), hash it, compile or load from cache,
/// check the contract and link. If the file does not compile and `fallback`
/// is set, the last good compiled version of the plugin is used instead.
/// Blocking (Cranelift): run it on a blocking thread.
pub(crate) fn prepare(
    engine: &Engine,
    linker: &Linker<HostState>,
    cache: &CompileCache,
    path: &Path,
    manifest: Manifest,
    fallback: bool,
) -> Result<Prepared, LoadError> {
    let bytes =
        files::read_capped(path, files::MAX_COMPONENT_BYTES).map_err(|e| LoadError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let started = Instant::now();
    let (component, source, sha256, fallback_from) = match cache.load(engine, &bytes, &sha256) {
        Ok((component, source)) => (component, source, sha256, None),
        Err(e) => {
            let error = LoadError::Compile {
                path: path.to_path_buf(),
                message: e.to_string(),
            };
            match fallback
                .then(|| cache.last_good(engine, &manifest.name))
                .flatten()
            {
                Some((component, sha)) => {
                    tracing::warn!(plugin = %manifest.name, path = ?path, error = %error, sha256 = %sha, "plugin file does not compile; serving the last good version");
                    (component, Source::LastGood, sha, Some(error))
                }
                None => return Err(error),
            }
        }
    };
    drop(bytes);
    let compile_time = started.elapsed();
    let (kind, track) = check_contract(engine, &component)?;
    if let Some(declared) = manifest.kind
        && declared != kind
    {
        return Err(LoadError::KindMismatch {
            manifest: declared,
            component: kind,
        });
    }
    let pre = link(linker, &component, kind, track)?;
    Ok(Prepared {
        manifest,
        component,
        pre,
        kind,
        sha256,
        source,
        compile_time,
        fallback_from,
    })
}

/// Resolve the component's imports against `linker` and check its exports'
/// types for `kind` on contract `track` (also used by `pincer plugin check`).
pub(crate) fn link(
    linker: &Linker<HostState>,
    component: &Component,
    kind: PluginKind,
    track: WitTrack,
) -> Result<Pre, LoadError> {
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(|e| LoadError::Link(format!("{e:#}")))?;
    let link = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
    Ok(match (kind, track) {
        (PluginKind::Channel, WitTrack::V02) => {
            Pre::Channel(bindings::v02::channel::ChannelPluginPre::new(instance_pre).map_err(link)?)
        }
        (PluginKind::Tool, WitTrack::V02) => {
            Pre::Tool(bindings::v02::tool::ToolPluginPre::new(instance_pre).map_err(link)?)
        }
        (PluginKind::Channel, WitTrack::V01) => Pre::ChannelV01(
            bindings::v01::channel::ChannelPluginPre::new(instance_pre).map_err(link)?,
        ),
        (PluginKind::Tool, WitTrack::V01) => {
            Pre::ToolV01(bindings::v01::tool::ToolPluginPre::new(instance_pre).map_err(link)?)
        }
    })
}

/// Split `pincer:plugin/channel@0.1.0` into (`channel`, `0.1.0`).
fn contract_item(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    Some(rest.split_once('@').unwrap_or((rest, "")))
}

/// Versions are compatible when they share the semver track (`0.1.x`, `0.2.x`).
fn supported(version: &str) -> bool {
    WitTrack::of(version).is_some()
}

/// Check the contract version of every `pincer:plugin` import and export,
/// and find the plugin's kind and the one contract track it was built against
/// (a component mixing tracks is refused, naming both). Also used by `pincer
/// plugin check`.
pub(crate) fn check_contract(
    engine: &Engine,
    component: &Component,
) -> Result<(PluginKind, WitTrack), LoadError> {
    let mut seen: Option<(WitTrack, String)> = None;
    let mut one_track = |name: &str, version: &str| -> Result<(), LoadError> {
        let Some(t) = WitTrack::of(version) else {
            return Ok(());
        };
        match &seen {
            None => {
                seen = Some((t, name.to_string()));
                Ok(())
            }
            Some((first, first_name)) if *first != t => Err(LoadError::Link(format!(
                "the component mixes contract versions: `{first_name}` and `{name}`; build it against one version of {WIT_PACKAGE}"
            ))),
            Some(_) => Ok(()),
        }
    };
    let ty = component.component_type();
    let supported_list = SUPPORTED_WIT_VERSIONS.join(", ");
    let mut has_plugin = false;
    let mut kind = None;
    let mut names = Vec::new();
    for (name, _) in ty.imports(engine) {
        if let Some((iface, version)) = contract_item(name)
            && !supported(version)
        {
            return Err(LoadError::WitVersion {
                interface: format!("{WIT_PACKAGE}/{iface}"),
                found: version.to_string(),
                supported: supported_list,
            });
        }
        if let Some((_, version)) = contract_item(name) {
            one_track(name, version)?;
        }
    }
    for (name, _) in ty.exports(engine) {
        names.push(name.to_string());
        let Some((iface, version)) = contract_item(name) else {
            continue;
        };
        if !supported(version) {
            return Err(LoadError::WitVersion {
                interface: format!("{WIT_PACKAGE}/{iface}"),
                found: version.to_string(),
                supported: supported_list,
            });
        }
        one_track(name, version)?;
        match iface {
            "plugin" => has_plugin = true,
            "channel" => kind = Some(PluginKind::Channel),
            "tool" => kind = Some(PluginKind::Tool),
            _ => {}
        }
    }
    let track = seen.map(|(t, _)| t).unwrap_or(WitTrack::V02);
    match (has_plugin, kind) {
        (true, Some(kind)) => Ok((kind, track)),
        _ => Err(LoadError::NotAPlugin {
            exports: if names.is_empty() {
                "nothing".into()
            } else {
                names.join(", ")
            },
        }),
    }
}

/// Build the finished version after the smoke test.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish(
    name: String,
    manifest: Manifest,
    component: Component,
    pre: Pre,
    kind: PluginKind,
    sha256: String,
    source: Source,
    compile_time: Duration,
    path: PathBuf,
    settings: PluginSettings,
    caps: host::Capabilities,
    gate: Arc<Gate>,
    describe: Describe,
    reported_name: String,
) -> Arc<PluginVersion> {
    let limits = caps.limits;
    Arc::new(PluginVersion {
        name,
        manifest,
        kind,
        sha256,
        path,
        source,
        compile_time,
        limits,
        settings,
        describe,
        reported_name,
        pre,
        caps,
        gate,
        component,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions() {
        assert_eq!(
            contract_item("pincer:plugin/channel@0.1.0"),
            Some(("channel", "0.1.0"))
        );
        assert_eq!(contract_item("wasi:http/types@0.2.0"), None);
        assert!(supported("0.1.0"));
        assert!(supported("0.1.7"));
        assert!(supported("0.2.0"));
        assert!(supported("0.2.3"));
        assert!(!supported("0.3.0"));
        assert!(!supported("1.0.0"));
    }
}
