//! Putting the pieces together: open the store, load the engine, bind the
//! socket, serve; and the reverse on shutdown.
//!
//! Order matters. The socket is bound only after the store is open and
//! checked, so a client that can connect gets answers from a consistent
//! state. On shutdown the server stops accepting, lets in-flight calls
//! finish, then the engine drains its queue and the store flushes last.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcs_proto::v1::labels_server::LabelsServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

use crate::auth::Policy;
use crate::config::Config;
use crate::context::{self, ContextsFileError, PolicyRejected, SelinuxMode};
use crate::engine::{Engine, EngineConfig, LoadError};
use crate::error::AllocError;
use crate::inuse;
use crate::relabel::{FromPolicy, RelabelError, Relabeler, RestoreMode};
use crate::service::LabelService;
use crate::socket::{BoundSocket, SocketError};
use crate::store::sled::SledStore;
use crate::store::StoreError;

/// Largest request accepted; real requests are a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How long in-flight calls get to finish after a stop is requested. A
/// client that keeps its connection open without answering (hung, stopped)
/// must not hold mcsd's shutdown hostage.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Holds the pairs running processes use, before any client can ask for
/// one. A scan that cannot read the process table is logged, not fatal:
/// mcsd is still the better allocator without it.
async fn adopt_running(engine: &Engine, proc_root: &Path) -> Result<(), DaemonError> {
    let in_use = match inuse::scan(proc_root) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(proc = %proc_root.display(), error = %e, "cannot scan running processes for labels in use");
            return Ok(());
        }
    };
    let adopted = inuse::adopt(engine, &in_use)
        .await
        .map_err(DaemonError::Adopt)?;
    for (level, pid) in &adopted.held {
        tracing::info!(%level, pid, "pair in use by a running process; held as owner running");
    }
    tracing::info!(
        levels_in_use = in_use.len(),
        newly_held = adopted.held.len(),
        already_allocated = adopted.already_allocated,
        not_allocatable = adopted.not_allocatable,
        released_gone = adopted.released.len(),
        "scanned running processes for labels in use"
    );
    Ok(())
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The host contexts file is malformed.
    #[error(transparent)]
    Contexts(#[from] ContextsFileError),
    /// The loaded policy refuses a template.
    #[error(transparent)]
    Policy(#[from] PolicyRejected),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The socket could not be bound.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// `restore = "policy"` cannot work on this host.
    #[error("relabel.restore = \"policy\": {0}; use \"original\" or \"none\"")]
    Restore(#[from] RelabelError),
    /// Holding the pairs of running processes failed (the store refused).
    #[error("cannot hold the labels running processes use: {0}")]
    Adopt(AllocError),
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A running daemon.
pub struct Daemon {
    engine: Engine,
    socket: BoundSocket,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Daemon {
    /// Opens the store, loads the state, binds the socket and starts serving.
    pub async fn start(config: &Config) -> Result<Daemon, DaemonError> {
        let mode = context::selinux_mode();
        let (labels, source) = context::resolve_labels(
            (
                config.process_template.clone(),
                config.file_template.clone(),
            ),
            &config.host_contexts,
        )?;
        if mode == SelinuxMode::Disabled {
            tracing::warn!("SELinux is disabled on this host: mcsd still allocates and records labels, but nothing enforces them here");
        } else {
            context::check_against_policy(&labels)?;
        }
        tracing::info!(process = %labels.process, file = %labels.file, %source, selinux = %mode, "label templates");

        if config.relabel.restore == RestoreMode::Policy {
            FromPolicy::new()?;
        }
        create_state_dir(&config.state_dir)?;
        let store = Arc::new(SledStore::open(&config.state_dir)?);
        let engine = Engine::start(
            store,
            EngineConfig {
                range: config.range,
                labels,
            },
        )
        .await?;

        if config.scan_in_use {
            adopt_running(&engine, &config.proc_root).await?;
        }

        let mut socket = BoundSocket::bind(&config.socket)?;
        let listener = socket.listener().map_err(|source| SocketError::Io {
            action: "listen on",
            path: config.socket.clone(),
            source,
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let policy = Policy::new(config.auth.clone(), rustix::process::geteuid().as_raw());
        let policy = Arc::new(std::sync::RwLock::new(policy));
        let relabeler = Arc::new(Relabeler::new(config.relabel.clone(), &config.state_dir));
        let service = LabelsServer::new(LabelService::new(engine.clone(), policy, relabeler))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        tracing::info!(socket = %config.socket.display(), range = %config.range, "mcsd is serving");
        Ok(Daemon {
            engine,
            socket,
            stop,
            server,
        })
    }

    /// The socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// The engine, for in-process callers.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops gracefully: in-flight calls finish, queued changes commit, the
    /// store flushes.
    pub async fn stop(self) -> Result<(), DaemonError> {
        let _ = self.stop.send(());
        let mut server = self.server;
        let served = match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(joined) => joined.ok(),
            Err(_) => {
                tracing::warn!(
                    grace_s = SHUTDOWN_GRACE.as_secs(),
                    "connections still open after the grace period; closing them"
                );
                server.abort();
                None
            }
        };
        let closed = self.engine.shutdown().await;
        drop(self.socket);
        if let Some(result) = served {
            result?;
        }
        closed?;
        tracing::info!("mcsd stopped");
        Ok(())
    }
}

fn create_state_dir(path: &Path) -> Result<(), DaemonError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| DaemonError::StateDir {
            path: path.to_owned(),
            source,
        })
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let daemon = Daemon::start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    daemon.stop().await
}
