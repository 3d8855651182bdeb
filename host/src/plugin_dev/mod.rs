//! Plugin development commands: `pincer plugin new` ([`scaffold`]), `pincer
//! plugin build` ([`builder`], with [`toolchain`] finding the compilers and
//! [`componentize`] wrapping C and Zig core modules) and `pincer plugin
//! check` ([`check`], which reuses the loader's own contract and link checks
//! so check and load never disagree). The project templates and the C SDK are
//! embedded in the binary ([`templates`]) from `sdk/templates` and `sdk/c`.

pub mod builder;
pub mod check;
pub mod componentize;
pub mod scaffold;
pub mod templates;
pub mod toolchain;

/// The `wasm32-wasip2` detection shared with `host/build.rs`.
#[path = "../../build/wasm_target.rs"]
pub mod wasm_target;

#[cfg(test)]
mod wasm_target_tests;

use std::path::PathBuf;

pub use crate::plugins::PluginKind;

/// A language `pincer plugin new` and `pincer plugin build` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with `wit-bindgen` (cargo, `wasm32-wasip2`).
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with jco / componentize-js.
    Js,
    /// TypeScript with jco / componentize-js.
    Ts,
    /// C with clang 19, wasi-libc and the C SDK (`sdk/c`).
    C,
    /// Zig (from the `ziglang` wheel) with the C SDK.
    Zig,
}

impl Lang {
    /// The name used on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::Ts => "ts",
            Lang::C => "c",
            Lang::Zig => "zig",
        }
    }
}

/// The WIT world of a plugin kind.
pub fn world(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Channel => "channel-plugin",
        PluginKind::Tool => "tool-plugin",
    }
}

/// What can go wrong in `pincer plugin new|build`.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A tool needed for the build is not installed.
    #[error("`{tool}` was not found (looked in PATH{extra}); {install}")]
    ToolMissing {
        /// The program that is missing.
        tool: String,
        /// Extra places that were searched, as text.
        extra: String,
        /// How to install it.
        install: String,
    },
    /// A build step ran and failed.
    #[error("{step} failed ({status}):\n{output}")]
    StepFailed {
        /// The step, e.g. `clang-19`.
        step: String,
        /// Its exit status.
        status: String,
        /// What it printed (stderr and stdout).
        output: String,
    },
    /// The project directory does not look like a plugin project.
    #[error("{0}")]
    Project(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Making a component from the core module failed.
    #[error("making a component of {path}: {message}")]
    Componentize {
        /// The core module.
        path: PathBuf,
        /// wit-component's error chain.
        message: String,
    },
}

impl DevError {
    /// An [`DevError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DevError {
        let path = path.into();
        move |source| DevError::Io { path, source }
    }
}
