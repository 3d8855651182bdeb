//! `pincer plugin new`: write a project that builds and works as it is.

use std::path::{Path, PathBuf};

use super::templates::{project, render};
use super::{DevError, Lang, PluginKind};
use crate::plugins::files::valid_name;

/// Create `parent/name` with a `lang` project of `kind` named `name`. Refuses
/// an invalid plugin name and an existing, non-empty directory.
pub fn new_project(
    parent: &Path,
    lang: Lang,
    kind: PluginKind,
    name: &str,
) -> Result<PathBuf, DevError> {
    if !valid_name(name) {
        return Err(DevError::Project(format!(
            "`{name}` is not a valid plugin name (letters, digits, `-` and `_`)"
        )));
    }
    let dir = parent.join(name);
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(DevError::Project(format!(
            "{} already exists and is not empty",
            dir.display()
        )));
    }
    for (path, text) in project(lang, kind) {
        let target = dir.join(path);
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).map_err(DevError::io(p))?;
        }
        std::fs::write(&target, render(text, name, kind)).map_err(DevError::io(&target))?;
    }
    Ok(dir)
}
