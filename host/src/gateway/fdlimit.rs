//! File descriptors: raise the soft `RLIMIT_NOFILE` to the hard limit at
//! start, and derive the cap on open client sockets from it, keeping a
//! reserve for the plugins directory, the store, outbound requests and
//! plugin reloads (so a flood of sockets cannot make them fail with "Too
//! many open files").

/// Used when the limit cannot be read (non-Unix systems).
const UNKNOWN_LIMIT: u64 = 1024;

/// Raise the soft descriptor limit as far as the hard limit allows and
/// return the soft limit now in force.
pub fn raise() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)
                .unwrap_or((UNKNOWN_LIMIT, UNKNOWN_LIMIT));
            tracing::warn!(error = %e, soft, "could not raise the open-file limit");
            soft
        }
    }
}

/// The current soft descriptor limit.
pub fn current() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(UNKNOWN_LIMIT)
}

/// The socket cap: `configured` if given, never more than the limit less
/// the reserve, and at least 1.
pub fn socket_cap(limit: u64, reserve: usize, configured: Option<usize>) -> usize {
    let available = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve)
        .max(1);
    configured.map_or(available, |c| c.clamp(1, available))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_the_reserve() {
        assert_eq!(socket_cap(1024, 256, None), 768);
        assert_eq!(socket_cap(1024, 256, Some(10)), 10);
        assert_eq!(socket_cap(1024, 256, Some(5000)), 768);
        assert_eq!(socket_cap(100, 256, None), 1);
        let raised = raise();
        assert_eq!(raised, current());
    }
}
