//! The `/data` factor: a plugin's private directory, preopened only when its
//! manifest asks for a size (`data_mb`) that the operator grants, with that
//! size enforced on every write.
//!
//! WASI's own filesystem functions do the work; this module shadows the
//! three that write file contents (`descriptor.write`, `write-via-stream`,
//! `append-via-stream`) in the linker so each write first takes its bytes
//! from the plugin's [`DataBudget`]. Bytes written are counted (overwrites
//! too); when the count reaches the grant the directory is measured again
//! (at most once a second) and writes past the real usage fail with
//! `insufficient-space`, so the plugin's directory never grows past its grant.
//! Every directory entry costs [`ENTRY_BYTES`] of the grant (charged when a
//! file or directory is created), so floods of empty files are bounded too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::HostState;

/// The `wasi:filesystem/types` instance the shadowed functions live in.
const FS_TYPES: &str = "wasi:filesystem/types@0.2.12";
/// Shortest time between two measurements of a full directory.
const REMEASURE: Duration = Duration::from_secs(1);
/// Most directory entries one measurement visits.
const MAX_ENTRIES: usize = 200_000;
/// What one file or directory costs of the grant, besides its contents.
pub const ENTRY_BYTES: u64 = 4096;

/// A plugin's `/data` directory and its size grant, shared by its instances.
#[derive(Debug)]
pub struct DataBudget {
    dir: PathBuf,
    max: u64,
    state: Mutex<Usage>,
}

#[derive(Debug)]
struct Usage {
    used: u64,
    measured: Option<Instant>,
}

impl DataBudget {
    /// The budget of `dir` (created if missing) with `max` bytes granted.
    pub fn new(dir: PathBuf, max: u64) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        let used = measure(&dir);
        Ok(Arc::new(DataBudget {
            dir,
            max,
            state: Mutex::new(Usage {
                used,
                measured: Some(Instant::now()),
            }),
        }))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The grant in bytes.
    pub fn max(&self) -> u64 {
        self.max
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes that may still be written, measuring the directory again when
    /// the count says none are left (and the last measurement is old enough).
    pub fn remaining(&self) -> u64 {
        let mut st = self.lock();
        if st.used >= self.max && st.measured.is_none_or(|t| t.elapsed() >= REMEASURE) {
            st.used = measure(&self.dir);
            st.measured = Some(Instant::now());
        }
        self.max.saturating_sub(st.used)
    }

    /// Take `n` bytes for a write, or refuse it.
    pub fn take(&self, n: u64) -> bool {
        if self.remaining() < n {
            return false;
        }
        let mut st = self.lock();
        if self.max.saturating_sub(st.used) < n {
            return false;
        }
        st.used += n;
        true
    }
}

/// Bytes allocated below `dir` (sparse holes do not count).
fn measure(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return total;
            }
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            }
            total = total
                .saturating_add(allocated(&meta))
                .saturating_add(ENTRY_BYTES);
        }
    }
    total
}

#[cfg(unix)]
fn allocated(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    if meta.is_dir() {
        0
    } else {
        meta.blocks().saturating_mul(512)
    }
}

#[cfg(not(unix))]
fn allocated(meta: &std::fs::Metadata) -> u64 {
    if meta.is_dir() { 0 } else { meta.len() }
}

fn no_space() -> StreamError {
    StreamError::LastOperationFailed(
        std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "the plugin's /data grant is used up",
        )
        .into(),
    )
}

/// An output stream into a `/data` file that takes every byte from the budget.
struct QuotaStream {
    inner: DynOutputStream,
    budget: Arc<DataBudget>,
}

#[wasmtime_wasi::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        if !self.budget.take(bytes.len() as u64) {
            return Err(no_space());
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let n = self.inner.check_write()?;
        if n == 0 {
            return Ok(0);
        }
        match self.budget.remaining() {
            0 => Err(no_space()),
            left => Ok(n.min(usize::try_from(left).unwrap_or(usize::MAX))),
        }
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

/// Replace the stream `res` in `table` with one metered by `budget`.
fn meter(
    table: &mut ResourceTable,
    res: Resource<DynOutputStream>,
    budget: Option<Arc<DataBudget>>,
) -> wasmtime::Result<Resource<DynOutputStream>> {
    let Some(budget) = budget else {
        return Ok(res);
    };
    let inner = table.delete(res)?;
    let wrapped: DynOutputStream = Box::new(QuotaStream { inner, budget });
    Ok(table.push(wrapped)?)
}

type Stream = Result<Resource<DynOutputStream>, ErrorCode>;

/// Shadow the writing functions of `wasi:filesystem/types` with metered ones.
/// Call after WASI is linked.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut inst = linker.instance(FS_TYPES)?;
    inst.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, HostState>,
         (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let st = store.data_mut();
                if let Some(b) = &st.data_budget
                    && !b.take(buf.len() as u64)
                {
                    return Ok((Err(ErrorCode::InsufficientSpace),));
                }
                let mut view = st.filesystem();
                match HostDescriptor::write(&mut view, fd, buf, offset).await {
                    Ok(n) => Ok((Ok(n),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    inst.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, HostState>,
         (fd, offset): (Resource<Descriptor>, u64)|
         -> wasmtime::Result<(Stream,)> {
            let st = store.data_mut();
            let budget = st.data_budget.clone();
            let mut view = st.filesystem();
            match HostDescriptor::write_via_stream(&mut view, fd, offset) {
                Ok(res) => Ok((Ok(meter(view.table, res, budget)?),)),
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    inst.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, HostState>,
         (fd,): (Resource<Descriptor>,)|
         -> wasmtime::Result<(Stream,)> {
            let st = store.data_mut();
            let budget = st.data_budget.clone();
            let mut view = st.filesystem();
            match HostDescriptor::append_via_stream(&mut view, fd) {
                Ok(res) => Ok((Ok(meter(view.table, res, budget)?),)),
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    inst.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, HostState>,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let st = store.data_mut();
                if oflags.contains(OpenFlags::CREATE)
                    && let Some(b) = &st.data_budget
                    && !b.take(ENTRY_BYTES)
                {
                    return Ok((Err(ErrorCode::InsufficientSpace),));
                }
                let mut view = st.filesystem();
                match HostDescriptor::open_at(&mut view, fd, path_flags, path, oflags, flags).await
                {
                    Ok(d) => Ok((Ok(d),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    inst.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store: StoreContextMut<'_, HostState>, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let st = store.data_mut();
                if let Some(b) = &st.data_budget
                    && !b.take(ENTRY_BYTES)
                {
                    return Ok((Err(ErrorCode::InsufficientSpace),));
                }
                let mut view = st.filesystem();
                match HostDescriptor::create_directory_at(&mut view, fd, path).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_the_grant() {
        let dir = std::env::temp_dir().join(format!("pincer-data-{}", std::process::id()));
        let b = DataBudget::new(dir.clone(), 1000).unwrap();
        assert!(b.take(600));
        assert!(!b.take(600));
        let _ = std::fs::remove_dir_all(dir);
    }
}
