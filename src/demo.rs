//! `keyturn demo`: the daemon against the embedded emulator (filled in with the emulator).

/// Runs the demo.
pub async fn run(
    _duration: Option<std::time::Duration>,
    _every: u32,
    _dir: Option<std::path::PathBuf>,
) -> anyhow::Result<i32> {
    anyhow::bail!("the demo needs the emulator, which is not wired in yet")
}
