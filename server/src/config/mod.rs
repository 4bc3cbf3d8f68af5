//! Configuration: the TOML file, command-line overrides, and validation into
//! typed values. The rest of mcsd never parses a configuration string again.
//!
//! Unknown keys and bad values are refused with `file:line` and what is
//! wrong, so a typo cannot silently fall back to a default.
//!
//! The file's schema is serde structs, one per table (`file` holds the
//! top-level keys and the small tables; `auth`, `connections` and `store`
//! the larger ones), each with the conversion that turns it into typed
//! values. `print` is the other direction: what `--check-config` prints.

mod auth;
mod connections;
mod error;
mod file;
mod print;
mod store;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::auth::AuthConfig;
use crate::context::{host_contexts_candidates, Template};
use crate::level::CategoryRange;
use crate::relabel::RelabelConfig;
use crate::reservation::Reservation;
use crate::socket::guard::ConnectionLimits;
use crate::store::backend::StoreSettings;

pub use self::error::ConfigError;
use self::error::Invalid;
use self::file::FileConfig;
pub use crate::metrics::Listen as MetricsListen;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/mcsd/mcsd.toml";
/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/mcsd/mcsd.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mcsd";

/// mcsd's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the gRPC socket lives.
    pub socket: PathBuf,
    /// Where the store lives.
    pub state_dir: PathBuf,
    /// The categories handed out.
    pub range: CategoryRange,
    /// Process context template, if configured.
    pub process_template: Option<Template>,
    /// File context template, if configured.
    pub file_template: Option<Template>,
    /// Host contexts files to read templates from when not configured.
    pub host_contexts: Vec<PathBuf>,
    /// Where the records live (`[store]`): sled (default) or etcd.
    pub store: StoreSettings,
    /// Who may call what (`[auth]`).
    pub auth: AuthConfig,
    /// Whether to hold the pairs of running processes at start (`[in_use]`).
    pub scan_in_use: bool,
    /// Where to find them (`/proc`; tests use a made-up tree).
    pub proc_root: PathBuf,
    /// containers/storage's root, whose stored containers' labels are held
    /// at start too (`[in_use] containers_storage`).
    pub containers_storage: PathBuf,
    /// docker's data root, likewise (`[in_use] docker_root`).
    pub docker_root: PathBuf,
    /// Volume relabeling (`[relabel]`).
    pub relabel: RelabelConfig,
    /// Pairs and categories never handed out, kept in step with this list
    /// at start and on reload (operators can add more with `mcsctl reserve`).
    pub reservations: Vec<Reservation>,
    /// Where Prometheus metrics are served, if anywhere (`[metrics] listen`).
    pub metrics: Option<MetricsListen>,
    /// How many connections may be open, per uid and in all, and how soon
    /// each must speak (`[connections]`).
    pub connections: ConnectionLimits,
    /// This host's name, recorded with each allocation (default: the
    /// kernel's hostname).
    pub node_name: String,
    /// Reconcile never releases an allocation younger than this
    /// (`[reconcile] min_age_secs`): the engine may not list a container
    /// it is still creating. A request may ask for another age.
    pub reconcile_min_age: std::time::Duration,
}

/// Default of `[reconcile] min_age_secs`.
pub const DEFAULT_RECONCILE_MIN_AGE_SECS: u64 = 60;
/// Largest `[reconcile] min_age_secs` (a day).
pub const MAX_RECONCILE_MIN_AGE_SECS: u64 = 86_400;

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            range: CategoryRange::FULL,
            process_template: None,
            file_template: None,
            host_contexts: host_contexts_candidates(),
            store: StoreSettings::Sled,
            auth: AuthConfig::default(),
            scan_in_use: true,
            proc_root: "/proc".into(),
            containers_storage: "/var/lib/containers/storage".into(),
            docker_root: "/var/lib/docker".into(),
            relabel: RelabelConfig::default(),
            reservations: Vec::new(),
            metrics: None,
            connections: ConnectionLimits::default(),
            node_name: hostname(),
            reconcile_min_age: std::time::Duration::from_secs(DEFAULT_RECONCILE_MIN_AGE_SECS),
        }
    }
}

/// The kernel's host name, the default node name.
fn hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

impl Config {
    /// Reads `path` and applies it over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::default().apply_toml(&text, path)
    }

    /// Applies the TOML `text` (read from `path`, for messages) over `self`.
    pub fn apply_toml(mut self, text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| error::syntax(e, text, path))?;
        file.apply(&mut self)
            .map_err(|invalid| invalid.locate(text, path))?;
        Ok(self)
    }

    /// The effective configuration as TOML, every key spelled out (what
    /// `mcsd --check-config` prints; it parses back to the same values).
    pub fn to_toml(&self) -> String {
        print::to_toml(self)
    }

    /// Sets the node name: 1-253 characters of `[A-Za-z0-9.-_]`, as host
    /// names are.
    pub fn set_node_name(&mut self, name: &str) -> Result<(), String> {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(format!(
                "{name:?} is not a node name: use 1-253 characters of A-Z a-z 0-9 . _ -"
            ));
        }
        self.node_name = name.to_owned();
        Ok(())
    }

    /// Applies a `--categories` value.
    pub fn set_categories(&mut self, value: &str) -> Result<(), ConfigError> {
        self.range = value.parse().map_err(|e| ConfigError::Flag {
            flag: "--categories",
            message: format!("{e}"),
        })?;
        Ok(())
    }
}

/// `path` as given, if it is absolute: relative paths would depend on the
/// directory mcsd happens to start in.
fn absolute(key: &'static str, path: Spanned<PathBuf>) -> Result<PathBuf, Invalid> {
    if path.get_ref().is_absolute() {
        Ok(path.into_inner())
    } else {
        Err(Invalid::new(
            key,
            path.span(),
            format!(
                "{} is relative; {key} must be an absolute path",
                path.get_ref().display()
            ),
        ))
    }
}
