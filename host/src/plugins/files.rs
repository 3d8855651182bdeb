//! Reading plugin files without trusting them: plugin names taken from file
//! stems are validated, only regular files are read, a symlink is followed
//! only when its target stays inside the plugins directory, every read is
//! capped in size, and manifest errors quote a position, never the text.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest component file read (bytes).
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;
/// Largest manifest file read (bytes).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 10;

/// Why a plugin file was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Not a regular file (directory, FIFO, device, socket).
    #[error("not a regular file")]
    NotRegular,
    /// A symlink whose target lies outside the plugins directory.
    #[error("symlink target lies outside the plugins directory")]
    OutsideDir,
    /// Larger than the cap.
    #[error("file is larger than the {max}-byte limit")]
    TooLarge { max: u64 },
    /// The file is missing.
    #[error("file not found")]
    NotFound,
    /// Any other I/O error (its kind, never the file's contents).
    #[error("{0}")]
    Io(String),
}

/// Whether `name` is a valid plugin name: 1-64 ASCII letters, digits, `-`, `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A printable, single-line form of a file stem for errors and logs
/// (control characters and anything outside the name alphabet escaped).
pub fn printable(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().take(64) {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// Where `path` really points, checked: a regular file inside `path`'s own
/// directory (the plugins directory) after following symlinks.
fn resolve(path: &Path) -> Result<PathBuf, FileError> {
    let link = std::fs::symlink_metadata(path).map_err(io)?;
    if !link.file_type().is_symlink() {
        return if link.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(FileError::NotRegular)
        };
    }
    let dir = path
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .ok_or(FileError::OutsideDir)?;
    let dir = dir.canonicalize().map_err(io)?;
    let target = path.canonicalize().map_err(io)?;
    if !target.starts_with(&dir) {
        return Err(FileError::OutsideDir);
    }
    if !std::fs::metadata(&target).map_err(io)?.is_file() {
        return Err(FileError::NotRegular);
    }
    Ok(target)
}

fn io(e: std::io::Error) -> FileError {
    if e.kind() == std::io::ErrorKind::NotFound {
        FileError::NotFound
    } else {
        FileError::Io(e.kind().to_string())
    }
}

/// Read `path` (a file in the plugins directory) whole, refusing files over
/// `max` bytes, non-regular files and symlinks leaving the directory. The
/// cap holds even if the file grows while it is read.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let target = resolve(path)?;
    let file = std::fs::File::open(&target).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular);
    }
    if meta.len() > max {
        return Err(FileError::TooLarge { max });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge { max });
    }
    Ok(bytes)
}

/// A manifest parse error that names the position (line and column) and the
/// parser's complaint, with anything quoted from the file removed.
pub fn manifest_error(text: &str, e: &toml::de::Error) -> String {
    let message = redact_quoted(e.message().lines().next().unwrap_or("invalid manifest"));
    match e.span() {
        Some(span) => {
            let upto = &text.as_bytes()[..span.start.min(text.len())];
            let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
            let col = upto.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            format!("line {line}, column {col}: {message}")
        }
        None => message,
    }
}

/// Replace the contents of `"..."` and `'...'` quotes (values echoed by the
/// parser) with `…`; backtick-quoted key names stay.
fn redact_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut open: Option<char> = None;
    for c in s.chars() {
        match open {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '\'' {
                    open = Some(c);
                }
            }
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_redaction() {
        assert!(valid_name("clock"));
        assert!(valid_name("http-fetch_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name("a.b"));
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(
            redact_quoted("invalid type: string \"hunter2\", expected u64"),
            "invalid type: string \"…\", expected u64"
        );
        assert_eq!(redact_quoted("unknown field `x`"), "unknown field `x`");
    }

    #[test]
    fn manifest_errors_give_a_position_not_the_text() {
        let text = "name = \"ok\"\nSECRET-KEY-MATERIAL-1234\n";
        let e = toml::from_str::<toml::Table>(text).unwrap_err();
        let m = manifest_error(text, &e);
        assert!(m.starts_with("line 2, column"), "{m}");
        assert!(!m.contains("SECRET"), "{m}");
    }
}
