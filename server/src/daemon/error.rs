//! Why the daemon could not start, or stopped.

use std::path::PathBuf;

use crate::context::{ContextsFileError, PolicyRejected};
use crate::engine::LoadError;
use crate::error::AllocError;
use crate::relabel::RelabelError;
use crate::socket::SocketError;
use crate::store::StoreError;

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
