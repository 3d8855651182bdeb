//! Discord's REST API (`{api_base}/...` with `Authorization: Bot <token>`,
//! the token as a secret placeholder the host fills in) and its rate limits:
//! the per-route buckets and the global limit Discord announces in the
//! `X-RateLimit-*` headers are kept in kv (shared by every instance of the
//! account), a call into an exhausted bucket is refused before it is sent,
//! and a 429 becomes `error.rate-limited` with Discord's `retry_after`.

use pincer_sdk::{Error, clock, http, kv, secrets};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Secret holding the bot token (the `Authorization` header and the
/// gateway's Identify/Resume frames only).
pub const TOKEN_SECRET: &str = "bot_token";
/// Timeout of a REST call.
pub const CALL_TIMEOUT_MS: u64 = 15_000;
/// kv key of the global limit (Unix ms until which every call waits).
const GLOBAL_KEY: &str = "rl:global";
/// The User-Agent Discord asks bots to send.
const USER_AGENT: &str = "DiscordBot (https://github.com/pincer-gateway/pincer, 0.1)";

/// What a response's rate-limit headers say about its bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// `X-RateLimit-Bucket`, the bucket's hash.
    pub hash: Option<String>,
    /// Calls left in the window.
    pub remaining: u64,
    /// Unix ms when the window resets.
    pub reset_at: u64,
}

/// The route key a call's bucket is remembered under: method and path with
/// the major parameter (channel id) kept and message ids folded, as Discord
/// groups them.
pub fn route_key(method: &str, path: &str) -> String {
    let mut parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if parts.first() == Some(&"channels") {
        for i in 2..parts.len() {
            if parts[i - 1] == "messages" {
                parts[i] = ":id";
            }
        }
    }
    format!("{method} /{}", parts.join("/"))
}

/// The bucket the headers of a response at `now` describe, if they do.
pub fn bucket_from_headers(resp: &http::Response, now: u64) -> Option<Bucket> {
    let remaining = resp.header("x-ratelimit-remaining")?.trim().parse().ok()?;
    let reset_after = resp
        .header("x-ratelimit-reset-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    Some(Bucket {
        hash: resp.header("x-ratelimit-bucket").map(str::to_string),
        remaining,
        reset_at: now + secs_to_ms(reset_after),
    })
}

fn secs_to_ms(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1000.0).ceil() as u64
    } else {
        0
    }
}

/// How long a call must wait for `bucket` at `now` (0: go).
pub fn bucket_wait(bucket: &Bucket, now: u64) -> u64 {
    if bucket.remaining == 0 && bucket.reset_at > now {
        bucket.reset_at - now
    } else {
        0
    }
}

/// The typed error of a failed call. `retry_after_ms` comes from a 429's
/// body (or `Retry-After`).
pub fn classify(what: &str, resp: &http::Response) -> Error {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let message = v["message"].as_str().map_or_else(
        || resp.text().chars().take(200).collect::<String>(),
        str::to_string,
    );
    let code = v["code"].as_u64().unwrap_or(0);
    let detail = format!("{what}: HTTP {} {message} (code {code})", resp.status);
    match resp.status {
        429 => Error::rate_limited(retry_after_ms(resp, &v), detail),
        401 => Error::auth(format!(
            "Discord rejected the bot token ({detail}); check `bot_token`"
        )),
        // 403 is a missing permission in that channel, not a bad token.
        403 => Error::permanent(format!(
            "{detail}: the bot lacks a permission there (View Channel, Send Messages)"
        )),
        408 | 500..=599 => Error::transient(detail),
        _ => Error::permanent(detail),
    }
}

fn retry_after_ms(resp: &http::Response, body: &Value) -> u64 {
    body["retry_after"]
        .as_f64()
        .or_else(|| resp.header("retry-after")?.trim().parse::<f64>().ok())
        .map_or(1_000, secs_to_ms)
        .max(1)
}

/// The `Authorization` header value.
pub fn authorization() -> String {
    format!("Bot {}", secrets::placeholder(TOKEN_SECRET))
}

/// Refuse a call whose bucket (or the global limit) is exhausted.
fn check_limits(route: &str, now: u64) -> Result<(), Error> {
    if let Some(until) = kv::get_json::<u64>(GLOBAL_KEY)?.filter(|&u| u > now) {
        return Err(Error::rate_limited(
            until - now,
            format!("{route}: Discord's global rate limit"),
        ));
    }
    if let Some(b) = kv::get_json::<Bucket>(&format!("rl:{route}"))? {
        let wait = bucket_wait(&b, now);
        if wait > 0 {
            return Err(Error::rate_limited(
                wait,
                format!(
                    "{route}: rate-limit bucket {} exhausted",
                    b.hash.as_deref().unwrap_or("?")
                ),
            ));
        }
    }
    Ok(())
}

/// Remember what the response says about the limits.
fn record_limits(route: &str, resp: &http::Response, now: u64) -> Result<(), Error> {
    if let Some(b) = bucket_from_headers(resp, now) {
        kv::set_json(&format!("rl:{route}"), &b)?;
    }
    if resp.status == 429 {
        let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        let global = v["global"].as_bool() == Some(true)
            || resp
                .header("x-ratelimit-global")
                .is_some_and(|g| g.eq_ignore_ascii_case("true"));
        let until = now + retry_after_ms(resp, &v);
        if global {
            kv::set_json(GLOBAL_KEY, &until)?;
        } else {
            let hash = resp.header("x-ratelimit-bucket").map(str::to_string);
            kv::set_json(
                &format!("rl:{route}"),
                &Bucket {
                    hash,
                    remaining: 0,
                    reset_at: until,
                },
            )?;
        }
    }
    Ok(())
}

/// Call `method path` with an optional JSON body; the parsed answer (Null
/// for 204).
pub fn call(
    api_base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, Error> {
    let route = route_key(method, path);
    check_limits(&route, clock::now_ms())?;
    let mut req = http::Request::new(method, &format!("{api_base}{path}"))
        .header("Authorization", &authorization())
        .header("User-Agent", USER_AGENT)
        .timeout_ms(CALL_TIMEOUT_MS);
    if let Some(b) = body {
        req = req.json(b)?;
    }
    let resp = req.send()?;
    answer(&route, resp)
}

/// Call an interaction's follow-up webhook (`/webhooks/{app}/{token}...`,
/// see `crate::interactions`): authorised by the interaction token in the
/// path, so no bot token is sent; its own rate-limit bucket.
pub fn call_webhook(
    api_base: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<Value, Error> {
    // The token is a credential: the route key (kv, logs) keeps only the
    // application id.
    let route = path.split('/').take(3).collect::<Vec<_>>().join("/");
    let route = format!("{method} {route}/:token");
    check_limits(&route, clock::now_ms())?;
    let resp = http::Request::new(method, &format!("{api_base}{path}"))
        .header("User-Agent", USER_AGENT)
        .timeout_ms(CALL_TIMEOUT_MS)
        .json(body)?
        .send()?;
    if resp.status == 404 {
        // The answer can overtake the deferred response the host is still
        // sending back to Discord: Discord knows the webhook a moment
        // later (and the token is used for its 15 minutes only).
        return Err(Error::transient(format!(
            "{route}: HTTP 404 (the interaction is not acknowledged yet)"
        )));
    }
    answer(&route, resp)
}

/// Record the limits a response announces and interpret it.
pub fn answer(route: &str, resp: http::Response) -> Result<Value, Error> {
    record_limits(route, &resp, clock::now_ms())?;
    if resp.is_success() {
        if resp.body.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(&resp.body)
            .map_err(|e| Error::transient(format!("{route}: Discord's answer is not JSON: {e}")));
    }
    Err(classify(route, &resp))
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
    fn routes_keep_the_channel_and_fold_message_ids() {
        assert_eq!(
            route_key("POST", "/channels/123/messages"),
            "POST /channels/123/messages"
        );
        assert_eq!(
            route_key("PATCH", "/channels/123/messages/456"),
            "PATCH /channels/123/messages/:id"
        );
        assert_eq!(route_key("GET", "/users/@me"), "GET /users/@me");
    }

    #[test]
    fn buckets_come_from_headers_and_block_when_exhausted() {
        let r = resp(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset-after", "1.5"),
                ("x-ratelimit-bucket", "abc"),
            ],
            "{}",
        );
        let b = bucket_from_headers(&r, 10_000).unwrap();
        assert_eq!(
            b,
            Bucket {
                hash: Some("abc".into()),
                remaining: 0,
                reset_at: 11_500
            }
        );
        assert_eq!(bucket_wait(&b, 10_000), 1_500);
        assert_eq!(bucket_wait(&b, 11_500), 0);
        assert_eq!(
            bucket_wait(
                &Bucket {
                    remaining: 3,
                    ..b.clone()
                },
                10_000
            ),
            0
        );
        assert!(bucket_from_headers(&resp(200, &[], "{}"), 0).is_none());
    }

    #[test]
    fn errors_are_typed() {
        let e = classify(
            "POST /x",
            &resp(
                429,
                &[],
                r#"{"message":"You are being rate limited.","retry_after":0.25,"global":false}"#,
            ),
        );
        assert!(
            matches!(
                e,
                Error::RateLimited {
                    retry_after_ms: 250,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = classify("x", &resp(429, &[("retry-after", "2")], "nope"));
        assert!(matches!(
            e,
            Error::RateLimited {
                retry_after_ms: 2000,
                ..
            }
        ));
        assert!(matches!(
            classify(
                "x",
                &resp(401, &[], r#"{"message":"401: Unauthorized","code":0}"#)
            ),
            Error::Auth(_)
        ));
        assert!(matches!(
            classify("x", &resp(403, &[], r#"{"message":"Missing Access","code":50001}"#)),
            Error::Permanent(m) if m.contains("50001")
        ));
        assert!(matches!(
            classify("x", &resp(502, &[], "<html>")),
            Error::Transient(_)
        ));
    }
}
