//! Media factor: `pincer:plugin/media`, and the host's own transfers of
//! files on a plugin's behalf, so a guest never holds a file or a token.
//!
//! - [`upload`] (the `media.upload` import): a `multipart/form-data` POST
//!   the host builds from the guest's description, streaming a blob from
//!   the [`BlobStore`] as the file part (or, with an empty file field, as
//!   the raw body typed by its MIME type). Secret placeholders are filled in
//!   the URL path, headers and form fields (`form:<field>` bindings) only
//!   where the manifest binds them; the answer is capped and scrubbed.
//! - [`download`]: the GET a channel's `fetch-attachment` described, streamed
//!   into a new blob with the per-file cap enforced while reading (whatever
//!   size the platform declared).
//!
//! Both go through the plugin's outbound policy ([`super::http::open`]):
//! its rate limit, allowed hosts, secret bindings and SSRF guard.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use wasmtime_wasi_http::Error as HttpError;

use super::http::{self, BodyScan, HttpPolicy};
use super::secrets::{Destination, Place, SecretValues};
use crate::blobs::{BlobError, BlobInfo, BlobStore};
use crate::plugins::bindings::v02::channel::pincer::plugin::media::{
    Host, UploadRequest, UploadResponse,
};
use crate::plugins::bindings::{DownloadRequest, RateLimit, WitError};

/// Per-instance part of the media factor.
#[derive(Clone)]
pub struct PluginMedia {
    /// The plugin's name (for logs).
    pub plugin: Arc<str>,
    /// Its outbound policy.
    pub policy: Arc<HttpPolicy>,
    /// Its granted secrets.
    pub secrets: Arc<SecretValues>,
    /// The host's blob store, if it has one.
    pub blobs: Option<Arc<BlobStore>>,
}

impl PluginMedia {
    /// The media part of a plugin's capabilities (for the host's own
    /// downloads on its behalf).
    pub fn from_caps(caps: &super::Capabilities) -> Self {
        PluginMedia {
            plugin: caps.plugin.clone(),
            policy: caps.http.clone(),
            secrets: caps.secrets.clone(),
            blobs: caps.blobs.clone(),
        }
    }
}

/// Why an upload or download failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The host keeps no blobs (it has no data directory).
    #[error("media transfers are not enabled on this host (no data directory)")]
    Disabled,
    /// The blob store refused or lacks the blob.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The request is malformed (a bad URL, a field name with a line break).
    #[error("bad media request: {0}")]
    BadRequest(String),
    /// The plugin's policy refused the request (host not allowed, a secret
    /// outside its binding).
    #[error("denied: {0}")]
    Denied(String),
    /// The plugin's outbound rate limit refused the request.
    #[error("{0}")]
    RateLimited(String),
    /// The network or the peer failed.
    #[error("{0}")]
    Http(String),
    /// The platform answered a download with an error status.
    #[error("the download answered HTTP {0}")]
    Status(u16),
    /// The download took longer than allowed.
    #[error("the download took longer than {0} s")]
    Timeout(u64),
}

impl MediaError {
    fn from_http(e: HttpError) -> Self {
        let text = e.to_string();
        match e {
            HttpError::HttpRequestDenied => {
                MediaError::Denied("the destination is not among the plugin's allowed hosts".into())
            }
            HttpError::InternalError(Some(m)) if m.starts_with("denied: ") => {
                MediaError::Denied(m["denied: ".len()..].to_string())
            }
            HttpError::InternalError(Some(m)) if m.starts_with("rate-limited: ") => {
                MediaError::RateLimited(m)
            }
            _ => MediaError::Http(text),
        }
    }

    /// The guest's view of this error.
    fn to_wit(&self) -> WitError {
        match self {
            MediaError::Disabled => WitError::Unsupported(self.to_string()),
            MediaError::Blob(BlobError::Full { .. } | BlobError::Io { .. }) => {
                WitError::Transient(self.to_string())
            }
            MediaError::Blob(_)
            | MediaError::BadRequest(_)
            | MediaError::Denied(_)
            | MediaError::Status(_) => WitError::Permanent(self.to_string()),
            MediaError::RateLimited(m) => WitError::RateLimited(RateLimit {
                retry_after_ms: retry_after_ms(m).unwrap_or(1_000),
                message: m.clone(),
            }),
            MediaError::Http(_) | MediaError::Timeout(_) => WitError::Transient(self.to_string()),
        }
    }
}

/// `N` of a `rate-limited: retry after N ms: ...` refusal.
fn retry_after_ms(m: &str) -> Option<u64> {
    m.strip_prefix("rate-limited: retry after ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// Scheme, host and port of `uri` (as the secret bindings see them).
fn destination(uri: &::http::Uri) -> Result<(String, String, u16), MediaError> {
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(MediaError::BadRequest(format!(
                "`{uri}`: not an http(s) URL"
            )));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| MediaError::BadRequest(format!("`{uri}`: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((if tls { "https" } else { "http" }.to_string(), host, port))
}

/// A request with `headers` (names checked) and the `Host` header set.
fn request_builder(
    method: ::http::Method,
    uri: &::http::Uri,
    headers: &[(String, String)],
) -> Result<::http::request::Builder, MediaError> {
    let mut b = ::http::Request::builder().method(method).uri(uri.clone());
    if let Some(authority) = uri.authority() {
        b = b.header(::http::header::HOST, authority.as_str());
    }
    for (name, value) in headers {
        let name = ::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| MediaError::BadRequest(format!("bad header name `{name}`")))?;
        let value = ::http::HeaderValue::from_str(value)
            .map_err(|_| MediaError::BadRequest(format!("bad value for header `{name}`")))?;
        b = b.header(name, value);
    }
    Ok(b)
}

/// A form-data name or file name as a quoted string (no line breaks).
fn quoted(what: &str, s: &str) -> Result<String, MediaError> {
    if s.contains(['\r', '\n', '\0']) {
        return Err(MediaError::BadRequest(format!(
            "{what} `{}` contains a line break",
            s.escape_default()
        )));
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// Send the upload `request` describes for `media`'s plugin: multipart, or
/// the raw file as the body when its file field is empty.
pub async fn upload(
    media: &PluginMedia,
    request: &UploadRequest,
) -> Result<UploadResponse, MediaError> {
    let plugin = &*media.plugin;
    let blobs = media.blobs.as_ref().ok_or(MediaError::Disabled)?;
    let (path, info) = blobs.path(&request.blob)?;
    let uri: ::http::Uri = request
        .url
        .parse()
        .map_err(|_| MediaError::BadRequest(format!("`{}` is not a URL", request.url)))?;
    let (scheme, host, port) = destination(&uri)?;
    let dest = Destination {
        scheme: &scheme,
        host: &host,
        port,
    };

    // No file field: the file itself is the body (Matrix's content
    // repository, presigned upload URLs), typed by its MIME type.
    let raw = request.file_field.is_empty();
    if raw && !request.fields.is_empty() {
        return Err(MediaError::BadRequest(
            "form fields need a file field (an empty file field sends the file as the raw body)"
                .into(),
        ));
    }
    // The form, with placeholders filled where each secret is bound.
    let boundary = format!("pincer-{}", uuid::Uuid::new_v4().simple());
    let mut head = String::new();
    for (name, value) in &request.fields {
        let value = media
            .secrets
            .fill(value, &Place::FormField(name.clone()), &dest)
            .map_err(|r| MediaError::from_http(http::refuse(plugin, &media.policy, &r)))?
            .unwrap_or_else(|| value.clone());
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name={}\r\n\r\n{value}\r\n",
            quoted("field name", name)?
        ));
    }
    let mime = if request.mime_type.is_empty() {
        info.mime_type.clone()
    } else {
        request.mime_type.clone()
    };
    if mime.contains(['\r', '\n']) {
        return Err(MediaError::BadRequest(
            "the MIME type contains a line break".into(),
        ));
    }
    let (content_type, tail) = if raw {
        (mime, String::new())
    } else {
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name={}; filename={}\r\nContent-Type: {mime}\r\n\r\n",
            quoted("file field", &request.file_field)?,
            quoted("file name", &request.file_name)?,
        ));
        (
            format!("multipart/form-data; boundary={boundary}"),
            format!("\r\n--{boundary}--\r\n"),
        )
    };
    let length = head.len() as u64 + info.size + tail.len() as u64;

    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| MediaError::Blob(BlobError::NotFound(request.blob.clone())))?;
    let body = multipart_body(Bytes::from(head), file, Bytes::from(tail));
    let req = request_builder(::http::Method::POST, &uri, &request.headers)?
        .header(::http::header::CONTENT_TYPE, content_type)
        .header(::http::header::CONTENT_LENGTH, length)
        .body(body)
        .map_err(|e| MediaError::BadRequest(e.to_string()))?;
    let opened = http::open(
        plugin,
        &media.policy,
        &media.secrets,
        req,
        None,
        BodyScan::HostBuilt,
    )
    .await
    .map_err(MediaError::from_http)?;
    let cap = media.policy.limits.max_response_bytes;
    let (parts, incoming, conn) = opened.into_parts();
    let body = http::read_capped(incoming, cap)
        .await
        .map_err(MediaError::from_http)?
        .ok_or_else(|| MediaError::Http(format!("the answer is larger than {cap} bytes")))?;
    conn.release(&media.policy).await;
    let (parts, body) = http::scrub(&media.secrets, parts, body);
    tracing::info!(plugin, blob = %request.blob, bytes = info.size, status = parts.status.as_u16(), %host, "media upload sent");
    Ok(UploadResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    })
}

/// `head`, then the file in chunks, then `tail`, as a request body (an
/// empty head or tail is left out).
fn multipart_body(head: Bytes, file: tokio::fs::File, tail: Bytes) -> wasmtime_wasi_http::WasiBody {
    use futures::StreamExt;
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((
                Err(HttpError::InternalError(Some(format!(
                    "reading the blob: {e}"
                )))),
                None,
            )),
        }
    });
    let stream = futures::stream::once(async move { Ok(head) })
        .chain(chunks)
        .chain(futures::stream::once(async move { Ok(tail) }))
        // A raw upload has no head or tail: no empty frames.
        .filter(|r| std::future::ready(!matches!(r, Ok(b) if b.is_empty())))
        .map(|r| r.map(hyper::body::Frame::data));
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

/// What is known about an attachment before it is downloaded.
#[derive(Debug, Clone, Default)]
pub struct DownloadHints {
    /// MIME type the platform declared.
    pub mime_type: Option<String>,
    /// File name the platform declared.
    pub file_name: Option<String>,
}

/// Download what `request` describes (a GET, secrets filled where bound,
/// through `media`'s plugin policy) into a new blob, refusing it once it
/// passes the per-file cap, whatever size was declared.
pub async fn download(
    media: &PluginMedia,
    request: &DownloadRequest,
    hints: &DownloadHints,
) -> Result<BlobInfo, MediaError> {
    let blobs = media.blobs.as_ref().ok_or(MediaError::Disabled)?;
    let secs = blobs.limits().download_timeout_secs;
    tokio::time::timeout(
        std::time::Duration::from_secs(secs),
        download_inner(media, blobs, request, hints),
    )
    .await
    .map_err(|_| MediaError::Timeout(secs))?
}

async fn download_inner(
    media: &PluginMedia,
    blobs: &BlobStore,
    request: &DownloadRequest,
    hints: &DownloadHints,
) -> Result<BlobInfo, MediaError> {
    let plugin = &*media.plugin;
    let uri: ::http::Uri = request
        .url
        .parse()
        .map_err(|_| MediaError::BadRequest("the download URL is not a URL".into()))?;
    let req = request_builder(::http::Method::GET, &uri, &request.headers)?
        .body(http::full(Bytes::new()))
        .map_err(|e| MediaError::BadRequest(e.to_string()))?;
    let opened = http::open(
        plugin,
        &media.policy,
        &media.secrets,
        req,
        None,
        BodyScan::HostBuilt,
    )
    .await
    .map_err(MediaError::from_http)?;
    let status = opened.parts.status;
    if !status.is_success() {
        return Err(MediaError::Status(status.as_u16()));
    }
    let cap = blobs.limits().max_file_bytes();
    let declared = opened
        .parts
        .headers
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(BlobError::TooLarge { cap }.into());
    }
    let content_type = opened
        .parts
        .headers
        .get(::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let (_, mut body, conn) = opened.into_parts();
    let mut writer = blobs.writer().await?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| MediaError::Http(format!("reading the download: {e}")))?;
        if let Ok(data) = frame.into_data() {
            writer.write(&data).await?;
        }
    }
    conn.release(&media.policy).await;
    let mime = request
        .mime_type
        .clone()
        .or_else(|| hints.mime_type.clone())
        .or(content_type)
        .unwrap_or_else(|| "application/octet-stream".into());
    let name = request
        .file_name
        .clone()
        .or_else(|| hints.file_name.clone());
    Ok(writer.finish(&mime, name.as_deref()).await?)
}

impl Host for super::HostState {
    async fn upload(&mut self, request: UploadRequest) -> Result<UploadResponse, WitError> {
        upload(&self.media, &request).await.map_err(|e| {
            tracing::warn!(plugin = %self.log.plugin(), blob = %request.blob, error = %e, "media.upload failed");
            e.to_wit()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_retry_after() {
        assert_eq!(quoted("x", "a\"b").unwrap(), "\"a\\\"b\"");
        assert!(quoted("x", "a\r\nContent-Type: evil").is_err());
        assert_eq!(
            retry_after_ms("rate-limited: retry after 250 ms: plugin `x`"),
            Some(250)
        );
    }
}
