//! Plugins bundled into the `pincer` binary (built from `plugins/` by
//! `host/build.rs`), and installing them into a plugins directory.

use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// Write every bundled plugin (`<name>.wasm` and `<name>.toml`) into `dir`.
/// Existing files are replaced only when `overwrite` is set. Files are
/// written under a temporary name and renamed, so a watcher never sees a
/// half-written plugin. Returns the names written.
pub fn install(dir: &Path, overwrite: bool) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, wasm, toml) in BUNDLED {
        let wasm_path = dir.join(format!("{name}.wasm"));
        if wasm_path.exists() && !overwrite {
            continue;
        }
        crate::atomic_file::write(&dir.join(format!("{name}.toml")), toml.as_bytes())?;
        crate::atomic_file::write(&wasm_path, wasm)?;
        written.push(name.to_string());
    }
    Ok(written)
}
