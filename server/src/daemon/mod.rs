//! Putting the pieces together: open the store, load the engine, bind the
//! socket, serve; and the reverse on shutdown.
//!
//! Order matters. The socket is bound only after the store is open and
//! checked, so a client that can connect gets answers from a consistent
//! state. On shutdown the server stops accepting, lets in-flight calls
//! finish, then the engine drains its queue and the store flushes last.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcs_proto::v1::labels_server::LabelsServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

use crate::auth::Policy;
use crate::config::Config;
use crate::context::SelinuxMode;
use crate::engine::{CommitHook, Engine, EngineConfig};
use crate::metrics::{self, Metrics};
use crate::relabel::Relabeler;
use crate::service::{DaemonInfo, LabelService, SharedPolicy};
use crate::socket::guard::{self, Gate};
use crate::socket::{BoundSocket, SocketError};
use crate::store::backend::{self, StoreSettings};
use crate::systemd;
use crate::volumes::{SharedRelabeler, Volumes};

mod adopt;
mod error;
mod limits;
mod reload;
mod resolve;
mod run;
#[cfg(test)]
mod tests;

pub use error::DaemonError;
pub use resolve::check;
pub use run::run;

use adopt::{adopt_running, reconcile_reservations};
use limits::{connection_gate, fit_connection_limits};
use resolve::{resolve, Resolved};

/// Largest request accepted; real requests are a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How long in-flight calls get to finish after a stop is requested. A
/// client that keeps its connection open without answering (hung, stopped)
/// must not hold mcsd's shutdown hostage.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running daemon.
pub struct Daemon {
    engine: Engine,
    socket: BoundSocket,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    health: tonic_health::server::HealthReporter,
    serving: Arc<AtomicBool>,
    /// Turns health to NOT_SERVING when the engine's actor dies.
    health_follows_engine: JoinHandle<()>,
    metrics: Option<JoinHandle<()>>,
    policy: SharedPolicy,
    relabeler: SharedRelabeler,
    /// Admits connections; its limits change on reload.
    gate: Arc<Gate>,
    /// The configuration in force, for reloads.
    config: std::sync::Mutex<Config>,
}

impl Daemon {
    /// Opens the store, loads the state, binds the socket and starts serving.
    pub async fn start(config: &Config) -> Result<Daemon, DaemonError> {
        let limits = fit_connection_limits(config.connections);
        let Resolved {
            labels,
            source,
            mode,
        } = resolve(config)?;
        if mode == SelinuxMode::Disabled {
            tracing::warn!("SELinux is disabled on this host: mcsd still allocates and records labels, but nothing enforces them here");
        }
        tracing::info!(process = %labels.process, file = %labels.file, %source, selinux = %mode, "label templates");

        if config.store == StoreSettings::Sled {
            create_state_dir(&config.state_dir)?;
        }
        let store = backend::open(&config.store, &config.state_dir, config.range).await?;
        tracing::info!(store = %store.describe(), node = %config.node_name, "store open");
        // The one registry: the engine reports commits to it, the volumes
        // and the service count in it, the endpoint serves it.
        let registry = Arc::new(Metrics::new());
        let flushes = registry.clone();
        let engine = Engine::start(
            store,
            EngineConfig {
                range: config.range,
                labels,
                node: config.node_name.clone(),
                on_commit: CommitHook::new(move |took| flushes.store_flush(took)),
            },
        )
        .await?;

        let relabeler = Arc::new(std::sync::RwLock::new(Arc::new(Relabeler::new(
            config.relabel.clone(),
            &config.state_dir,
        ))));
        let volumes = Volumes::new(engine.clone(), relabeler.clone(), registry.clone());
        if config.scan_in_use {
            adopt_running(&volumes, config).await?;
        }

        reconcile_reservations(&engine, &config.reservations)
            .await
            .map_err(DaemonError::Adopt)?;

        let mut socket = match systemd::listen_fd().map_err(DaemonError::Activation)? {
            Some(fd) => {
                let socket = BoundSocket::inherited(fd)?;
                tracing::info!(socket = %socket.path().display(), "serving on the socket systemd passed");
                socket
            }
            None => BoundSocket::bind(&config.socket)?,
        };
        let listener = socket.listener().map_err(|source| SocketError::Io {
            action: "listen on",
            path: config.socket.clone(),
            source,
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let policy = Policy::new(config.auth.clone(), rustix::process::geteuid().as_raw());
        let policy = Arc::new(std::sync::RwLock::new(policy));
        let gate = connection_gate(limits, &policy);
        let serving = Arc::new(AtomicBool::new(false));
        let info = DaemonInfo {
            started_at: SystemTime::now(),
            socket: socket.path().to_owned(),
            selinux_mode: mode.to_string(),
            serving: serving.clone(),
            reconcile_min_age: config.reconcile_min_age,
        };
        let service = LabelsServer::new(LabelService::new(volumes, policy.clone(), info))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let (health, health_service) = tonic_health::server::health_reporter();
        // The overall status ("" — what a plain health check asks) starts
        // SERVING in tonic-health; it must say so only once mcsd does.
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(mcs_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| DaemonError::Reflection(e.to_string()))?;
        let metrics = match &config.metrics {
            Some(listen) => Some(
                metrics::serve(
                    listen.clone(),
                    registry.clone(),
                    EngineGauges(engine.clone()),
                )
                .await
                .map_err(|source| DaemonError::Metrics {
                    listen: listen.to_string(),
                    source,
                })?,
            ),
            None => None,
        };
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(tower::layer::layer_fn(move |inner| {
                    metrics::Timed::new(inner, registry.clone())
                }))
                .add_service(service)
                .add_service(health_service)
                .add_service(reflection)
                .serve_with_incoming_shutdown(guard::incoming(listener, gate.clone()), async {
                    let _ = stopped.await;
                }),
        );
        health.set_serving::<LabelsServer<LabelService>>().await;
        health.set_service_status("", ServingStatus::Serving).await;
        serving.store(true, Ordering::Relaxed);
        let health_follows_engine = tokio::spawn(follow_engine(
            engine.clone(),
            health.clone(),
            serving.clone(),
        ));
        tracing::info!(socket = %socket.path().display(), range = %config.range, "mcsd is serving");
        Ok(Daemon {
            engine,
            socket,
            stop,
            server,
            health,
            serving,
            health_follows_engine,
            metrics,
            policy,
            relabeler,
            gate,
            config: std::sync::Mutex::new(config.clone()),
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

    /// Resolves if the engine stops while the daemon serves (its actor
    /// panicked): health already says NOT_SERVING; [`run`] then exits
    /// with [`DaemonError::EngineDied`] so the service manager restarts
    /// mcsd instead of leaving a process that fails every call.
    pub async fn engine_died(&self) {
        self.engine.stopped().await
    }

    /// Stops gracefully: in-flight calls finish, queued changes commit, the
    /// store flushes.
    pub async fn stop(self) -> Result<(), DaemonError> {
        self.health_follows_engine.abort();
        self.serving.store(false, Ordering::Relaxed);
        self.health
            .set_not_serving::<LabelsServer<LabelService>>()
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if let Some(metrics) = &self.metrics {
            metrics.abort();
        }
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

/// Health follows the engine: once its actor has died (a panic) every
/// request fails, so health checks and `mcsctl status` must stop saying
/// SERVING and let a supervisor or load balancer act on it.
async fn follow_engine(
    engine: Engine,
    health: tonic_health::server::HealthReporter,
    serving: Arc<AtomicBool>,
) {
    engine.stopped().await;
    serving.store(false, Ordering::Relaxed);
    health.set_not_serving::<LabelsServer<LabelService>>().await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
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

/// The pair gauges of the metrics endpoint, read from the engine at each
/// scrape (the metrics module does not know the engine).
#[derive(Clone)]
struct EngineGauges(Engine);

impl metrics::Gauges for EngineGauges {
    async fn pairs(&self) -> Option<metrics::Pairs> {
        let pool = self.0.stats().await.ok()?.pool;
        Some(metrics::Pairs {
            total: pool.total,
            held: pool.held,
            free: pool.free,
            reserved: pool.reserved,
        })
    }
}
