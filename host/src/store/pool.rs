//! The connections to the SQLite file: one writer and a small pool of
//! read-only readers (WAL lets them read while the writer commits), and
//! [`offload`], which keeps their blocking work off the async worker threads.
//!
//! Writes are serialised on the writer (SQLite allows one writer anyway);
//! reads never wait for a write or for each other (up to the pool size), so
//! a slow read or a big prune no longer stalls every other caller.

use std::path::Path;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// How long a statement waits for SQLite's own locks (another process, a
/// checkpoint) before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Run blocking store work without stalling the async runtime: on a
/// multi-threaded tokio runtime the current worker hands its queued tasks
/// to another thread for the duration ([`tokio::task::block_in_place`]);
/// elsewhere (a plain thread, a blocking-pool thread, a current-thread
/// runtime, where `block_in_place` is not allowed) it runs inline.
pub(super) fn offload<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The writer and the readers.
pub(super) struct Pool {
    writer: Mutex<Connection>,
    /// `None` for an in-memory database, whose connections cannot share it:
    /// reads then use the writer.
    readers: Option<Readers>,
}

/// Idle reader connections; a caller takes one and puts it back.
pub(super) struct Readers {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
}

/// A connection to read from: a pooled reader (returned on drop) or the
/// writer (in-memory databases).
pub(super) enum ReadConn<'a> {
    /// A reader from the pool.
    Pooled(&'a Readers, Option<Connection>),
    /// The writer, locked.
    Writer(MutexGuard<'a, Connection>),
}

impl std::ops::Deref for ReadConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            // The option is only emptied in drop.
            ReadConn::Pooled(_, conn) => conn.as_ref().unwrap_or_else(|| unreachable!()),
            ReadConn::Writer(guard) => guard,
        }
    }
}

impl Drop for ReadConn<'_> {
    fn drop(&mut self) {
        if let ReadConn::Pooled(readers, conn) = self
            && let Some(conn) = conn.take()
        {
            readers.idle.lock().push(conn);
            readers.returned.notify_one();
        }
    }
}

impl Pool {
    /// `writer` (already migrated) plus `readers` read-only connections to
    /// `path` (none when `path` is `None`: an in-memory database).
    pub(super) fn new(
        writer: Connection,
        path: Option<&Path>,
        readers: usize,
    ) -> Result<Self, StoreError> {
        let readers = match path {
            Some(path) => {
                let conns = (0..readers.max(1))
                    .map(|_| open_reader(path))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(Readers {
                    idle: Mutex::new(conns),
                    returned: Condvar::new(),
                })
            }
            None => None,
        };
        Ok(Pool {
            writer: Mutex::new(writer),
            readers,
        })
    }

    /// The writer, locked (callers are already off the async threads).
    pub(super) fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock()
    }

    /// An idle reader, waiting for one to be returned if all are busy.
    pub(super) fn reader(&self) -> ReadConn<'_> {
        let Some(readers) = &self.readers else {
            return ReadConn::Writer(self.writer.lock());
        };
        let mut idle = readers.idle.lock();
        loop {
            if let Some(conn) = idle.pop() {
                return ReadConn::Pooled(readers, Some(conn));
            }
            readers.returned.wait(&mut idle);
        }
    }
}

/// A read-only connection to `path` (schema already migrated).
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Settings every writer connection gets.
pub(super) fn configure_writer(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(())
}
