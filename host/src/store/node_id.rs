//! This node's id in a cluster (leases and webhook claims name it): kept
//! in `<data-dir>/node-id`, created on first start, so a node restarted
//! after a crash takes its channel accounts back at once instead of
//! waiting for their leases to run out. Two live processes must never
//! share a data directory (they would share the id).

use std::io::Write;
use std::path::Path;

/// The file's name in the data directory.
pub const FILE: &str = "node-id";

/// The node id stored in `data_dir`, created (`node-` and 32 hex digits)
/// if missing or empty.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("node-{}", uuid::Uuid::new_v4().simple());
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{id}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_id_is_created_once_and_kept() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = super::load_or_create(dir.path())?;
        assert!(first.starts_with("node-") && first.len() == 37, "{first}");
        assert_eq!(super::load_or_create(dir.path())?, first);
        Ok(())
    }
}
