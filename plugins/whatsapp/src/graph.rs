//! Talking to the Graph API: authenticated requests (the bearer is a
//! placeholder the host fills in) and Graph's errors turned into the
//! contract's typed errors, decided by `error.code`, not the HTTP status.

use pincer_sdk::{Error, http, secrets};
use serde_json::Value;

/// How long one Graph call may take before the host gives up on it.
pub const CALL_TIMEOUT_MS: u64 = 20_000;

/// Waits synthesised for Graph's rate limits (Graph sends no Retry-After).
/// 130429: throughput (80 msg/s per number by default): a short pause.
pub const RETRY_THROUGHPUT_MS: u64 = 2_000;
/// 131056: the pair rate (about one message per 6 s to one user).
pub const RETRY_PAIR_MS: u64 = 6_000;
/// 4 and 80007: the app's or the business account's API call budget.
pub const RETRY_APP_LIMIT_MS: u64 = 60_000;

/// The text of the 24-hour window error (131047).
pub const WINDOW_CLOSED: &str = "outside the 24-hour window; a template message is required (the user has not written to this number in the last 24 hours)";

/// `Bearer {{secret:access_token}}`.
pub fn bearer() -> String {
    format!("Bearer {}", secrets::placeholder("access_token"))
}

/// POST `body` as JSON to `url` with the bearer; the parsed answer or the
/// typed error.
pub fn post_json(url: &str, body: &Value) -> Result<Value, Error> {
    let resp = http::Request::post(url)
        .header("authorization", &bearer())
        .json(body)?
        .timeout_ms(CALL_TIMEOUT_MS)
        .send()?;
    answer(&resp)
}

/// GET `url` with the bearer; the parsed answer or the typed error.
pub fn get_json(url: &str) -> Result<Value, Error> {
    let resp = http::Request::get(url)
        .header("authorization", &bearer())
        .timeout_ms(CALL_TIMEOUT_MS)
        .send()?;
    answer(&resp)
}

/// The JSON of a successful answer, or the error it carries.
pub fn answer(resp: &http::Response) -> Result<Value, Error> {
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    if let Some(err) = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .filter(|e| e.is_object())
    {
        return Err(classify(resp.status, err));
    }
    if resp.is_success() {
        return body.ok_or_else(|| {
            Error::transient(format!(
                "Graph answered {} with a body that is not JSON",
                resp.status
            ))
        });
    }
    let detail: String = resp.text().chars().take(300).collect();
    let message = format!("Graph HTTP {}: {detail}", resp.status);
    Err(match resp.status {
        401 | 403 => Error::auth(message),
        408 | 429 | 500..=599 => Error::transient(message),
        _ => Error::permanent(message),
    })
}

/// The typed error for Graph's `error` object (`code`, `message`,
/// `error_data.details`), answered with HTTP `status`.
pub fn classify(status: u16, err: &Value) -> Error {
    let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
    let title = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("unknown error");
    let details = err
        .pointer("/error_data/details")
        .and_then(Value::as_str)
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    let text = format!("Graph error {code} (HTTP {status}): {title}{details}");
    match code {
        130429 => Error::rate_limited(RETRY_THROUGHPUT_MS, text),
        131056 => Error::rate_limited(RETRY_PAIR_MS, text),
        4 | 80007 => Error::rate_limited(RETRY_APP_LIMIT_MS, text),
        131047 => Error::permanent(format!("{WINDOW_CLOSED}; {text}")),
        190 => Error::auth(format!(
            "the access token was rejected (expired or revoked; grant a new `access_token`); {text}"
        )),
        // Undeliverable, spam and marketing limits: stop, do not retry.
        131026 | 131048 | 131049 => Error::permanent(text),
        // Graph's unknown and temporary service errors.
        1 | 2 | 131000 | 131016 => Error::transient(text),
        _ if status >= 500 || status == 408 => Error::transient(text),
        _ if status == 401 || status == 403 => Error::auth(text),
        _ => Error::permanent(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn graph(status: u16, code: i64) -> Error {
        let body = json!({"error": {"message": format!("(#{code}) x"), "type": "OAuthException", "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": "why"}}});
        answer(&http::Response {
            status,
            headers: vec![],
            body: body.to_string().into_bytes(),
        })
        .unwrap_err()
    }

    #[test]
    fn codes_decide_not_statuses() {
        assert!(matches!(
            graph(400, 130429),
            Error::RateLimited {
                retry_after_ms: RETRY_THROUGHPUT_MS,
                ..
            }
        ));
        assert!(matches!(
            graph(400, 131056),
            Error::RateLimited {
                retry_after_ms: RETRY_PAIR_MS,
                ..
            }
        ));
        assert!(matches!(graph(400, 4), Error::RateLimited { .. }));
        assert!(matches!(graph(400, 80007), Error::RateLimited { .. }));
        assert!(
            matches!(graph(400, 131047), Error::Permanent(m) if m.starts_with(WINDOW_CLOSED) && m.contains("131047"))
        );
        assert!(matches!(graph(401, 190), Error::Auth(_)));
        assert!(matches!(graph(400, 131026), Error::Permanent(_)));
        assert!(matches!(graph(500, 1), Error::Transient(_)));
        assert!(matches!(graph(503, 2), Error::Transient(_)));
        assert!(matches!(graph(400, 100), Error::Permanent(m) if m.contains("why")));
    }

    #[test]
    fn bodies_without_graph_errors_fall_back_to_the_status() {
        let r = |status, body: &str| http::Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        assert!(matches!(
            answer(&r(502, "<html>")),
            Err(Error::Transient(_))
        ));
        assert!(matches!(answer(&r(403, "")), Err(Error::Auth(_))));
        assert!(matches!(answer(&r(200, "nope")), Err(Error::Transient(_))));
        assert_eq!(answer(&r(200, r#"{"a":1}"#)).unwrap(), json!({"a": 1}));
    }
}
