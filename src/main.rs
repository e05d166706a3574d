//! The `keyturn` binary: everything lives in the library; see `keyturn::cli`.
#![deny(unsafe_code)]

fn main() {
    tune_allocator();
    // With RUST_BACKTRACE=1 (often left on for debugging), every `std::backtrace::Backtrace::
    // capture()` walks the stack, and azure_core builds such an error for each optional header
    // a request lacks: measured, it added 0.5 ms of CPU per paced rotation. Panics still follow
    // RUST_BACKTRACE; library errors capture only if RUST_LIB_BACKTRACE asks for it. This runs
    // before any thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    // Passwords and the app's credential are in this process's memory: no core dump of it
    // (whatever the host's core_pattern or ulimit), and no ptrace or /proc/<pid>/mem by other
    // processes of the same user (root keeps CAP_SYS_PTRACE). Set before any secret is read.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("keyturn: warning: cannot make the process non-dumpable (PR_SET_DUMPABLE): {e}; a core dump could hold passwords");
    }
    keyturn::idle::set_release(release_memory);
    std::process::exit(keyturn::cli::main());
}

/// Makes glibc return an arena's free top to the kernel as soon as it exceeds 128 KiB, in
/// every arena. By default glibc raises that threshold (up to 64 MiB) whenever a large
/// block is freed, and `malloc_trim` shrinks only the main arena's top: the arena the
/// configuration was parsed in (`config::load`) kept its 40 MB at 10,000 accounts. Fixing the
/// threshold also fixes glibc's mmap threshold at its default (128 KiB): larger blocks are
/// mapped and unmapped on their own. Measured in `docs/benchmarks.md`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only sets glibc's allocator parameters under its own lock; it takes
    // no pointer. It runs first in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Other allocators and platforms: nothing to tune.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// Returns the free pages of every glibc arena to the kernel (`keyturn::idle`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_memory() {
    // SAFETY: malloc_trim takes no pointer and only walks glibc's own arenas under their
    // locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators and platforms: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_memory() {}
