//! Whether the store can still write, for `/readyz`: a small write probe
//! (insert and delete a 64 KiB row, so the database must have room to grow)
//! whose success is trusted for a second, forgotten as soon as any write
//! fails for want of space, permission or a working disk.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::ErrorCode;

use super::{SqliteStore, StoreError};

/// How long a successful probe answers for (bounds the probe writes a
/// flood of `/readyz` requests can cause).
const PROBE_TTL: Duration = Duration::from_secs(1);
/// Bytes the probe row holds: a store that cannot find this much room is
/// not ready.
const PROBE_BYTES: i64 = 64 * 1024;

/// The write-health state of one store.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    /// When a probe last succeeded (cleared by a failed write).
    ok_at: Mutex<Option<Instant>>,
    /// Writes failed for want of space or permission, ever (so a probe
    /// that raced with such a failure does not record a success).
    failures: AtomicU64,
    /// Set by a failed write, cleared by a successful probe.
    failing: AtomicBool,
}

impl WriteHealth {
    /// Record a failed write: if it says the database cannot be written,
    /// the next readiness check probes again instead of trusting an old
    /// success.
    pub(crate) fn write_failed(&self, error: &StoreError) {
        if cannot_write(error) {
            let mut ok_at = self.ok_at.lock();
            self.failures.fetch_add(1, Ordering::Relaxed);
            // Logged once per healthy-to-failing change, not per write.
            if !self.failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %error, "store write failed: not ready until a write probe succeeds");
            }
            *ok_at = None;
        }
    }
}

/// Whether `error` means the database cannot take writes (as opposed to a
/// constraint, a limit or bad data in one request).
pub(crate) fn cannot_write(error: &StoreError) -> bool {
    let StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) = error else {
        return false;
    };
    matches!(
        e.code,
        ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::NotADatabase
            | ErrorCode::PermissionDenied
    )
}

impl SqliteStore {
    /// `Ok` if the database takes writes: the last probe succeeded within
    /// the last second and no write has failed for want of space or
    /// permission since, or a new probe succeeds now.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        if self
            .health
            .ok_at
            .lock()
            .is_some_and(|at| at.elapsed() < PROBE_TTL)
        {
            return Ok(());
        }
        let failures = self.health.failures.load(Ordering::Relaxed);
        self.write_tx(|tx, _| {
            tx.prepare_cached("INSERT INTO store_probe (pad) VALUES (zeroblob(?1))")?
                .execute([PROBE_BYTES])?;
            tx.prepare_cached("DELETE FROM store_probe")?.execute([])?;
            Ok(())
        })?;
        let mut ok_at = self.health.ok_at.lock();
        if self.health.failures.load(Ordering::Relaxed) == failures {
            *ok_at = Some(Instant::now());
            if self.health.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("store writes again: ready");
            }
        }
        Ok(())
    }
}

impl StoreError {
    /// A short, stable description for people outside (no paths, SQL or
    /// data): "database or disk is full", "database is read-only", ...
    pub fn reason(&self) -> &'static str {
        let StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) = self else {
            return match self {
                StoreError::Closed => "store is closed",
                StoreError::Unavailable(_) => "database unreachable",
                StoreError::Postgres(e) => postgres_reason(e),
                _ => "store error",
            };
        };
        match e.code {
            ErrorCode::DiskFull => "database or disk is full",
            ErrorCode::ReadOnly => "database is read-only",
            ErrorCode::SystemIoFailure => "disk I/O error",
            ErrorCode::CannotOpen => "cannot open the database file",
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => "database file is corrupt",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => "database is busy",
            _ => "database error",
        }
    }
}

/// A short description of a PostgreSQL failure for people outside.
fn postgres_reason(e: &postgres::Error) -> &'static str {
    use postgres::error::SqlState;
    match e.code() {
        None => "database unreachable",
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::INSUFFICIENT_RESOURCES => {
            "database or disk is full"
        }
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => "database is read-only",
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            "database is busy"
        }
        Some(c) if c.code().starts_with("57") || c.code().starts_with("08") => {
            "database unreachable"
        }
        Some(_) => "database error",
    }
}
