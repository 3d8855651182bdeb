//! Files the host holds: multipart uploads of outbound attachments.
//!
//! An outbound message's attachments arrive as [`OutboundAttachment`]s whose
//! `blob` is a handle to bytes the host keeps. To send one, describe a
//! `multipart/form-data` POST with [`Upload`]; the host streams the blob into
//! it, fills secret placeholders (in the URL, headers and form fields, where
//! the manifest binds them) and returns the platform's answer scrubbed of
//! secret values. The guest never holds the file or the token.
//!
//! ```no_run
//! use pincer_sdk::{Error, OutboundAttachment, media, secrets};
//!
//! fn send_document(chat: &str, file: &OutboundAttachment) -> Result<String, Error> {
//!     let url = format!(
//!         "https://api.telegram.org/bot{}/sendDocument",
//!         secrets::placeholder("bot_token")
//!     );
//!     let resp = media::Upload::new(&url, "document", file)
//!         .field("chat_id", chat)
//!         .send()?
//!         .error_for_status()?;
//!     let v: serde_json::Value = resp.json()?;
//!     Ok(v["result"]["message_id"].to_string())
//! }
//! ```

use crate::bindings::host::media;
use crate::{Error, OutboundAttachment, http};

pub use crate::bindings::host::media::{UploadRequest, UploadResponse};

/// Send one multipart upload exactly as `request` describes it; the answer
/// comes back as an [`http::Response`] (status, headers, capped and scrubbed
/// body). Most plugins build the request with [`Upload`] instead.
pub fn upload(request: &UploadRequest) -> Result<http::Response, Error> {
    let resp = media::upload(request)?;
    Ok(http::Response {
        status: resp.status,
        headers: resp.headers,
        body: resp.body,
    })
}

/// A multipart upload under construction: one file part plus form fields.
#[derive(Debug, Clone)]
pub struct Upload {
    request: UploadRequest,
}

impl Upload {
    /// An upload of `attachment`'s blob to `url` (an allowed host; may carry
    /// secret placeholders), in the form field `file_field` (`document`,
    /// `photo`, `file`, ...), with the attachment's file name and MIME type.
    /// If the attachment has a caption, add it yourself as the platform's
    /// field ([`Upload::field`]).
    pub fn new(url: &str, file_field: &str, attachment: &OutboundAttachment) -> Self {
        Upload {
            request: UploadRequest {
                url: url.to_string(),
                headers: Vec::new(),
                fields: Vec::new(),
                file_field: file_field.to_string(),
                blob: attachment.blob.clone(),
                file_name: attachment.file_name.clone(),
                mime_type: attachment.mime_type.clone(),
            },
        }
    }
    /// An upload of `attachment`'s blob to `url` as the raw request body
    /// (no form; `content-type` is the attachment's MIME type), as Matrix's
    /// content repository and presigned upload URLs take files. Form fields
    /// cannot be added to it.
    pub fn raw(url: &str, attachment: &OutboundAttachment) -> Self {
        Self::new(url, "", attachment)
    }
    /// Add a header (may carry a secret placeholder where the manifest binds it).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request
            .headers
            .push((name.to_string(), value.to_string()));
        self
    }
    /// Add an ordinary form field, sent before the file part in the order
    /// added (may carry a secret placeholder where the manifest binds it).
    pub fn field(mut self, name: &str, value: &str) -> Self {
        self.request
            .fields
            .push((name.to_string(), value.to_string()));
        self
    }
    /// Send the file under another name.
    pub fn file_name(mut self, name: &str) -> Self {
        self.request.file_name = name.to_string();
        self
    }
    /// Send the part with another MIME type.
    pub fn mime_type(mut self, mime_type: &str) -> Self {
        self.request.mime_type = mime_type.to_string();
        self
    }
    /// The request as the host will receive it.
    pub fn request(&self) -> &UploadRequest {
        &self.request
    }
    /// Have the host send the upload.
    pub fn send(self) -> Result<http::Response, Error> {
        upload(&self.request)
    }
}
