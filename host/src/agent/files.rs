//! Files that come with a run's message (inbound attachments the host
//! downloaded): how a provider sees them. A provider that takes image input
//! ([`super::Provider::takes_images`]) gets images as data (see
//! [`AgentFile::data_url`]); every other file, and every image for a
//! provider without image input, is described in the message text
//! ([`message_text`]) by kind, name, type and size.

use std::path::PathBuf;

use base64::Engine as _;

/// One file given to the agent with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFile {
    /// `image`, `audio`, `voice`, `video`, `document` or `sticker`.
    pub kind: String,
    /// MIME type.
    pub mime_type: String,
    /// File name, if known.
    pub file_name: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Where the host keeps it (a blob).
    pub path: PathBuf,
}

impl AgentFile {
    /// Whether a provider with image input gets this file as an image.
    pub fn is_image(&self) -> bool {
        self.kind == "image" && self.mime_type.starts_with("image/")
    }

    /// `[image: cat.png, image/png, 1234 bytes]`.
    pub fn describe(&self) -> String {
        format!(
            "[{}: {}, {}, {} bytes]",
            self.kind,
            self.file_name.as_deref().unwrap_or("unnamed"),
            self.mime_type,
            self.size
        )
    }

    /// The file as a `data:` URL (for `image_url` content parts).
    pub async fn data_url(&self) -> std::io::Result<String> {
        let bytes = tokio::fs::read(&self.path).await?;
        Ok(format!(
            "data:{};base64,{}",
            self.mime_type,
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }
}

/// `message` followed by a description of every file the provider does not
/// get as data (all of them when `images_inline` is false), one per line.
pub fn message_text(message: &str, files: &[AgentFile], images_inline: bool) -> String {
    let described: Vec<String> = files
        .iter()
        .filter(|f| !(images_inline && f.is_image()))
        .map(AgentFile::describe)
        .collect();
    if described.is_empty() {
        return message.to_string();
    }
    let mut out = message.to_string();
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&described.join("\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(kind: &str, mime: &str) -> AgentFile {
        AgentFile {
            kind: kind.into(),
            mime_type: mime.into(),
            file_name: Some("f".into()),
            size: 3,
            path: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn describes_what_is_not_inline() {
        let files = [
            file("image", "image/png"),
            file("document", "application/pdf"),
        ];
        assert_eq!(
            message_text("hi", &files, true),
            "hi\n[document: f, application/pdf, 3 bytes]"
        );
        assert_eq!(
            message_text("", &files, false),
            "[image: f, image/png, 3 bytes]\n[document: f, application/pdf, 3 bytes]"
        );
        assert_eq!(message_text("hi", &[], false), "hi");
    }
}
