//! Volumes of containers: relabel a tree for a container (recording it
//! first), and restore its trees before its pair is freed.
//!
//! Order matters for safety. A root is recorded durably *before* the walk,
//! so a crash mid-walk still leaves it to restore. On release, roots are
//! restored *before* the pair is freed: while any file may still carry the
//! pair, no other container can be given it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{
    Counters, Fixed, FromPolicy, LabelFor, Outcome, Refused, RelabelError, Relabeler, RestoreMode,
    Totals,
};
use crate::context::Labels;
use crate::engine::{Engine, Released};
use crate::error::AllocError;
use crate::id::ContainerId;
use crate::store::{AllocationRecord, RelabeledRoot};

/// A progress report: the resolved root, the label written, the totals.
pub type Progress = (PathBuf, String, Totals);

/// How often progress is reported while a walk runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why a relabel or a release with restore failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The container holds no allocation.
    #[error("container {0} holds no allocation; allocate a label before relabeling its volumes")]
    NoAllocation(ContainerId),
    /// The root is refused.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The walk could not run.
    #[error(transparent)]
    Relabel(#[from] RelabelError),
    /// The label domain failed (store, ...).
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// Some entries could not be labeled.
    #[error("relabel of {} incomplete: {} of {} entries could not be labeled{}", .0.root.display(), .0.totals.failed, .0.totals.seen, first_errors(.0))]
    Incomplete(Box<Outcome>),
    /// The allocation belongs to another host sharing the store: its
    /// volumes are paths on that host, so only that host's mcsd may label
    /// or restore them.
    #[error("container {id} was allocated on node {node:?}, not this one ({here:?}); {action} through the mcsd on {node:?}: its volumes are paths on that host")]
    OtherNode {
        /// The container.
        id: ContainerId,
        /// The node that made the allocation.
        node: String,
        /// This node.
        here: String,
        /// What to do there.
        action: &'static str,
    },
    /// A root could not be restored; the pair stays held.
    #[error("container {id} was not released: restoring {} failed ({error}); its files may still carry {level}, so the pair stays held. Fix the cause and release again, or set restore = \"none\"", .path.display())]
    RestoreFailed {
        /// The container.
        id: ContainerId,
        /// Its level.
        level: String,
        /// The root.
        path: PathBuf,
        /// What went wrong.
        error: String,
    },
}

fn first_errors(o: &Outcome) -> String {
    if o.errors.is_empty() {
        return String::new();
    }
    let list: Vec<String> = o
        .errors
        .iter()
        .take(3)
        .map(|e| format!("{}: {}", e.path.display(), e.error))
        .collect();
    format!("; first: {}", list.join("; "))
}

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

/// Relabels and restores container volumes.
#[derive(Clone)]
pub struct Volumes {
    engine: Engine,
    relabeler: SharedRelabeler,
}

/// A finished relabel.
#[derive(Debug, Clone)]
pub struct Relabeled {
    /// What the walk did.
    pub outcome: Outcome,
    /// The label written.
    pub label: String,
}

impl Volumes {
    /// Relabels through `engine`'s allocations with `relabeler`'s rules.
    pub fn new(engine: Engine, relabeler: SharedRelabeler) -> Self {
        Self { engine, relabeler }
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

    /// Resolves, checks and records `path` for container `id`, then labels
    /// the tree, sending running totals to `progress` (resolved root, label
    /// and totals) until it is done. Files with hard links outside the tree
    /// are left alone unless `hard_links` (recorded: restore then labels
    /// them too).
    pub async fn relabel(
        &self,
        id: ContainerId,
        path: PathBuf,
        shared: bool,
        cross_mounts: bool,
        hard_links: bool,
        progress: mpsc::Sender<Progress>,
    ) -> Result<Relabeled, VolumeError> {
        let record = match self.engine.get(&id).await {
            Ok(record) => record,
            Err(AllocError::NotFound(_)) => return Err(VolumeError::NoAllocation(id)),
            Err(e) => return Err(e.into()),
        };
        self.local(&record, "relabel its volumes")?;
        let relabeler = self.relabeler();
        let (root, original) = blocking(move || {
            let root = relabeler.resolve(&path)?;
            let original = Relabeler::current_label(&root);
            Ok::<_, VolumeError>((root, original))
        })
        .await?;
        let label = Self::label(self.engine.labels(), &record, shared);
        self.engine
            .add_root(
                id.clone(),
                RelabeledRoot {
                    path: root.clone(),
                    shared,
                    original,
                    hard_links,
                },
            )
            .await
            .map_err(|e| match e {
                AllocError::NotFound(id) => VolumeError::NoAllocation(id),
                e => VolumeError::Alloc(e),
            })?;
        tracing::info!(container_id = %id, root = %root.display(), %label, shared, "relabel started");
        // The client learns the resolved root and the label before the walk.
        let _ = progress
            .send((root.clone(), label.clone(), Totals::default()))
            .await;
        let outcome = self
            .walk(
                root,
                Fixed(label.clone().into_bytes()),
                cross_mounts,
                hard_links,
                Some((progress, label.clone())),
            )
            .await?;
        tracing::info!(container_id = %id, root = %outcome.root.display(), changed = outcome.totals.changed,
            unchanged = outcome.totals.unchanged, failed = outcome.totals.failed,
            hardlinks_skipped = outcome.totals.hardlinks_skipped,
            seconds = outcome.elapsed.as_secs_f64(), "relabel finished");
        if outcome.totals.failed > 0 {
            return Err(VolumeError::Incomplete(Box::new(outcome)));
        }
        Ok(Relabeled { outcome, label })
    }

    /// Runs one walk off the async workers, reporting progress if asked.
    async fn walk(
        &self,
        root: PathBuf,
        labels: impl LabelFor + Send + 'static,
        cross_mounts: bool,
        hard_links: bool,
        progress: Option<(mpsc::Sender<Progress>, String)>,
    ) -> Result<Outcome, VolumeError> {
        let counters = Arc::new(Counters::default());
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
        crate::metrics::global().relabel(t.changed, t.unchanged, t.failed);
        result
    }

    /// Restores every root of `id` by the configured mode, then releases
    /// it. If a root cannot be fully restored, the allocation is kept.
    pub async fn release(&self, id: ContainerId) -> Result<(Released, Vec<Restored>), VolumeError> {
        let record = match self.engine.get(&id).await {
            Ok(record) => Some(record),
            Err(AllocError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(record) = &record {
            // Freeing the pair while the other host's volumes still carry
            // it would let the next holder read them.
            if !record.roots.is_empty() && self.relabeler().config().restore != RestoreMode::None {
                self.local(record, "release it")?;
            }
        }
        let mut restored = Vec::new();
        for root in record.iter().flat_map(|r| &r.roots) {
            let record = record.as_ref().expect("roots come from a record");
            restored.push(self.restore(record, root).await?);
        }
        let released = self.engine.release(id).await?;
        Ok((released, restored))
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

    async fn restore(
        &self,
        record: &AllocationRecord,
        root: &RelabeledRoot,
    ) -> Result<Restored, VolumeError> {
        let mode = self.relabeler().config().restore;
        let skipped = |note: &str| Restored {
            path: root.path.clone(),
            mode,
            totals: Totals::default(),
            note: Some(note.to_owned()),
        };
        let fail = |error: String| VolumeError::RestoreFailed {
            id: record.container_id.clone(),
            level: record.level.to_string(),
            path: root.path.clone(),
            error,
        };
        let labels: Box<dyn LabelFor + Send> = match (mode, &root.original) {
            (RestoreMode::None, _) => return Ok(skipped("restore = none")),
            (RestoreMode::Original, None) => {
                return Ok(skipped(
                    "the root had no label before its first relabel; left as is",
                ))
            }
            (RestoreMode::Original, Some(label)) => Box::new(Fixed(label.clone().into_bytes())),
            (RestoreMode::Policy, _) => {
                Box::new(FromPolicy::new().map_err(|e| fail(e.to_string()))?)
            }
        };
        // The root is judged again: it must still be where it was.
        let relabeler = self.relabeler();
        let path = root.path.clone();
        let now = blocking(move || Ok::<_, VolumeError>(relabeler.resolve(&path))).await?;
        match now {
            Ok(resolved) if resolved == root.path => {}
            Err(Refused::Unresolvable { .. }) => return Ok(skipped("the root no longer exists")),
            Ok(elsewhere) => {
                return Err(fail(format!(
                    "it now leads to {}; not followed",
                    elsewhere.display()
                )))
            }
            Err(e) => return Err(fail(e.to_string())),
        }
        let outcome = self
            // The same hard-link rule as the relabel: a file whose other
            // links are outside keeps its own label.
            .walk(
                root.path.clone(),
                BoxedLabels(labels),
                false,
                root.hard_links,
                None,
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        tracing::info!(container_id = %record.container_id, root = %root.path.display(), %mode,
            changed = outcome.totals.changed, failed = outcome.totals.failed,
            hardlinks_skipped = outcome.totals.hardlinks_skipped, "root restored");
        if outcome.totals.failed > 0 {
            return Err(fail(format!(
                "{} of {} entries could not be labeled{}",
                outcome.totals.failed,
                outcome.totals.seen,
                first_errors(&outcome)
            )));
        }
        Ok(Restored {
            path: root.path.clone(),
            mode,
            totals: outcome.totals,
            note: None,
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
        kind: super::Kind,
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
