//! Builds the plugins in `../plugins` (and the SDK they use) for
//! `wasm32-wasip2` from source, copies them with their manifests into
//! `OUT_DIR/plugins`, and embeds the bundled ones into the binary. A plugin
//! that fails to build fails the host build: a missing or stale `.wasm` is
//! never used silently.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "build/wasm_target.rs"]
mod wasm_target;

/// Plugins shipped in the binary and installed into a new plugins directory.
const BUNDLED: &[(&str, &str)] = &[
    ("echo", "echo"),
    ("clock", "clock"),
    ("http-fetch", "http-fetch"),
    ("telegram", "telegram"),
    ("whatsapp", "whatsapp"),
    ("matrix", "matrix"),
    ("discord", "discord"),
    ("slack", "slack"),
];
/// Plugins built for the test suite only.
const TESTING: &[(&str, &str)] = &[
    ("hostile", "testing/hostile"),
    ("testchan", "testing/testchan"),
    // The echo channel frozen at pincer:plugin@0.1.0 (old-contract fixture).
    ("echo-v01", "testing/echo-v01"),
    // Sends one `media.upload` as told (attachment tests).
    ("uploader", "testing/uploader"),
    // A socket channel (`pincer:socket`), and its twin built under another
    // package name (hot-reload tests tell the two apart by it).
    ("ws-probe", "testing/ws-probe"),
    ("ws-probe-v2", "testing/ws-probe-v2"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    let plugins = root.join("plugins");
    watch_rust_sources(&root);
    let target_dir = root.join("target").join("wasm-plugins");
    // A toolchain installed before this checkout has no wasm target even
    // though rust-toolchain.toml lists it: add it (through rustup) first.
    let rustc = PathBuf::from(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    match wasm_target::ensure_target(
        &rustc,
        Path::new("rustup"),
        toolchain.as_deref(),
        wasm_target::WASM_TARGET,
    ) {
        Ok(wasm_target::Outcome::Present) => {}
        Ok(wasm_target::Outcome::Added) => println!(
            "cargo:warning=added the {} target through rustup (needed to build the plugins)",
            wasm_target::WASM_TARGET
        ),
        Err(e) => panic!("{e}"),
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--locked",
        ])
        .env("CARGO_TARGET_DIR", &target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for the plugins: {e}"));
    if !status.success() {
        panic!(
            "building the plugins in {} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)",
            plugins.display()
        );
    }
    let built = target_dir.join("wasm32-wasip2").join("release");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("plugins");
    std::fs::create_dir_all(&out).expect("creating OUT_DIR/plugins");
    let mut code = String::from(
        "/// Bundled plugins: (name, component bytes, manifest TOML).\npub const BUNDLED: &[(&str, &[u8], &str)] = &[\n",
    );
    for (name, dir) in BUNDLED.iter().chain(TESTING) {
        let artifact = built.join(format!("pincer_plugin_{}.wasm", name.replace('-', "_")));
        let wasm = out.join(format!("{name}.wasm"));
        std::fs::copy(&artifact, &wasm).unwrap_or_else(|e| {
            panic!(
                "plugin {name}: {} missing after build: {e}",
                artifact.display()
            )
        });
        let toml = out.join(format!("{name}.toml"));
        std::fs::copy(plugins.join(dir).join("pincer.toml"), &toml)
            .unwrap_or_else(|e| panic!("plugin {name}: pincer.toml: {e}"));
        if BUNDLED.iter().any(|(n, _)| n == name) {
            code.push_str(&format!(
                "    ({name:?}, include_bytes!({:?}), include_str!({:?})),\n",
                wasm.display().to_string(),
                toml.display().to_string()
            ));
        }
    }
    code.push_str("];\n");
    code.push_str(&format!(
        "/// Where this build put every plugin it built (bundled and test-only).\npub const BUILD_PLUGIN_DIR: &str = {:?};\n",
        out.display().to_string()
    ));
    std::fs::write(
        out.parent().expect("out has parent").join("bundled.rs"),
        code,
    )
    .expect("writing bundled.rs");
}

/// Tells cargo to rebuild the host when a source of a Rust plugin, of the
/// Rust SDK or of the contract changes, and only then: the Python, JS, C and
/// Zig plugins and SDKs are built by their own toolchains (never by this
/// script), and their build outputs (`node_modules`, `.zig-cache`, ...)
/// change on every build of theirs.
fn watch_rust_sources(root: &Path) {
    watch_tree(&root.join("wit"));
    for workspace in ["plugins", "sdk"] {
        let dir = root.join(workspace);
        for file in ["Cargo.toml", "Cargo.lock"] {
            println!("cargo:rerun-if-changed={}", dir.join(file).display());
        }
        // The SDK is itself a crate as well as a workspace of them.
        watch_tree(&dir.join("src"));
        watch_crates(&dir);
    }
}

/// Watches every Rust crate (a directory with a `Cargo.toml`) below `dir`.
fn watch_crates(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() || is_build_output(&entry.file_name()) {
            continue;
        }
        if path.join("Cargo.toml").is_file() {
            watch_tree(&path);
        } else {
            watch_crates(&path);
        }
    }
}

/// Build outputs and caches that never hold a source.
fn is_build_output(name: &std::ffi::OsStr) -> bool {
    matches!(
        name.to_str(),
        Some("target" | "build" | "node_modules" | ".zig-cache" | "zig-out" | "__pycache__")
    )
}

fn watch_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if is_build_output(&entry.file_name()) {
            continue;
        }
        if path.is_dir() {
            watch_tree(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
