//! Core wasm module → component, in process: what `wasm-tools component new
//! --adapt` does, with the WASI preview1 reactor adapter of the wasmtime
//! release this host runs. C and Zig builds end here.

use std::path::Path;

use super::DevError;

/// The preview1 → preview2 adapter for library-style (reactor) modules.
pub const REACTOR_ADAPTER: &[u8] =
    wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;

/// Wrap the core module at `core` (which carries its WIT world in a
/// `component-type` custom section, as the C bindings' `*_component_type.o`
/// provides) into a component, adapting any `wasi_snapshot_preview1` imports.
pub fn componentize(core: &Path) -> Result<Vec<u8>, DevError> {
    let bytes = std::fs::read(core).map_err(DevError::io(core))?;
    let err = |e: anyhow::Error| DevError::Componentize {
        path: core.to_path_buf(),
        message: format!("{e:#}"),
    };
    wit_component::ComponentEncoder::default()
        .module(&bytes)
        .map_err(err)?
        .adapter("wasi_snapshot_preview1", REACTOR_ADAPTER)
        .map_err(err)?
        .validate(true)
        .encode()
        .map_err(err)
}
