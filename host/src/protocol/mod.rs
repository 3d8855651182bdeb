//! The OpenClaw gateway protocol (v3 and v4), as data: frame envelopes,
//! connect parameters and `hello-ok`, error shapes, the method→scope table
//! and device-signature verification. Nothing here does I/O; the
//! `gateway` module drives connections with it.
//!
//! The facts come from `../shared/reference/openclaw-protocol.md`: every
//! envelope is strict (no extra keys, no nulls) because the reference
//! TypeScript client silently drops frames that fail its schema.

pub mod connect;
pub mod device;
pub mod errors;
pub mod frames;
pub mod scopes;

/// Protocol versions this gateway speaks, lowest first.
pub const SUPPORTED_PROTOCOLS: [u32; 2] = [3, 4];

/// Largest frame accepted before the handshake completes (64 KiB; bigger
/// closes the socket with 1009).
pub const MAX_PREAUTH_PAYLOAD: usize = 64 * 1024;
/// Largest frame after the handshake (`policy.maxPayload`, 25 MiB).
pub const MAX_PAYLOAD: usize = 25 * 1024 * 1024;
/// Outgoing bytes a connection may have queued before it is a slow consumer
/// (`policy.maxBufferedBytes`, 50 MiB).
pub const MAX_BUFFERED_BYTES: usize = 50 * 1024 * 1024;
/// `tick` interval (`policy.tickIntervalMs`).
pub const TICK_INTERVAL_MS: u64 = 30_000;
/// Device signature clock skew allowed either way.
pub const DEVICE_SIGNATURE_SKEW_MS: i64 = 120_000;
/// Close reasons are cut to this many bytes.
pub const MAX_CLOSE_REASON: usize = 120;

/// Cut `reason` to at most [`MAX_CLOSE_REASON`] bytes on a char boundary.
pub fn close_reason(reason: &str) -> String {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason.to_string();
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// The highest version both sides speak, if any.
pub fn negotiate(min: u32, max: u32) -> Option<u32> {
    SUPPORTED_PROTOCOLS
        .iter()
        .rev()
        .copied()
        .find(|v| *v >= min && *v <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(3, 3), Some(3));
        assert_eq!(negotiate(4, 4), Some(4));
        assert_eq!(negotiate(3, 4), Some(4));
        assert_eq!(negotiate(1, 9), Some(4));
        assert_eq!(negotiate(5, 6), None);
        assert_eq!(negotiate(1, 2), None);
        assert_eq!(negotiate(4, 3), None);
    }

    #[test]
    fn close_reason_cut_on_char_boundary() {
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert!(long.starts_with(&cut));
    }
}
