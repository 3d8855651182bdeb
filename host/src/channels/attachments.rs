//! Inbound attachments: turning the descriptors a channel reported with a
//! message into files the agent can read.
//!
//! For each attachment the host asks the channel plugin for a download
//! request (`fetch-attachment(handle)`, e.g. Telegram `getFile`), then
//! downloads it itself through the plugin's outbound policy with its secrets
//! filled in ([`media::download`]) into the blob store, capped at
//! `[sandbox.media] max_attachment_mb` while streaming. One that cannot be
//! had (too large, declared or actual; the plugin or platform failing; no
//! blob store) is left out and the message goes on with a note saying why,
//! so a bad file never loses the message.
//!
//! The inbound path records what came with a message ([`pending`]) in its
//! run; the run resolves it ([`resolve`]) when it starts, so downloads
//! keep the session's order and never hold up the router.

use serde::Serialize;

use super::{ChannelError, ChannelManager, Inbound};
use crate::agent::files::AgentFile;
use crate::blobs::BlobError;
use crate::plugins::bindings::{Attachment, AttachmentKind};
use crate::plugins::host::media::{self, DownloadHints, MediaError, PluginMedia};

/// An attachment descriptor as the channel reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundAttachment {
    /// `image`, `audio`, `voice`, `video`, `document` or `sticker`.
    pub kind: String,
    /// MIME type, if the platform said.
    pub mime_type: Option<String>,
    /// Size in bytes, if the platform said.
    pub size: Option<u64>,
    /// File name, if the platform said.
    pub file_name: Option<String>,
    /// The platform's handle (for `fetch-attachment`).
    pub handle: String,
}

impl InboundAttachment {
    /// From the contract's record.
    pub fn from_wit(a: Attachment) -> Self {
        InboundAttachment {
            kind: kind_name(a.kind).into(),
            mime_type: a.mime_type,
            size: a.size,
            file_name: a.file_name,
            handle: a.handle,
        }
    }

    fn shown(&self) -> String {
        match &self.file_name {
            Some(n) => format!("{} `{n}`", self.kind),
            None => format!("the {}", self.kind),
        }
    }
}

/// The contract's attachment kind as text.
pub fn kind_name(kind: AttachmentKind) -> &'static str {
    match kind {
        AttachmentKind::Image => "image",
        AttachmentKind::Audio => "audio",
        AttachmentKind::Voice => "voice",
        AttachmentKind::Video => "video",
        AttachmentKind::Document => "document",
        AttachmentKind::Sticker => "sticker",
    }
}

/// The attachments of one inbound message, to be resolved when its run
/// starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// The channel the message came in on.
    pub channel: String,
    /// What it carried.
    pub attachments: Vec<InboundAttachment>,
}

/// What message `msg` carried, for its run.
pub fn pending(msg: &Inbound) -> Pending {
    Pending {
        channel: msg.channel.clone(),
        attachments: msg.attachments.clone(),
    }
}

/// The files of a message, and a note per attachment that could not be had.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Downloaded files, in the message's order.
    pub files: Vec<AgentFile>,
    /// Why the others were left out (one line each).
    pub notes: Vec<String>,
}

impl Resolved {
    /// `message` followed by the notes, one per line.
    pub fn message_with_notes(&self, message: &str) -> String {
        if self.notes.is_empty() {
            return message.to_string();
        }
        let mut out = message.to_string();
        for note in &self.notes {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(note);
        }
        out
    }
}

/// Why one attachment was not downloaded.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("it is larger than the {cap} byte limit")]
    TooLarge { cap: u64 },
    #[error("{0}")]
    Channel(#[from] ChannelError),
    #[error("{0}")]
    Media(MediaError),
}

impl From<MediaError> for FetchError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Blob(BlobError::TooLarge { cap }) => FetchError::TooLarge { cap },
            e => FetchError::Media(e),
        }
    }
}

/// Download every attachment of `pending` (in order, one at a time).
pub async fn resolve(channels: &ChannelManager, pending: &Pending) -> Resolved {
    let mut out = Resolved::default();
    for a in &pending.attachments {
        match fetch(channels, &pending.channel, a).await {
            Ok(file) => {
                tracing::info!(channel = %pending.channel, kind = %a.kind, bytes = file.size, "attachment downloaded");
                out.files.push(file);
            }
            Err(e) => {
                tracing::warn!(channel = %pending.channel, kind = %a.kind, handle = %a.handle, error = %e, "attachment not downloaded");
                out.notes
                    .push(format!("[{} could not be received: {e}]", a.shown()));
            }
        }
    }
    out
}

async fn fetch(
    channels: &ChannelManager,
    channel: &str,
    a: &InboundAttachment,
) -> Result<AgentFile, FetchError> {
    let blobs = channels
        .registry()
        .blobs()
        .ok_or(FetchError::Media(MediaError::Disabled))?
        .clone();
    let cap = blobs.limits().max_file_bytes();
    if a.size.is_some_and(|s| s > cap) {
        // Declared too large: not even asked for.
        return Err(FetchError::TooLarge { cap });
    }
    let runner = channels
        .get(channel)
        .ok_or_else(|| ChannelError::Unknown(channel.to_string()))?;
    let inst = runner.checkout().await?;
    // The account's capabilities: its own credentials fill the download.
    let media = PluginMedia::from_caps(inst.caps());
    let registry = channels.registry().clone();
    let handle = a.handle.clone();
    let (inst, r) = registry
        .run_call("fetch-attachment", async move {
            let mut inst = inst;
            let r = inst.fetch_attachment(&handle).await;
            (inst, r)
        })
        .await
        .map_err(|error| ChannelError::Call {
            channel: channel.to_string(),
            error,
        })?;
    registry.record_call(
        runner.plugin(),
        r.as_ref().is_err_and(|e| e.poisons_instance()),
    );
    runner.checkin(inst);
    let request = r.map_err(|error| ChannelError::Call {
        channel: channel.to_string(),
        error,
    })?;
    let hints = DownloadHints {
        mime_type: a.mime_type.clone(),
        file_name: a.file_name.clone(),
    };
    let info = media::download(&media, &request, &hints).await?;
    let (path, _) = blobs.path(&info.handle).map_err(MediaError::from)?;
    Ok(AgentFile {
        kind: a.kind.clone(),
        mime_type: info.mime_type,
        file_name: info.file_name,
        size: info.size,
        path,
    })
}
