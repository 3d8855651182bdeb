//! Writes the C bindings of the C SDK's two worlds (`sdk/c/wit/c-sdk.wit`:
//! Pincer's `channel-plugin` and `tool-plugin` plus the wasi:http client)
//! into `sdk/c/gen/`: `<world>.h`, `<world>.c` and
//! `<world>_component_type.o` (the world's type, which the componentizing
//! step reads). The WASI 0.2 WIT comes from the wasmtime-wasi-http 48.0.8
//! crate in the cargo registry (`cargo fetch` in the repository puts it
//! there); the Pincer contract from `wit/pincer.wit`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::Resolve;

/// `wit/deps` of wasmtime-wasi-http 48.0.8 in the cargo registry.
fn wasi_deps() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("no CARGO_HOME or HOME")?;
    let src = home.join("registry/src");
    for index in std::fs::read_dir(&src).with_context(|| format!("{}", src.display()))? {
        let deps = index?.path().join("wasmtime-wasi-http-48.0.8/wit/deps");
        if deps.is_dir() {
            return Ok(deps);
        }
    }
    anyhow::bail!(
        "wasmtime-wasi-http 48.0.8 is not in {}: run `cargo fetch` in the repository",
        src.display()
    )
}

fn copy_into(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let sdk = here.join("..");
    let out = sdk.join("gen");
    // One WIT folder: the C SDK's package, with Pincer's and WASI's as deps.
    let tmp = std::env::temp_dir().join(format!("pincer-c-bindgen-{}", std::process::id()));
    let deps = tmp.join("deps");
    std::fs::create_dir_all(&deps)?;
    copy_into(&sdk.join("wit/c-sdk.wit"), &tmp.join("c-sdk.wit"))?;
    copy_into(&sdk.join("../../wit/pincer.wit"), &deps.join("pincer.wit"))?;
    for entry in std::fs::read_dir(wasi_deps()?)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wit") {
            copy_into(&path, &deps.join(path.file_name().context("file name")?))?;
        }
    }
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_path(&tmp)
        .with_context(|| format!("parsing {}", tmp.display()))?;
    for world in ["channel-plugin", "tool-plugin"] {
        let id = resolve.select_world(&[pkg], Some(world))?;
        let mut files = Files::default();
        let opts = wit_bindgen_c::Opts::default();
        opts.build()
            .generate(&mut resolve, id, &mut files)
            .with_context(|| format!("generating C for {world}"))?;
        std::fs::create_dir_all(&out)?;
        for (name, bytes) in files.iter() {
            std::fs::write(out.join(name), bytes).with_context(|| format!("writing {name}"))?;
            println!("{}", out.join(name).display());
        }
    }
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}
