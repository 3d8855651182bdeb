//! `pincer plugin check FILE` as a script uses it: the real binary, its
//! exit status and its output, for a component this host loads, one built
//! against the previous contract, a core module and a file that is not
//! WebAssembly at all. (What the check finds is tested in depth in
//! `tests/tests/plugin_check*.rs`.)

use std::path::PathBuf;
use std::process::{Command, Output};

/// A plugin `host/build.rs` built for `wasm32-wasip2`.
fn built(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target/wasm-plugins/wasm32-wasip2/release")
        .join(format!("pincer_plugin_{name}.wasm"));
    assert!(path.exists(), "{} is not built", path.display());
    path
}

fn check(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pincer"))
        .args(["plugin", "check"])
        .args(args)
        .output()
        .expect("run pincer plugin check")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_component_this_host_loads_exits_zero() {
    let clock = built("clock");
    let out = check(&[clock.as_os_str()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{:?}\n{text}", out.status);
    assert!(
        text.contains("implements pincer:plugin/tool-plugin@0.2.0"),
        "{text}"
    );
    assert!(text.contains("OK: this host will load it"), "{text}");
}

#[test]
fn json_names_the_contract_version_of_a_0_1_0_plugin() {
    let v01 = built("echo_v01");
    let out = check(&["--json".as_ref(), v01.as_os_str()]);
    assert!(out.status.success(), "{:?}", out.status);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["kind"], "channel", "{report}");
    assert_eq!(report["contract_version"], "0.1.0", "{report}");
    assert_eq!(
        report["world"], "pincer:plugin/channel-plugin@0.1.0",
        "{report}"
    );
}

#[test]
fn a_core_module_and_a_non_wasm_file_exit_one_with_a_plain_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let junk = dir.path().join("notes.wasm");
    std::fs::write(&junk, b"these are not the bytes you are looking for").expect("write");

    let out = check(&[core.as_os_str()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("a core WebAssembly module, not a component"),
        "{text}"
    );
    assert!(text.contains("fix: make a component"), "{text}");

    let out = check(&[junk.as_os_str()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("not a WebAssembly file"), "{text}");
    assert!(text.contains("REFUSED"), "{text}");
    // One line per finding: no parser internals dumped over many lines.
    assert!(text.lines().count() <= 5, "{text}");
}
