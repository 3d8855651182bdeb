//! `pincer plugin build`: find out which language the project in a directory
//! is written in (from its files), run that language's toolchain, and leave
//! `build/<name>.wasm` with its manifest `build/<name>.toml` beside it, ready
//! to copy into a plugins directory.
//!
//! | files            | language | toolchain                                   |
//! |------------------|----------|---------------------------------------------|
//! | `Cargo.toml`     | Rust     | cargo, `wasm32-wasip2` (added if missing)   |
//! | `*.zig`          | Zig      | zig + the C SDK, componentized in process   |
//! | `*.c`            | C        | clang-19, wasi-libc + the C SDK, likewise   |
//! | `app.py`         | Python   | componentize-py                             |
//! | `plugin.ts`/`.js`| TS / JS  | jco componentize                            |

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::templates;
use super::toolchain::{self, require, run};
use super::{DevError, Lang, PluginKind, world};
use crate::plugins::Manifest;

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// The project's language.
    pub lang: Lang,
    /// The plugin name (from `pincer.toml`).
    pub name: String,
    /// The component, `build/<name>.wasm`.
    pub wasm: PathBuf,
    /// Its manifest, `build/<name>.toml`.
    pub manifest: PathBuf,
    /// Wall time of the whole build.
    pub duration: Duration,
}

/// The language of the project in `dir`, from its files.
pub fn detect(dir: &Path) -> Result<Lang, DevError> {
    let has = |name: &str| dir.join(name).is_file();
    let any_ext = |ext: &str| -> bool {
        [dir.to_path_buf(), dir.join("src")].iter().any(|d| {
            std::fs::read_dir(d)
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.path().extension().is_some_and(|x| x == ext))
                })
                .unwrap_or(false)
        })
    };
    if has("Cargo.toml") {
        Ok(Lang::Rust)
    } else if any_ext("zig") {
        Ok(Lang::Zig)
    } else if any_ext("c") {
        Ok(Lang::C)
    } else if has("app.py") {
        Ok(Lang::Python)
    } else if has("plugin.ts") {
        Ok(Lang::Ts)
    } else if has("plugin.js") {
        Ok(Lang::Js)
    } else {
        Err(DevError::Project(format!(
            "{}: no plugin sources found (Cargo.toml, *.zig, *.c, app.py, plugin.ts or plugin.js); create a project with `pincer plugin new`",
            dir.display()
        )))
    }
}

/// The project's manifest (`pincer.toml`), which must name the plugin and its kind.
pub fn project_manifest(dir: &Path) -> Result<(Manifest, PluginKind), DevError> {
    let path = dir.join("pincer.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        DevError::Project(format!(
            "{}: {e} (a plugin project has a pincer.toml with `name` and `kind`)",
            path.display()
        ))
    })?;
    let manifest = Manifest::parse(&text)
        .map_err(|e| DevError::Project(format!("{}: {e}", path.display())))?;
    let kind = manifest.kind.ok_or_else(|| {
        DevError::Project(format!(
            "{}: set `kind = \"tool\"` or `kind = \"channel\"`",
            path.display()
        ))
    })?;
    Ok((manifest, kind))
}

/// Build the project in `dir`.
pub fn build(dir: &Path) -> Result<Built, DevError> {
    let started = Instant::now();
    let dir = dir
        .canonicalize()
        .map_err(DevError::io(dir.to_path_buf()))?;
    let lang = detect(&dir)?;
    let (manifest, kind) = project_manifest(&dir)?;
    let out_dir = dir.join("build");
    std::fs::create_dir_all(&out_dir).map_err(DevError::io(&out_dir))?;
    let wasm = out_dir.join(format!("{}.wasm", manifest.name));
    tracing::info!(plugin = %manifest.name, lang = lang.as_str(), dir = %dir.display(), "building");
    let component = match lang {
        Lang::Rust => rust(&dir)?,
        Lang::C => c(&dir, kind, &out_dir)?,
        Lang::Zig => zig(&dir, kind, &out_dir)?,
        Lang::Python => python(&dir, kind, &out_dir)?,
        Lang::Js | Lang::Ts => js(&dir, kind, lang, &out_dir)?,
    };
    std::fs::write(&wasm, &component).map_err(DevError::io(&wasm))?;
    let manifest_out = out_dir.join(format!("{}.toml", manifest.name));
    std::fs::copy(dir.join("pincer.toml"), &manifest_out).map_err(DevError::io(&manifest_out))?;
    Ok(Built {
        lang,
        name: manifest.name,
        wasm,
        manifest: manifest_out,
        duration: started.elapsed(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, DevError> {
    std::fs::read(path).map_err(DevError::io(path))
}

/// `cargo build --release --target wasm32-wasip2`; the artifact is found
/// from cargo's own JSON messages (so `CARGO_TARGET_DIR` is honoured).
fn rust(dir: &Path) -> Result<Vec<u8>, DevError> {
    let cargo = require(&["cargo"], toolchain::RUST_INSTALL)?;
    let rustc = require(&["rustc"], toolchain::RUST_INSTALL)?;
    let rustup = toolchain::find("rustup").unwrap_or_else(|| PathBuf::from("rustup"));
    super::wasm_target::ensure_target(&rustc, &rustup, None, super::wasm_target::WASM_TARGET)
        .map_err(DevError::Project)?;
    let out = run(
        "cargo build",
        Command::new(cargo).current_dir(dir).args([
            "build",
            "--release",
            "--target",
            super::wasm_target::WASM_TARGET,
            "--message-format=json-render-diagnostics",
        ]),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let artifact = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact")
        .flat_map(|v| {
            v["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| {
            DevError::Project("cargo built no .wasm (is crate-type = [\"cdylib\"] set?)".into())
        })?;
    read(&artifact)
}

/// Sources of a C or Zig project: `*.<ext>` in the project and `src/`.
fn sources(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [dir.to_path_buf(), dir.join("src")]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(d)
                .map(|e| e.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

/// The C SDK files for `kind` under `out_dir/sdk`, and the ones to compile.
struct CSdk {
    include: Vec<PathBuf>,
    sources: Vec<PathBuf>,
}

fn c_sdk(kind: PluginKind, out_dir: &Path) -> Result<CSdk, DevError> {
    let sdk = out_dir.join("sdk");
    let written = templates::write_c_sdk(&sdk, kind)?;
    Ok(CSdk {
        include: vec![sdk.clone(), sdk.join("gen")],
        sources: written
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "c" || e == "o"))
            .collect(),
    })
}

fn c(dir: &Path, kind: PluginKind, out_dir: &Path) -> Result<Vec<u8>, DevError> {
    let clang = require(&["clang-19", "clang"], toolchain::C_INSTALL)?;
    let sysroot = toolchain::wasi_sysroot()?;
    let sdk = c_sdk(kind, out_dir)?;
    let core = out_dir.join("core.wasm");
    let mut cmd = Command::new(clang);
    cmd.current_dir(dir)
        .arg("--target=wasm32-wasi")
        .arg(format!("--sysroot={}", sysroot.display()))
        .args(["-mexec-model=reactor", "-O2", "-Wall"])
        .arg(format!("-D{}", c_kind_define(kind)));
    for i in &sdk.include {
        cmd.arg(format!("-I{}", i.display()));
    }
    cmd.arg("-o").arg(&core);
    cmd.args(sources(dir, "c")).args(&sdk.sources);
    cmd.arg("-Wl,--strip-debug");
    run("clang", &mut cmd).map_err(|e| explain_link(e, toolchain::C_INSTALL))?;
    super::componentize::componentize(&core)
}

/// The preprocessor symbol `pincer.h` uses to pick the world's bindings.
fn c_kind_define(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Channel => "PINCER_CHANNEL",
        PluginKind::Tool => "PINCER_TOOL",
    }
}

/// clang's "cannot find wasm-ld" / missing builtins are a missing package.
fn explain_link(e: DevError, install: &str) -> DevError {
    match e {
        DevError::StepFailed {
            step,
            status,
            output,
        } if output.contains("wasm-ld") && output.contains("No such file")
            || output.contains("libclang_rt.builtins-wasm32") =>
        {
            DevError::StepFailed {
                step,
                status,
                output: format!("{output}\nThe wasm linker or runtime is missing: {install}"),
            }
        }
        other => other,
    }
}

fn zig(dir: &Path, kind: PluginKind, out_dir: &Path) -> Result<Vec<u8>, DevError> {
    let zig = require(&["zig"], toolchain::ZIG_INSTALL)?;
    let sdk = c_sdk(kind, out_dir)?;
    // Zig ≥ 0.16 has no @cImport: translate pincer.h once per build into
    // build/pincer_c.zig, which the plugin imports as "build/pincer_c.zig".
    let mut tc = Command::new(&zig);
    tc.current_dir(dir)
        .args(["translate-c", "-target", "wasm32-wasi", "-lc"])
        .arg(format!("-D{}", c_kind_define(kind)));
    for i in &sdk.include {
        tc.arg(format!("-I{}", i.display()));
    }
    tc.arg(out_dir.join("sdk").join("pincer.h"));
    let translated = run("zig translate-c", &mut tc)?;
    let pincer_zig = out_dir.join("pincer_c.zig");
    std::fs::write(&pincer_zig, &translated.stdout).map_err(DevError::io(&pincer_zig))?;
    let zig_sources = sources(dir, "zig");
    let root = zig_sources
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "plugin.zig"))
        .or(zig_sources.first())
        .cloned()
        .ok_or_else(|| DevError::Project(format!("{}: no .zig file", dir.display())))?;
    let core = out_dir.join("core.wasm");
    let mut cmd = Command::new(&zig);
    cmd.current_dir(dir)
        .arg("build-exe")
        .arg(&root)
        .args(&sdk.sources)
        .args(sources(dir, "c"))
        .arg(format!("-D{}", c_kind_define(kind)));
    for i in &sdk.include {
        cmd.arg(format!("-I{}", i.display()));
    }
    cmd.args([
        "-lc",
        "-target",
        "wasm32-wasi",
        "-mexec-model=reactor",
        "-fno-entry",
        "-rdynamic",
        "-O",
        "ReleaseSmall",
    ])
    .arg("--cache-dir")
    .arg(out_dir.join("zig-cache"))
    .arg(format!("-femit-bin={}", core.display()));
    run("zig build-exe", &mut cmd)?;
    super::componentize::componentize(&core)
}

fn python(dir: &Path, kind: PluginKind, out_dir: &Path) -> Result<Vec<u8>, DevError> {
    let cpy = require(&["componentize-py"], toolchain::PYTHON_INSTALL)?;
    let out = out_dir.join("component.wasm");
    run(
        "componentize-py",
        Command::new(cpy)
            .current_dir(dir)
            .args(["-d", "wit", "-w", world(kind), "componentize", "app", "-o"])
            .arg(&out),
    )?;
    read(&out)
}

fn js(dir: &Path, kind: PluginKind, lang: Lang, out_dir: &Path) -> Result<Vec<u8>, DevError> {
    let local = dir.join("node_modules/.bin/jco");
    if !local.is_file() && dir.join("package.json").is_file() {
        // The template pins jco, componentize-js and the preview2-shim override.
        let npm = require(&["npm"], "install Node.js 20 or newer (it brings npm)")?;
        run(
            "npm install",
            Command::new(npm)
                .current_dir(dir)
                .args(["install", "--no-audit", "--no-fund"]),
        )?;
    }
    let jco = if local.is_file() {
        local
    } else {
        require(&["jco"], toolchain::JS_INSTALL)?
    };
    let src = if lang == Lang::Ts {
        "plugin.ts"
    } else {
        "plugin.js"
    };
    let out = out_dir.join("component.wasm");
    run(
        "jco componentize",
        Command::new(jco)
            .current_dir(dir)
            .args([
                "componentize",
                src,
                "--wit",
                "wit",
                "--world-name",
                world(kind),
                "--out",
            ])
            .arg(&out),
    )?;
    read(&out)
}
