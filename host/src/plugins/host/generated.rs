//! Host-generated secrets: values a platform lets us choose and echoes back
//! (Telegram's `setWebhook` `secret_token`, sent as
//! `X-Telegram-Bot-Api-Secret-Token` with every push). A manifest marks such
//! a secret `generate = true`; when the operator grants none, the host makes
//! one (32 characters of `A-Za-z0-9_-`, 192 random bits) once, keeps it in
//! `<data_dir>/secrets/<plugin>/<name>` (mode 0600, directory 0700) and
//! grants it like an operator's value: the plugin fills it in through its
//! placeholder where the manifest binds it (e.g. `body:secret_token`), the
//! host verifies pushes with it, and the guest never sees it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::secrets::SecretValues;
use crate::plugins::manifest::{Manifest, SecretSource};

/// Length of a generated value.
pub const LEN: usize = 32;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Why a generated secret could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum GeneratedError {
    /// Reading or writing the file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists but holds no usable value.
    #[error("{0} is empty or not a single line of `A-Za-z0-9_-`")]
    Invalid(PathBuf),
}

/// A fresh value: [`LEN`] characters of `A-Za-z0-9_-`.
pub fn new_value() -> String {
    let bytes: [u8; LEN] = rand::random();
    // 64 symbols: every byte's low six bits pick one uniformly.
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 63)] as char)
        .collect()
}

/// The file that keeps plugin `plugin`'s generated secret `name`.
pub fn path(data_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    data_dir.join("secrets").join(plugin).join(name)
}

fn usable(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn read(path: &Path) -> Result<String, GeneratedError> {
    let text = std::fs::read_to_string(path).map_err(|source| GeneratedError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    warn_if_shared(path);
    let v = text.trim();
    if usable(v) {
        Ok(v.to_string())
    } else {
        Err(GeneratedError::Invalid(path.to_path_buf()))
    }
}

/// The kept value of plugin `plugin`'s secret `name`, generated and stored
/// on first use. Two processes racing get the same value (the file is
/// linked into place only if absent).
pub fn load_or_create(data_dir: &Path, plugin: &str, name: &str) -> Result<String, GeneratedError> {
    let file = path(data_dir, plugin, name);
    match read(&file) {
        Ok(v) => return Ok(v),
        Err(GeneratedError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
        }
        Err(e) => return Err(e),
    }
    let dir = file.parent().unwrap_or(data_dir).to_path_buf();
    let io = |action, path: &Path, source| GeneratedError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    create_private_dir(&dir).map_err(|e| io("creating", &dir, e))?;
    let value = new_value();
    let tmp = dir.join(format!(".{name}.{}", new_value()));
    let written = write_private(&tmp, value.as_bytes()).map_err(|e| io("writing", &tmp, e));
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, &file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io("creating", &file, e)),
    });
    let _ = std::fs::remove_file(&tmp);
    if linked? {
        tracing::info!(plugin, secret = name, path = %file.display(), "generated a webhook secret");
        Ok(value)
    } else {
        read(&file)
    }
}

/// Grant every `generate = true` secret of `manifest` the operator left
/// out of `granted`, from `data_dir` (kept there on first use). Without a
/// data directory, or when the file cannot be kept, the secret stays
/// ungranted (and a channel verifying with it refuses pushes with 503).
pub fn grant_missing(
    values: &mut SecretValues,
    plugin: &str,
    manifest: &Manifest,
    granted: &BTreeMap<String, SecretSource>,
    data_dir: Option<&Path>,
) {
    for (name, binding) in &manifest.secrets {
        if !binding.generate || granted.contains_key(name) {
            continue;
        }
        let Some(root) = data_dir else {
            tracing::warn!(plugin, secret = %name, "no data directory to keep a generated secret; grant it in [plugins.{plugin}] secrets");
            continue;
        };
        let granted = load_or_create(root, plugin, name)
            .map_err(|e| e.to_string())
            .and_then(|v| values.grant_generated(manifest, name, v));
        if let Err(e) = granted {
            tracing::warn!(plugin, secret = %name, error = %e, "could not generate a secret");
        }
    }
}

/// Warn when others than the owner may read the file.
#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "a generated secret is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_kept_private_and_reused() {
        let v = new_value();
        assert_eq!(v.len(), LEN);
        assert!(usable(&v), "{v}");
        assert_ne!(v, new_value());
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), "tg", "webhook_secret").unwrap();
        let b = load_or_create(dir.path(), "tg", "webhook_secret").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, load_or_create(dir.path(), "tg", "other").unwrap());
        let file = path(dir.path(), "tg", "webhook_secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(file.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        std::fs::write(&file, "bad value\n").unwrap();
        assert!(matches!(
            load_or_create(dir.path(), "tg", "webhook_secret"),
            Err(GeneratedError::Invalid(_))
        ));
    }
}
