//! The daemon's life as a service: start, tell systemd, serve until a
//! signal, reload on SIGHUP, stop.

use super::{Daemon, DaemonError};
use crate::config::Config;
use crate::engine::Engine;
use crate::systemd;

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP calls `reload` for a
/// fresh configuration (file and flags) and applies what can change while
/// running. Tells systemd when it is ready and when it stops.
pub async fn run(
    config: &Config,
    reload: impl Fn() -> Result<Config, String>,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let signal_err =
        |e: std::io::Error| DaemonError::Activation(format!("cannot handle signals: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;

    systemd::notify(&format!(
        "STATUS=Loading the store in {}",
        config.state_dir.display()
    ));
    let daemon = Daemon::start(config).await?;
    let status = |engine: &Engine| {
        let engine = engine.clone();
        async move {
            match engine.stats().await {
                Ok(s) => format!(
                    "STATUS=Serving: {} of {} pairs held, {} reserved, {} containers",
                    s.pool.held, s.pool.total, s.pool.reserved, s.containers
                ),
                Err(e) => format!("STATUS=Serving; stats unavailable: {e}"),
            }
        }
    };
    systemd::notify(&format!("READY=1\n{}", status(daemon.engine()).await));
    let died = daemon.engine().clone();
    let died = died.stopped();
    tokio::pin!(died);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = &mut died => {
                tracing::error!("the engine stopped while serving; exiting so that the service manager restarts mcsd");
                systemd::notify("STATUS=Failed: the engine stopped; exiting");
                let _ = daemon.stop().await;
                return Err(DaemonError::EngineDied);
            }
            _ = hup.recv() => {
                match reload() {
                    Ok(new) => match daemon.reload(new).await {
                        Ok(changes) if changes.is_empty() => tracing::info!("configuration reloaded: nothing changed"),
                        Ok(changes) => tracing::info!(changes = %changes.join("; "), "configuration reloaded"),
                        Err(e) => tracing::error!("configuration reload refused: {e}"),
                    },
                    Err(e) => tracing::error!("configuration reload refused: {e}"),
                }
                systemd::notify(&status(daemon.engine()).await);
            }
        }
    }
    tracing::info!("shutting down");
    systemd::notify("STOPPING=1\nSTATUS=Stopping: finishing calls in flight, flushing the store");
    daemon.stop().await
}
