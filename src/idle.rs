//! Giving memory back when the daemon goes idle.
//!
//! A start-up recovers every account at once and a rotate-all rotates them all: both allocate
//! and free a lot (responses, TLS records, queued jobs) between the small records that stay.
//! glibc's allocator keeps those freed pages mapped, so without help the process stays at its
//! start-up high-water mark for the week until the next rotation. The binary registers a
//! function that returns free pages to the kernel (`malloc_trim` on glibc: `src/main.rs`),
//! and the daemon calls it when it is ready and whenever its last running job ends. The
//! library has no unsafe code, so it only holds the hook.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers the function that returns free memory to the kernel (once; later calls are
/// ignored).
pub fn set_release(f: fn()) {
    let _ = RELEASE.set(f);
}

/// Returns free memory to the kernel, if the binary registered how.
pub fn release() {
    if let Some(f) = RELEASE.get() {
        f();
    }
}
