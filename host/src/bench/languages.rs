//! `pincer bench languages`: plugins written in Python and TypeScript
//! against the Rust plugin doing the same job, measured in the same run.
//!
//! The guests are the SDK templates (`sdk/python/template`,
//! `sdk/js/template`: a tool whose `invoke` does one `kv.increment` and
//! reads the clock), built here with the SDK build scripts (so the build
//! time is measured too); the Rust baseline is the `hostile` test tool's
//! `kvincrement` mode (one `kv.increment`) built by `host/build.rs`. The
//! scripts and templates are found through the source tree this binary was
//! built from, and the toolchains must be installed
//! (`sdk/install-toolchains.sh`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{median, ms, ratio, rss_bytes, us};
use crate::plugins::Instance;
use crate::plugins::cache::{CompileCache, Source};

/// One plugin under test.
struct Guest {
    /// Language label for the table.
    lang: &'static str,
    /// Plugin name (its manifest's `name`).
    name: String,
    /// The component.
    wasm: Vec<u8>,
    /// Build time (`None`: built by `host/build.rs`, not measured here).
    build: Option<Duration>,
    /// `invoke` arguments doing one key-value round trip.
    args: &'static str,
}

/// What was measured for one guest.
struct Figures {
    cold: Duration,
    cached: Duration,
    instantiate: Duration,
    name_call: Duration,
    invoke_kv: Duration,
    /// A tool call as the gateway makes it (`invoke_tool`): a fresh
    /// instance and one `invoke`.
    fresh_call: Duration,
    rss_per_instance: u64,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Build an SDK template with its build script into `out_dir`.
fn build_template(
    lang: &'static str,
    sdk: &str,
    name: &str,
    out_dir: &Path,
) -> anyhow::Result<Guest> {
    let root = repo_root();
    let script = root.join("sdk").join(sdk).join("build.sh");
    let template = root.join("sdk").join(sdk).join("template");
    let out = out_dir.join(format!("{name}.wasm"));
    let t = Instant::now();
    let output = std::process::Command::new(&script)
        .arg(&template)
        .arg(&out)
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    let build = t.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Guest {
        lang,
        name: name.into(),
        wasm: std::fs::read(&out).with_context(|| format!("read {}", out.display()))?,
        build: Some(build),
        args: "{}",
    })
}

/// Build plugin `plugins/<project>` (C or Zig) with `pincer plugin build`'s
/// builder, from a copy so the source tree gets no `build/` directory.
fn build_project(
    lang: &'static str,
    project: &str,
    out_dir: &Path,
    args: &'static str,
) -> anyhow::Result<Guest> {
    let src = repo_root().join("plugins").join(project);
    let copy = out_dir.join(project);
    std::fs::create_dir_all(&copy)?;
    for entry in std::fs::read_dir(&src).with_context(|| format!("read {}", src.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name()))?;
        }
    }
    let built = crate::plugin_dev::builder::build(&copy)
        .map_err(|e| anyhow::anyhow!("building {project}: {e}"))?;
    Ok(Guest {
        lang,
        name: built.name,
        wasm: std::fs::read(&built.wasm)
            .with_context(|| format!("read {}", built.wasm.display()))?,
        build: Some(built.duration),
        args,
    })
}

/// Run the language benchmarks and print a Markdown table.
pub async fn languages() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("pincer-bench-lang-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("plugins"))?;
    let built = dir.join("built");
    std::fs::create_dir_all(&built)?;

    let rust_path = Path::new(crate::bundled::BUILD_PLUGIN_DIR).join("hostile.wasm");
    let mut guests = vec![Guest {
        lang: "Rust",
        name: "hostile".into(),
        wasm: std::fs::read(&rust_path).with_context(|| format!("read {}", rust_path.display()))?,
        build: None,
        args: r#"{"mode":"kvincrement"}"#,
    }];
    eprintln!("building the Python template...");
    guests.push(build_template("Python", "python", "hello-py", &built)?);
    eprintln!("building the TypeScript template...");
    guests.push(build_template("TypeScript", "js", "hello-ts", &built)?);
    // The C and Zig plugins count their calls in key-value too.
    eprintln!("building the C plugin...");
    guests.push(build_project(
        "C",
        "c-hash",
        &built,
        r#"{"text":"hello","algorithm":"sha256"}"#,
    )?);
    eprintln!("building the Zig plugin...");
    guests.push(build_project(
        "Zig",
        "zig-textstats",
        &built,
        r#"{"text":"hello world"}"#,
    )?);

    let runtime = super::plugin_runtime(&dir)?;
    let engine = runtime.plugins.engine().clone();

    let mut figures = Vec::new();
    for g in &guests {
        eprintln!("measuring {} ({})...", g.name, g.lang);
        // Cold compile (one run: seconds for the big guests) and cached load.
        let cache = CompileCache::new(Some(dir.join(format!("cache-{}", g.name))));
        let t = Instant::now();
        let (_, src) = cache.load(&engine, &g.wasm, "bench")?;
        let cold = t.elapsed();
        anyhow::ensure!(src == Source::Compiled);
        let mut warm = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let (_c, src) = cache.load(&engine, &g.wasm, "bench")?;
            warm.push(t.elapsed());
            anyhow::ensure!(src == Source::Cached);
        }

        // Load through the runtime (manifest: a tool with default limits).
        let path = dir.join("plugins").join(format!("{}.wasm", g.name));
        std::fs::write(
            path.with_extension("toml"),
            format!(
                "name = \"{}\"\nkind = \"tool\"\nversion = \"0.1.0\"\nwit = \"pincer:plugin@0.2.0\"\n",
                g.name
            ),
        )?;
        std::fs::write(&path, &g.wasm)?;
        runtime
            .plugins
            .load_file(&path)
            .await
            .map_err(|e| anyhow::anyhow!("load {}: {e}", g.name))?;
        let version = runtime
            .plugins
            .current(&g.name)
            .ok_or_else(|| anyhow::anyhow!("{} not loaded", g.name))?;

        // Instantiate (fresh store, WASI context, limits, instance).
        let n = 200u32;
        for _ in 0..10 {
            Instance::new(version.clone()).await?;
        }
        let t = Instant::now();
        for _ in 0..n {
            black_box(Instance::new(version.clone()).await?);
        }
        let instantiate = t.elapsed() / n;

        // `name()` and one `invoke` with a key-value round trip.
        let mut inst = Instance::new(version.clone()).await?;
        let n = 5000u32;
        for _ in 0..200 {
            inst.name().await?;
        }
        let t = Instant::now();
        for _ in 0..n {
            black_box(inst.name().await?);
        }
        let name_call = t.elapsed() / n;
        let n = 2000u32;
        for _ in 0..100 {
            inst.invoke(g.args).await?;
        }
        let t = Instant::now();
        for _ in 0..n {
            black_box(inst.invoke(g.args).await?);
        }
        let invoke_kv = t.elapsed() / n;
        // The gateway runs each tool call in a fresh instance: its first
        // call pays whatever the guest does lazily (JS: a few ms).
        let n = 200u32;
        let t = Instant::now();
        for _ in 0..n {
            let mut fresh = Instance::new(version.clone()).await?;
            black_box(fresh.invoke(g.args).await?);
        }
        let fresh_call = t.elapsed() / n;

        // Resident memory per idle instance: live instances, each called
        // once, as many as the plugin's instance quota admits.
        drop(inst);
        let count = crate::plugins::gate::DEFAULT_MAX_INSTANCES as u64;
        let before = rss_bytes();
        let mut live = Vec::new();
        for _ in 0..count {
            let mut i = Instance::new(version.clone()).await?;
            i.invoke(g.args).await?;
            live.push(i);
        }
        let after = rss_bytes();
        drop(live);
        figures.push(Figures {
            cold,
            cached: median(warm),
            instantiate,
            name_call,
            invoke_kv,
            fresh_call,
            rss_per_instance: after.saturating_sub(before) / count,
        });
    }

    let rust = &figures[0];
    println!(
        "| plugin | build | size | cold compile | cached load | instantiate | `name()` | `invoke` + kv | tool call (fresh instance + `invoke`) | RSS per idle instance |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (g, f) in guests.iter().zip(&figures) {
        let rel = |a: Duration, b: Duration| {
            if std::ptr::eq(f, rust) {
                String::new()
            } else {
                format!(" ({})", ratio(a.as_secs_f64(), b.as_secs_f64()))
            }
        };
        let size = g.wasm.len() as f64;
        println!(
            "| {} `{}` | {} | {:.1} KiB{} | {}{} | {}{} | {}{} | {}{} | {}{} | {}{} | {:.0} KiB{} |",
            g.lang,
            g.name,
            g.build
                .map(|b| format!("{:.1} s", b.as_secs_f64()))
                .unwrap_or_else(|| "host/build.rs".into()),
            size / 1024.0,
            if std::ptr::eq(f, rust) {
                String::new()
            } else {
                format!(" ({})", ratio(size, rust_size(&guests)))
            },
            ms(f.cold),
            rel(f.cold, rust.cold),
            ms(f.cached),
            rel(f.cached, rust.cached),
            us(f.instantiate),
            rel(f.instantiate, rust.instantiate),
            us(f.name_call),
            rel(f.name_call, rust.name_call),
            us(f.invoke_kv),
            rel(f.invoke_kv, rust.invoke_kv),
            us(f.fresh_call),
            rel(f.fresh_call, rust.fresh_call),
            f.rss_per_instance as f64 / 1024.0,
            if std::ptr::eq(f, rust) {
                String::new()
            } else {
                format!(
                    " ({})",
                    ratio(f.rss_per_instance as f64, rust.rss_per_instance as f64)
                )
            },
        );
    }
    println!(
        "\nRatios are against the Rust plugin in the same run. Rust: the `hostile` test tool's `kvincrement` (one `kv.increment`); Python and TypeScript: the SDK templates (one `kv.increment` and a clock read). Cold compile: one run each. `name()` and `invoke` + kv: repeated calls on one instance; tool call: what the gateway does per tool call, a fresh instance and one `invoke`."
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn rust_size(guests: &[Guest]) -> f64 {
    guests.first().map_or(0.0, |g| g.wasm.len() as f64)
}
