//! Signals: SIGTERM and SIGINT stop the daemon (the returned future completes); SIGUSR1
//! asks for a rotation of every account; SIGHUP reloads the configuration.

use crate::admin::Reload;
use crate::audit::Actor;
use crate::daemon::Command;
use std::future::Future;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Installs the handlers; returns the shutdown future.
pub fn watch(
    commands: mpsc::Sender<Command>,
    reload: Option<Arc<dyn Reload>>,
) -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: rotating every account");
            if commands
                .send(crate::cli::rotate_all_command())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &reload {
                Some(r) => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // The outcome is logged and audited by the reloader.
                    let _ = r.reload(Actor::Daemon).await;
                }
                None => tracing::warn!("SIGHUP ignored: reload is not available in this mode"),
            }
        }
    });
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    })
}
