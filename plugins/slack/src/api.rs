//! Talking to Slack's Web API: authenticated calls (the bearer is a secret
//! placeholder the host fills in) and Slack's answers turned into the
//! contract's typed errors. Slack answers most failures with HTTP 200 and
//! `{"ok": false, "error": "<code>"}`; rate limits are HTTP 429 with
//! `Retry-After` (seconds).

use pincer_sdk::{Error, http, secrets};
use serde_json::Value;

/// How long one Web API call may take before the host gives up on it.
pub const CALL_TIMEOUT_MS: u64 = 20_000;
/// The wait used when a 429 carries no usable `Retry-After`.
pub const DEFAULT_RETRY_MS: u64 = 1_000;

/// The secret with the bot token (`xoxb-`).
pub const BOT_TOKEN: &str = "bot_token";
/// The secret with the app-level token (`xapp-`, Socket Mode).
pub const APP_TOKEN: &str = "app_token";

/// `Bearer {{secret:<name>}}`.
pub fn bearer(secret: &str) -> String {
    format!("Bearer {}", secrets::placeholder(secret))
}

/// POST `body` as JSON to Web API `url` with the bearer of `secret`.
pub fn post_json(url: &str, secret: &str, body: &Value) -> Result<Value, Error> {
    let resp = http::Request::post(url)
        .header("authorization", &bearer(secret))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string())
        .timeout_ms(CALL_TIMEOUT_MS)
        .send()?;
    answer(&resp)
}

/// POST `fields` form-encoded to Web API `url` with the bot token (for
/// methods that do not take JSON, such as `files.getUploadURLExternal`).
pub fn post_form(url: &str, fields: &[(&str, &str)]) -> Result<Value, Error> {
    let resp = http::Request::post(url)
        .header("authorization", &bearer(BOT_TOKEN))
        .form(fields)
        .timeout_ms(CALL_TIMEOUT_MS)
        .send()?;
    answer(&resp)
}

/// The JSON of an `ok: true` answer, or the typed error the answer means.
pub fn answer(resp: &http::Response) -> Result<Value, Error> {
    if resp.status == 429 {
        let retry_after_ms = resp
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_RETRY_MS, |s| s.saturating_mul(1_000));
        return Err(Error::rate_limited(
            retry_after_ms,
            format!("Slack rate-limited the call (HTTP 429, Retry-After {retry_after_ms} ms)"),
        ));
    }
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    match body {
        Some(v) if v.get("ok").and_then(Value::as_bool) == Some(true) => Ok(v),
        Some(v) if v.get("ok").is_some() => {
            let code = v.get("error").and_then(Value::as_str).unwrap_or("unknown");
            Err(classify(code, resp.status, resp.header("retry-after")))
        }
        _ => {
            let detail: String = resp.text().chars().take(300).collect();
            let message = format!("Slack HTTP {}: {detail}", resp.status);
            Err(match resp.status {
                401 | 403 => Error::auth(message),
                408 | 500..=599 => Error::transient(message),
                200..=299 => Error::transient(format!("Slack answered without JSON: {message}")),
                _ => Error::permanent(message),
            })
        }
    }
}

/// The typed error for Slack error code `code`, answered with HTTP
/// `status` (and `Retry-After`, if any).
pub fn classify(code: &str, status: u16, retry_after: Option<&str>) -> Error {
    let text = format!("Slack error `{code}` (HTTP {status})");
    match code {
        "ratelimited" | "rate_limited" => {
            let ms = retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(DEFAULT_RETRY_MS, |s| s.saturating_mul(1_000));
            Error::rate_limited(ms, text)
        }
        "invalid_auth"
        | "not_authed"
        | "account_inactive"
        | "token_revoked"
        | "token_expired"
        | "no_permission"
        | "missing_scope"
        | "not_allowed_token_type"
        | "ekm_access_denied" => Error::auth(format!(
            "{text}: the token was refused or lacks a scope (check `bot_token`/`app_token` and the app's OAuth scopes)"
        )),
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            Error::transient(text)
        }
        "invalid_blocks" | "invalid_blocks_format" => Error::formatting(text),
        // channel_not_found, not_in_channel, is_archived, msg_too_long,
        // no_text, message_not_found, cant_update_message, ...: a retry
        // cannot succeed.
        _ => Error::permanent(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response {
        http::Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn errors_become_typed_errors() {
        let e = answer(&resp(429, &[("retry-after", "7")], "")).unwrap_err();
        assert!(
            matches!(
                e,
                Error::RateLimited {
                    retry_after_ms: 7_000,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = answer(&resp(429, &[], "{}")).unwrap_err();
        assert!(matches!(
            e,
            Error::RateLimited {
                retry_after_ms: DEFAULT_RETRY_MS,
                ..
            }
        ));
        let ok_false = |code: &str| {
            answer(&resp(
                200,
                &[],
                &format!(r#"{{"ok":false,"error":"{code}"}}"#),
            ))
            .unwrap_err()
        };
        assert!(matches!(ok_false("invalid_auth"), Error::Auth(_)));
        assert!(matches!(ok_false("not_authed"), Error::Auth(_)));
        assert!(
            matches!(ok_false("channel_not_found"), Error::Permanent(m) if m.contains("channel_not_found"))
        );
        assert!(matches!(ok_false("ratelimited"), Error::RateLimited { .. }));
        assert!(matches!(ok_false("internal_error"), Error::Transient(_)));
        assert!(matches!(
            answer(&resp(502, &[], "<html>")),
            Err(Error::Transient(_))
        ));
        assert!(matches!(
            answer(&resp(200, &[], "nope")),
            Err(Error::Transient(_))
        ));
        assert_eq!(
            answer(&resp(200, &[], r#"{"ok":true,"ts":"1.2"}"#)).unwrap()["ts"],
            "1.2"
        );
    }
}
