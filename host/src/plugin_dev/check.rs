//! `pincer plugin check FILE.wasm`: does a component fit this host? Says
//! which world and contract version it implements, which exports are
//! missing, and which imports the host refuses or limits, each with a
//! plain-language fix, without starting a gateway.
//!
//! The verdict comes from the loader's own checks ([`loader::check_contract`]
//! and [`loader::link`] against the gateway's linker), so `check` and loading
//! never disagree; the per-import notes only explain them.

use std::path::{Path, PathBuf};

use serde::Serialize;
use wasmtime::component::Component;

use crate::plugins::bindings::{SUPPORTED_WIT_VERSIONS, WIT_PACKAGE, WitTrack};
use crate::plugins::loader::{self, LoadError};
use crate::plugins::{PluginKind, engine, files};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The host will refuse the component.
    Error,
    /// It loads, but something it imports will not work as it may expect.
    Warning,
}

/// One problem, with what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The import, export or file it is about.
    pub item: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

/// The result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The file checked.
    pub file: PathBuf,
    /// `channel` or `tool`, when the exports say.
    pub kind: Option<PluginKind>,
    /// The world, e.g. `pincer:plugin/tool-plugin@0.2.0`.
    pub world: Option<String>,
    /// The contract version it was built against, e.g. `0.2.0`.
    pub contract_version: Option<String>,
    /// Every import of the component.
    pub imports: Vec<String>,
    /// Every export of the component.
    pub exports: Vec<String>,
    /// Problems, errors first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when the host would load the component.
    pub fn loads(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    fn error(
        &mut self,
        item: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity: Severity::Error,
            item: item.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    fn warning(
        &mut self,
        item: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity: Severity::Warning,
            item: item.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.file.display());
        match (&self.world, &self.contract_version) {
            (Some(w), Some(v)) => {
                out.push_str(&format!("  implements {w} (contract {WIT_PACKAGE}@{v})\n"))
            }
            (Some(w), None) => out.push_str(&format!("  implements {w}\n")),
            _ => out.push_str("  implements no Pincer plugin world\n"),
        }
        for f in &self.findings {
            let label = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            out.push_str(&format!(
                "  {label}: {}: {}\n    fix: {}\n",
                f.item, f.problem, f.fix
            ));
        }
        if self.loads() {
            out.push_str("  OK: this host will load it\n");
        } else {
            let n = self
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            out.push_str(&format!(
                "  REFUSED: {n} error(s); this host will not load it\n"
            ));
        }
        out
    }
}

const REBUILD: &str = "rebuild it against this host's contract (wit/pincer.wit, pincer:plugin@0.2.0), e.g. with a project from `pincer plugin new`";

/// Check the component in `path`.
pub fn check(path: &Path) -> Report {
    let mut report = Report {
        file: path.to_path_buf(),
        kind: None,
        world: None,
        contract_version: None,
        imports: Vec::new(),
        exports: Vec::new(),
        findings: Vec::new(),
    };
    let bytes = match files::read_capped(path, files::MAX_COMPONENT_BYTES) {
        Ok(b) => b,
        Err(e) => {
            report.error(
                "file",
                format!("cannot be read: {e}"),
                "check the path; components are at most 64 MiB",
            );
            return report;
        }
    };
    if bytes.len() < 8 || bytes[..4] != *b"\0asm" {
        report.error(
            "file",
            "not a WebAssembly file (it does not start with the `\\0asm` header)",
            "point it at the `.wasm` your build wrote (`pincer plugin build` prints its path); a text file, an archive or a partial download fails here",
        );
        return report;
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        report.error(
            "file",
            "a core WebAssembly module, not a component",
            "make a component: `pincer plugin build` does it for C and Zig projects; Rust builds one with `--target wasm32-wasip2`; otherwise `wasm-tools component new --adapt`",
        );
        return report;
    }
    let engine = match engine::build_engine(&crate::plugins::limits::SandboxConfig::default()) {
        Ok(e) => e,
        Err(e) => {
            report.error(
                "host",
                format!("cannot create the engine: {e:#}"),
                "report this as a bug",
            );
            return report;
        }
    };
    let component = match Component::new(&engine, &bytes) {
        Ok(c) => c,
        Err(e) => {
            report.error(
                "file",
                format!("not a valid component for this host: {e:#}"),
                "rebuild it; a truncated or corrupt file, or a component for a newer component-model, fails here",
            );
            return report;
        }
    };
    let ty = component.component_type();
    report.imports = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
    report.exports = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();
    explain_exports(&mut report);
    for name in report.imports.clone() {
        explain_import(&mut report, &name);
    }
    // The loader's own verdict.
    let linker = match engine::build_linker(&engine) {
        Ok(l) => l,
        Err(e) => {
            report.error(
                "host",
                format!("cannot create the linker: {e:#}"),
                "report this as a bug",
            );
            return report;
        }
    };
    let verdict = loader::check_contract(&engine, &component)
        .and_then(|(kind, track)| loader::link(&linker, &component, kind, track).map(|_| ()));
    if let Err(e) = verdict {
        let explained = !report.loads();
        if !explained {
            let fix = match &e {
                LoadError::Link(_) => {
                    "rebuild against this host's contract and WASI 0.2; the message names the item that does not match"
                }
                _ => REBUILD,
            };
            report.error("load", e.to_string(), fix);
        }
    } else if !report.loads() {
        // Never claim a refusal the loader would not make.
        report.findings.retain(|f| f.severity != Severity::Error);
    }
    report
        .findings
        .sort_by_key(|f| (f.severity != Severity::Error) as u8);
    report
}

/// `pincer:plugin/x@1.2.3` → (`x`, `1.2.3`).
fn contract_item(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    Some(rest.split_once('@').unwrap_or((rest, "")))
}

fn explain_exports(report: &mut Report) {
    let supported = SUPPORTED_WIT_VERSIONS.join(", ");
    let mut version = None;
    let mut has_plugin = false;
    for name in report.exports.clone() {
        let Some((iface, v)) = contract_item(&name) else {
            continue;
        };
        if WitTrack::of(v).is_none() {
            report.error(
                name.as_str(),
                format!(
                    "built against {WIT_PACKAGE}@{v}; this host supports {WIT_PACKAGE}@{supported}"
                ),
                REBUILD,
            );
        }
        version.get_or_insert_with(|| v.to_string());
        match iface {
            "plugin" => has_plugin = true,
            "channel" => report.kind = Some(PluginKind::Channel),
            "tool" => report.kind = Some(PluginKind::Tool),
            _ => {}
        }
    }
    let v = version.clone().unwrap_or_else(|| "0.2.0".into());
    if let Some(kind) = report.kind {
        report.world = Some(format!("{WIT_PACKAGE}/{}@{v}", super::world(kind)));
    } else {
        report.error(
            "exports",
            format!(
                "exports neither {WIT_PACKAGE}/channel nor {WIT_PACKAGE}/tool (it exports: {})",
                if report.exports.is_empty() {
                    "nothing".to_string()
                } else {
                    report.exports.join(", ")
                }
            ),
            "build it for the `channel-plugin` or the `tool-plugin` world of wit/pincer.wit",
        );
    }
    if !has_plugin {
        report.error(
            format!("{WIT_PACKAGE}/plugin@{v}"),
            "missing export: every plugin exports the `plugin` interface (name, last-activity, restart)",
            "build it for the `channel-plugin` or `tool-plugin` world, which includes `export plugin`",
        );
    }
    report.contract_version = version;
}

fn explain_import(report: &mut Report, name: &str) {
    let supported = SUPPORTED_WIT_VERSIONS.join(", ");
    if let Some((iface, v)) = contract_item(name) {
        let provided: &[&str] = match WitTrack::of(v) {
            Some(WitTrack::V01) => &["types", "log", "kv", "clock", "secrets"],
            _ => &["types", "log", "kv", "clock", "secrets", "media"],
        };
        if !provided.contains(&iface) {
            report.error(
                name,
                format!("unknown interface: this host provides no `{iface}` in {WIT_PACKAGE}@{v}"),
                format!(
                    "remove the import; the host provides {}",
                    provided.join(", ")
                ),
            );
        } else if WitTrack::of(v).is_none() {
            report.error(
                name,
                format!("needs {WIT_PACKAGE}@{v}; this host supports {WIT_PACKAGE}@{supported}"),
                REBUILD,
            );
        }
        return;
    }
    let (package, version) = name.split_once('@').unwrap_or((name, ""));
    let wasi_02 = version.starts_with("0.2.");
    match package.split('/').next().unwrap_or_default() {
        "wasi:sockets" => report.warning(
            name,
            "linked, but plugins have no network sockets: every socket call is refused",
            "make requests with wasi:http (the SDKs' HTTP helpers); the host allows the hosts in the manifest's `allowed_hosts`",
        ),
        "wasi:filesystem" => report.warning(
            name,
            "only `/data` exists, and only when the operator grants the plugin a data directory",
            "keep state in the key-value store (pincer:plugin/kv), or ask for `data_mb` in the manifest (the operator grants it with `quotas.data_mb`)",
        ),
        "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:cli" | "wasi:http" if wasi_02 => {}
        "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:cli" | "wasi:http" => report.error(
            name,
            format!("WASI {version} is not provided; this host implements WASI 0.2"),
            "build with a toolchain that targets WASI 0.2 (wasm32-wasip2, or the preview1 adapter of wasmtime 48)",
        ),
        _ => report.error(
            name,
            "unknown interface: this host does not provide it",
            "remove the dependency; plugins can import wasi:* 0.2 and pincer:plugin's log, kv, clock, secrets and media",
        ),
    }
}
