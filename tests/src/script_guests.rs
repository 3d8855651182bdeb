//! Plugins written in Python and JavaScript/TypeScript, built from source by
//! the SDK's own build commands (`sdk/python/build.sh`, `sdk/js/build.sh`)
//! with the toolchains `sdk/install-toolchains.sh` installs.
//!
//! Builds are cached in `target/guest-builds/<project>-<hash>/`, keyed by
//! the SHA-256 of the project's sources, the SDK and the WIT, so one run of
//! the suite builds each guest once, and an edit to any input rebuilds it.
//! A missing toolchain fails the build with the build script's message
//! (which names the tool and the install command): nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// The language of a guest project, from the files it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// `app.py`, built by componentize-py.
    Python,
    /// `plugin.ts` or `plugin.js`, built by jco / componentize-js.
    Js,
}

impl Lang {
    /// The language of the project in `dir`.
    pub fn of(dir: &Path) -> Lang {
        if dir.join("app.py").is_file() {
            Lang::Python
        } else if dir.join("plugin.ts").is_file() || dir.join("plugin.js").is_file() {
            Lang::Js
        } else {
            panic!(
                "{} is neither a Python nor a JS/TS plugin project",
                dir.display()
            )
        }
    }

    /// The SDK directory (under `sdk/`).
    pub fn sdk_dir(self) -> PathBuf {
        repo_root().join("sdk").join(match self {
            Lang::Python => "python",
            Lang::Js => "js",
        })
    }
}

pub use crate::guests::repo_root;

/// `plugins/<name>` in the repository.
pub fn project(name: &str) -> PathBuf {
    repo_root().join("plugins").join(name)
}

/// Hash every regular file under `dir` (sorted; skipping build outputs and
/// installed packages) into `h`.
fn hash_tree(h: &mut Sha256, dir: &Path) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if matches!(name, "node_modules" | "__pycache__" | "target") || name.ends_with(".wasm") {
            continue;
        }
        // Follow symlinks (sdk/wit/deps/pincer points at wit/).
        if p.is_dir() {
            hash_tree(h, &p);
        } else if p.is_file() {
            h.update(p.to_string_lossy().as_bytes());
            h.update(std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())));
        }
    }
}

/// The cache key of a build of the project in `dir`.
pub fn source_hash(dir: &Path) -> String {
    let mut h = Sha256::new();
    hash_tree(&mut h, dir);
    hash_tree(&mut h, &Lang::of(dir).sdk_dir());
    hash_tree(&mut h, &repo_root().join("sdk").join("wit"));
    hex::encode(h.finalize())[..16].to_string()
}

static BUILDS: Mutex<()> = Mutex::new(());

/// Build the project in `dir` with its SDK's build command into `out`
/// (`<out>.wasm` plus `<out>.toml`); panics with the build's output on failure.
pub fn build_into(dir: &Path, out: &Path) {
    let script = Lang::of(dir).sdk_dir().join("build.sh");
    let output = Command::new(&script)
        .arg(dir)
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "building {} failed ({}):\n{}\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The component built from `plugins/<name>` (its manifest next to it as
/// `<name>.toml`), from the build cache when the sources are unchanged.
pub fn built_guest(name: &str) -> PathBuf {
    let dir = project(name);
    let key = source_hash(&dir);
    let cache = repo_root()
        .join("target")
        .join("guest-builds")
        .join(format!("{name}-{key}"));
    let wasm = cache.join(format!("{name}.wasm"));
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|p| p.into_inner());
    if !wasm.is_file() {
        let tmp = cache.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).expect("create build dir");
        build_into(&dir, &tmp.join(format!("{name}.wasm")));
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::rename(&tmp, &cache).expect("publish build");
        // Builds of older sources of this guest are not needed any more.
        let prefix = format!("{name}-");
        for old in std::fs::read_dir(cache.parent().expect("parent"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let file_name = old.file_name().to_string_lossy().into_owned();
            if file_name.starts_with(&prefix) && old.path() != cache && !file_name.ends_with(".tmp")
            {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
    }
    wasm
}

/// Copy guest `name` (component and manifest) into `plugins_dir`, with the
/// manifest passed through `edit`.
pub fn install_guest(plugins_dir: &Path, name: &str, edit: impl FnOnce(String) -> String) {
    let wasm = built_guest(name);
    std::fs::create_dir_all(plugins_dir).expect("plugins dir");
    std::fs::copy(&wasm, plugins_dir.join(format!("{name}.wasm"))).expect("copy wasm");
    let manifest = std::fs::read_to_string(wasm.with_extension("toml")).expect("manifest");
    std::fs::write(plugins_dir.join(format!("{name}.toml")), edit(manifest))
        .expect("write manifest");
}

/// `wasm` with a custom section appended: a valid component with other
/// bytes, so a different hash and no compiled artifact in the cache.
pub fn with_custom_section(wasm: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = b"pincer-test";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// In runtime `t`, a new version of guest `name` (other bytes, so nothing
/// in the compile cache) compiles in the background while the `clock` tool
/// keeps answering and the old version stays current until the new one is
/// swapped in: the check that a big guest's hot reload blocks nobody.
pub async fn assert_new_version_compiles_while_others_answer(t: &crate::TestRuntime, name: &str) {
    use std::time::Duration;
    let dir = t.plugins_dir();
    crate::install_plugin(&dir, "clock", "clock");
    install_guest(&dir, name, |m| m);
    let plugins = t.runtime.plugins.clone();
    plugins
        .load_file(&dir.join("clock.wasm"))
        .await
        .expect("clock loads");
    let path = dir.join(format!("{name}.wasm"));
    plugins.load_file(&path).await.expect("v1 loads");
    let v1 = plugins.current(name).expect("v1").sha256.clone();

    let bytes = std::fs::read(built_guest(name)).expect("built");
    pincer::atomic_file::write(&path, &with_custom_section(&bytes, "v2")).expect("write v2");
    let loader = {
        let plugins = plugins.clone();
        let path = path.clone();
        tokio::spawn(async move { plugins.load_file(&path).await })
    };
    // Count the clock's answers that completed while v1 was still current
    // (v2 is swapped in only once compiled and smoke-tested).
    let mut answered_during_load = 0;
    while !loader.is_finished() {
        let out = tokio::time::timeout(Duration::from_secs(60), plugins.invoke_tool("clock", "{}"))
            .await
            .expect("clock answers")
            .expect("clock works");
        assert!(out.contains("unix_ms"), "{out}");
        if plugins.current(name).expect("current").sha256 == v1 {
            answered_during_load += 1;
        }
    }
    loader.await.expect("join").expect("v2 loads");
    assert!(
        answered_during_load > 0,
        "no call completed while v2 compiled"
    );
    let info = plugins.info(name).expect("info");
    assert_eq!(
        info.cached,
        Some(false),
        "v2 was compiled, not cached: {info:?}"
    );
    assert_ne!(info.sha256.as_deref(), Some(v1.as_str()));
}
