//! What the file may hold: its top-level keys and small tables, and how
//! each becomes typed values. The larger tables have their own modules
//! (`auth`, `connections`, `store`).
//!
//! serde refuses unknown keys and wrong types, with their line; the
//! conversions refuse bad values, naming the key. Every value keeps its
//! span (`Spanned`) so that a refusal points at its line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::auth::AuthSection;
use super::connections::ConnectionsSection;
use super::error::Invalid;
use super::store::StoreSection;
use super::{absolute, Config, MAX_RECONCILE_MIN_AGE_SECS};
use crate::metrics::Listen as MetricsListen;
use crate::relabel::RelabelConfig;
use crate::reservation::Reservation;

/// The whole file as written. The fields' order is the order serde lists
/// them in ("expected one of ...") when a key is unknown.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
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

impl FileConfig {
    /// Sets every key the file sets over `config`; a key left out keeps
    /// its value. Sections are checked in a fixed order, so of several bad
    /// values the same one is reported each time.
    pub(super) fn apply(self, config: &mut Config) -> Result<(), Invalid> {
        if let Some(socket) = self.socket {
            config.socket = absolute("socket", socket)?;
        }
        if let Some(dir) = self.state_dir {
            config.state_dir = absolute("state_dir", dir)?;
        }
        if let Some(categories) = self.categories {
            config.range = categories
                .get_ref()
                .parse()
                .map_err(|e| Invalid::new("categories", categories.span(), format!("{e}")))?;
        }
        if let Some(labels) = self.labels {
            labels.apply(config)?;
        }
        if let Some(store) = self.store {
            config.store = store.settings()?;
        }
        if let Some(in_use) = self.in_use {
            in_use.apply(config)?;
        }
        if let Some(reconcile) = self.reconcile {
            config.reconcile_min_age = reconcile.over(config.reconcile_min_age)?;
        }
        if let Some(name) = self.node_name {
            config
                .set_node_name(name.get_ref())
                .map_err(|m| Invalid::new("node_name", name.span(), m))?;
        }
        if let Some(list) = self.reservations {
            config.reservations = reservations(list)?;
        }
        if let Some(metrics) = self.metrics {
            config.metrics = metrics.over(config.metrics.take())?;
        }
        if let Some(section) = self.connections {
            config.connections = section.over(config.connections)?;
        }
        if let Some(relabel) = self.relabel {
            config.relabel = relabel.over(std::mem::take(&mut config.relabel))?;
        }
        if let Some(auth) = self.auth {
            config.auth = auth.over(&config.auth)?;
        }
        Ok(())
    }
}

/// `reservations`: each a pair or a category, the first of duplicates kept.
fn reservations(list: Vec<Spanned<String>>) -> Result<Vec<Reservation>, Invalid> {
    let mut reservations = Vec::with_capacity(list.len());
    for entry in list {
        let r: Reservation = entry.get_ref().parse().map_err(|e| {
            Invalid::new(
                "reservations",
                entry.span(),
                format!("{e}; use s0:cX,cY or cN"),
            )
        })?;
        if !reservations.contains(&r) {
            reservations.push(r);
        }
    }
    Ok(reservations)
}

/// `[labels]`: the context templates handed out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsSection {
    process: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
}

impl LabelsSection {
    fn apply(self, config: &mut Config) -> Result<(), Invalid> {
        if let Some(process) = self.process {
            config.process_template = Some(
                process
                    .get_ref()
                    .parse()
                    .map_err(|e| Invalid::new("labels.process", process.span(), format!("{e}")))?,
            );
        }
        if let Some(file) = self.file {
            config.file_template = Some(
                file.get_ref()
                    .parse()
                    .map_err(|e| Invalid::new("labels.file", file.span(), format!("{e}")))?,
            );
        }
        Ok(())
    }
}

/// `[in_use]`: whether and where to look for levels already in use at
/// start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InUseSection {
    scan: Option<bool>,
    proc_root: Option<Spanned<PathBuf>>,
    containers_storage: Option<Spanned<PathBuf>>,
    docker_root: Option<Spanned<PathBuf>>,
}

impl InUseSection {
    fn apply(self, config: &mut Config) -> Result<(), Invalid> {
        if let Some(scan) = self.scan {
            config.scan_in_use = scan;
        }
        if let Some(root) = self.proc_root {
            config.proc_root = absolute("in_use.proc_root", root)?;
        }
        if let Some(root) = self.containers_storage {
            config.containers_storage = absolute("in_use.containers_storage", root)?;
        }
        if let Some(root) = self.docker_root {
            config.docker_root = absolute("in_use.docker_root", root)?;
        }
        Ok(())
    }
}

/// `[reconcile]`: the youngest allocation Reconcile may release.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileSection {
    min_age_secs: Option<Spanned<u64>>,
}

impl ReconcileSection {
    fn over(self, min_age: Duration) -> Result<Duration, Invalid> {
        let Some(age) = self.min_age_secs else {
            return Ok(min_age);
        };
        if *age.get_ref() > MAX_RECONCILE_MIN_AGE_SECS {
            return Err(Invalid::new(
                "reconcile.min_age_secs",
                age.span(),
                format!(
                    "at most {MAX_RECONCILE_MIN_AGE_SECS} (a day); a minute is plenty for an engine to list a container it creates"
                ),
            ));
        }
        Ok(Duration::from_secs(age.into_inner()))
    }
}

/// `[metrics]`: where metrics are served; `listen = ""` turns them off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    listen: Option<Spanned<String>>,
}

impl MetricsSection {
    fn over(self, listen: Option<MetricsListen>) -> Result<Option<MetricsListen>, Invalid> {
        match self.listen {
            None => Ok(listen),
            Some(listen) if listen.get_ref().is_empty() => Ok(None),
            Some(listen) => listen
                .get_ref()
                .parse()
                .map(Some)
                .map_err(|m| Invalid::new("metrics.listen", listen.span(), m)),
        }
    }
}

/// `[relabel]`: which trees may be relabeled, and what Release restores.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelabelSection {
    allowlist: Option<Vec<Spanned<PathBuf>>>,
    restore: Option<Spanned<String>>,
    threads: Option<Spanned<u32>>,
}

impl RelabelSection {
    fn over(self, mut relabel: RelabelConfig) -> Result<RelabelConfig, Invalid> {
        if let Some(list) = self.allowlist {
            relabel.allowlist = list
                .into_iter()
                .map(|root| absolute("relabel.allowlist", root))
                .collect::<Result<_, _>>()?;
        }
        if let Some(restore) = self.restore {
            relabel.restore = restore
                .get_ref()
                .parse()
                .map_err(|m| Invalid::new("relabel.restore", restore.span(), m))?;
        }
        if let Some(threads) = self.threads {
            if *threads.get_ref() > 1024 {
                return Err(Invalid::new(
                    "relabel.threads",
                    threads.span(),
                    "at most 1024; 0 means one per core",
                ));
            }
            relabel.threads = *threads.get_ref() as usize;
        }
        Ok(relabel)
    }
}
