//! Volumes of containers, and the one way a pair is freed.
//!
//! This module sits above both the relabeler (which walks trees) and the
//! engine (which holds pairs): it records a root, walks it, and on release
//! restores every root *before* the pair is freed. Every path that frees a
//! pair (Release, Reconcile, the in-use scan) goes through
//! [`Volumes::release`]; the engine itself refuses to free a record whose
//! roots the caller does not say it restored.
//!
//! Rules that keep a freed pair off every file:
//! - A root is recorded durably *before* its walk, so a crash mid-walk still
//!   leaves it to restore.
//! - Relabels and releases of one container, and of one root, never
//!   overlap ([`locks`]): a release cancels the container's running walks,
//!   waits for them to stop, then restores what the record now lists.
//! - A root other live containers of this host also registered is not
//!   restored under their feet: it is relabeled for them instead (which
//!   also takes the released pair off files its container created there),
//!   and restored to what it was before the first relabel when the last
//!   of them goes ([`roots`]).
//!
//! Group members share a pair, but it is freed only when the last member's
//! release commits, and each member's roots are restored before its own
//! release commits: no member's restore can still be running when the
//! group's pair is freed, so groups need no lock of their own.

mod error;
mod locks;
mod release;
mod roots;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

pub use self::error::VolumeError;
use self::error::{first_errors, read_only};
use self::locks::{Key, Locks};
use self::roots::{Registrant, RootIndex};
use crate::context::Labels;
use crate::engine::{Engine, Released};
use crate::error::AllocError;
use crate::id::ContainerId;
use crate::metrics::Metrics;
use crate::relabel::{
    Counters, Fixed, FromPolicy, LabelFor, Outcome, Refused, RelabelError, Relabeler, RestoreMode,
    Totals,
};
use crate::store::{AllocationRecord, RelabeledRoot};

/// A progress report: the resolved root, the label written, the totals.
pub type Progress = (PathBuf, String, Totals);

/// How often progress is reported while a walk runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What was done to one root on release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The root.
    pub path: PathBuf,
    /// The mode applied.
    pub mode: RestoreMode,
    /// Counts (zero when nothing was walked).
    pub totals: Totals,
    /// Why nothing was walked, if so.
    pub note: Option<String>,
}

/// The relabel rules in force; replaced on configuration reload.
pub type SharedRelabeler = Arc<std::sync::RwLock<Arc<Relabeler>>>;

/// Relabels and restores container volumes; frees pairs after restoring.
#[derive(Clone)]
pub struct Volumes {
    engine: Engine,
    relabeler: SharedRelabeler,
    locks: Arc<Locks>,
    /// Running walks per container, so a release can stop them.
    walks: Arc<Mutex<HashMap<ContainerId, Vec<Arc<Counters>>>>>,
    /// Built on first use; see [`roots`].
    index: Arc<tokio::sync::Mutex<Option<RootIndex>>>,
    /// Where every walk's entries are counted.
    metrics: Arc<Metrics>,
}

/// A finished relabel.
#[derive(Debug, Clone)]
pub struct Relabeled {
    /// What the walk did.
    pub outcome: Outcome,
    /// The label written.
    pub label: String,
}

/// How many times a release starts over when the container's roots change
/// between reading and locking them (each time, someone registered one).
const RELEASE_ATTEMPTS: u32 = 8;

/// Unregisters a walk when it ends, however it ends.
struct Running<'a> {
    walks: &'a Mutex<HashMap<ContainerId, Vec<Arc<Counters>>>>,
    id: ContainerId,
    counters: Arc<Counters>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut walks = self.walks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = walks.get_mut(&self.id) {
            list.retain(|c| !Arc::ptr_eq(c, &self.counters));
            if list.is_empty() {
                walks.remove(&self.id);
            }
        }
    }
}

impl Volumes {
    /// Relabels through `engine`'s allocations with `relabeler`'s rules,
    /// counting walked entries in `metrics`.
    pub fn new(engine: Engine, relabeler: SharedRelabeler, metrics: Arc<Metrics>) -> Self {
        Self {
            engine,
            relabeler,
            metrics,
            locks: Arc::default(),
            walks: Arc::default(),
            index: Arc::default(),
        }
    }

    /// The engine whose pairs these volumes carry.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The registry these volumes count in, which the service counts its
    /// calls in too.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The rules now (a reload may swap them between two calls).
    pub fn relabeler(&self) -> Arc<Relabeler> {
        self.relabeler
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The label a relabel of `record` writes.
    fn label(labels: &Labels, record: &AllocationRecord, shared: bool) -> String {
        if shared {
            labels.shared_file_label()
        } else {
            record.file_label.clone()
        }
    }

    /// Runs `f` on the root index, building it first if needed.
    async fn with_index<T>(&self, f: impl FnOnce(&mut RootIndex) -> T) -> Result<T, AllocError> {
        let mut index = self.index.lock().await;
        if index.is_none() {
            *index = Some(RootIndex::load(&self.engine).await?);
        }
        Ok(f(index.as_mut().expect("just built")))
    }

    /// Drops `id`'s roots from the index, if it is built. An index not
    /// built yet is loaded later from the store, which no longer holds
    /// them: building it here would cost a listing of every allocation on
    /// the first release, and could fail a release already committed.
    async fn forget(&self, id: &ContainerId, roots: &[RelabeledRoot]) {
        if roots.is_empty() {
            return;
        }
        if let Some(index) = self.index.lock().await.as_mut() {
            index.remove(id, roots);
        }
    }

    /// Resolves, checks and records `path` for container `id`, then labels
    /// the tree, sending running totals to `progress` (resolved root, label
    /// and totals) until it is done. Files with hard links outside the tree
    /// are left alone unless `hard_links` (recorded: restore then labels
    /// them too). A release of `id` meanwhile stops the walk
    /// ([`VolumeError::Cancelled`]) and restores the tree.
    pub async fn relabel(
        &self,
        id: ContainerId,
        path: PathBuf,
        shared: bool,
        cross_mounts: bool,
        hard_links: bool,
        progress: mpsc::Sender<Progress>,
    ) -> Result<Relabeled, VolumeError> {
        let record = self.record(&id).await?;
        self.local(&record, "relabel its volumes")?;
        let relabeler = self.relabeler();
        let root = blocking(move || relabeler.resolve(&path).map_err(Into::into)).await?;
        let probe = root.clone();
        if blocking(move || Ok(read_only(&probe))).await? {
            return Err(VolumeError::ReadOnly(root));
        }
        let _held = self
            .locks
            .lock([Key::Container(id.clone()), Key::Root(root.clone())])
            .await;
        // Released (or allocated again) while this call waited.
        let record = self.record(&id).await?;
        let read = root.clone();
        let current = blocking(move || Ok(Relabeler::current_label(&read))).await?;
        // A tree another container already relabeled keeps the label it
        // had before that first relabel as the one to restore.
        let original = self
            .with_index(|index| index.first_original(&root))
            .await?
            .unwrap_or(current);
        let label = Self::label(self.engine.labels(), &record, shared);
        let registered = RelabeledRoot {
            path: root.clone(),
            shared,
            original,
            hard_links,
        };
        let record = self
            .engine
            .add_root(id.clone(), registered.clone())
            .await
            .map_err(|e| match e {
                AllocError::NotFound(id) => VolumeError::NoAllocation(id),
                e => VolumeError::Alloc(e),
            })?;
        self.with_index(|index| index.add(&record, &registered))
            .await?;
        tracing::info!(container_id = %id, root = %root.display(), %label, shared, "relabel started");
        // The client learns the resolved root and the label before the walk.
        let _ = progress
            .send((root.clone(), label.clone(), Totals::default()))
            .await;
        let counters = Arc::new(Counters::default());
        let _running = self.running(&id, &counters);
        let outcome = self
            .walk(
                root.clone(),
                Fixed(label.clone().into_bytes()),
                cross_mounts,
                hard_links,
                counters.clone(),
                Some((progress, label.clone())),
            )
            .await?;
        if counters.is_cancelled() {
            tracing::info!(container_id = %id, root = %root.display(), "relabel stopped by a release");
            return Err(VolumeError::Cancelled { id, root });
        }
        tracing::info!(container_id = %id, root = %outcome.root.display(), changed = outcome.totals.changed,
            unchanged = outcome.totals.unchanged, failed = outcome.totals.failed,
            hardlinks_skipped = outcome.totals.hardlinks_skipped,
            seconds = outcome.elapsed.as_secs_f64(), "relabel finished");
        if outcome.totals.failed > 0 {
            return Err(VolumeError::Incomplete(Box::new(outcome)));
        }
        Ok(Relabeled { outcome, label })
    }

    /// The container's record; [`VolumeError::NoAllocation`] if none.
    async fn record(&self, id: &ContainerId) -> Result<AllocationRecord, VolumeError> {
        self.lookup(id)
            .await?
            .ok_or_else(|| VolumeError::NoAllocation(id.clone()))
    }

    fn running(&self, id: &ContainerId, counters: &Arc<Counters>) -> Running<'_> {
        self.walks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.clone())
            .or_default()
            .push(counters.clone());
        Running {
            walks: &self.walks,
            id: id.clone(),
            counters: counters.clone(),
        }
    }

    /// Runs one walk off the async workers, reporting progress if asked.
    async fn walk(
        &self,
        root: PathBuf,
        labels: impl LabelFor + Send + 'static,
        cross_mounts: bool,
        hard_links: bool,
        counters: Arc<Counters>,
        progress: Option<(mpsc::Sender<Progress>, String)>,
    ) -> Result<Outcome, VolumeError> {
        let reporter = progress.map(|(tx, label)| {
            let counters = counters.clone();
            let root = root.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROGRESS_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if tx
                        .send((root.clone(), label.clone(), counters.totals()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        });
        let relabeler = self.relabeler();
        let c = counters.clone();
        let result = blocking(move || {
            relabeler
                .run(&root, &labels, cross_mounts, hard_links, &c)
                .map_err(Into::into)
        })
        .await;
        if let Some(reporter) = reporter {
            reporter.abort();
        }
        let t = counters.totals();
        self.metrics.relabel(t.changed, t.unchanged, t.failed);
        result
    }
    async fn lookup(&self, id: &ContainerId) -> Result<Option<AllocationRecord>, VolumeError> {
        match self.engine.get(id).await {
            Ok(record) => Ok(Some(record)),
            Err(AllocError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses to touch the volumes of an allocation another node made.
    /// Records from before nodes were recorded are this host's.
    fn local(&self, record: &AllocationRecord, action: &'static str) -> Result<(), VolumeError> {
        let here = self.engine.node();
        if record.node.is_empty() || record.node == here {
            return Ok(());
        }
        Err(VolumeError::OtherNode {
            id: record.container_id.clone(),
            node: record.node.clone(),
            here: here.to_owned(),
            action,
        })
    }
}

struct BoxedLabels(Box<dyn LabelFor + Send>);

impl LabelFor for BoxedLabels {
    fn fixed(&self) -> Option<&[u8]> {
        self.0.fixed()
    }
    fn label_for(
        &self,
        path: &std::path::Path,
        kind: crate::relabel::Kind,
    ) -> Result<Option<std::borrow::Cow<'_, [u8]>>, String> {
        self.0.label_for(path, kind)
    }
}

/// Runs blocking file system work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, VolumeError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(VolumeError::Relabel(RelabelError::Open {
            path: PathBuf::new(),
            error: format!("the relabel task failed: {e}"),
        }))
    })
}
