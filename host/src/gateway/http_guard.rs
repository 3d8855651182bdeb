//! Browser-facing checks on every HTTP request and WebSocket upgrade, run
//! before routing (so before the WebSocket upgrade and the bearer check):
//!
//! - `Host` must name the gateway: its listen address, the loopback names
//!   with its port when it listens on loopback, or an entry of
//!   `allowed_hosts` (else `421`): a DNS-rebinding page (an attacker's name
//!   resolving to 127.0.0.1) is refused even on an open gateway;
//! - state-changing requests (`POST`, `PUT`, `PATCH`, `DELETE`) and
//!   WebSocket upgrades that carry an `Origin` must come from the gateway's
//!   own origin, a loopback page when the gateway is on loopback, or an
//!   entry of `allowed_origins` (else `403`);
//! - API request bodies must be JSON (`application/json` or
//!   `application/<x>+json`, else `415`), so a cross-site `text/plain` form
//!   post (which needs no CORS preflight) never reaches a handler; the one
//!   exception is a plugin upload (`PUT /v1/plugins/{name}` with
//!   `application/wasm`, also not sendable cross-site without a preflight).
//!
//! Channel push routes (`/channels/{name}/webhook…`) are called by chat
//! platforms with their own content types and no `Origin`: only the `Host`
//! check applies to them.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;

use super::{Gateway, GatewayConfig};

/// The middleware (see the module comment).
pub async fn guard(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !host.is_some_and(|h| host_allowed(&gw.config, h)) {
        tracing::warn!(%remote, host = ?host, path = %req.uri().path(), "refusing a request for another host");
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "HOST_NOT_ALLOWED",
            "this gateway does not serve that host name (see gateway.allowed_hosts)",
        );
    }
    let channel_push = req.uri().path().starts_with("/channels/");
    let upgrade = headers.contains_key(header::UPGRADE);
    let changes_state = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if (upgrade || (changes_state && !channel_push))
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("null");
        if !origin_allowed(&gw.config, host.unwrap_or(""), origin) {
            tracing::warn!(%remote, origin, path = %req.uri().path(), "refusing a cross-origin request");
            return refuse(
                StatusCode::FORBIDDEN,
                "ORIGIN_NOT_ALLOWED",
                "cross-origin requests are not allowed (see gateway.allowed_origins)",
            );
        }
    }
    if !channel_push && !upgrade && has_body(headers) && !is_json(headers) && !is_wasm_upload(&req)
    {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "request bodies must be JSON (Content-Type: application/json)",
        );
    }
    next.run(req).await
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// `PUT /v1/plugins/{name}` with `Content-Type: application/wasm` (see
/// `super::http_plugins`).
fn is_wasm_upload(req: &Request) -> bool {
    req.method() == Method::PUT
        && req.uri().path().starts_with("/v1/plugins/")
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/wasm"))
}

/// Whether the request has a body (a non-zero length or a chunked one).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// `application/json` or `application/<x>+json`, any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.strip_prefix("application/") {
        Some(sub) => sub == "json" || (sub.ends_with("+json") && sub.len() > "+json".len()),
        None => false,
    }
}

/// Split `host[:port]` (IPv6 in brackets) into a lowercase name without a
/// trailing dot, and the port; `None` if it is not of that form.
pub fn split_host(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    let (name, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (format!("[{inside}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((n, p)) => (n.to_string(), Some(p.parse().ok()?)),
            None => (authority.to_string(), None),
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    valid.then_some((name, port))
}

/// The IP address a host name is, if it is a literal.
fn ip_literal(name: &str) -> Option<IpAddr> {
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name)
        .parse()
        .ok()
}

/// Whether `Host: authority` names this gateway (see the module comment).
pub fn host_allowed(config: &GatewayConfig, authority: &str) -> bool {
    let Some((name, port)) = split_host(authority) else {
        return false;
    };
    for allowed in &config.allowed_hosts {
        if allowed == "*" {
            return true;
        }
        if let Some((a_name, a_port)) = split_host(allowed)
            && a_name == name
            && (a_port.is_none() || a_port == port)
        {
            return true;
        }
    }
    let listen = config.listen;
    if port.is_some_and(|p| p != listen.port()) {
        return false;
    }
    let loopback_name = matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]")
        || name.ends_with(".localhost");
    match ip_literal(&name) {
        // An address (never a rebinding target): the listen address, or
        // any of this host's when listening on all of them.
        Some(ip) => {
            ip == listen.ip()
                || listen.ip().is_unspecified()
                || (loopback_name && listen.ip().is_loopback())
        }
        None => loopback_name && (listen.ip().is_loopback() || listen.ip().is_unspecified()),
    }
}

/// Whether a request from page `origin` may change state on a gateway
/// reached as `host`: same origin, a loopback page when the gateway is on
/// loopback, or an entry of `allowed_origins` (the policy of the
/// WebSocket `connect` check).
pub fn origin_allowed(config: &GatewayConfig, host: &str, origin: &str) -> bool {
    if config.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    let Some(origin_host) = origin
        .split_once("://")
        .map(|(_, h)| h.trim_end_matches('/'))
    else {
        return false; // `null` and other opaque origins
    };
    if origin_host.eq_ignore_ascii_case(host) {
        return true;
    }
    config.listen.ip().is_loopback()
        && split_host(origin_host)
            .is_some_and(|(name, _)| matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, hosts: &[&str]) -> GatewayConfig {
        GatewayConfig {
            listen: listen.parse().unwrap(),
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..GatewayConfig::default()
        }
    }

    #[test]
    fn hosts() {
        let lo = config("127.0.0.1:18789", &[]);
        for ok in [
            "127.0.0.1:18789",
            "localhost:18789",
            "LOCALHOST.:18789",
            "[::1]:18789",
            "localhost",
        ] {
            assert!(host_allowed(&lo, ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:18789",
            "127.0.0.1:80",
            "10.0.0.1:18789",
            "",
            "[::1",
            "a:b",
        ] {
            assert!(!host_allowed(&lo, bad), "{bad}");
        }
        let public = config("0.0.0.0:443", &["chat.example.com", "other.example:8443"]);
        for ok in [
            "chat.example.com",
            "chat.example.com:9999",
            "other.example:8443",
            "203.0.113.7:443",
            "localhost:443",
        ] {
            assert!(host_allowed(&public, ok), "{ok}");
        }
        for bad in ["other.example", "evil.example:443", "203.0.113.7:80"] {
            assert!(!host_allowed(&public, bad), "{bad}");
        }
        assert!(host_allowed(&config("127.0.0.1:1", &["*"]), "anything"));
        assert!(
            config("127.0.0.1:1", &["chat.example.com:8443", "*"])
                .check()
                .is_ok()
        );
        let bad = config("127.0.0.1:1", &["https://chat.example.com"]).check();
        assert!(bad.unwrap_err().to_string().contains("allowed_hosts"));
    }

    #[test]
    fn origins() {
        let lo = config("127.0.0.1:18789", &[]);
        assert!(origin_allowed(
            &lo,
            "127.0.0.1:18789",
            "http://127.0.0.1:18789"
        ));
        assert!(origin_allowed(
            &lo,
            "127.0.0.1:18789",
            "http://localhost:3000"
        ));
        assert!(!origin_allowed(
            &lo,
            "127.0.0.1:18789",
            "https://evil.example"
        ));
        assert!(!origin_allowed(&lo, "127.0.0.1:18789", "null"));
        let public = GatewayConfig {
            allowed_origins: vec!["https://ui.example".into()],
            ..config("0.0.0.0:443", &[])
        };
        assert!(origin_allowed(&public, "gw.example", "https://ui.example"));
        assert!(!origin_allowed(
            &public,
            "gw.example",
            "http://localhost:3000"
        ));
    }

    #[test]
    fn content_types() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("application/+json"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
