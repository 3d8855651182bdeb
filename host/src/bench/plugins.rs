//! `pincer bench plugins`: measurements of the plugin runtime, printed as a
//! Markdown table (copied into `BENCHMARKS.md`). Every figure is measured in
//! the same run as a baseline where one makes sense, because the machines
//! this runs on are shared and noisy.

use std::hint::black_box;
use std::time::{Duration, Instant};

use super::{median, ms, rss_bytes, us};
use crate::plugins::Instance;
use crate::plugins::cache::CompileCache;

/// Run the plugin benchmarks and print the results.
pub async fn plugins() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("pincer-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("plugins"))?;
    let runtime = super::plugin_runtime(&dir)?;
    let engine = runtime.plugins.engine().clone();
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // 1. Cold compile vs cached load, per bundled plugin.
    for (name, wasm, _) in crate::bundled::BUNDLED {
        let mut cold = Vec::new();
        for i in 0..3 {
            let cache = CompileCache::new(Some(dir.join(format!("cold-{name}-{i}"))));
            let t = Instant::now();
            cache.load(&engine, wasm, "x")?;
            cold.push(t.elapsed());
        }
        let cache = CompileCache::new(Some(dir.join(format!("warm-{name}"))));
        cache.load(&engine, wasm, "x")?;
        let mut warm = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let (_c, src) = cache.load(&engine, wasm, "x")?;
            warm.push(t.elapsed());
            anyhow::ensure!(src == crate::plugins::cache::Source::Cached);
        }
        let (c, w) = (median(cold), median(warm));
        rows.push((
            format!(
                "load `{name}` ({} KiB): cold compile vs cached",
                wasm.len() / 1024
            ),
            format!("{} vs {}", ms(c), ms(w)),
            format!("cached is {:.0}x faster", c.as_secs_f64() / w.as_secs_f64()),
        ));
    }

    // Load the bundled plugins through the runtime.
    crate::bundled::install(runtime.plugins_dir(), true)?;
    let failures = runtime.load_dir().await?;
    anyhow::ensure!(failures.is_empty(), "bundled plugins failed: {failures:?}");
    let clock_v = runtime
        .plugins
        .current("clock")
        .ok_or_else(|| anyhow::anyhow!("clock not loaded"))?;

    // 2. Instantiate from InstancePre (fresh store + sandbox + instance).
    let n = 2000;
    for _ in 0..100 {
        Instance::new(clock_v.clone()).await?;
    }
    let t = Instant::now();
    for _ in 0..n {
        black_box(Instance::new(clock_v.clone()).await?);
    }
    let inst = t.elapsed() / n;
    rows.push((
        "instantiate from `InstancePre` (store + WASI ctx + limits)".into(),
        us(inst),
        "mean of 2000".into(),
    ));

    // 3. Host-to-guest call overhead of `name()`, vs the same timeout wrapper
    //    around an empty async block (the baseline).
    let mut instance = Instance::new(clock_v.clone()).await?;
    let n = 50_000u32;
    for _ in 0..1000 {
        instance.name().await?;
    }
    let t = Instant::now();
    for _ in 0..n {
        black_box(instance.name().await?);
    }
    let call = t.elapsed() / n;
    let t = Instant::now();
    for i in 0..n {
        let _ =
            black_box(tokio::time::timeout(Duration::from_secs(10), async { black_box(i) }).await);
    }
    let base = t.elapsed() / n;
    rows.push((
        "call `name()` on a live instance (all limits armed)".into(),
        format!("{:.0} ns", call.as_secs_f64() * 1e9),
        format!(
            "{:.1}x an empty timed async call ({:.0} ns)",
            call.as_secs_f64() / base.as_secs_f64(),
            base.as_secs_f64() * 1e9
        ),
    ));

    // 4. Replaced file to new version answering, through the watcher.
    let settle = Duration::from_millis(100);
    let _watch = runtime.watch(settle)?;
    let mut reloads = Vec::new();
    let bundled = crate::bundled::BUNDLED;
    for i in 0..10 {
        let (_, wasm, _) = bundled[if i % 2 == 0 { 2 } else { 1 }];
        let before = runtime.plugins.current("clock").map(|v| v.sha256.clone());
        let t = Instant::now();
        crate::atomic_file::write(&runtime.plugins_dir().join("clock.wasm"), wasm)?;
        loop {
            let now = runtime.plugins.current("clock").map(|v| v.sha256.clone());
            if now != before {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "reload never happened"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        runtime.plugins.invoke_tool("clock", "{}").await.ok();
        reloads.push(t.elapsed());
    }
    let r = median(reloads);
    rows.push((
        "replaced file → new version answering (watcher settle 100 ms)".into(),
        ms(r),
        format!("{} after the file settled", ms(r.saturating_sub(settle))),
    ));

    // 5. Channel restart time (echo: plugin `restart` + new instance running).
    let echo = runtime
        .channels
        .get("echo")
        .ok_or_else(|| anyhow::anyhow!("echo not running"))?;
    let mut restarts = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        echo.restart(Duration::from_secs(30)).await?;
        restarts.push(t.elapsed());
    }
    rows.push((
        "channel restart (`restart` call, instance ready)".into(),
        us(median(restarts)),
        "median of 50".into(),
    ));

    // 6. Resident memory per loaded idle channel (echo copies, one started
    //    instance each), measured as the RSS delta over 200 channels.
    let count = 200;
    let (_, echo_wasm, _) = bundled[0];
    let before = rss_bytes();
    for i in 0..count {
        let name = format!("echo-{i}");
        let path = dir.join("plugins").join(format!("{name}.wasm"));
        std::fs::write(
            path.with_extension("toml"),
            format!("name = \"{name}\"\nkind = \"channel\"\n"),
        )?;
        std::fs::write(&path, echo_wasm)?;
    }
    // Let the watcher load them all.
    let t = Instant::now();
    while runtime.channels.all().len() < count + 1 {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(120),
            "channels did not load"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = rss_bytes();
    rows.push((
        format!("resident memory per loaded idle channel ({count} echo channels)"),
        format!(
            "{:.0} KiB",
            (after.saturating_sub(before)) as f64 / count as f64 / 1024.0
        ),
        format!("process RSS {:.0} MiB", after as f64 / (1 << 20) as f64),
    ));

    println!("| measurement | result | note |");
    println!("|---|---|---|");
    for (a, b, c) in rows {
        println!("| {a} | {b} | {c} |");
    }
    drop(_watch);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
