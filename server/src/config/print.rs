//! What `mcsd --check-config` prints: the effective configuration as a
//! file, every key spelled out, that parses back to the same values.
//!
//! Each table is a serde struct shaped like the file's, so toml writes
//! (and escapes) every value. Comments are not part of serde's data model:
//! each table is written in turn and followed by its notes, which say what a
//! key left out means (a template taken from the host, a password not
//! shown).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::Config;
use crate::store::backend::StoreSettings;
use crate::store::etcd;

/// Prints `config`.
pub(super) fn to_toml(config: &Config) -> String {
    let mut out = text(&Top::of(config));
    let (labels, notes) = Labels::of(config);
    table(&mut out, "labels", &labels, &notes);
    table(&mut out, "relabel", &Relabel::of(config), &[]);
    table(&mut out, "auth", &Auth::of(config), &[]);
    table(&mut out, "in_use", &InUse::of(config), &[]);
    let reconcile = Reconcile {
        min_age_secs: int(config.reconcile_min_age.as_secs()),
    };
    table(&mut out, "reconcile", &reconcile, &[]);
    let metrics = Metrics {
        listen: config
            .metrics
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    };
    table(&mut out, "metrics", &metrics, &[]);
    table(&mut out, "connections", &Connections::of(config), &[]);
    let (store, notes) = Store::of(&config.store);
    table(&mut out, "store", &store, &notes);
    out
}

/// Appends `[name]` and `value`'s keys, then `notes` as comments.
fn table(out: &mut String, name: &str, value: &impl Serialize, notes: &[&str]) {
    out.push('\n');
    out.push_str(&text(&BTreeMap::from([(name, value)])));
    for note in notes {
        out.push_str("# ");
        out.push_str(note);
        out.push('\n');
    }
}

/// `value` as TOML.
fn text(value: &impl Serialize) -> String {
    // Every field below is a string, a bool, an i64, a list of those or a
    // table: all of them TOML can write.
    toml::to_string(value).expect("the printed tables hold only values TOML can write")
}

/// A path as text (a name that is not UTF-8 is shown with U+FFFD, as
/// everywhere mcsd prints paths).
fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A count as a TOML integer (an i64). Values read from a file are far
/// below its limit; one set otherwise above it prints as the limit.
fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Milliseconds of `d`, as a TOML integer.
fn millis(d: Duration) -> i64 {
    int(d.as_millis())
}

/// The top-level keys.
#[derive(Serialize)]
struct Top<'a> {
    socket: String,
    state_dir: String,
    categories: String,
    node_name: &'a str,
    reservations: Vec<String>,
}

impl<'a> Top<'a> {
    fn of(c: &'a Config) -> Self {
        Self {
            socket: path(&c.socket),
            state_dir: path(&c.state_dir),
            categories: c.range.to_string(),
            node_name: &c.node_name,
            reservations: c.reservations.iter().map(ToString::to_string).collect(),
        }
    }
}

/// `[labels]`; a template not configured comes from the host.
#[derive(Serialize)]
struct Labels {
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
}

impl Labels {
    fn of(c: &Config) -> (Self, Vec<&'static str>) {
        let mut notes = Vec::new();
        if c.process_template.is_none() {
            notes.push("process: from the host contexts file, else system_u:system_r:container_t");
        }
        if c.file_template.is_none() {
            notes
                .push("file: from the host contexts file, else system_u:object_r:container_file_t");
        }
        let labels = Self {
            process: c.process_template.as_ref().map(ToString::to_string),
            file: c.file_template.as_ref().map(ToString::to_string),
        };
        (labels, notes)
    }
}

/// `[relabel]`.
#[derive(Serialize)]
struct Relabel {
    allowlist: Vec<String>,
    restore: String,
    threads: i64,
}

impl Relabel {
    fn of(c: &Config) -> Self {
        Self {
            allowlist: c.relabel.allowlist.iter().map(|p| path(p)).collect(),
            restore: c.relabel.restore.to_string(),
            threads: int(c.relabel.threads),
        }
    }
}

/// `[auth]`, with the file's key names (`admin_groups` for the gids).
#[derive(Serialize)]
struct Auth<'a> {
    admin_uids: &'a BTreeSet<u32>,
    admin_groups: &'a BTreeSet<u32>,
    reader_uids: &'a BTreeSet<u32>,
    reader_groups: &'a BTreeSet<u32>,
    container_types: &'a BTreeSet<String>,
    allow_containers: bool,
}

impl<'a> Auth<'a> {
    fn of(c: &'a Config) -> Self {
        Self {
            admin_uids: &c.auth.admin_uids,
            admin_groups: &c.auth.admin_gids,
            reader_uids: &c.auth.reader_uids,
            reader_groups: &c.auth.reader_gids,
            container_types: &c.auth.container_types,
            allow_containers: c.auth.allow_containers,
        }
    }
}

/// `[in_use]`.
#[derive(Serialize)]
struct InUse {
    scan: bool,
    proc_root: String,
    containers_storage: String,
    docker_root: String,
}

impl InUse {
    fn of(c: &Config) -> Self {
        Self {
            scan: c.scan_in_use,
            proc_root: path(&c.proc_root),
            containers_storage: path(&c.containers_storage),
            docker_root: path(&c.docker_root),
        }
    }
}

/// `[reconcile]`.
#[derive(Serialize)]
struct Reconcile {
    min_age_secs: i64,
}

/// `[metrics]`; `""` is off.
#[derive(Serialize)]
struct Metrics {
    listen: String,
}

/// `[connections]`.
#[derive(Serialize)]
struct Connections {
    max: i64,
    per_uid: i64,
    admin_reserve: i64,
    handshake_timeout_ms: i64,
}

impl Connections {
    fn of(c: &Config) -> Self {
        let limits = &c.connections;
        Self {
            max: int(limits.max),
            per_uid: int(limits.per_uid),
            admin_reserve: int(limits.admin_reserve),
            handshake_timeout_ms: millis(limits.handshake_timeout),
        }
    }
}

/// `[store]`, and `[store.etcd]` for etcd.
#[derive(Serialize)]
struct Store<'a> {
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd: Option<Etcd<'a>>,
}

/// `[store.etcd]`. An inline password is never printed.
#[derive(Serialize)]
struct Etcd<'a> {
    endpoints: &'a [String],
    prefix: &'a str,
    timeout_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<String>,
}

impl<'a> Store<'a> {
    fn of(settings: &'a StoreSettings) -> (Self, Vec<&'static str>) {
        let etcd = match settings {
            StoreSettings::Sled => {
                let sled = Self {
                    backend: "sled",
                    etcd: None,
                };
                return (sled, Vec::new());
            }
            StoreSettings::Etcd(etcd) => etcd,
        };
        let tls = etcd.tls.as_ref();
        let identity = tls.and_then(|t| t.identity.as_ref());
        let auth = etcd.auth.as_ref();
        let mut notes = Vec::new();
        let password_file = match auth.map(|a| &a.password) {
            Some(etcd::Password::File(p)) => Some(path(p)),
            Some(etcd::Password::Inline(_)) => {
                notes.push("password: set in the file, not shown");
                None
            }
            None => None,
        };
        let printed = Etcd {
            endpoints: &etcd.endpoints,
            prefix: &etcd.prefix,
            timeout_ms: millis(etcd.timeout),
            ca: tls.map(|t| path(&t.ca)),
            cert: identity.map(|(cert, _)| path(cert)),
            key: identity.map(|(_, key)| path(key)),
            user: auth.map(|a| a.user.as_str()),
            password_file,
        };
        let store = Self {
            backend: "etcd",
            etcd: Some(printed),
        };
        (store, notes)
    }
}
