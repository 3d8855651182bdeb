//! Lower OS scheduling priority for plugin work: the plugin call runtime's
//! threads raise their own nice value (Linux per-thread nice, via
//! `setpriority(PRIO_PROCESS, tid)`), so a guest that spins or floods
//! yields the CPU to the gateway's own request handling whenever both want
//! it. Elsewhere than Linux this does nothing.

use std::sync::atomic::{AtomicBool, Ordering};

/// The highest nice value (the lowest priority) Linux has.
pub const MAX_NICE: i32 = 19;

/// Raise the calling thread's nice value to `nice` (clamped to
/// `0..=19`); a thread already at or above it is left alone (lowering a
/// nice value needs privileges), and 0 changes nothing.
pub fn lower_current_thread(nice: i32) -> std::io::Result<()> {
    let nice = nice.clamp(0, MAX_NICE);
    if nice == 0 {
        return Ok(());
    }
    imp::raise(nice)
}

/// [`lower_current_thread`], logging the first failure (this runs at every
/// plugin thread's start; one warning is enough).
pub fn lower_current_thread_or_warn(nice: i32) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = lower_current_thread(nice)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(error = %e, nice, "could not lower the plugin threads' priority");
    }
}

#[cfg(target_os = "linux")]
mod imp {
    /// Set this thread's nice value to `nice` unless it is already higher.
    pub fn raise(nice: i32) -> std::io::Result<()> {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        // getpriority can return -1 legitimately: clear errno first.
        // SAFETY: errno is thread-local; getpriority has no preconditions.
        let current = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        };
        if current == -1 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error().is_some_and(|n| n != 0) {
                return Err(e);
            }
        }
        if current >= nice {
            return Ok(());
        }
        // SAFETY: setpriority on our own thread id has no memory effects.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn raise(_nice: i32) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread (Linux).
    #[cfg(target_os = "linux")]
    fn current() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Field 19 (nice) counted after the `(comm)` field's closing paren.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_lowers_its_own_priority_only() {
        let before = current();
        let target = (before + 5).min(MAX_NICE);
        let inside = std::thread::spawn(move || {
            lower_current_thread(target).unwrap();
            // Asking for less than it has changes nothing.
            lower_current_thread(1).unwrap();
            current()
        })
        .join()
        .unwrap();
        assert_eq!(inside, target.max(before));
        assert_eq!(current(), before, "other threads keep their priority");
    }
}
