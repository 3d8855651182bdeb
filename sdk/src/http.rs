//! Outbound HTTP through `wasi:http/outgoing-handler`.
//!
//! The host checks every request against the plugin's allowed hosts and
//! refuses private and link-local addresses unless the operator allows them.
//! Put [`crate::secrets::placeholder`] where a secret belongs (the URL path,
//! the header or JSON body field the manifest binds it to); the host fills it
//! in there and refuses the request if a placeholder is anywhere else. Too
//! many requests fail with [`Error::RateLimited`].
//!
//! ```no_run
//! use pincer_sdk::{http, secrets};
//! # fn main() -> Result<(), pincer_sdk::Error> {
//! // The token goes in the URL path, the webhook secret in a JSON body field
//! // (`[secrets.webhook_secret] in = ["body:secret_token"]` in the manifest).
//! let url = format!(
//!     "https://api.telegram.org/bot{}/setWebhook",
//!     secrets::placeholder("bot_token")
//! );
//! let resp = http::Request::post(&url)
//!     .json(&serde_json::json!({
//!         "url": "https://bot.example.com/channels/telegram/webhook",
//!         "secret_token": secrets::placeholder("webhook_secret"),
//!     }))?
//!     .timeout_ms(10_000)
//!     .send()?
//!     .error_for_status()?;
//! let answer: serde_json::Value = resp.json()?;
//! # let _ = answer; Ok(()) }
//! ```

use crate::Error;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// A response: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The body, read in full.
    pub body: Vec<u8>,
}

impl Response {
    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }
    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `Ok(self)` for a status below 400; otherwise the typed error the
    /// status means, with the start of the body as detail:
    /// 429 is [`Error::RateLimited`] (waiting `Retry-After` seconds, or 1 s),
    /// 401 and 403 are [`Error::Auth`], 408 and 5xx are [`Error::Transient`],
    /// any other 4xx is [`Error::Permanent`]. Platforms that say more in their
    /// body (Telegram's `parameters.retry_after`, WhatsApp's error codes)
    /// deserve a look at the body first.
    pub fn error_for_status(self) -> Result<Self, Error> {
        let status = self.status;
        if status < 400 {
            return Ok(self);
        }
        let detail: String = self.text().chars().take(300).collect();
        let message = format!("HTTP {status}: {detail}");
        Err(match status {
            429 => {
                let retry_after_ms = self
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(1_000, |s| s.saturating_mul(1_000));
                Error::RateLimited {
                    retry_after_ms,
                    message,
                }
            }
            401 | 403 => Error::Auth(message),
            408 | 500..=599 => Error::Transient(message),
            _ => Error::Permanent(message),
        })
    }
}

/// A request under construction.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout_ms: Option<u64>,
    max_body: usize,
}

impl Request {
    /// A request with `method` (GET, POST, ...) to `url`.
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
            max_body: 8 << 20,
        }
    }
    /// A GET request.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }
    /// A POST request.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }
    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// Set a JSON body (and `content-type`).
    pub fn json<T: serde::Serialize>(mut self, body: &T) -> Result<Self, Error> {
        self.body = serde_json::to_vec(body)?;
        self.headers
            .push(("content-type".into(), "application/json".into()));
        Ok(self)
    }
    /// Set an `application/x-www-form-urlencoded` body (and `content-type`).
    /// Names and values are percent-encoded, except secret placeholders
    /// ([`crate::secrets::placeholder`]), which are kept verbatim so the host
    /// can find them. (host: see host/src/plugins/host/secrets.rs for the
    /// places a placeholder may be filled; JSON body fields are the place
    /// every host version supports.)
    pub fn form(mut self, fields: &[(&str, &str)]) -> Self {
        self.body = form_encode(fields).into_bytes();
        self.headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
        self
    }
    /// Set a raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    /// Time to wait for the first byte of the response (long polls need a long one).
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
    /// Largest body to read (default 8 MiB); a longer body is an error.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Send the request and read the whole response.
    pub fn send(self) -> Result<Response, Error> {
        let (scheme, rest) = if let Some(r) = self.url.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = self.url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err(Error::permanent(format!("unsupported URL: {}", self.url)));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        let headers = Fields::from_list(&entries)
            .map_err(|e| Error::permanent(format!("bad header: {e:?}")))?;
        let req = OutgoingRequest::new(headers);
        let method = match self.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_string()),
        };
        let bad = |what: &str| Error::permanent(format!("invalid request {what}"));
        req.set_method(&method).map_err(|_| bad("method"))?;
        req.set_scheme(Some(&scheme)).map_err(|_| bad("scheme"))?;
        req.set_authority(Some(authority))
            .map_err(|_| bad("authority"))?;
        req.set_path_with_query(Some(path))
            .map_err(|_| bad("path"))?;
        let body = req.body().map_err(|_| bad("body"))?;
        let options = self.timeout_ms.map(|ms| {
            let o = RequestOptions::new();
            let _ = o.set_first_byte_timeout(Some(ms * 1_000_000));
            o
        });
        let future = outgoing_handler::handle(req, options).map_err(map_error)?;
        {
            let out = body.write().map_err(|_| bad("body stream"))?;
            for chunk in self.body.chunks(4096) {
                out.blocking_write_and_flush(chunk)
                    .map_err(|e| Error::transient(format!("writing body: {e:?}")))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(map_error)?;
        future.subscribe().block();
        let resp = match future.get() {
            Some(Ok(Ok(resp))) => resp,
            Some(Ok(Err(code))) => return Err(map_error(code)),
            Some(Err(())) | None => return Err(Error::transient("response already taken")),
        };
        let status = resp.status();
        let headers = resp
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = resp.consume().map_err(|_| bad("response body"))?;
        let mut body = Vec::new();
        {
            let stream = incoming.stream().map_err(|_| bad("response stream"))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => {
                        body.extend_from_slice(&chunk);
                        if body.len() > self.max_body {
                            return Err(Error::permanent(format!(
                                "response body larger than {} bytes",
                                self.max_body
                            )));
                        }
                    }
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(Error::transient(format!(
                            "reading body: {}",
                            e.to_debug_string()
                        )));
                    }
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Encode `fields` as `application/x-www-form-urlencoded`, leaving every
/// `{{secret:NAME}}` placeholder as it is.
pub(crate) fn form_encode(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(name, &mut out);
        out.push('=');
        encode_component(value, &mut out);
    }
    out
}

/// Percent-encode one form component into `out`, copying placeholders verbatim.
fn encode_component(mut text: &str, out: &mut String) {
    const OPEN: &str = "{{secret:";
    while !text.is_empty() {
        if text.starts_with(OPEN) {
            if let Some(end) = text[OPEN.len()..].find("}}") {
                let len = OPEN.len() + end + 2;
                out.push_str(&text[..len]);
                text = &text[len..];
                continue;
            }
        }
        let skip = text.chars().next().map_or(0, char::len_utf8);
        let next = text[skip..].find(OPEN).map_or(text.len(), |i| i + skip);
        for b in text[..next].bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        text = &text[next..];
    }
}

/// Map a `wasi:http` error code to a typed plugin error.
fn map_error(code: ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => {
            Error::Permanent("request denied by the host (host not allowed)".into())
        }
        ErrorCode::DestinationIpProhibited => {
            Error::Permanent("request denied by the host (address prohibited)".into())
        }
        ErrorCode::HttpResponseBodySize(cap) => Error::Permanent(match cap {
            Some(n) => format!("response body larger than the host's limit of {n} bytes"),
            None => "response body larger than the host's limit".into(),
        }),
        // The host's refusals: a misplaced secret, or the outbound rate limit.
        ErrorCode::InternalError(Some(m)) if m.starts_with("denied: ") => {
            Error::Permanent(format!("request {m}"))
        }
        ErrorCode::InternalError(Some(m)) if m.starts_with("rate-limited: ") => {
            // `rate-limited: retry after N ms: MESSAGE`
            let rest = m.strip_prefix("rate-limited: retry after ").unwrap_or(&m);
            let (ms, message) = rest.split_once(" ms: ").unwrap_or(("1000", rest));
            Error::RateLimited {
                retry_after_ms: ms.parse().unwrap_or(1000),
                message: message.to_string(),
            }
        }
        other => Error::Transient(format!("http: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn form_encoding_escapes_text_but_keeps_placeholders() {
        let body = form_encode(&[
            ("chat_id", "42"),
            ("text", "a b&c=d/é"),
            ("token", "{{secret:bot_token}}"),
            ("mixed", "x {{secret:a}}&{{secret:b}} y {{secret:"),
        ]);
        assert_eq!(
            body,
            "chat_id=42&text=a+b%26c%3Dd%2F%C3%A9&token={{secret:bot_token}}\
             &mixed=x+{{secret:a}}%26{{secret:b}}+y+%7B%7Bsecret%3A"
        );
    }

    #[test]
    fn json_bodies_carry_placeholders_verbatim() {
        let req = Request::post("https://api.example.com/x")
            .json(&serde_json::json!({"secret_token": "{{secret:webhook_secret}}"}))
            .unwrap();
        let text = String::from_utf8(req.body).unwrap();
        assert!(
            text.contains(r#""secret_token":"{{secret:webhook_secret}}""#),
            "{text}"
        );
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        assert!(response(204, &[], "").error_for_status().is_ok());
        assert_eq!(
            response(429, &[("Retry-After", "7")], "slow")
                .error_for_status()
                .unwrap_err(),
            Error::RateLimited {
                retry_after_ms: 7_000,
                message: "HTTP 429: slow".into()
            }
        );
        assert!(matches!(
            response(429, &[], "").error_for_status(),
            Err(Error::RateLimited {
                retry_after_ms: 1_000,
                ..
            })
        ));
        assert!(matches!(
            response(401, &[], "").error_for_status(),
            Err(Error::Auth(_))
        ));
        assert!(matches!(
            response(503, &[], "").error_for_status(),
            Err(Error::Transient(_))
        ));
        assert!(matches!(
            response(400, &[], "bad chat").error_for_status(),
            Err(Error::Permanent(m)) if m == "HTTP 400: bad chat"
        ));
    }
}
