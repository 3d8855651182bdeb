//! The host's clock. Tests run the host on a manual clock, so stamp
//! messages with [`now_ms`] rather than reading the time another way.

/// Milliseconds since the Unix epoch, from the host.
pub fn now_ms() -> u64 {
    crate::bindings::host::clock::now_ms()
}

/// Block this plugin call for `ms` milliseconds (the host stays responsive:
/// the wait is a host-side timer, and the call's wall-clock limit still applies).
pub fn sleep_ms(ms: u64) {
    let pollable =
        wasip2::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000));
    pollable.block();
}
