//! `http-fetch`: GET (or POST) a URL for the agent. The host enforces the
//! allowed hosts and refuses private addresses; this plugin only caps sizes.

use pincer_sdk::{Error, Tool, ToolInfo, http};
use serde_json::{Value, json};

struct Fetch;

const MAX_CHARS: usize = 64 * 1024;

impl Tool for Fetch {
    fn name() -> String {
        "http-fetch".into()
    }

    fn describe() -> ToolInfo {
        pincer_sdk::tool_info(
            "http_fetch",
            "Fetch a web page or API over HTTP(S) and return its status and (truncated) text body. Only hosts allowed by the operator can be reached.",
            r#"{"type":"object","properties":{"url":{"type":"string","description":"http:// or https:// URL"},"method":{"type":"string","enum":["GET","POST"]},"body":{"type":"string"}},"required":["url"],"additionalProperties":false}"#,
        )
    }

    fn invoke(args: Value) -> Result<Value, Error> {
        let url = args
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::permanent("`url` (string) is required"))?;
        let method = args.get("method").and_then(Value::as_str).unwrap_or("GET");
        let mut req = http::Request::new(method, url).max_body(4 << 20);
        if let Some(body) = args.get("body").and_then(Value::as_str) {
            req = req.body(body.as_bytes().to_vec());
        }
        let resp = req.send()?;
        let text = resp.text();
        let truncated = text.chars().count() > MAX_CHARS;
        let body: String = text.chars().take(MAX_CHARS).collect();
        Ok(json!({
            "status": resp.status,
            "content_type": resp.header("content-type"),
            "body": body,
            "truncated": truncated,
        }))
    }
}

pincer_sdk::export_tool!(Fetch);
