//! Putting the pieces together: open the store, load the engine, bind the
//! socket, serve; and the reverse on shutdown.
//!
//! Order matters. The socket is bound only after the store is open and
//! checked, so a client that can connect gets answers from a consistent
//! state. On shutdown the server stops accepting, lets in-flight calls
//! finish, then the engine drains its queue and the store flushes last.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcs_proto::v1::labels_server::LabelsServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

use crate::auth::{Policy, Role};
use crate::config::Config;
use crate::context::{self, ContextsFileError, LabelSource, Labels, PolicyRejected, SelinuxMode};
use crate::engine::{Engine, EngineConfig, LoadError};
use crate::error::AllocError;
use crate::inuse;
use crate::metrics;
use crate::relabel::{FromPolicy, RelabelError, Relabeler, RestoreMode};
use crate::service::{DaemonInfo, LabelService, SharedPolicy};
use crate::socket::guard::{self, ConnectionLimits, Gate};
use crate::socket::{BoundSocket, SocketError};
use crate::store::backend::{self, StoreSettings};
use crate::store::StoreError;
use crate::systemd;
use crate::volumes::{SharedRelabeler, Volumes};

mod reload;
mod run;
#[cfg(test)]
mod tests;

pub use run::run;

/// Largest request accepted; real requests are a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How long in-flight calls get to finish after a stop is requested. A
/// client that keeps its connection open without answering (hung, stopped)
/// must not hold mcsd's shutdown hostage.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Holds the pairs running processes use, before any client can ask for
/// one. A scan that cannot read the process table is logged, not fatal:
/// mcsd is still the better allocator without it.
async fn adopt_running(volumes: &Volumes, config: &Config) -> Result<(), DaemonError> {
    let proc_root = &config.proc_root;
    let in_use = match inuse::scan(proc_root) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(proc = %proc_root.display(), error = %e, "cannot scan running processes for labels in use");
            return Ok(());
        }
    };
    // Containers that exist but do not run get their stored label back at
    // the next start: their levels are in use too. A store that cannot be
    // read is logged and skipped, as the process scan is.
    let mut stored = crate::stored::Stored::new();
    type Scan = fn(&Path) -> Result<crate::stored::Stored, String>;
    let scans: [(&Path, Scan); 2] = [
        (
            &config.containers_storage,
            crate::stored::containers_storage,
        ),
        (&config.docker_root, crate::stored::docker),
    ];
    for (root, scan) in scans {
        match scan(root) {
            Ok(found) => {
                for (level, id) in found {
                    stored.entry(level).or_insert(id);
                }
            }
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "cannot read stored containers' labels")
            }
        }
    }
    let adopted = inuse::adopt(volumes, &in_use, &stored)
        .await
        .map_err(DaemonError::Adopt)?;
    for (level, pid) in &adopted.held {
        tracing::info!(%level, pid, "pair in use by a running process; held as owner running");
    }
    for (level, holder) in &adopted.held_stored {
        tracing::info!(%level, holder, "pair recorded by a stored container; held as owner running");
    }
    tracing::info!(
        levels_in_use = in_use.len(),
        levels_stored = stored.len(),
        newly_held = adopted.held.len(),
        already_allocated = adopted.already_allocated,
        not_allocatable = adopted.not_allocatable,
        released_gone = adopted.released.len(),
        "scanned running processes for labels in use"
    );
    Ok(())
}

/// Makes the configured reservations in the store those the file lists now,
/// as a reload does: each listed one is reserved (marked as this node's
/// configuration's), and each this node's configuration made earlier but no
/// longer lists (removed while mcsd was down) is removed. Reservations made
/// with `mcsctl reserve`, and those another node's configuration holds,
/// stay.
async fn reconcile_reservations(
    engine: &Engine,
    configured: &[crate::reservation::Reservation],
) -> Result<(), AllocError> {
    for reservation in configured {
        let r = engine.reserve_configured(*reservation).await?;
        if r.created {
            tracing::info!(%reservation, covered = r.covered, "reserved by the configuration");
        }
    }
    for record in engine.reservations().await? {
        let reservation = record.reservation;
        if record.configured_by.as_deref() == Some(engine.node())
            && !configured.contains(&reservation)
        {
            let done = engine.unreserve(reservation).await?;
            tracing::info!(%reservation, freed = done.freed, "unreserved: no longer in the configuration");
        }
    }
    Ok(())
}

/// What a configuration resolves to on this host, before anything is
/// touched: the label templates (configured, from the host contexts file,
/// or built in) and the SELinux mode they were checked under.
struct Resolved {
    labels: Labels,
    source: LabelSource,
    mode: SelinuxMode,
}

/// Resolves the label templates and checks them against the loaded policy
/// (unless SELinux is disabled), and checks that the restore mode can work
/// here. [`Daemon::start`] begins with it and `mcsd --check-config` runs it
/// ([`check`]), so a configuration the check accepts gets past these steps
/// at start.
fn resolve(config: &Config) -> Result<Resolved, DaemonError> {
    let mode = context::selinux_mode();
    let (labels, source) = context::resolve_labels(
        (
            config.process_template.clone(),
            config.file_template.clone(),
        ),
        &config.host_contexts,
    )?;
    if mode != SelinuxMode::Disabled {
        context::check_against_policy(&labels)?;
    }
    if config.relabel.restore == RestoreMode::Policy {
        FromPolicy::new()?;
    }
    Ok(Resolved {
        labels,
        source,
        mode,
    })
}

/// Checks what `start` checks before it touches the store: label
/// templates (host contexts file, loaded policy) and the restore mode.
/// For `mcsd --check-config`.
pub fn check(config: &Config) -> Result<(), DaemonError> {
    resolve(config).map(drop)
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
    /// The socket systemd passed is unusable.
    #[error("socket activation: {0}")]
    Activation(String),
    /// The engine stopped while serving (its actor panicked): every call
    /// would fail, so the process exits for its supervisor to restart it.
    #[error("the engine stopped while serving (see the panic logged above); exiting so that systemd restarts mcsd")]
    EngineDied,
    /// The reflection service could not be built.
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    /// The metrics listener could not be opened.
    #[error("cannot serve metrics on {listen}: {source}")]
    Metrics {
        /// The configured address.
        listen: String,
        /// Why.
        source: std::io::Error,
    },
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

/// Raises the open-file limit as far as it goes and fits the connection
/// limits into it, saying what it did: a `connections.max` the descriptors
/// cannot carry would fail in accept() instead of in a clear refusal.
fn fit_connection_limits(limits: ConnectionLimits) -> ConnectionLimits {
    let open_files = match guard::raise_open_file_limit() {
        Ok((before, now)) => {
            if before == now {
                tracing::info!(limit = now, "open-file limit (RLIMIT_NOFILE)");
            } else {
                tracing::info!(
                    before,
                    limit = now,
                    "raised the open-file limit (RLIMIT_NOFILE) from {before} to {now}"
                );
            }
            now
        }
        Err(e) => {
            let now = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(u64::MAX);
            tracing::warn!(limit = now, error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE); keeping {now}");
            now
        }
    };
    let (fitted, lowered) = limits.fit_to(open_files);
    if lowered {
        tracing::warn!(
            configured = limits.max,
            max = fitted.max,
            "connections.max = {} needs more descriptors than RLIMIT_NOFILE ({open_files}) leaves; serving at most {} connections",
            limits.max,
            fitted.max
        );
    }
    fitted
}

/// A gate whose admins are those `policy` (as reloaded) calls admins.
fn connection_gate(limits: ConnectionLimits, policy: &SharedPolicy) -> Arc<Gate> {
    let policy = policy.clone();
    Gate::new(
        limits,
        Box::new(move |caller| {
            policy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .check(caller, "connect", Role::Admin)
                .is_ok()
        }),
    )
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
        let engine = Engine::start(
            store,
            EngineConfig {
                range: config.range,
                labels,
                node: config.node_name.clone(),
            },
        )
        .await?;

        let relabeler = Arc::new(std::sync::RwLock::new(Arc::new(Relabeler::new(
            config.relabel.clone(),
            &config.state_dir,
        ))));
        let volumes = Volumes::new(engine.clone(), relabeler.clone(), metrics::global().clone());
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
                    metrics::global().clone(),
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
                .layer(tower::layer::layer_fn(|inner| {
                    metrics::Timed::new(inner, metrics::global().clone())
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
