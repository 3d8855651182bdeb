//! The project templates of `pincer plugin new` and the C SDK, embedded in
//! the binary from `sdk/templates/` and `sdk/c/` so a project can be created
//! and built anywhere, without a checkout of the repository.

use std::path::{Path, PathBuf};

use super::{DevError, Lang, PluginKind};

/// The current contract (`wit/pincer.wit`), written into projects whose
/// toolchain reads WIT (Rust, Python, JS/TS).
pub const PINCER_WIT: &str = include_str!("../../../wit/pincer.wit");

macro_rules! sdk {
    ($p:literal) => {
        include_str!(concat!("../../../sdk/", $p))
    };
}

/// One file of a project: its path in the project and its text, in which
/// `{{name}}` and `{{kind}}` are replaced.
pub type TemplateFile = (&'static str, &'static str);

/// The files of a new `lang` project of `kind`.
pub fn project(lang: Lang, kind: PluginKind) -> Vec<TemplateFile> {
    let tool = kind == PluginKind::Tool;
    let mut files: Vec<TemplateFile> = vec![
        ("pincer.toml", sdk!("templates/common/pincer.toml")),
        (".gitignore", sdk!("templates/common/gitignore")),
    ];
    let pick = |t: &'static str, c: &'static str| if tool { t } else { c };
    match lang {
        Lang::Rust => files.extend([
            ("README.md", sdk!("templates/rust/README.md")),
            ("Cargo.toml", sdk!("templates/rust/Cargo.toml")),
            (
                "src/lib.rs",
                pick(
                    sdk!("templates/rust/tool/lib.rs"),
                    sdk!("templates/rust/channel/lib.rs"),
                ),
            ),
            ("wit/pincer.wit", PINCER_WIT),
        ]),
        Lang::C => files.extend([
            ("README.md", sdk!("templates/c/README.md")),
            (
                "plugin.c",
                pick(
                    sdk!("templates/c/tool/plugin.c"),
                    sdk!("templates/c/channel/plugin.c"),
                ),
            ),
        ]),
        Lang::Zig => files.extend([
            ("README.md", sdk!("templates/zig/README.md")),
            (
                "plugin.zig",
                pick(
                    sdk!("templates/zig/tool/plugin.zig"),
                    sdk!("templates/zig/channel/plugin.zig"),
                ),
            ),
        ]),
        Lang::Python => files.extend([
            ("README.md", sdk!("templates/python/README.md")),
            (
                "app.py",
                pick(
                    sdk!("templates/python/tool/app.py"),
                    sdk!("templates/python/channel/app.py"),
                ),
            ),
            ("wit/pincer.wit", PINCER_WIT),
        ]),
        Lang::Js | Lang::Ts => {
            let ts = lang == Lang::Ts;
            files.extend([
                ("README.md", sdk!("templates/js/README.md")),
                ("package.json", sdk!("templates/js/package.json")),
                ("wit/pincer.wit", PINCER_WIT),
            ]);
            files.push(match (ts, tool) {
                (false, true) => ("plugin.js", sdk!("templates/js/tool/plugin.js")),
                (false, false) => ("plugin.js", sdk!("templates/js/channel/plugin.js")),
                (true, true) => ("plugin.ts", sdk!("templates/ts/tool/plugin.ts")),
                (true, false) => ("plugin.ts", sdk!("templates/ts/channel/plugin.ts")),
            });
        }
    }
    files
}

/// The C SDK: the helper layer and the generated bindings of both worlds.
const C_SDK_TEXT: &[(&str, &str)] = &[
    ("pincer.h", sdk!("c/pincer.h")),
    ("pincer.c", sdk!("c/pincer.c")),
    ("gen/channel_plugin.h", sdk!("c/gen/channel_plugin.h")),
    ("gen/channel_plugin.c", sdk!("c/gen/channel_plugin.c")),
    ("gen/tool_plugin.h", sdk!("c/gen/tool_plugin.h")),
    ("gen/tool_plugin.c", sdk!("c/gen/tool_plugin.c")),
];
const CHANNEL_TYPE_OBJECT: &[u8] =
    include_bytes!("../../../sdk/c/gen/channel_plugin_component_type.o");
const TOOL_TYPE_OBJECT: &[u8] = include_bytes!("../../../sdk/c/gen/tool_plugin_component_type.o");

/// Write the C SDK for `kind` into `dir` (replacing what is there) and return
/// the written paths: `pincer.h`, `pincer.c`, and the world's `gen/*.h`,
/// `gen/*.c` and `gen/*_component_type.o`.
pub fn write_c_sdk(dir: &Path, kind: PluginKind) -> Result<Vec<PathBuf>, DevError> {
    let world = match kind {
        PluginKind::Channel => "channel_plugin",
        PluginKind::Tool => "tool_plugin",
    };
    let mut written = Vec::new();
    std::fs::create_dir_all(dir.join("gen")).map_err(DevError::io(dir.join("gen")))?;
    for (name, text) in C_SDK_TEXT {
        if name.starts_with("gen/") && !name.starts_with(&format!("gen/{world}.")) {
            continue;
        }
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(DevError::io(&path))?;
        written.push(path);
    }
    let object = dir.join(format!("gen/{world}_component_type.o"));
    let bytes = match kind {
        PluginKind::Channel => CHANNEL_TYPE_OBJECT,
        PluginKind::Tool => TOOL_TYPE_OBJECT,
    };
    std::fs::write(&object, bytes).map_err(DevError::io(&object))?;
    written.push(object);
    Ok(written)
}

/// `text` with the project's name and kind filled in.
pub fn render(text: &str, name: &str, kind: PluginKind) -> String {
    let kind = match kind {
        PluginKind::Channel => "channel",
        PluginKind::Tool => "tool",
    };
    text.replace("{{name}}", name).replace("{{kind}}", kind)
}
