//! Outbound HTTP through `wasi:http/outgoing-handler`.
//!
//! The host checks every request against the plugin's allowed hosts and
//! refuses private and link-local addresses unless the operator allows them.
//! Put [`crate::pincer_sdk::secrets::placeholder`] where a secret belongs (the URL path,
//! the header or JSON body field the manifest binds it to); the host fills it
//! in there and refuses the request if a placeholder is anywhere else. Too
//! many requests fail with [`Error::RateLimited`].

use crate::pincer_sdk::Error;
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
