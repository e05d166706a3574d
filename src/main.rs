//! The `keyturn` binary: everything lives in the library; see `keyturn::cli`.
#![deny(unsafe_code)]

fn main() {
    keyturn::idle::set_release(release_memory);
    std::process::exit(keyturn::cli::main());
}

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
