//! `uploader`: a test-only tool that sends one `media.upload` exactly as its
//! arguments describe and returns the answer, so tests can watch the host's
//! multipart uploads from a real guest.
//!
//! Arguments: `{url, blob, file_field, file_name, mime_type, fields?,
//! headers?}` where `fields` and `headers` are lists of `[name, value]`
//! pairs (values may carry secret placeholders: `{"secret": "NAME"}` in
//! place of a value string puts `placeholder(NAME)` there). Result:
//! `{status, body}` with the body as text (as the host scrubbed it).

use pincer_sdk::{Error, Tool, ToolInfo, media, secrets};
use serde_json::{Value, json};

struct Uploader;

/// A `[name, value]` list, with `{"secret": NAME}` values as placeholders.
fn pairs(v: Option<&Value>) -> Result<Vec<(String, String)>, Error> {
    let Some(Value::Array(items)) = v else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .map(|item| {
            let name = item.get(0).and_then(Value::as_str);
            let value = match item.get(1) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Object(o)) => o
                    .get("secret")
                    .and_then(Value::as_str)
                    .map(secrets::placeholder),
                _ => None,
            };
            match (name, value) {
                (Some(n), Some(v)) => Ok((n.to_string(), v)),
                _ => Err(Error::permanent("expected [name, value] pairs")),
            }
        })
        .collect()
}

fn text(args: &Value, key: &str) -> Result<String, Error> {
    args.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::permanent(format!("`{key}` (a string) is required")))
}

impl Tool for Uploader {
    fn name() -> String {
        "uploader".into()
    }

    fn describe() -> ToolInfo {
        pincer_sdk::tool_info(
            "uploader",
            "Test tool: sends one multipart upload of a host blob.",
            r#"{"type":"object"}"#,
        )
    }

    fn invoke(args: Value) -> Result<Value, Error> {
        let request = media::UploadRequest {
            url: text(&args, "url")?,
            headers: pairs(args.get("headers"))?,
            fields: pairs(args.get("fields"))?,
            file_field: text(&args, "file_field")?,
            blob: text(&args, "blob")?,
            file_name: text(&args, "file_name")?,
            mime_type: text(&args, "mime_type")?,
        };
        let resp = media::upload(&request)?;
        Ok(json!({
            "status": resp.status,
            "body": String::from_utf8_lossy(&resp.body),
        }))
    }
}

pincer_sdk::export_tool!(Uploader);
