//! Compiled-artifact cache: `<cache dir>/<sha256 of the component>-<engine hash>.cwasm`.
//!
//! Keyed by the component's hash and the engine's compatibility hash, so a
//! different wasmtime or engine configuration never loads a stale artifact
//! (and wasmtime rejects incompatible artifacts anyway; we then recompile).
//! Artifacts are written atomically (temp file + rename) outside the watched
//! plugins directory.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Deserialized from the on-disk cache.
    Cached,
    /// Compiled with Cranelift (and cached for next time).
    Compiled,
}

/// The on-disk cache.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    /// A cache in `dir` (`None` disables caching).
    pub fn new(dir: Option<PathBuf>) -> Self {
        CompileCache { dir }
    }

    fn path(&self, engine: &Engine, sha256: &str) -> Option<PathBuf> {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Some(
            self.dir
                .as_ref()?
                .join(format!("{sha256}-{:016x}.cwasm", h.finish())),
        )
    }

    /// The component for `bytes`: from the cache if present, else compiled
    /// (and stored). Runs Cranelift; call it off the async runtime.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> anyhow::Result<(Component, Source)> {
        let path = self.path(engine, sha256);
        if let Some(path) = &path
            && path.exists()
        {
            // SAFETY: only files this cache wrote (named by the hash of the
            // source and engine) are deserialized; wasmtime validates the
            // header and rejects artifacts from another engine configuration.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(c) => return Ok((c, Source::Cached)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached artifact");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let component = Component::new(engine, bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        if let Some(path) = &path
            && let Err(e) = write_atomic(path, &component)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not cache compiled plugin");
        }
        Ok((component, Source::Compiled))
    }
}

fn write_atomic(path: &Path, component: &Component) -> anyhow::Result<()> {
    let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
