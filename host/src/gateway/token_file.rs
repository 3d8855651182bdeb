//! The generated gateway token: when `pincer serve` is given no token, no
//! password and no `--no-auth`, it uses the token in
//! `<data_dir>/gateway-token`, creating it (256 random bits, mode 0600) on
//! first start, as Jupyter does. The file is created atomically (written
//! under a temporary name, then hard-linked into place), so a crash never
//! leaves an empty token and two starts racing agree on one token.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::auth;
use crate::secret::Secret;

/// The file name under the data directory.
pub const FILE_NAME: &str = "gateway-token";

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Reading, writing or linking the file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists but holds no usable token.
    #[error("{0} holds no token (delete it to generate a new one)")]
    Empty(PathBuf),
}

/// The token in use and whether this start created it.
#[derive(Debug)]
pub struct GatewayToken {
    /// The token.
    pub token: Secret,
    /// Where it is kept.
    pub path: PathBuf,
    /// Whether this call generated it (print it once, then).
    pub created: bool,
}

/// The token in `<data_dir>/gateway-token`, generated if the file does not
/// exist yet.
pub fn load_or_create(data_dir: &Path) -> Result<GatewayToken, TokenFileError> {
    let path = data_dir.join(FILE_NAME);
    let io = |action, source| TokenFileError::Io {
        action,
        path: path.clone(),
        source,
    };
    match read(&path) {
        Ok(token) => {
            return Ok(GatewayToken {
                token,
                path,
                created: false,
            });
        }
        Err(TokenFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
        }
        Err(e) => return Err(e),
    }
    let token = auth::new_token();
    let tmp = data_dir.join(format!(".{FILE_NAME}.{}", auth::new_token()));
    let written = write_private(&tmp, token.as_bytes()).map_err(|e| io("writing", e));
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, &path) {
        Ok(()) => Ok(true),
        // Another start won the race: use its token.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io("creating", e)),
    });
    let _ = std::fs::remove_file(&tmp);
    if linked? {
        Ok(GatewayToken {
            token: token.into(),
            path,
            created: true,
        })
    } else {
        Ok(GatewayToken {
            token: read(&path)?,
            path,
            created: false,
        })
    }
}

fn read(path: &Path) -> Result<Secret, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty(path.to_path_buf()));
    }
    warn_if_shared(path);
    Ok(token.into())
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the gateway token file is readable by other users: chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(first.created);
        assert_eq!(first.token.len(), 64);
        let again = load_or_create(dir.path()).unwrap();
        assert!(!again.created);
        assert_eq!(again.token, first.token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(FILE_NAME)]);
        std::fs::write(&first.path, "  \n").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(TokenFileError::Empty(_))
        ));
    }
}
