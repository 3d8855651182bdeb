//! Finding the programs a plugin build needs, and saying exactly how to
//! install the one that is missing.
//!
//! Programs are looked up in `PATH`, then in the toolchain cache the install
//! scripts fill (`$PINCER_TOOLCHAINS`, default `~/.cache/pincer/toolchains`:
//! its `bin` (C, Zig), `py/bin` (componentize-py's venv) and
//! `js/node_modules/.bin` (jco), as `sdk/install-toolchains.sh` lays them out).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::DevError;

/// The toolchain cache the install scripts use.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PINCER_TOOLCHAINS") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pincer/toolchains"))
}

/// The toolchain cache's program directories (see the module comment).
fn cache_bins() -> Vec<PathBuf> {
    cache_dir()
        .map(|c| {
            vec![
                c.join("bin"),
                c.join("py/bin"),
                c.join("js/node_modules/.bin"),
            ]
        })
        .unwrap_or_default()
}

/// Look `name` up in `PATH`, then in the toolchain cache.
pub fn find(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(cache_bins());
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first of `names` that is installed, or [`DevError::ToolMissing`]
/// naming the first one and `install`.
pub fn require(names: &[&str], install: &str) -> Result<PathBuf, DevError> {
    names
        .iter()
        .find_map(|n| find(n))
        .ok_or_else(|| DevError::ToolMissing {
            tool: names.first().copied().unwrap_or_default().to_string(),
            extra: cache_bins()
                .iter()
                .map(|d| format!(", {}", d.display()))
                .collect(),
            install: install.to_string(),
        })
}

/// How to install the C toolchain.
pub const C_INSTALL: &str = "install the C toolchain with `sdk/toolchains/c-zig.sh` from the Pincer repository, or on Debian/Ubuntu: `sudo apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32`";
/// How to install Zig.
pub const ZIG_INSTALL: &str = "install Zig with `sdk/toolchains/c-zig.sh` from the Pincer repository (it puts the `ziglang` wheel from PyPI under ~/.cache/pincer/toolchains), or `pip install ziglang==0.17.1` and put its `zig` on PATH";
/// How to install Rust.
pub const RUST_INSTALL: &str = "install Rust with rustup: https://rustup.rs";
/// How to install componentize-py.
pub const PYTHON_INSTALL: &str =
    "install it with `pip install componentize-py` (or run sdk/install-toolchains.sh)";
/// How to install jco.
/// (`jco componentize` breaks with `@bytecodealliance/preview2-shim` 0.26.1,
/// which a plain install pulls in: the pin is part of the command.)
pub const JS_INSTALL: &str = "install it with `npm install @bytecodealliance/jco@1.35.0 @bytecodealliance/componentize-js@0.22.0 @bytecodealliance/preview2-shim@0.26.0` in the project, or restore the project's package.json from `pincer plugin new` and run `npm install` (or run sdk/install-toolchains.sh)";

/// The wasi-libc sysroot clang builds against: `$WASI_SYSROOT`, else Debian's
/// layout under `/usr` (`/usr/include/wasm32-wasi`, `/usr/lib/wasm32-wasi`).
pub fn wasi_sysroot() -> Result<PathBuf, DevError> {
    let root = std::env::var_os("WASI_SYSROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr"));
    let debian = root.join("include/wasm32-wasi/stdlib.h");
    let plain = root.join("include/stdlib.h");
    if debian.is_file() || (std::env::var_os("WASI_SYSROOT").is_some() && plain.is_file()) {
        Ok(root)
    } else {
        Err(DevError::ToolMissing {
            tool: "wasi-libc".into(),
            extra: format!(" (no {})", debian.display()),
            install: format!("{C_INSTALL}; or set WASI_SYSROOT to a wasi-sysroot"),
        })
    }
}

/// Run `cmd`; on failure, [`DevError::StepFailed`] with what it printed.
pub fn run(step: &str, cmd: &mut Command) -> Result<std::process::Output, DevError> {
    tracing::debug!(step, command = ?cmd, "running");
    let out = cmd.output().map_err(|e| DevError::StepFailed {
        step: step.into(),
        status: "did not start".into(),
        output: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(DevError::StepFailed {
            step: step.into(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        });
    }
    Ok(out)
}
