//! `POST /v1/channels/{name}/send[?accountId=]`: an operator (or a program
//! holding the token) sends a message with files through a channel (one
//! of its accounts: default `default`). Routed in
//! [`super::http_api`] behind the bearer check.
//!
//! The body is JSON (the API's only content type, see
//! [`super::http_guard`]): `{conversation, text?, thread?, replyTo?,
//! files?: [{fileName, mimeType, kind?, caption?, dataBase64}]}`. Each file
//! is stored as a blob (capped at `[sandbox.media] max_attachment_mb`) and
//! handed to the channel's `send` as an `outbound-attachment`; the plugin
//! uploads it with `media.upload` and never holds the bytes. The whole
//! request may be at most one capped file in base64 plus 1 MiB.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::Gateway;
use crate::blobs::BlobError;
use crate::channels::ChannelError;
use crate::plugins::bindings::{AttachmentKind, OutboundAttachment, OutboundMessage, TextFormat};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendBody {
    /// Conversation (chat) id on the platform.
    pub conversation: String,
    /// Text (Markdown); may be empty when files are sent.
    #[serde(default)]
    pub text: String,
    /// Thread or topic.
    pub thread: Option<String>,
    /// Platform message id to reply to.
    pub reply_to: Option<String>,
    /// Files to send.
    #[serde(default)]
    pub files: Vec<SendFile>,
}

/// One file of a [`SendBody`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendFile {
    /// File name shown to the recipient.
    pub file_name: String,
    /// MIME type.
    pub mime_type: String,
    /// `image`, `audio`, `voice`, `video`, `document` or `sticker`
    /// (default: from the MIME type, else `document`).
    pub kind: Option<String>,
    /// Caption.
    pub caption: Option<String>,
    /// The bytes, base64 (standard alphabet, padded).
    pub data_base64: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"message": message.into()}}))).into_response()
}

/// The attachment kind named `kind`, or guessed from `mime`.
fn kind_of(kind: Option<&str>, mime: &str) -> Result<AttachmentKind, String> {
    Ok(match kind {
        Some("image") => AttachmentKind::Image,
        Some("audio") => AttachmentKind::Audio,
        Some("voice") => AttachmentKind::Voice,
        Some("video") => AttachmentKind::Video,
        Some("document") => AttachmentKind::Document,
        Some("sticker") => AttachmentKind::Sticker,
        Some(other) => return Err(format!("unknown file kind `{other}`")),
        None if mime.starts_with("image/") => AttachmentKind::Image,
        None if mime.starts_with("audio/") => AttachmentKind::Audio,
        None if mime.starts_with("video/") => AttachmentKind::Video,
        None => AttachmentKind::Document,
    })
}

/// The handler.
pub async fn send(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(q): Query<super::http_api::AccountQuery>,
    req: Request,
) -> Response {
    let name = match super::methods::plugins::account_key(&name, q.account_id.as_deref()) {
        Ok(key) => key,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.message),
    };
    let Some(blobs) = gw.runtime.plugins.blobs().cloned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway keeps no files (no data directory)",
        );
    };
    if gw.runtime.channels.get(&name).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no channel named `{name}`"));
    }
    let cap = blobs.limits().max_file_bytes();
    let limit = usize::try_from(cap.saturating_mul(4) / 3 + (1 << 20)).unwrap_or(usize::MAX);
    let bytes = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request is larger than {limit} bytes"),
            );
        }
    };
    let body: SendBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    if body.conversation.is_empty() {
        return error(StatusCode::BAD_REQUEST, "`conversation` is empty");
    }
    let mut attachments = Vec::with_capacity(body.files.len());
    for (i, f) in body.files.iter().enumerate() {
        let kind = match kind_of(f.kind.as_deref(), &f.mime_type) {
            Ok(k) => k,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("files[{i}]: {e}")),
        };
        let data = match base64::engine::general_purpose::STANDARD.decode(&f.data_base64) {
            Ok(d) => d,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("files[{i}]: dataBase64 is not base64: {e}"),
                );
            }
        };
        let info = match blobs.put(&data, &f.mime_type, Some(&f.file_name)).await {
            Ok(info) => info,
            Err(e @ BlobError::TooLarge { .. }) => {
                return error(StatusCode::PAYLOAD_TOO_LARGE, format!("files[{i}]: {e}"));
            }
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "storing a file to send");
                return error(StatusCode::SERVICE_UNAVAILABLE, format!("files[{i}]: {e}"));
            }
        };
        attachments.push(OutboundAttachment {
            kind,
            blob: info.handle,
            file_name: f.file_name.clone(),
            mime_type: info.mime_type,
            size: info.size,
            caption: f.caption.clone(),
        });
    }
    let blob_handles: Vec<String> = attachments.iter().map(|a| a.blob.clone()).collect();
    let message = OutboundMessage {
        conversation: body.conversation,
        thread: body.thread,
        text: body.text,
        format: TextFormat::Markdown,
        reply_to: body.reply_to,
        attachments,
    };
    match gw.runtime.channels.send(&name, message).await {
        Ok(id) => {
            tracing::info!(channel = %name, files = blob_handles.len(), "operator send");
            Json(json!({"messageId": id, "blobs": blob_handles})).into_response()
        }
        Err(e) => {
            // The files were not sent: do not keep them.
            for h in &blob_handles {
                blobs.remove(h);
            }
            let status = match &e {
                ChannelError::Unknown(_) => StatusCode::NOT_FOUND,
                ChannelError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            error(status, e.to_string())
        }
    }
}
