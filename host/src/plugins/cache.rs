//! Compiled-artifact cache: `<cache dir>/<sha256 of the component>-<engine hash>.cwasm`.
//!
//! Keyed by the component's hash and the engine's compatibility hash, so a
//! different wasmtime or engine configuration never loads a stale artifact
//! (and wasmtime rejects incompatible artifacts anyway; we then recompile).
//! Artifacts are written atomically (temp file + rename) outside the watched
//! plugins directory.
//!
//! A registry's cache also keeps the last few components it handed out in
//! memory ([`CompileCache::with_memory`]), so plugins loaded from identical
//! bytes (copies of one component under several names) share one compiled
//! component: one mapping of its code and one copy-on-write memory image
//! instead of one per copy.
//!
//! `<cache dir>/last-good/<plugin name>` records the SHA-256 of the last
//! version of each plugin that loaded, so a gateway restarted after a crash
//! mid-copy (a truncated `.wasm`) serves that version until a new file loads.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Deserialized from the on-disk cache.
    Cached,
    /// Compiled with Cranelift (and cached for next time).
    Compiled,
    /// The plugin's file did not compile; this is the last version of the
    /// plugin that loaded (from the cache).
    LastGood,
}

/// The on-disk cache, with an optional in-memory layer.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    memory: Option<Arc<Memory>>,
}

/// Components handed out recently, by SHA-256 of their source, newest
/// last; at most `cap` (a component no plugin uses any more is kept until
/// pushed out, so the cap bounds what replaced versions can hold).
#[derive(Debug)]
struct Memory {
    cap: usize,
    recent: Mutex<VecDeque<(String, Component)>>,
}

impl Memory {
    fn get(&self, sha256: &str) -> Option<Component> {
        let mut recent = self.recent.lock();
        let i = recent.iter().position(|(s, _)| s == sha256)?;
        let hit = recent.remove(i)?;
        let component = hit.1.clone();
        recent.push_back(hit);
        Some(component)
    }

    fn put(&self, sha256: &str, component: &Component) {
        let mut recent = self.recent.lock();
        recent.retain(|(s, _)| s != sha256);
        recent.push_back((sha256.to_string(), component.clone()));
        while recent.len() > self.cap {
            recent.pop_front();
        }
    }
}

impl CompileCache {
    /// A cache in `dir` (`None` disables caching).
    pub fn new(dir: Option<PathBuf>) -> Self {
        CompileCache { dir, memory: None }
    }

    /// This cache, also keeping the last `cap` components in memory (0:
    /// none) so identical plugin files share one compiled component.
    pub fn with_memory(mut self, cap: usize) -> Self {
        self.memory = (cap > 0).then(|| {
            Arc::new(Memory {
                cap,
                recent: Mutex::new(VecDeque::new()),
            })
        });
        self
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
        if let Some(c) = self.memory.as_ref().and_then(|m| m.get(sha256)) {
            return Ok((c, Source::Cached));
        }
        let (component, source) = self.load_uncached(engine, bytes, sha256)?;
        if let Some(m) = &self.memory {
            m.put(sha256, &component);
        }
        Ok((component, source))
    }

    fn load_uncached(
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
            && let Err(e) = write_component(path, &component)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not cache compiled plugin");
        }
        Ok((component, Source::Compiled))
    }
}

impl CompileCache {
    fn last_good_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join("last-good").join(name))
    }

    /// Record `sha256` as the last good version of plugin `name` (its
    /// artifact is already in the cache).
    pub fn remember_good(&self, name: &str, sha256: &str) {
        let Some(path) = self.last_good_path(name) else {
            return;
        };
        let written = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, sha256)?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            tracing::warn!(plugin = name, error = %e, "could not record the last good plugin version");
        }
    }

    /// The last good compiled version of plugin `name` and its SHA-256, if
    /// one was recorded and its artifact is still usable.
    pub fn last_good(&self, engine: &Engine, name: &str) -> Option<(Component, String)> {
        let sha = std::fs::read_to_string(self.last_good_path(name)?).ok()?;
        let sha = sha.trim();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self.path(engine, sha)?;
        // SAFETY: as in `load`: only artifacts this cache wrote, named by the
        // hash of their source and the engine, are deserialized.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some((c, sha.to_string())),
            Err(e) => {
                tracing::warn!(plugin = name, error = %e, "last good artifact unusable");
                None
            }
        }
    }
}

fn write_component(path: &Path, component: &Component) -> anyhow::Result<()> {
    let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::atomic_file::write(path, &bytes)?;
    Ok(())
}
