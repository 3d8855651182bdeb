//! The `wasm32-wasip2` detection of `host/build.rs`, driven with a fake
//! `rustc` (prints a sysroot) and a fake `rustup` (records its arguments and
//! installs the target into that sysroot), so no real toolchain is touched.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::wasm_target::{Outcome, WASM_TARGET, ensure_target, sysroot_has_target};

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

struct Fake {
    _dir: tempfile::TempDir,
    sysroot: PathBuf,
    rustc: PathBuf,
    rustup: PathBuf,
    calls: PathBuf,
}

/// A sysroot without the target, a `rustc` printing it, and a `rustup` that
/// installs the target (exit 0) or fails (exit 1).
fn fake(rustup_succeeds: bool) -> Fake {
    let dir = tempfile::tempdir().expect("tempdir");
    let sysroot = dir.path().join("sysroot");
    std::fs::create_dir_all(sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/lib"))
        .expect("mkdir");
    let rustc = dir.path().join("rustc");
    script(&rustc, &format!("echo {}", sysroot.display()));
    let rustup = dir.path().join("rustup");
    let calls = dir.path().join("calls");
    let lib = sysroot.join("lib/rustlib").join(WASM_TARGET).join("lib");
    let install = if rustup_succeeds {
        format!("mkdir -p {0} && touch {0}/libcore-0123.rlib", lib.display())
    } else {
        "echo 'error: no network' >&2; exit 1".into()
    };
    script(
        &rustup,
        &format!("echo \"$@\" >> {}\n{install}", calls.display()),
    );
    Fake {
        _dir: dir,
        sysroot,
        rustc,
        rustup,
        calls,
    }
}

#[test]
fn present_target_needs_no_rustup() {
    let f = fake(true);
    let lib = f.sysroot.join("lib/rustlib").join(WASM_TARGET).join("lib");
    std::fs::create_dir_all(&lib).expect("mkdir");
    // An empty target directory (a half-removed target) is not "installed".
    assert!(!sysroot_has_target(&f.sysroot, WASM_TARGET));
    std::fs::write(lib.join("libcore-abc.rlib"), b"").expect("touch");
    assert!(sysroot_has_target(&f.sysroot, WASM_TARGET));
    let out = ensure_target(&f.rustc, &f.rustup, Some("stable"), WASM_TARGET);
    assert_eq!(out, Ok(Outcome::Present));
    assert!(
        !f.calls.exists(),
        "rustup must not run when the target is there"
    );
}

#[test]
fn missing_target_is_added_for_the_build_toolchain() {
    let f = fake(true);
    assert!(!sysroot_has_target(&f.sysroot, WASM_TARGET));
    let out = ensure_target(&f.rustc, &f.rustup, Some("1.95.0-x86_64"), WASM_TARGET);
    assert_eq!(out, Ok(Outcome::Added));
    let calls = std::fs::read_to_string(&f.calls).expect("rustup ran");
    assert_eq!(
        calls.trim(),
        "target add --toolchain 1.95.0-x86_64 wasm32-wasip2"
    );
    assert!(sysroot_has_target(&f.sysroot, WASM_TARGET));
    // Without a toolchain name rustup picks the directory's (rust-toolchain.toml).
    let g = fake(true);
    assert_eq!(
        ensure_target(&g.rustc, &g.rustup, None, WASM_TARGET),
        Ok(Outcome::Added)
    );
    let calls = std::fs::read_to_string(&g.calls).expect("rustup ran");
    assert_eq!(calls.trim(), "target add wasm32-wasip2");
}

#[test]
fn no_rustup_gives_a_clear_error() {
    let f = fake(true);
    let missing = f.sysroot.join("no-such-rustup");
    let err = ensure_target(&f.rustc, &missing, None, WASM_TARGET).expect_err("must fail");
    assert!(err.contains("rustup is not available"), "{err}");
    assert!(err.contains(WASM_TARGET), "{err}");
    assert!(err.contains("https://rustup.rs"), "{err}");
}

#[test]
fn failing_rustup_says_what_to_run() {
    let f = fake(false);
    let err = ensure_target(&f.rustc, &f.rustup, None, WASM_TARGET).expect_err("must fail");
    assert!(err.contains("rustup target add wasm32-wasip2"), "{err}");
    assert!(!sysroot_has_target(&f.sysroot, WASM_TARGET));
}
