//! `hostile`: a tool that misbehaves in the way its `mode` argument names.
//! The host must contain each one: the call errors, everything else keeps going.

use pincer_sdk::{Error, Tool, ToolInfo, http, log};
use serde_json::{Value, json};

struct Hostile;

impl Tool for Hostile {
    fn name() -> String {
        "hostile".into()
    }

    fn describe() -> ToolInfo {
        pincer_sdk::tool_info(
            "hostile",
            "Misbehaves on purpose (tests only).",
            r#"{"type":"object","properties":{"mode":{"type":"string"},"url":{"type":"string"}},"required":["mode"]}"#,
        )
    }

    fn invoke(args: Value) -> Result<Value, Error> {
        let mode = args.get("mode").and_then(Value::as_str).unwrap_or("ok");
        match mode {
            "ok" => Ok(json!({"ok": true})),
            // Burn CPU forever: the epoch deadline must interrupt it.
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            // Allocate until the memory limit stops us.
            "membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = vec![0u8; 1 << 20];
                    chunk[0] = 1;
                    hoard.push(std::hint::black_box(chunk));
                }
            }
            // A guest panic is a trap (`unreachable`).
            "trap" => panic!("hostile plugin trapping on purpose"),
            // A host outside the allow-list, or any URL the test names.
            "forbidden" => {
                let url = args
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or("http://example.com/");
                let resp = http::Request::get(url).send()?;
                Ok(json!({"status": resp.status}))
            }
            // The cloud metadata endpoint.
            "metadata" => {
                let resp = http::Request::get("http://169.254.169.254/latest/meta-data/").send()?;
                Ok(json!({"status": resp.status}))
            }
            // Flood the log: the host must rate-limit it and stay responsive.
            "logflood" => {
                let line = "x".repeat(10_000);
                for i in 0..20_000u32 {
                    log::info(&line, &[("i", &i.to_string())]);
                }
                Ok(json!({"flooded": true}))
            }
            // Fill key-value storage with 256 KiB values until the host
            // refuses: the per-plugin quota must stop it.
            "kvflood" => {
                let value = vec![b'v'; 256 * 1024];
                let mut written = 0u64;
                for i in 0..1_000_000u32 {
                    if pincer_sdk::kv::set(&format!("flood/{i}"), &value).is_err() {
                        break;
                    }
                    written += 1;
                }
                Ok(json!({"written": written}))
            }
            // Send as many requests to `url` as the host lets through.
            "httpflood" => {
                let url = args
                    .get("url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::permanent("httpflood needs `url`"))?;
                let mut sent = 0u64;
                for _ in 0..10_000u32 {
                    if http::Request::get(url).send().is_err() {
                        break;
                    }
                    sent += 1;
                }
                Ok(json!({"sent": sent}))
            }
            // Wait (in a host timer) longer than any sane call timeout.
            "slow" => {
                pincer_sdk::clock::sleep_ms(3_600_000);
                Ok(json!({"slept": true}))
            }
            other => Err(Error::permanent(format!("unknown mode {other}"))),
        }
    }
}

pincer_sdk::export_tool!(Hostile);
