//! `multipart/form-data` for the fakes: parsing an uploaded body into parts
//! (with `multer`, the parser axum's own extractor uses) and building one
//! ([`Form`]) for tests and benchmarks that upload the way a plugin does.

use bytes::Bytes;

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The form field name (`name=` of `Content-Disposition`).
    pub name: String,
    /// The file name (`filename=`), for file parts.
    pub file_name: Option<String>,
    /// The part's `Content-Type`, if it had one.
    pub content_type: Option<String>,
    /// The part's bytes.
    pub data: Bytes,
}

impl Part {
    /// Whether this is a file part (it has a file name).
    pub fn is_file(&self) -> bool {
        self.file_name.is_some()
    }

    /// The bytes as text (lossy), for text fields.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// Why a multipart body could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// The `Content-Type` has no usable `boundary`.
    #[error("multipart content type without a boundary: {0}")]
    Boundary(String),
    /// The body does not follow the format.
    #[error("malformed multipart body: {0}")]
    Body(String),
}

/// Parse `body` sent with `content_type` (`multipart/form-data;
/// boundary=...`) into its parts, in order.
pub async fn parse(content_type: &str, body: Bytes) -> Result<Vec<Part>, MultipartError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| MultipartError::Boundary(e.to_string()))?;
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| MultipartError::Body(e.to_string()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(|m| m.to_string());
        let data = field
            .bytes()
            .await
            .map_err(|e| MultipartError::Body(e.to_string()))?;
        parts.push(Part {
            name,
            file_name,
            content_type,
            data,
        });
    }
    Ok(parts)
}

/// A `multipart/form-data` body under construction.
#[derive(Debug, Clone)]
pub struct Form {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Form {
    fn default() -> Self {
        Form::new()
    }
}

impl Form {
    /// An empty form with a random boundary.
    pub fn new() -> Form {
        Form {
            boundary: format!("pincer-fake-{}", uuid::Uuid::new_v4().simple()),
            body: Vec::new(),
        }
    }

    /// Add a text field.
    pub fn text(mut self, name: &str, value: &str) -> Form {
        self.head(name, None, None);
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// Add a file part.
    pub fn file(mut self, name: &str, file_name: &str, mime: &str, data: &[u8]) -> Form {
        self.head(name, Some(file_name), Some(mime));
        self.body.extend_from_slice(data);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    fn head(&mut self, name: &str, file_name: Option<&str>, mime: Option<&str>) {
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        self.body
            .extend_from_slice(format!("--{}\r\n", self.boundary).as_bytes());
        let mut disp = format!("Content-Disposition: form-data; name=\"{}\"", quote(name));
        if let Some(f) = file_name {
            disp.push_str(&format!("; filename=\"{}\"", quote(f)));
        }
        self.body.extend_from_slice(disp.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        if let Some(m) = mime {
            self.body
                .extend_from_slice(format!("Content-Type: {m}\r\n").as_bytes());
        }
        self.body.extend_from_slice(b"\r\n");
    }

    /// The `Content-Type` header value and the body.
    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            self.body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_built_form_parses_back_into_its_parts() {
        let (ct, body) = Form::new()
            .text("chat_id", "42")
            .file("document", "a \"b\".txt", "text/plain", b"\x00bytes\r\n--x")
            .finish();
        let parts = parse(&ct, Bytes::from(body)).await.expect("parse");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "chat_id");
        assert_eq!(parts[0].text(), "42");
        assert!(!parts[0].is_file());
        assert_eq!(parts[1].file_name.as_deref(), Some("a \"b\".txt"));
        assert_eq!(parts[1].content_type.as_deref(), Some("text/plain"));
        assert_eq!(&parts[1].data[..], b"\x00bytes\r\n--x");
    }

    #[tokio::test]
    async fn a_truncated_body_is_an_error() {
        let (ct, body) = Form::new().text("a", "b").finish();
        let err = parse(&ct, Bytes::from(body[..10].to_vec())).await;
        assert!(err.is_err());
        assert!(parse("multipart/form-data", Bytes::new()).await.is_err());
    }
}
