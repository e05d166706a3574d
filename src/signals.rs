//! Signals, turned into what they ask for: SIGTERM and SIGINT [`Signal::Stop`], SIGUSR1
//! [`Signal::RotateAll`], SIGHUP [`Signal::Reload`]. This module imports nothing from the
//! rest of keyturn: the service ([`crate::service`]) maps each [`Signal`] to an action.

use tokio::signal::unix::{signal, SignalKind};

/// What a signal asks the service to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop (finish or abandon in-flight work within the grace period).
    Stop,
    /// SIGUSR1: rotate every account now.
    RotateAll,
    /// SIGHUP: reload the configuration file.
    Reload,
}

/// The installed handlers. Once installed, a signal no longer has its default action (for
/// SIGTERM and SIGINT: ending the process) for the rest of the process's life.
pub struct Signals {
    /// SIGTERM.
    term: tokio::signal::unix::Signal,
    /// SIGINT.
    int: tokio::signal::unix::Signal,
    /// SIGUSR1.
    usr1: tokio::signal::unix::Signal,
    /// SIGHUP.
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal; several of one kind that arrive before it is read count once.
    pub async fn recv(&mut self) -> Signal {
        // A handler's stream ends only when the runtime shuts down: then nothing waits.
        tokio::select! {
            Some(()) = self.term.recv() => {
                tracing::info!("SIGTERM: stopping");
                Signal::Stop
            }
            Some(()) = self.int.recv() => {
                tracing::info!("SIGINT: stopping");
                Signal::Stop
            }
            Some(()) = self.usr1.recv() => Signal::RotateAll,
            Some(()) = self.hup.recv() => Signal::Reload,
            else => std::future::pending().await,
        }
    }
}
