//! Media factor: `pincer:plugin/media`, multipart uploads of host-held blobs
//! (so a guest never holds a file or a token).
//!
//! Not wired to a blob store yet: `upload` answers `error.unsupported`, and
//! channels declare `attachments = false` until it is.

use crate::plugins::bindings::WitError;
use crate::plugins::bindings::v02::channel::pincer::plugin::media::{
    Host, UploadRequest, UploadResponse,
};

impl Host for super::HostState {
    async fn upload(&mut self, request: UploadRequest) -> Result<UploadResponse, WitError> {
        tracing::warn!(plugin = %self.log.plugin(), blob = %request.blob, "media.upload called but the blob store is not enabled");
        Err(WitError::Unsupported(
            "media uploads are not enabled on this host".into(),
        ))
    }
}
