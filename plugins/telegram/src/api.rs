//! Calls to the Bot API (`{api_base}/bot<token>/<method>`, the token as a
//! secret placeholder the host fills in) and the mapping of its answers to
//! the contract's typed errors.

use pincer_sdk::{Error, http, secrets};
use serde_json::Value;

/// Secret holding the bot token (filled into the URL path only).
pub const TOKEN_SECRET: &str = "bot_token";
/// Host-generated secret Telegram echoes in `X-Telegram-Bot-Api-Secret-Token`
/// (filled into `setWebhook`'s `secret_token` body field only).
pub const WEBHOOK_SECRET: &str = "webhook_secret";
/// Timeout of an ordinary (not long-poll) call.
pub const CALL_TIMEOUT_MS: u64 = 15_000;

/// `{api_base}/bot<placeholder>/{method}`.
pub fn method_url(api_base: &str, method: &str) -> String {
    format!(
        "{}/bot{}/{method}",
        api_base.trim_end_matches('/'),
        secrets::placeholder(TOKEN_SECRET)
    )
}

/// `{api_base}/file/bot<placeholder>/{file_path}`: where a file is downloaded.
pub fn file_url(api_base: &str, file_path: &str) -> String {
    format!(
        "{}/file/bot{}/{}",
        api_base.trim_end_matches('/'),
        secrets::placeholder(TOKEN_SECRET),
        file_path.trim_start_matches('/')
    )
}

/// POST `body` as JSON to `method`; the `result` of an `{ok:true}` answer.
pub fn call(api_base: &str, method: &str, body: &Value, timeout_ms: u64) -> Result<Value, Error> {
    let resp = http::Request::post(&method_url(api_base, method))
        .json(body)?
        .timeout_ms(timeout_ms)
        .send()?;
    answer(method, resp.status, &resp.body)
}

/// Interpret a Bot API answer (`{ok, result}` or `{ok:false, error_code,
/// description, parameters}`) with HTTP status `status`.
pub fn answer(method: &str, status: u16, body: &[u8]) -> Result<Value, Error> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if v["ok"] == Value::Bool(true) && (200..300).contains(&status) {
        return Ok(v.get("result").cloned().unwrap_or(Value::Null));
    }
    let code = v["error_code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(status);
    let description = v["description"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars().take(200).collect()
        });
    Err(classify(method, code, &description, &v["parameters"]))
}

/// The typed error for a failed call.
pub fn classify(method: &str, code: u16, description: &str, parameters: &Value) -> Error {
    let lower = description.to_ascii_lowercase();
    let what = format!("{method}: {code} {description}");
    match code {
        429 => {
            let secs = parameters["retry_after"].as_u64().unwrap_or(1).max(1);
            Error::rate_limited(secs.saturating_mul(1_000), what)
        }
        409 => {
            let which = if lower.contains("webhook is active") {
                "a webhook is set for this bot while it polls (the channel deletes it and retries)"
            } else if lower.contains("terminated by other getupdates") {
                "another getUpdates poller uses this bot token (a second gateway, script or instance?)"
            } else {
                "conflict with another user of this bot token"
            };
            Error::transient(format!("409 conflict: {which}: {what}"))
        }
        401 => Error::auth(format!(
            "Telegram rejected the bot token ({what}); check `bot_token`"
        )),
        // A malformed token gives 404 on every method URL; elsewhere 404
        // may mean a method this Bot API server lacks (sendMessageDraft).
        404 if method == "getMe" => Error::auth(format!(
            "Telegram does not know this bot ({what}); check `bot_token`"
        )),
        400 if lower.contains("can't parse entities") || lower.contains("can't find end") => {
            Error::formatting(what)
        }
        400 if parameters["migrate_to_chat_id"].is_i64() => Error::permanent(format!(
            "{what} (the group became supergroup {})",
            parameters["migrate_to_chat_id"]
        )),
        420 | 500..=599 | 408 => Error::transient(what),
        _ => Error::permanent(what),
    }
}

/// Whether `e` is Telegram's "message is not modified" answer (success for an edit).
pub fn is_not_modified(e: &Error) -> bool {
    matches!(e, Error::Permanent(m) if m.contains("message is not modified"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(code: u16, desc: &str, params: Value) -> Error {
        let body =
            json!({"ok": false, "error_code": code, "description": desc, "parameters": params});
        answer("sendMessage", code, body.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn answers_map_to_typed_errors() {
        assert_eq!(
            answer("getMe", 200, br#"{"ok":true,"result":{"id":1}}"#).unwrap(),
            json!({"id": 1})
        );
        assert!(matches!(
            err(
                429,
                "Too Many Requests: retry after 34",
                json!({"retry_after": 34})
            ),
            Error::RateLimited {
                retry_after_ms: 34_000,
                ..
            }
        ));
        let e = err(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
            Value::Null,
        );
        assert!(
            matches!(&e, Error::Transient(m) if m.contains("another getUpdates poller")),
            "{e}"
        );
        let e = err(
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
            Value::Null,
        );
        assert!(
            matches!(&e, Error::Transient(m) if m.contains("webhook is set")),
            "{e}"
        );
        assert!(matches!(
            err(401, "Unauthorized", Value::Null),
            Error::Auth(_)
        ));
        assert!(matches!(
            err(
                400,
                "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 0",
                Value::Null
            ),
            Error::Formatting(_)
        ));
        assert!(is_not_modified(&err(
            400,
            "Bad Request: message is not modified: specified new message content and reply markup are exactly the same",
            Value::Null
        )));
        assert!(matches!(
            err(502, "Bad Gateway", Value::Null),
            Error::Transient(_)
        ));
        assert!(matches!(
            err(403, "Forbidden: bot was blocked by the user", Value::Null),
            Error::Permanent(_)
        ));
        assert!(matches!(
            answer("getMe", 502, b"<html>"),
            Err(Error::Transient(_))
        ));
    }
}
