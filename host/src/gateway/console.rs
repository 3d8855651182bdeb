//! Pincer's operator console: three static files (`host/console/`)
//! compiled into the binary and served at `/console` on the gateway's own
//! port (`[gateway] console`, default on). The page holds no data of its
//! own: it asks for the token (from the URL fragment `#token=…` or a login
//! form, kept in `sessionStorage`) and then uses the same WebSocket
//! protocol and HTTP API as any client. Served with a strict
//! Content-Security-Policy: scripts and styles only from these files, no
//! inline code, connections only to this origin, no framing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Gateway;

/// The page.
pub const INDEX_HTML: &str = include_str!("../../console/index.html");
/// Its script.
pub const CONSOLE_JS: &str = include_str!("../../console/console.js");
/// Its style sheet.
pub const CONSOLE_CSS: &str = include_str!("../../console/console.css");

/// The policy every console response carries: nothing inline, nothing
/// from elsewhere, WebSocket and `fetch` to this origin only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

/// `GET /console`: the page.
pub async fn page(State(gw): State<Arc<Gateway>>) -> Response {
    file(&gw, "text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/console.js`.
pub async fn script(State(gw): State<Arc<Gateway>>) -> Response {
    file(&gw, "text/javascript; charset=utf-8", CONSOLE_JS)
}

/// `GET /console/console.css`.
pub async fn style(State(gw): State<Arc<Gateway>>) -> Response {
    file(&gw, "text/css; charset=utf-8", CONSOLE_CSS)
}

fn file(gw: &Gateway, content_type: &'static str, body: &'static str) -> Response {
    if !gw.config.console {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_code_and_links_its_files() {
        let lower = INDEX_HTML.to_ascii_lowercase();
        // Scripts only by `src`, no inline handlers or styles.
        assert!(lower.contains("<script src=\"/console/console.js\""));
        assert!(lower.contains("href=\"/console/console.css\""));
        assert_eq!(lower.matches("<script").count(), 1);
        assert!(!lower.contains(" onclick="));
        assert!(!lower.contains(" style="));
        assert!(!lower.contains("<style"));
        // No remote resources.
        assert!(!lower.contains("http://") && !lower.contains("https://"));
        assert!(!CONSOLE_JS.contains("https://"));
    }
}
