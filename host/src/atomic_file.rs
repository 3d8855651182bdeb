//! Writing a file so that readers (the plugin directory's watcher, a
//! restarted gateway) see either the old contents or the new, never a
//! half-written file: a hidden temporary file beside the target, synced,
//! then renamed over it. One path for every caller: plugin uploads, the
//! cluster's plugin copies, bundled plugins and the compiled-artifact cache.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Write `bytes` to `target` atomically (temporary file in the same
/// directory, `fsync`, rename). The temporary name starts with a dot and
/// ends in `.tmp`, so the plugin watcher ignores it; it is removed if
/// anything fails. The parent directory must exist.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let target = dir.path().join("echo.toml");
/// pincer::atomic_file::write(&target, b"allowed_hosts = []")?;
/// assert_eq!(std::fs::read(&target)?, b"allowed_hosts = []");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let tmp = target.with_file_name(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("p.wasm");
        write(&target, b"one").expect("first");
        write(&target, b"two").expect("second");
        assert_eq!(std::fs::read(&target).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["p.wasm"]);
    }

    #[test]
    fn a_failed_write_removes_its_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The target is a directory: the rename fails.
        let target = dir.path().join("taken");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::write(target.join("x"), b"x").expect("fill");
        assert!(write(&target, b"bytes").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["taken"]);
    }
}
