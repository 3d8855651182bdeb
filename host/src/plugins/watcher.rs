//! Hot-load: watch the plugins directory and report which plugin files were
//! added, changed or removed, after they have settled (debounced).
//!
//! `x.wasm` is the plugin; a change to `x.toml` (its manifest) reloads `x.wasm`.
//! Hidden files and `*.tmp`/`*.part`/`*~` are ignored, so writers that create a
//! temp file and rename it over the plugin produce a single, complete change.
//! A file still being written fails to compile and leaves the old version
//! serving; the next change event after the write completes loads it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// A settled change to one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `path` (a `.wasm`) exists and may be new or changed: load it.
    Upsert(PathBuf),
    /// `path` (a `.wasm`) is gone: unload it.
    Remove(PathBuf),
}

/// The plugin component a changed path belongs to, if any.
pub fn plugin_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') || name.ends_with('~') {
        return None;
    }
    match path.extension()?.to_str()? {
        "wasm" => Some(path.to_path_buf()),
        "toml" => Some(path.with_extension("wasm")),
        _ => None,
    }
}

/// Whether an event can mean new content: opening a file or closing it
/// after reading is no change (notify reports both, and loading a plugin
/// opens its file, which would otherwise load it again, forever); closing
/// it after writing is.
pub(crate) fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// The `.wasm` plugins currently in `dir`, sorted.
pub fn scan(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && plugin_path(p).as_deref() == Some(p.as_path()))
        .collect();
    out.sort();
    Ok(out)
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Watch `dir`, sending settled [`Change`]s (after `settle` without events).
pub fn watch(
    dir: &Path,
    settle: Duration,
) -> anyhow::Result<(Watcher, mpsc::UnboundedReceiver<Change>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(settle, None, move |result: DebounceEventResult| {
        let events = match result {
            Ok(events) => events,
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "plugin directory watch error");
                }
                return;
            }
        };
        let paths: BTreeSet<PathBuf> = events
            .iter()
            .filter(|e| changes_content(&e.kind))
            .flat_map(|e| e.paths.iter())
            .filter_map(|p| plugin_path(p))
            .collect();
        for path in paths {
            let change = if path.is_file() {
                Change::Upsert(path)
            } else {
                Change::Remove(path)
            };
            if tx.send(change).is_err() {
                return;
            }
        }
    })?;
    debouncer.watch(dir, RecursiveMode::NonRecursive)?;
    Ok((
        Watcher {
            _debouncer: debouncer,
        },
        rx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};

    #[test]
    fn opening_or_reading_a_plugin_is_no_change() {
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Any)));
    }
}
