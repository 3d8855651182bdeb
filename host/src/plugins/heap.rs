//! Giving freed heap back to the kernel. Instances come and go in bursts
//! (a thousand socket accounts start at once; each quiet account's
//! instance is dropped and made again for its next event), and glibc's
//! allocator keeps what a burst freed inside its per-thread arenas, where
//! it stays resident. [`release`] asks it to return every free page; the
//! health monitor calls it once per check.

/// Return the allocator's free pages to the kernel (glibc's
/// `malloc_trim(0)`; a no-op elsewhere). Takes milliseconds with a large
/// heap, so call it rarely (once a minute).
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
