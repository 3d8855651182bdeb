//! Serving a browser Control UI build (such as OpenClaw's
//! `dist/control-ui`) at `/` on the gateway's own port, so an operator
//! moving from OpenClaw keeps one address for the UI and the gateway
//! (`pincer serve --control-ui DIR`, `[gateway] control_ui = "DIR"`).
//!
//! Only `GET`/`HEAD` of files inside the directory: paths with `..`,
//! backslashes or NUL are refused, and a file reached through a symlink
//! that leaves the directory is not served. A path without an extension
//! that names no file is an app route and gets `index.html` (the
//! single-page app routes itself); other misses are 404. This is the
//! router's fallback, so every API route keeps its meaning.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::debug;

use super::Gateway;

/// The fallback handler: a file of the Control UI directory, or 404 when
/// the gateway serves none.
pub async fn serve(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let Some(root) = gw.config.control_ui.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let head = req.method() == Method::HEAD;
    match resolve(root, req.uri().path()).await {
        Some(file) => file_response(&file, head).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The file `uri_path` names under `root`, `index.html` for an app route,
/// or `None`.
async fn resolve(root: &Path, uri_path: &str) -> Option<PathBuf> {
    let rel = safe_relative(uri_path)?;
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let wanted = root.join(&rel);
    if let Ok(real) = tokio::fs::canonicalize(&wanted).await {
        if !real.starts_with(&root) {
            debug!(path = %uri_path, "control ui: refusing a path that leaves the directory");
            return None;
        }
        if real.is_file() {
            return Some(real);
        }
        if real.is_dir() {
            let index = real.join("index.html");
            return index.is_file().then_some(index);
        }
    }
    // An app route (no extension): the single-page app's shell.
    if rel.extension().is_none() {
        let index = root.join("index.html");
        return index.is_file().then_some(index);
    }
    None
}

/// `uri_path` as a relative path of normal components, or `None` when it
/// could climb out or is malformed.
fn safe_relative(uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(uri_path)?;
    if decoded.contains('\\') || decoded.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for c in Path::new(decoded.trim_start_matches('/')).components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Decode `%XX` escapes (UTF-8); `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn file_response(file: &Path, head: bool) -> Response {
    let body = match tokio::fs::read(file).await {
        Ok(b) => b,
        Err(e) => {
            debug!(file = %file.display(), error = %e, "control ui: unreadable file");
            return StatusCode::NOT_FOUND.into_response();
        }
    };
    let body = if file.file_name().is_some_and(|n| n == "index.html") {
        with_base(body)
    } else {
        body
    };
    let len = body.len();
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::from(body)
    });
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime(file)));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Hashed asset names may be cached; the shell and the rest are
    // revalidated so a new build shows at once.
    let cache = if file.components().any(|c| c.as_os_str() == "assets") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

/// `index.html` with `<base href="/">` after `<head>` (unless it has a
/// `<base>`): the shell is also served at nested app routes such as
/// `/settings/channels`, where its relative `./assets/...` links would
/// otherwise resolve under `/settings/`.
fn with_base(body: Vec<u8>) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(&body) else {
        return body;
    };
    let lower = text.to_ascii_lowercase();
    if lower.contains("<base ") {
        return body;
    }
    let Some(head) = lower.find("<head") else {
        return body;
    };
    let Some(close) = lower[head..].find('>') else {
        return body;
    };
    let at = head + close + 1;
    let mut out = String::with_capacity(text.len() + 20);
    out.push_str(&text[..at]);
    out.push_str("<base href=\"/\">");
    out.push_str(&text[at..]);
    out.into_bytes()
}

/// The content type for a file name's extension.
fn mime(file: &Path) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_climb_are_refused() {
        assert_eq!(safe_relative("/"), Some(PathBuf::new()));
        assert_eq!(
            safe_relative("/assets/a.js"),
            Some(PathBuf::from("assets/a.js"))
        );
        assert_eq!(safe_relative("/../etc/passwd"), None);
        assert_eq!(safe_relative("/assets/%2e%2e/%2e%2e/x"), None);
        assert_eq!(safe_relative("/a%5cb"), None);
        assert_eq!(safe_relative("/a%00b"), None);
        assert_eq!(safe_relative("/a%zz"), None);
        assert_eq!(safe_relative("/a%20b"), Some(PathBuf::from("a b")));
    }

    #[test]
    fn the_shell_gets_a_base() {
        let out = with_base(b"<html><head lang=x><title>t</title></head></html>".to_vec());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<html><head lang=x><base href=\"/\"><title>t</title></head></html>"
        );
        let has = b"<head><base href=\"/ui/\"></head>".to_vec();
        assert_eq!(with_base(has.clone()), has);
    }

    #[test]
    fn content_types() {
        assert_eq!(mime(Path::new("x/index.html")), "text/html; charset=utf-8");
        assert_eq!(mime(Path::new("a.JS")), "text/javascript; charset=utf-8");
        assert_eq!(mime(Path::new("a.bin")), "application/octet-stream");
    }
}
