//! What the benchmark reads and drives: a process's memory and CPU from `/proc`, completed
//! rotations in the audit log, the admin socket, the keyturn child process, the report.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// Prints the result as one JSON line, and appends it to `json_out` if given.
pub(crate) fn report(result: &serde_json::Value, json_out: Option<&Path>) -> Result<()> {
    println!("{result}");
    if let Some(p) = json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        writeln!(f, "{result}")?;
    }
    Ok(())
}

pub(crate) fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime in seconds.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the name: state is 0, utime is 11, stime is 12.
    let hz = nix_clk_tck();
    (ticks(11) + ticks(12)) / hz
}

fn nix_clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Counts `rotation.completed` records in the audit log, reading only what is new.
pub(crate) struct AuditTail {
    pub(crate) path: PathBuf,
    pub(crate) offset: u64,
    pub(crate) completed: usize,
    pub(crate) rest: String,
}

impl AuditTail {
    pub(crate) fn poll(&mut self) -> usize {
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let mut buf = String::new();
                if let Ok(n) = f.read_to_string(&mut buf) {
                    self.offset += n as u64;
                    self.rest.push_str(&buf);
                    while let Some(i) = self.rest.find('\n') {
                        if self.rest[..i].contains("\"event\":\"rotation.completed\"") {
                            self.completed += 1;
                        }
                        self.rest.drain(..=i);
                    }
                }
            }
        }
        self.completed
    }
}

pub(crate) fn send(socket: &Path, req: &serde_json::Value) -> Result<serde_json::Value> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connect {}", socket.display()))?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) struct KeyturnProc {
    pub(crate) child: Child,
    pub(crate) stderr: PathBuf,
}

impl Drop for KeyturnProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}
