//! The blob store: files the host holds for channels and agents (inbound
//! attachments it downloaded, outbound files it will upload), so a guest
//! only ever sees a handle and never holds a large body.
//!
//! Blobs are files under `<data_dir>/blobs/`, named by a random handle (32
//! hex digits, never derived from anything a peer sent) with a JSON sidecar
//! for the MIME type and file name. Every blob is capped
//! ([`MediaLimits::max_attachment_mb`]) while it is written, the store as a
//! whole is capped ([`MediaLimits::max_total_mb`]), and blobs older than
//! [`MediaLimits::blob_ttl_secs`] are removed (when the runtime installs the
//! [`BlobKeeper`], and at most once a minute while blobs are written),
//! except those the keeper names as still in use (files of replies waiting
//! in the channel outbox).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// Attachment and blob limits (`[sandbox.media]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaLimits {
    /// Largest single file (an inbound attachment, an upload), in MiB
    /// (default 20).
    pub max_attachment_mb: u64,
    /// Most bytes all blobs together may hold, in MiB (default 1024).
    pub max_total_mb: u64,
    /// Blobs are removed this long after they were written, in seconds
    /// (default 86 400: one day).
    pub blob_ttl_secs: u64,
    /// Longest time one attachment download may take, in seconds (default 120).
    pub download_timeout_secs: u64,
}

impl Default for MediaLimits {
    fn default() -> Self {
        MediaLimits {
            max_attachment_mb: 20,
            max_total_mb: 1024,
            blob_ttl_secs: 86_400,
            download_timeout_secs: 120,
        }
    }
}

impl MediaLimits {
    /// [`max_attachment_mb`](Self::max_attachment_mb) in bytes.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_attachment_mb.saturating_mul(1 << 20)
    }

    /// [`max_total_mb`](Self::max_total_mb) in bytes.
    pub fn max_total_bytes(&self) -> u64 {
        self.max_total_mb.saturating_mul(1 << 20)
    }
}

/// What the store knows about one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// The handle (32 hex digits).
    pub handle: String,
    /// Size in bytes.
    pub size: u64,
    /// MIME type (`application/octet-stream` when unknown).
    pub mime_type: String,
    /// File name, if one is known.
    pub file_name: Option<String>,
}

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The file is larger than the per-file cap.
    #[error("file is larger than the {cap} byte limit")]
    TooLarge {
        /// The cap in bytes.
        cap: u64,
    },
    /// The store is full.
    #[error("the blob store is full ({cap} bytes)")]
    Full {
        /// The total cap in bytes.
        cap: u64,
    },
    /// No blob has this handle (or it expired).
    #[error("no blob `{0}`")]
    NotFound(String),
    /// The file system failed.
    #[error("blob store I/O ({context}): {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> BlobError {
    move |source| BlobError::Io { context, source }
}

/// Names the blobs still in use, which no sweep removes however old they
/// are (the channel outbox's waiting attachments).
pub type BlobKeeper = std::sync::Arc<dyn Fn() -> Result<Vec<String>, String> + Send + Sync>;

/// Blobs under one directory.
pub struct BlobStore {
    dir: PathBuf,
    limits: MediaLimits,
    /// Bytes held (reserved while written).
    used: AtomicU64,
    last_sweep: Mutex<Instant>,
    keeper: Mutex<Option<BlobKeeper>>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("dir", &self.dir)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Sweep for expired blobs at most this often while writing.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl BlobStore {
    /// Open (creating) the store in `dir`, removing leftovers of
    /// interrupted writes. Expired blobs go once a keeper is installed
    /// ([`keep_in_use`](Self::keep_in_use)) or at the first sweep while
    /// writing.
    pub fn open(dir: &Path, limits: MediaLimits) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir).map_err(io("creating the blob directory"))?;
        let store = BlobStore {
            dir: dir.to_path_buf(),
            limits,
            used: AtomicU64::new(0),
            last_sweep: Mutex::new(Instant::now()),
            keeper: Mutex::new(None),
        };
        let used = store.sweep_now(true, false)?;
        store.used.store(used, Ordering::Relaxed);
        Ok(store)
    }

    /// Never remove the blobs `keeper` names (asked at every sweep), and
    /// sweep expired blobs now.
    pub fn keep_in_use(&self, keeper: BlobKeeper) {
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(keeper);
        *self.last_sweep.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.sweep_logged();
    }

    /// The limits in force.
    pub fn limits(&self) -> &MediaLimits {
        &self.limits
    }

    /// Bytes held now.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn data_path(&self, handle: &str) -> PathBuf {
        self.dir.join(format!("{handle}.bin"))
    }

    fn meta_path(&self, handle: &str) -> PathBuf {
        self.dir.join(format!("{handle}.json"))
    }

    /// Remove partial files (all of them when opening; later only expired
    /// ones, since others may be in the middle of a write) and, with
    /// `expire`, expired blobs the keeper does not name; returns the bytes
    /// of finished blobs left.
    fn sweep_now(&self, opening: bool, expire: bool) -> Result<u64, BlobError> {
        let ttl = Duration::from_secs(self.limits.blob_ttl_secs);
        let now = SystemTime::now();
        let keeper = self
            .keeper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let in_use: std::collections::HashSet<String> = match keeper.map(|k| k()) {
            None => Default::default(),
            Some(Ok(list)) => list.into_iter().collect(),
            Some(Err(e)) => {
                // Unsure what is in use: remove nothing but partials.
                tracing::warn!(error = %e, "asking which blobs are in use failed; expiry skipped");
                return self.sweep_now(opening, false);
            }
        };
        let mut left = 0u64;
        for entry in std::fs::read_dir(&self.dir).map_err(io("listing blobs"))? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            let expired = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > ttl);
            let partial = name.ends_with(".part");
            let handle = name.split('.').next().unwrap_or_default();
            let expired = expired && (partial || (expire && !in_use.contains(handle)));
            if expired || (opening && partial) {
                let _ = std::fs::remove_file(&path);
            } else if name.ends_with(".bin") {
                left += meta.len();
            }
        }
        Ok(left)
    }

    fn maybe_sweep(&self) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < SWEEP_EVERY {
            return;
        }
        *last = Instant::now();
        drop(last);
        self.sweep_logged();
    }

    fn sweep_logged(&self) {
        match self.sweep_now(false, true) {
            Ok(left) => {
                // Writes in progress hold reservations the sweep cannot see;
                // only ever lower the count to what is on disk.
                let _ = self
                    .used
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.min(left)));
            }
            Err(e) => tracing::warn!(error = %e, "sweeping expired blobs"),
        }
    }

    /// Start writing a new blob.
    pub async fn writer(&self) -> Result<BlobWriter<'_>, BlobError> {
        self.maybe_sweep();
        let handle = uuid::Uuid::new_v4().simple().to_string();
        let part = self.dir.join(format!("{handle}.part"));
        let file = tokio::fs::File::create(&part)
            .await
            .map_err(io("creating a blob"))?;
        Ok(BlobWriter {
            store: self,
            handle,
            part,
            file: Some(file),
            written: 0,
        })
    }

    /// Store `bytes` as a new blob.
    pub async fn put(
        &self,
        bytes: &[u8],
        mime_type: &str,
        file_name: Option<&str>,
    ) -> Result<BlobInfo, BlobError> {
        let mut w = self.writer().await?;
        w.write(bytes).await?;
        w.finish(mime_type, file_name).await
    }

    /// What the store knows about blob `handle`.
    pub fn info(&self, handle: &str) -> Result<BlobInfo, BlobError> {
        if !valid_handle(handle) {
            return Err(BlobError::NotFound(handle.to_string()));
        }
        let text = std::fs::read(self.meta_path(handle))
            .map_err(|_| BlobError::NotFound(handle.to_string()))?;
        serde_json::from_slice(&text).map_err(|_| BlobError::NotFound(handle.to_string()))
    }

    /// The file holding blob `handle`, with its description.
    pub fn path(&self, handle: &str) -> Result<(PathBuf, BlobInfo), BlobError> {
        let info = self.info(handle)?;
        let path = self.data_path(handle);
        if !path.exists() {
            return Err(BlobError::NotFound(handle.to_string()));
        }
        Ok((path, info))
    }

    /// The whole content of blob `handle`.
    pub async fn read(&self, handle: &str) -> Result<Vec<u8>, BlobError> {
        let (path, _) = self.path(handle)?;
        tokio::fs::read(path)
            .await
            .map_err(|_| BlobError::NotFound(handle.to_string()))
    }

    /// Remove blob `handle` (a missing one is not an error).
    pub fn remove(&self, handle: &str) {
        if !valid_handle(handle) {
            return;
        }
        if let Ok(meta) = std::fs::metadata(self.data_path(handle)) {
            let _ = std::fs::remove_file(self.data_path(handle));
            self.release(meta.len());
        }
        let _ = std::fs::remove_file(self.meta_path(handle));
    }

    fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    fn reserve(&self, n: u64) -> Result<(), BlobError> {
        let cap = self.limits.max_total_bytes();
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(n).filter(|t| *t <= cap)
            })
            .map(|_| ())
            .map_err(|_| BlobError::Full { cap })
    }
}

/// Whether `handle` looks like one the store made (so it is a safe file name).
pub fn valid_handle(handle: &str) -> bool {
    handle.len() == 32 && handle.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A blob being written; dropped unfinished, it is removed.
#[derive(Debug)]
pub struct BlobWriter<'a> {
    store: &'a BlobStore,
    handle: String,
    part: PathBuf,
    file: Option<tokio::fs::File>,
    written: u64,
}

impl BlobWriter<'_> {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Append `bytes`, refusing (before writing them) once the blob would
    /// pass the per-file cap or the store its total cap.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        let n = bytes.len() as u64;
        let cap = self.store.limits.max_file_bytes();
        if self.written + n > cap {
            return Err(BlobError::TooLarge { cap });
        }
        self.store.reserve(n)?;
        self.written += n;
        let Some(file) = self.file.as_mut() else {
            return Err(BlobError::NotFound(self.handle.clone()));
        };
        file.write_all(bytes).await.map_err(io("writing a blob"))
    }

    /// Finish the blob with its description.
    pub async fn finish(
        mut self,
        mime_type: &str,
        file_name: Option<&str>,
    ) -> Result<BlobInfo, BlobError> {
        let Some(mut file) = self.file.take() else {
            return Err(BlobError::NotFound(self.handle.clone()));
        };
        file.flush().await.map_err(io("writing a blob"))?;
        drop(file);
        let info = BlobInfo {
            handle: self.handle.clone(),
            size: self.written,
            mime_type: if mime_type.is_empty() {
                "application/octet-stream".into()
            } else {
                mime_type.to_string()
            },
            file_name: file_name.map(str::to_string),
        };
        let meta = serde_json::to_vec(&info).unwrap_or_default();
        tokio::fs::write(self.store.meta_path(&self.handle), meta)
            .await
            .map_err(io("writing a blob's description"))?;
        tokio::fs::rename(&self.part, self.store.data_path(&self.handle))
            .await
            .map_err(io("finishing a blob"))?;
        self.written = 0; // now owned by the store
        Ok(info)
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if self.file.is_some() || self.written > 0 {
            let _ = std::fs::remove_file(&self.part);
            self.store.release(self.written);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(file_mb: u64, total_mb: u64) -> MediaLimits {
        MediaLimits {
            max_attachment_mb: file_mb,
            max_total_mb: total_mb,
            blob_ttl_secs: 3600,
            download_timeout_secs: 10,
        }
    }

    #[tokio::test]
    async fn put_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), limits(1, 2)).unwrap();
        let info = store
            .put(b"hello", "text/plain", Some("a.txt"))
            .await
            .unwrap();
        assert!(valid_handle(&info.handle));
        assert_eq!(info.size, 5);
        assert_eq!(store.read(&info.handle).await.unwrap(), b"hello");
        assert_eq!(store.info(&info.handle).unwrap(), info);
        assert_eq!(store.used_bytes(), 5);
        store.remove(&info.handle);
        assert!(matches!(
            store.read(&info.handle).await,
            Err(BlobError::NotFound(_))
        ));
        assert_eq!(store.used_bytes(), 0);
        assert!(matches!(
            store.info("../../etc/passwd"),
            Err(BlobError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn caps_per_file_and_total() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), limits(1, 2)).unwrap();
        let mb = vec![7u8; 1 << 20];
        let mut w = store.writer().await.unwrap();
        w.write(&mb).await.unwrap();
        assert!(matches!(
            w.write(b"x").await,
            Err(BlobError::TooLarge { .. })
        ));
        drop(w);
        assert_eq!(store.used_bytes(), 0, "an abandoned write is released");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        store.put(&mb, "", None).await.unwrap();
        store.put(&mb, "", None).await.unwrap();
        assert!(matches!(
            store.put(b"x", "", None).await,
            Err(BlobError::Full { .. })
        ));
        // Reopening counts what is on disk.
        let again = BlobStore::open(dir.path(), limits(1, 2)).unwrap();
        assert_eq!(again.used_bytes(), 2 << 20);
    }

    #[tokio::test]
    async fn expired_blobs_go_unless_the_keeper_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = limits(1, 2);
        l.blob_ttl_secs = 0;
        let store = BlobStore::open(dir.path(), l).unwrap();
        let kept = store.put(b"kept", "text/plain", None).await.unwrap();
        let gone = store.put(b"gone", "text/plain", None).await.unwrap();
        // Older than the (zero) time to live.
        std::thread::sleep(Duration::from_millis(20));
        let reopened = BlobStore::open(dir.path(), l).unwrap();
        assert!(
            reopened.info(&gone.handle).is_ok(),
            "no expiry before a keeper"
        );
        let handle = kept.handle.clone();
        reopened.keep_in_use(std::sync::Arc::new(move || Ok(vec![handle.clone()])));
        assert_eq!(reopened.read(&kept.handle).await.unwrap(), b"kept");
        assert!(
            reopened.info(&gone.handle).is_err(),
            "expired and not in use"
        );
        assert_eq!(reopened.used_bytes(), 4);
    }
}
