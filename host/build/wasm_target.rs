//! Makes sure the Rust toolchain building the plugins has the `wasm32-wasip2`
//! target, adding it through rustup when it is missing, so that the README's
//! first command works on a machine that has never seen the wasm target.
//!
//! `rust-toolchain.toml` lists the target, but rustup only honours that when
//! it installs a toolchain; an already installed one is left without it and
//! the plugin build fails with "can't find crate for `core`". Used by
//! `host/build.rs`; the detection is unit-tested from the `pincer` lib tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target the plugins are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// What [`ensure_target`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target's standard library was already in the sysroot.
    Present,
    /// rustup added it.
    Added,
}

/// Whether the sysroot at `sysroot` has the standard library for `target`.
pub fn sysroot_has_target(sysroot: &Path, target: &str) -> bool {
    let lib = sysroot.join("lib").join("rustlib").join(target).join("lib");
    std::fs::read_dir(&lib)
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libcore-") && name.ends_with(".rlib")
            })
        })
        .unwrap_or(false)
}

/// The sysroot of the compiler `rustc`.
pub fn sysroot(rustc: &Path) -> Result<PathBuf, String> {
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("running `{} --print sysroot`: {e}", rustc.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} --print sysroot` failed: {}",
            rustc.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Make sure `rustc` can build for `target`: if its sysroot lacks the
/// target, run `rustup target add` (for `toolchain`, the one rustup chose for
/// this build, when known) and check again. The error says what to do by hand,
/// also when rustup is not installed.
pub fn ensure_target(
    rustc: &Path,
    rustup: &Path,
    toolchain: Option<&str>,
    target: &str,
) -> Result<Outcome, String> {
    let root = sysroot(rustc)?;
    if sysroot_has_target(&root, target) {
        return Ok(Outcome::Present);
    }
    let mut cmd = Command::new(rustup);
    cmd.args(["target", "add"]);
    if let Some(t) = toolchain.filter(|t| !t.is_empty()) {
        cmd.args(["--toolchain", t]);
    }
    cmd.arg(target);
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "the Rust standard library for {target} is not installed (no {target} in {}), and \
                 rustup is not available to add it. Install Rust with rustup \
                 (https://rustup.rs) or install your distribution's {target} standard library, \
                 then build again.",
                root.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "running `{} target add {target}`: {e}",
                rustup.display()
            ));
        }
    };
    if !status.success() {
        return Err(format!(
            "`rustup target add {target}` failed ({status}); run it by hand and build again"
        ));
    }
    if sysroot_has_target(&root, target) {
        Ok(Outcome::Added)
    } else {
        Err(format!(
            "`rustup target add {target}` succeeded but {} still has no {target} standard \
             library; is RUSTC pointing at a toolchain rustup does not manage?",
            root.display()
        ))
    }
}
