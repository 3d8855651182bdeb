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
        write_atomic(&dir.join(format!("{name}.toml")), toml.as_bytes())?;
        write_atomic(&wasm_path, wasm)?;
        written.push(name.to_string());
    }
    Ok(written)
}

/// Write `bytes` to `path` via a hidden temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("plugin");
    let tmp = path.with_file_name(format!(".{file}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
