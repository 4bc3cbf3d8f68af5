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

mod locks;
mod roots;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use self::locks::{Key, Locks};
use self::roots::{Registrant, RootIndex};
use crate::context::Labels;
use crate::engine::{Engine, Released};
use crate::error::AllocError;
use crate::id::ContainerId;
use crate::relabel::{
    Counters, Fixed, FromPolicy, LabelFor, Outcome, Refused, RelabelError, Relabeler, RestoreMode,
    Totals,
};
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
    /// The root is on a mount that is read-only for mcsd: not one entry
    /// could be labeled, so the relabel is refused before it starts.
    #[error("cannot relabel {}: it is read-only for mcsd (a read-only mount). Under systemd every path outside mcsd.service's ReadWritePaths= is (ProtectSystem=strict): add the volume root there (systemctl edit mcsd.service: [Service] ReadWritePaths=...) as well as to [relabel] allowlist, and restart mcsd", .0.display())]
    ReadOnly(PathBuf),
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
    /// A release of the container stopped the walk.
    #[error("relabel of {} for container {id} stopped: the container is being released (its volumes are restored instead)", .root.display())]
    Cancelled {
        /// The container.
        id: ContainerId,
        /// The root.
        root: PathBuf,
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

/// Whether `path` is on a mount this process may not write (statvfs
/// `ST_RDONLY`, which reflects a read-only bind mount too).
fn read_only(path: &std::path::Path) -> bool {
    rustix::fs::statvfs(path)
        .map(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
        .unwrap_or(false)
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
    /// Relabels through `engine`'s allocations with `relabeler`'s rules.
    pub fn new(engine: Engine, relabeler: SharedRelabeler) -> Self {
        Self {
            engine,
            relabeler,
            locks: Arc::default(),
            walks: Arc::default(),
            index: Arc::default(),
        }
    }

    /// The engine whose pairs these volumes carry.
    pub fn engine(&self) -> &Engine {
        &self.engine
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
        crate::metrics::global().relabel(t.changed, t.unchanged, t.failed);
        result
    }

    /// Restores every root of `id`, then frees its pair: the one way a pair
    /// goes back to the pool. Running relabels of `id` are stopped first.
    /// If a root cannot be fully restored, the allocation is kept.
    pub async fn release(&self, id: ContainerId) -> Result<(Released, Vec<Restored>), VolumeError> {
        for _ in 0..RELEASE_ATTEMPTS {
            let Some(record) = self.lookup(&id).await? else {
                return Ok((self.engine.release(id, Vec::new()).await?, Vec::new()));
            };
            self.cancel_walks(&id);
            let mut keys = vec![Key::Container(id.clone())];
            keys.extend(record.roots.iter().map(|r| Key::Root(r.path.clone())));
            let held = self.locks.lock(keys).await;
            // What the record lists now, with the container locked: no root
            // can be added until the pair is freed.
            let Some(record) = self.lookup(&id).await? else {
                return Ok((self.engine.release(id, Vec::new()).await?, Vec::new()));
            };
            let locked = |r: &RelabeledRoot| held.holds(&Key::Root(r.path.clone()));
            if !record.roots.iter().all(locked) {
                // A relabel registered a root between the two reads.
                continue;
            }
            let restored = self.restore_all(&record).await?;
            let paths = record.roots.iter().map(|r| r.path.clone()).collect();
            let released = self.engine.release(id.clone(), paths).await?;
            self.forget(&id, &record.roots).await;
            return Ok((released, restored));
        }
        Err(VolumeError::Alloc(AllocError::Store(
            crate::store::StoreError::Conflict(format!(
                "container {id}: volumes kept being registered while it was released ({RELEASE_ATTEMPTS} attempts); retry"
            )),
        )))
    }

    async fn lookup(&self, id: &ContainerId) -> Result<Option<AllocationRecord>, VolumeError> {
        match self.engine.get(id).await {
            Ok(record) => Ok(Some(record)),
            Err(AllocError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn cancel_walks(&self, id: &ContainerId) {
        let walks = self.walks.lock().unwrap_or_else(|e| e.into_inner());
        for counters in walks.get(id).into_iter().flatten() {
            counters.cancel();
        }
    }

    /// Restores each root of `record` (the caller holds their locks).
    async fn restore_all(&self, record: &AllocationRecord) -> Result<Vec<Restored>, VolumeError> {
        // Freeing the pair while the other host's volumes still carry it
        // would let the next holder read them.
        if !record.roots.is_empty() && self.relabeler().config().restore != RestoreMode::None {
            self.local(record, "release it")?;
        }
        let mut restored = Vec::new();
        for root in &record.roots {
            let others = self
                .with_index(|index| index.others(&root.path, &record.container_id))
                .await?;
            restored.push(self.restore(record, root, &others).await?);
        }
        Ok(restored)
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

    /// Restores one root of `record`. With `others` (live containers that
    /// registered the same root), the tree is labeled for them instead:
    /// the shared label if any registered it shared, else the newest one's
    /// private label.
    async fn restore(
        &self,
        record: &AllocationRecord,
        root: &RelabeledRoot,
        others: &[Registrant],
    ) -> Result<Restored, VolumeError> {
        let mode = self.relabeler().config().restore;
        let skipped = |note: String| Restored {
            path: root.path.clone(),
            mode,
            totals: Totals::default(),
            note: Some(note),
        };
        let fail = |error: String| VolumeError::RestoreFailed {
            id: record.container_id.clone(),
            level: record.level.to_string(),
            path: root.path.clone(),
            error,
        };
        let handed_on = if others.is_empty() {
            None
        } else if others.iter().any(|r| r.shared) {
            Some(self.engine.labels().shared_file_label())
        } else {
            others.last().map(|r| r.file_label.clone())
        };
        let labels: Box<dyn LabelFor + Send> = match (mode, &root.original, &handed_on) {
            (RestoreMode::None, _, _) => return Ok(skipped("restore = none".into())),
            (_, _, Some(label)) => Box::new(Fixed(label.clone().into_bytes())),
            (RestoreMode::Original, None, None) => {
                return Ok(skipped(
                    "the root had no label before its first relabel; left as is".into(),
                ))
            }
            (RestoreMode::Original, Some(label), None) => {
                Box::new(Fixed(label.clone().into_bytes()))
            }
            (RestoreMode::Policy, _, None) => {
                Box::new(FromPolicy::new().map_err(|e| fail(e.to_string()))?)
            }
        };
        // The root is judged again: it must still be where it was.
        let relabeler = self.relabeler();
        let path = root.path.clone();
        let now = blocking(move || Ok::<_, VolumeError>(relabeler.resolve(&path))).await?;
        match now {
            Ok(resolved) if resolved == root.path => {}
            Err(Refused::Unresolvable { .. }) => {
                return Ok(skipped("the root no longer exists".into()))
            }
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
                Arc::default(),
                None,
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        tracing::info!(container_id = %record.container_id, root = %root.path.display(), %mode,
            changed = outcome.totals.changed, failed = outcome.totals.failed,
            hardlinks_skipped = outcome.totals.hardlinks_skipped,
            handed_on_to = others.len(), "root restored");
        if outcome.totals.failed > 0 {
            return Err(fail(format!(
                "{} of {} entries could not be labeled{}",
                outcome.totals.failed,
                outcome.totals.seen,
                first_errors(&outcome)
            )));
        }
        let note = (!others.is_empty()).then(|| {
            let ids: Vec<&str> = others.iter().take(3).map(|r| r.id.as_str()).collect();
            format!(
                "still a volume of {} other container(s) ({}{}): labeled for them, restored when the last is released",
                others.len(),
                ids.join(", "),
                if others.len() > 3 { ", ..." } else { "" }
            )
        });
        Ok(Restored {
            path: root.path.clone(),
            mode,
            totals: outcome.totals,
            note,
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
