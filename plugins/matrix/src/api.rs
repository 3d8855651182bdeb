//! Calls to the client-server API (`{homeserver}/_matrix/client/...`, the
//! access token as a secret placeholder in the `authorization` header the
//! host fills in), path encoding, and the mapping of Matrix errors
//! (`{errcode, error, retry_after_ms}`) to the contract's typed errors.

use pincer_sdk::{Error, http, secrets};
use serde_json::Value;

/// Secret holding the bot's access token (the `authorization` header only).
pub const TOKEN_SECRET: &str = "access_token";
/// Timeout of an ordinary (not long-poll) call.
pub const CALL_TIMEOUT_MS: u64 = 15_000;

/// `Bearer <placeholder>`: the value of the `authorization` header.
pub fn bearer() -> String {
    format!("Bearer {}", secrets::placeholder(TOKEN_SECRET))
}

/// Percent-encode one path segment (room ids `!a:b`, event ids `$x`, user
/// ids `@u:s`, transaction ids): everything but RFC 3986's unreserved set.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client-server API request: `method` to `{homeserver}{path}` with
/// `body` as JSON (if any); the decoded JSON answer of a 2xx.
pub fn call(
    homeserver: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout_ms: u64,
) -> Result<Value, Error> {
    let url = format!("{}{path}", homeserver.trim_end_matches('/'));
    let mut req = http::Request::new(method, &url)
        .header("authorization", &bearer())
        .timeout_ms(timeout_ms);
    if let Some(b) = body {
        req = req.json(b)?;
    }
    let resp = req.send()?;
    answer(method, path, resp.status, &resp.body)
}

/// Interpret an answer with HTTP `status`.
pub fn answer(method: &str, path: &str, status: u16, body: &[u8]) -> Result<Value, Error> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok(v);
    }
    let errcode = v["errcode"].as_str().unwrap_or_default();
    let message = v["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    // The path without query (a since token is no use in an error).
    let path = path.split('?').next().unwrap_or(path);
    let what = format!("{method} {path}: {status} {errcode} {message}");
    Err(classify(status, errcode, &v, what))
}

/// The typed error for a failed call.
pub fn classify(status: u16, errcode: &str, body: &Value, what: String) -> Error {
    match (status, errcode) {
        (429, _) | (_, "M_LIMIT_EXCEEDED") => {
            let ms = body["retry_after_ms"].as_u64().unwrap_or(1_000).max(1);
            Error::rate_limited(ms, what)
        }
        (401, _) | (_, "M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN") => Error::auth(format!(
            "the homeserver rejected the access token ({what}); check `access_token`"
        )),
        (408 | 500..=599, _) => Error::transient(what),
        _ => Error::permanent(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("!abc:example.org"), "%21abc%3Aexample.org");
        assert_eq!(seg("$ev/x+y"), "%24ev%2Fx%2By");
        assert_eq!(seg("o12-ab"), "o12-ab");
    }

    #[test]
    fn errors_map_to_typed_errors() {
        let e = |status: u16, body: Value| {
            answer("PUT", "/x?since=s", status, body.to_string().as_bytes()).unwrap_err()
        };
        assert!(matches!(
            e(
                429,
                json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow", "retry_after_ms": 2500})
            ),
            Error::RateLimited {
                retry_after_ms: 2500,
                ..
            }
        ));
        assert!(matches!(
            e(
                401,
                json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token"})
            ),
            Error::Auth(_)
        ));
        assert!(matches!(e(502, json!({})), Error::Transient(_)));
        let forbidden = e(
            403,
            json!({"errcode": "M_FORBIDDEN", "error": "not in room"}),
        );
        assert!(
            matches!(&forbidden, Error::Permanent(m) if m.contains("M_FORBIDDEN") && !m.contains("since")),
            "{forbidden}"
        );
        assert_eq!(
            answer("GET", "/y", 200, b"{\"a\":1}").unwrap(),
            json!({"a": 1})
        );
    }
}
