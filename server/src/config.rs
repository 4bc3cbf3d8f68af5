//! Configuration: the TOML file, command-line overrides, and validation into
//! typed values. The rest of mcsd never parses a configuration string again.
//!
//! Unknown keys and bad values are refused with `file:line` and what is
//! wrong, so a typo cannot silently fall back to a default.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::auth::{accounts, AuthConfig};
use crate::context::{host_contexts_candidates, Template};
use crate::level::CategoryRange;
use crate::relabel::RelabelConfig;
use crate::reservation::Reservation;
use crate::socket::guard::ConnectionLimits;
use crate::store::backend::{StoreSection, StoreSettings};

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

pub use crate::metrics::Listen as MetricsListen;

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

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("{path}:{line}: {key}: {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A command-line value is not acceptable.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, e.g. `--categories`.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<Spanned<PathBuf>>,
    state_dir: Option<Spanned<PathBuf>>,
    categories: Option<Spanned<String>>,
    labels: Option<LabelsSection>,
    store: Option<StoreSection>,
    auth: Option<AuthSection>,
    in_use: Option<InUseSection>,
    relabel: Option<RelabelSection>,
    reservations: Option<Vec<Spanned<String>>>,
    node_name: Option<Spanned<String>>,
    metrics: Option<MetricsSection>,
    connections: Option<ConnectionsSection>,
    reconcile: Option<ReconcileSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileSection {
    min_age_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionsSection {
    max: Option<Spanned<u64>>,
    per_uid: Option<Spanned<u64>>,
    admin_reserve: Option<Spanned<u64>>,
    handshake_timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelabelSection {
    allowlist: Option<Vec<Spanned<PathBuf>>>,
    restore: Option<Spanned<String>>,
    threads: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InUseSection {
    scan: Option<bool>,
    proc_root: Option<Spanned<PathBuf>>,
    containers_storage: Option<Spanned<PathBuf>>,
    docker_root: Option<Spanned<PathBuf>>,
}

/// A uid or gid given as a number or a name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Account {
    Id(u32),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    admin_uids: Option<Vec<Spanned<Account>>>,
    admin_groups: Option<Vec<Spanned<Account>>>,
    reader_uids: Option<Vec<Spanned<Account>>>,
    reader_groups: Option<Vec<Spanned<Account>>>,
    container_types: Option<Vec<Spanned<String>>>,
    allow_containers: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsSection {
    process: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
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

fn line_of(text: &str, span: Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
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
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.span().map_or(1, |s| line_of(text, s)),
            message: e.message().trim().to_owned(),
        })?;
        let value_err = |key, span: Range<usize>, message: String| ConfigError::Value {
            path: path.to_owned(),
            line: line_of(text, span),
            key,
            message,
        };
        if let Some(socket) = file.socket {
            let span = socket.span();
            self.socket = absolute("socket", socket.into_inner())
                .map_err(|m| value_err("socket", span, m))?;
        }
        if let Some(dir) = file.state_dir {
            let span = dir.span();
            self.state_dir = absolute("state_dir", dir.into_inner())
                .map_err(|m| value_err("state_dir", span, m))?;
        }
        if let Some(categories) = file.categories {
            self.range = categories
                .get_ref()
                .parse()
                .map_err(|e| value_err("categories", categories.span(), format!("{e}")))?;
        }
        if let Some(labels) = file.labels {
            if let Some(process) = labels.process {
                self.process_template =
                    Some(process.get_ref().parse().map_err(|e| {
                        value_err("labels.process", process.span(), format!("{e}"))
                    })?);
            }
            if let Some(file) = labels.file {
                self.file_template = Some(
                    file.get_ref()
                        .parse()
                        .map_err(|e| value_err("labels.file", file.span(), format!("{e}")))?,
                );
            }
        }
        if let Some(store) = file.store {
            self.store = store
                .validate()
                .map_err(|(key, span, message)| value_err(key, span, message))?;
        }
        if let Some(in_use) = file.in_use {
            if let Some(scan) = in_use.scan {
                self.scan_in_use = scan;
            }
            if let Some(root) = in_use.proc_root {
                let span = root.span();
                self.proc_root = absolute("in_use.proc_root", root.into_inner())
                    .map_err(|m| value_err("in_use.proc_root", span, m))?;
            }
            if let Some(root) = in_use.containers_storage {
                let span = root.span();
                self.containers_storage = absolute("in_use.containers_storage", root.into_inner())
                    .map_err(|m| value_err("in_use.containers_storage", span, m))?;
            }
            if let Some(root) = in_use.docker_root {
                let span = root.span();
                self.docker_root = absolute("in_use.docker_root", root.into_inner())
                    .map_err(|m| value_err("in_use.docker_root", span, m))?;
            }
        }
        if let Some(section) = file.reconcile {
            if let Some(age) = section.min_age_secs {
                if *age.get_ref() > MAX_RECONCILE_MIN_AGE_SECS {
                    return Err(value_err(
                        "reconcile.min_age_secs",
                        age.span(),
                        format!(
                            "at most {MAX_RECONCILE_MIN_AGE_SECS} (a day); a minute is plenty for an engine to list a container it creates"
                        ),
                    ));
                }
                self.reconcile_min_age = std::time::Duration::from_secs(*age.get_ref());
            }
        }
        if let Some(name) = file.node_name {
            self.set_node_name(name.get_ref())
                .map_err(|m| value_err("node_name", name.span(), m))?;
        }
        if let Some(list) = file.reservations {
            let mut reservations = Vec::with_capacity(list.len());
            for entry in list {
                let r: Reservation = entry.get_ref().parse().map_err(|e| {
                    value_err(
                        "reservations",
                        entry.span(),
                        format!("{e}; use s0:cX,cY or cN"),
                    )
                })?;
                if !reservations.contains(&r) {
                    reservations.push(r);
                }
            }
            self.reservations = reservations;
        }
        if let Some(metrics) = file.metrics {
            if let Some(listen) = metrics.listen {
                self.metrics = if listen.get_ref().is_empty() {
                    None
                } else {
                    Some(
                        listen
                            .get_ref()
                            .parse()
                            .map_err(|m| value_err("metrics.listen", listen.span(), m))?,
                    )
                };
            }
        }
        if let Some(section) = file.connections {
            self.connections = connections(section, self.connections)
                .map_err(|(key, span, message)| value_err(key, span, message))?;
        }
        if let Some(relabel) = file.relabel {
            if let Some(list) = relabel.allowlist {
                let mut roots = Vec::with_capacity(list.len());
                for entry in list {
                    let span = entry.span();
                    roots.push(
                        absolute("relabel.allowlist", entry.into_inner())
                            .map_err(|m| value_err("relabel.allowlist", span, m))?,
                    );
                }
                self.relabel.allowlist = roots;
            }
            if let Some(restore) = relabel.restore {
                self.relabel.restore = restore
                    .get_ref()
                    .parse()
                    .map_err(|m| value_err("relabel.restore", restore.span(), m))?;
            }
            if let Some(threads) = relabel.threads {
                if *threads.get_ref() > 1024 {
                    return Err(value_err(
                        "relabel.threads",
                        threads.span(),
                        "at most 1024; 0 means one per core".into(),
                    ));
                }
                self.relabel.threads = *threads.get_ref() as usize;
            }
        }
        if let Some(auth) = file.auth {
            let resolve = |key: &'static str,
                           list: Option<Vec<Spanned<Account>>>,
                           lookup: fn(&str) -> std::io::Result<Option<u32>>,
                           kind: &str|
             -> Result<BTreeSet<u32>, ConfigError> {
                let mut ids = BTreeSet::new();
                for entry in list.unwrap_or_default() {
                    let span = entry.span();
                    match entry.into_inner() {
                        Account::Id(id) => ids.insert(id),
                        Account::Name(name) => match lookup(&name) {
                            Ok(Some(id)) => ids.insert(id),
                            Ok(None) => {
                                return Err(value_err(
                                    key,
                                    span,
                                    format!("no {kind} named {name:?} on this host; create it or give a numeric id"),
                                ))
                            }
                            Err(e) => {
                                return Err(value_err(
                                    key,
                                    span,
                                    format!("cannot look up {kind} {name:?}: {e}"),
                                ))
                            }
                        },
                    };
                }
                Ok(ids)
            };
            self.auth = AuthConfig {
                admin_uids: resolve(
                    "auth.admin_uids",
                    auth.admin_uids,
                    accounts::uid_by_name,
                    "user",
                )?,
                admin_gids: resolve(
                    "auth.admin_groups",
                    auth.admin_groups,
                    accounts::gid_by_name,
                    "group",
                )?,
                reader_uids: resolve(
                    "auth.reader_uids",
                    auth.reader_uids,
                    accounts::uid_by_name,
                    "user",
                )?,
                reader_gids: resolve(
                    "auth.reader_groups",
                    auth.reader_groups,
                    accounts::gid_by_name,
                    "group",
                )?,
                container_types: match auth.container_types {
                    None => self.auth.container_types.clone(),
                    Some(list) => {
                        let mut types = BTreeSet::new();
                        for entry in list {
                            let ty = entry.get_ref();
                            if crate::auth::selinux_type(&format!("u:r:{ty}")) != Some(ty.as_str())
                            {
                                return Err(value_err(
                                    "auth.container_types",
                                    entry.span(),
                                    format!("{ty:?} is not an SELinux type name (letters, digits, '_', '.', '-'), such as \"container_t\""),
                                ));
                            }
                            types.insert(entry.into_inner());
                        }
                        types
                    }
                },
                allow_containers: auth.allow_containers.unwrap_or(self.auth.allow_containers),
            };
        }
        Ok(self)
    }

    /// The effective configuration as TOML, every key spelled out (what
    /// `mcsd --check-config` prints; it parses back to the same values).
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let path = |p: &Path| q(&p.display().to_string());
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        let ids = |set: &BTreeSet<u32>| list(set.iter().map(ToString::to_string).collect());
        let mut out = String::new();
        out.push_str(&format!("socket = {}\n", path(&self.socket)));
        out.push_str(&format!("state_dir = {}\n", path(&self.state_dir)));
        out.push_str(&format!("categories = {}\n", q(&self.range.to_string())));
        out.push_str(&format!("node_name = {}\n", q(&self.node_name)));
        out.push_str(&format!(
            "reservations = {}\n",
            list(
                self.reservations
                    .iter()
                    .map(|r| q(&r.to_string()))
                    .collect()
            )
        ));
        out.push_str("\n[labels]\n");
        match &self.process_template {
            Some(t) => out.push_str(&format!("process = {}\n", q(&t.to_string()))),
            None => out.push_str(
                "# process: from the host contexts file, else system_u:system_r:container_t\n",
            ),
        }
        match &self.file_template {
            Some(t) => out.push_str(&format!("file = {}\n", q(&t.to_string()))),
            None => out.push_str(
                "# file: from the host contexts file, else system_u:object_r:container_file_t\n",
            ),
        }
        out.push_str("\n[relabel]\n");
        out.push_str(&format!(
            "allowlist = {}\n",
            list(self.relabel.allowlist.iter().map(|p| path(p)).collect())
        ));
        out.push_str(&format!(
            "restore = {}\n",
            q(&self.relabel.restore.to_string())
        ));
        out.push_str(&format!("threads = {}\n", self.relabel.threads));
        out.push_str("\n[auth]\n");
        out.push_str(&format!("admin_uids = {}\n", ids(&self.auth.admin_uids)));
        out.push_str(&format!("admin_groups = {}\n", ids(&self.auth.admin_gids)));
        out.push_str(&format!("reader_uids = {}\n", ids(&self.auth.reader_uids)));
        out.push_str(&format!(
            "reader_groups = {}\n",
            ids(&self.auth.reader_gids)
        ));
        out.push_str(&format!(
            "container_types = {}\n",
            list(self.auth.container_types.iter().map(|t| q(t)).collect())
        ));
        out.push_str(&format!(
            "allow_containers = {}\n",
            self.auth.allow_containers
        ));
        out.push_str("\n[in_use]\n");
        out.push_str(&format!("scan = {}\n", self.scan_in_use));
        out.push_str(&format!("proc_root = {}\n", path(&self.proc_root)));
        out.push_str(&format!(
            "containers_storage = {}\n",
            path(&self.containers_storage)
        ));
        out.push_str(&format!("docker_root = {}\n", path(&self.docker_root)));
        out.push_str("\n[reconcile]\n");
        out.push_str(&format!(
            "min_age_secs = {}\n",
            self.reconcile_min_age.as_secs()
        ));
        out.push_str("\n[metrics]\n");
        out.push_str(&format!(
            "listen = {}\n",
            q(&self
                .metrics
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default())
        ));
        let c = &self.connections;
        out.push_str("\n[connections]\n");
        out.push_str(&format!("max = {}\n", c.max));
        out.push_str(&format!("per_uid = {}\n", c.per_uid));
        out.push_str(&format!("admin_reserve = {}\n", c.admin_reserve));
        out.push_str(&format!(
            "handshake_timeout_ms = {}\n",
            c.handshake_timeout.as_millis()
        ));
        out.push_str(&self.store.to_toml());
        out
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

/// Largest `connections.max`: far more than any host's runtimes need, and
/// well within what the kernel's descriptor limits allow.
const MAX_CONNECTIONS: u64 = 1 << 20;

/// Applies `[connections]` over `limits`; an error names the key, its
/// span and what is wrong.
fn connections(
    section: ConnectionsSection,
    mut limits: ConnectionLimits,
) -> Result<ConnectionLimits, (&'static str, Range<usize>, String)> {
    let count = |key: &'static str, value: Spanned<u64>| {
        let n = *value.get_ref();
        if n == 0 || n > MAX_CONNECTIONS {
            return Err((
                key,
                value.span(),
                format!("{n} is out of range; use 1 to {MAX_CONNECTIONS}"),
            ));
        }
        Ok(n as usize)
    };
    if let Some(max) = section.max {
        limits.max = count("connections.max", max)?;
    }
    if let Some(per_uid) = section.per_uid {
        limits.per_uid = count("connections.per_uid", per_uid)?;
    }
    if let Some(reserve) = section.admin_reserve {
        let n = *reserve.get_ref();
        if n >= limits.max as u64 {
            return Err((
                "connections.admin_reserve",
                reserve.span(),
                format!(
                    "{n} leaves no connection for anyone else; use less than connections.max ({})",
                    limits.max
                ),
            ));
        }
        limits.admin_reserve = n as usize;
    } else if limits.admin_reserve >= limits.max {
        // The default reserve shrinks with a small max instead of refusing it.
        limits.admin_reserve = limits.max / 2;
    }
    if let Some(ms) = section.handshake_timeout_ms {
        let n = *ms.get_ref();
        if !(100..=600_000).contains(&n) {
            return Err((
                "connections.handshake_timeout_ms",
                ms.span(),
                format!("{n} is out of range; use 100 to 600000 (milliseconds)"),
            ));
        }
        limits.handshake_timeout = std::time::Duration::from_millis(n);
    }
    Ok(limits)
}

fn absolute(key: &str, path: PathBuf) -> Result<PathBuf, String> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!(
            "{} is relative; {key} must be an absolute path",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::default().apply_toml(text, Path::new("/etc/mcsd/mcsd.toml"))
    }

    #[test]
    fn a_full_file_is_applied() {
        let c = parse(
            "socket = \"/tmp/m.sock\"\nstate_dir = \"/tmp/state\"\ncategories = \"c0.c9\"\n\
             [labels]\nprocess = \"u:r:p_t\"\nfile = \"u:object_r:f_t\"\n",
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/m.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/state"));
        assert_eq!(c.range.pairs(), 45);
        assert_eq!(c.process_template.unwrap().to_string(), "u:r:p_t");
        assert_eq!(c.file_template.unwrap().to_string(), "u:object_r:f_t");
    }

    #[test]
    fn the_store_table_selects_the_backend() {
        let c = parse(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
        )
        .unwrap();
        assert!(matches!(c.store, StoreSettings::Etcd(ref e) if e.prefix == "/mcsd/"));
        assert_eq!(parse("").unwrap().store, StoreSettings::Sled);
    }

    #[test]
    fn auth_accepts_numbers_and_names() {
        let c = parse(
            "[auth]\nadmin_uids = [1000, \"root\"]\nadmin_groups = [\"root\"]\n\
             reader_uids = [2000]\nreader_groups = [65534]\n",
        )
        .unwrap();
        assert_eq!(c.auth.admin_uids, [0, 1000].into());
        assert_eq!(c.auth.admin_gids, [0].into());
        assert_eq!(c.auth.reader_uids, [2000].into());
        assert_eq!(c.auth.reader_gids, [65534].into());
        // Container types keep their default when [auth] does not name them.
        assert!(c.auth.container_types.contains("container_t"));
        assert!(!c.auth.container_types.contains("spc_t"));
        assert!(!c.auth.allow_containers);
    }

    #[test]
    fn auth_container_types_replace_the_default_and_allow_containers_switches_off() {
        let c = parse(
            "[auth]\ncontainer_types = [\"container_t\", \"my_sandbox_t\"]\nallow_containers = true\n",
        )
        .unwrap();
        assert_eq!(
            c.auth.container_types,
            ["container_t".to_owned(), "my_sandbox_t".to_owned()].into()
        );
        assert!(c.auth.allow_containers);
        let text = c.to_toml();
        assert!(
            text.contains("container_types = [\"container_t\", \"my_sandbox_t\"]")
                && text.contains("allow_containers = true"),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn the_effective_configuration_prints_and_parses_back() {
        let c = parse(
            "categories = \"c0.c99\"\nreservations = [\"c5\", \"s0:c1,c2\"]\n\
             [labels]\nprocess = \"u:r:p_t\"\n[relabel]\nallowlist = [\"/srv/vol\"]\nrestore = \"none\"\n\
             [auth]\nadmin_uids = [7]\nreader_groups = [0]\n[metrics]\nlisten = \"127.0.0.1:9464\"\n\
             [connections]\nmax = 100\nper_uid = 10\nadmin_reserve = 5\nhandshake_timeout_ms = 2500\n",
        )
        .unwrap();
        let text = c.to_toml();
        let again = parse(&text).unwrap();
        assert_eq!(again, c, "{text}");
        assert!(text.contains("restore = \"none\""), "{text}");
        assert_eq!(c.connections.per_uid, 10);
        assert_eq!(
            c.connections.handshake_timeout,
            std::time::Duration::from_millis(2500)
        );
    }

    #[test]
    fn the_effective_etcd_store_prints_and_parses_back_without_a_password() {
        let store = "[store]\nbackend = \"etcd\"\n[store.etcd]\n\
                     endpoints = [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]\n\
                     prefix = \"/pool/\"\nca = \"/etc/mcsd/ca.pem\"\ncert = \"/etc/mcsd/c.pem\"\n\
                     key = \"/etc/mcsd/k.pem\"\nuser = \"mcsd\"\n";
        let c = parse(&format!("{store}password_file = \"/etc/mcsd/pw\"\n")).unwrap();
        let text = c.to_toml();
        assert_eq!(parse(&text).unwrap(), c, "{text}");
        assert!(text.contains("timeout_ms = 5000"), "{text}");
        let inline = parse(&format!("{store}password = \"s3cret\"\n")).unwrap();
        let text = inline.to_toml();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("# password: set in the file, not shown"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_file_keeps_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.range, CategoryRange::FULL);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn reconcile_min_age_defaults_to_a_minute_and_is_configurable() {
        assert_eq!(
            parse("").unwrap().reconcile_min_age,
            std::time::Duration::from_secs(60)
        );
        let c = parse("[reconcile]\nmin_age_secs = 5\n").unwrap();
        assert_eq!(c.reconcile_min_age, std::time::Duration::from_secs(5));
        assert!(c.to_toml().contains("[reconcile]\nmin_age_secs = 5\n"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "socket = \"/s\"\ncolour = 1\n",
                "/etc/mcsd/mcsd.toml:2:",
                "colour",
            ),
            (
                "\n\ncategories = \"c9.c0\"\n",
                ":3: categories:",
                "reversed",
            ),
            ("categories = 5\n", ":1:", "string"),
            (
                "state_dir = \"relative/dir\"\n",
                ":1: state_dir:",
                "absolute",
            ),
            (
                "[labels]\nprocess = \"nocolons\"\n",
                ":2: labels.process:",
                "user:role:type",
            ),
            ("[labels]\nfile = \"a:b:c\"\nextra = 1\n", ":3:", "extra"),
            ("socket = \n", ":1:", ""),
            (
                "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"tcp://x:1\"]\n",
                ":4: store.etcd.endpoints:",
                "http://HOST:PORT",
            ),
            (
                "[store]\nbackend = \"zk\"\n",
                ":2: store.backend:",
                "\"zk\"",
            ),
            ("[store]\nengine = 1\n", ":2:", "engine"),
            (
                "[auth]\nadmin_groups = [\"root\",\n  \"no-such-group-mcsd\"]\n",
                ":3: auth.admin_groups:",
                "no group named \"no-such-group-mcsd\"",
            ),
            ("[auth]\nreader_uids = [-1]\n", ":2:", ""),
            ("[auth]\nwriters = [1]\n", ":2:", "writers"),
            (
                "[auth]\ncontainer_types = [\"container_t\",\n  \"system_u:system_r:spc_t\"]\n",
                ":3: auth.container_types:",
                "not an SELinux type name",
            ),
            ("[auth]\nallow_containers = \"yes\"\n", ":2:", ""),
            (
                "[relabel]\nrestore = \"restorecon\"\n",
                ":2: relabel.restore:",
                "original",
            ),
            (
                "[relabel]\nallowlist = [\"/srv\", \"vol\"]\n",
                ":2: relabel.allowlist:",
                "absolute",
            ),
            (
                "[connections]\nper_uid = 0\n",
                ":2: connections.per_uid:",
                "use 1 to",
            ),
            (
                "[connections]\nmax = 10\nadmin_reserve = 10\n",
                ":3: connections.admin_reserve:",
                "less than connections.max (10)",
            ),
            (
                "[connections]\nhandshake_timeout_ms = 5\n",
                ":2: connections.handshake_timeout_ms:",
                "100 to 600000",
            ),
            ("[connections]\nmax = -1\n", ":2:", ""),
            ("[connections]\nidle = 1\n", ":2:", "idle"),
            (
                "[relabel]\nthreads = 5000\n",
                ":2: relabel.threads:",
                "1024",
            ),
            (
                "[reconcile]\n\nmin_age_secs = 100000\n",
                ":3: reconcile.min_age_secs:",
                "at most 86400",
            ),
            ("[reconcile]\nmin_age_secs = -1\n", ":2:", ""),
            ("[reconcile]\nmin_age = 5\n", ":2:", "min_age"),
            (
                "[in_use]\ndocker_root = \"docker\"\n",
                ":2: in_use.docker_root:",
                "absolute",
            ),
        ];
        for (text, location, hint) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(location), "{text:?}: {err}");
            assert!(err.contains(hint), "{text:?}: {err}");
        }
    }
}
