//! The engine: the single writer that turns requests into durable changes.
//!
//! One actor task owns the in-memory [`View`](view::View). Requests reach it
//! over a channel; it drains whatever has queued into a batch, plans each
//! request against the committed store and the pool, commits all of the
//! batch's transactions with one store commit (one fsync for the embedded
//! store: group commit), and only then replies. Under load a batch holds as
//! many requests as arrived during the previous fsync, so throughput grows
//! with concurrency instead of being one fsync per request.
//!
//! Rules that keep this correct:
//! - Effects that take something away (a claimed pair, a new reservation)
//!   apply while planning, so two requests in one batch never pick the same
//!   pair; they are reverted if the commit fails.
//! - Effects that give something back (a freed pair, a removed reservation)
//!   apply only after the commit is durable, so nothing is handed out again
//!   before its release is on disk.
//! - Two requests that touch the same container id, group, pair or
//!   reservation never share a batch: the later one waits for the next
//!   batch. Each transaction is then independent and can fail on its own.
//! - Readers (Get, List) go to the store directly but never during a commit
//!   (a read/write gate, see `gate`), so they only see durable state.
//! - With a store only this process writes (sled), the next batch is planned
//!   and written while the previous one syncs (at most two in flight). It
//!   never touches what a batch in flight touches, so each still commits or
//!   fails on its own, and replies go out in batch order.
//! - With a store shared by several instances (etcd), a commit can lose a
//!   race to another instance ([`StoreError::Conflict`]): the request is
//!   planned again (a fresh pick) a bounded number of times. Between batches
//!   the actor applies what the other instances changed, so its pool stays
//!   close to the cluster's and such races stay rare.
//!
//! The engine times each store commit it makes (write and sync, whatever
//! the backend) and reports it through [`EngineConfig::on_commit`]: it owns
//! the event, and leaves what becomes of the figure to the daemon.

mod actor;
mod command;
mod follow;
mod gate;
mod hook;
mod request;
mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use hook::CommitHook;
pub use request::{
    AllocateRequest, Allocated, ListFilter, ListPage, Released, Reserved, Unreserved,
};
pub use view::{LoadError, Stats};

use self::command::{Command, Reply};
use crate::context::Labels;
use crate::error::AllocError;
use crate::id::ContainerId;
use crate::level::CategoryRange;
use crate::reservation::Reservation;
use crate::store::{AllocationRecord, RelabeledRoot, ReservationRecord, Store, StoreError};

/// Requests queued beyond this wait for room (backpressure).
const QUEUE_DEPTH: usize = 8192;

/// What the engine needs to know besides its store.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The categories mcsd hands out.
    pub range: CategoryRange,
    /// Templates for the labels of new allocations.
    pub labels: Labels,
    /// This host's name, recorded with each allocation it makes.
    pub node: String,
    /// Told how long each store commit took (for metrics).
    pub on_commit: CommitHook,
}

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    store: Arc<dyn Store>,
    gate: Arc<gate::Gate>,
    config: EngineConfig,
    /// The task that waits for the actor and reports its end.
    actor: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// True while the actor runs; false once it has ended, by a shutdown
    /// or a panic.
    running: watch::Receiver<bool>,
}

/// Records scanned per listing step; bounds how long a step holds the gate.
const LIST_SCAN: usize = 1024;

impl Engine {
    /// Loads the view from `store` (checking every record) and starts the
    /// actor.
    pub async fn start(store: Arc<dyn Store>, config: EngineConfig) -> Result<Engine, LoadError> {
        let started = Instant::now();
        let view = view::load(&*store, config.range).await?;
        let stats = view.stats();
        tracing::info!(
            store = %store.describe(),
            containers = stats.containers,
            groups = stats.groups,
            held = stats.pool.held,
            reserved = stats.pool.reserved,
            free = stats.pool.free,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "state loaded"
        );
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let gate = Arc::new(gate::Gate::default());
        let actor = actor::Actor::new(rx, store.clone(), gate.clone(), view, config.clone())
            .following(store.changes());
        let actor = tokio::spawn(actor.run());
        let (running_tx, running) = watch::channel(true);
        // A dead actor leaves every call failing with ShuttingDown while
        // the process lives on: say why once, and tell whoever follows
        // `running` (the health service) that the engine is gone.
        let handle = tokio::spawn(async move {
            match actor.await {
                Ok(()) => tracing::debug!("the engine stopped"),
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .copied()
                        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("(no message)");
                    tracing::error!(
                        panic = message,
                        "the engine panicked: every request now fails; restart mcsd"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "the engine stopped: every request now fails; restart mcsd")
                }
            }
            running_tx.send_replace(false);
        });
        Ok(Engine {
            inner: Arc::new(Inner {
                tx,
                store,
                gate,
                config,
                actor: std::sync::Mutex::new(Some(handle)),
                running,
            }),
        })
    }

    /// Whether the actor that answers requests still runs. False once it
    /// has ended (a shutdown, or a panic): from then on every request fails
    /// with [`AllocError::ShuttingDown`].
    pub fn is_running(&self) -> bool {
        *self.inner.running.borrow()
    }

    /// Resolves once the actor has ended, for whatever reason.
    pub async fn stopped(&self) {
        let mut running = self.inner.running.clone();
        // The sender is dropped only after it has sent false, and wait_for
        // looks at the current value first: an error here means stopped.
        let _ = running.wait_for(|running| !running).await;
    }

    /// Makes the actor panic (unit tests only).
    #[cfg(test)]
    pub(crate) async fn panic_for_test(&self) {
        let _ = self.inner.tx.send(Command::Panic).await;
    }

    /// This host's name, as recorded with its allocations.
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    /// The configured category range.
    pub fn range(&self) -> CategoryRange {
        self.inner.config.range
    }

    /// The label templates in use.
    pub fn labels(&self) -> &Labels {
        &self.inner.config.labels
    }

    /// The store, described for humans.
    pub fn store_description(&self) -> String {
        self.inner.store.describe()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, AllocError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(make(tx))
            .await
            .map_err(|_| AllocError::ShuttingDown)?;
        rx.await.map_err(|_| AllocError::ShuttingDown)?
    }

    /// Returns the container's allocation, creating it if needed; durable
    /// before it returns.
    pub async fn allocate(&self, request: AllocateRequest) -> Result<Allocated, AllocError> {
        self.call(|tx| Command::Allocate(request, tx)).await
    }

    /// Records that `root` is being relabeled for container `id` (durably,
    /// before the walk starts). The root's original label is kept from the
    /// first time it was recorded; a later relabel only updates the mode.
    /// `NotFound` if the id holds no allocation.
    pub async fn add_root(
        &self,
        id: ContainerId,
        root: RelabeledRoot,
    ) -> Result<AllocationRecord, AllocError> {
        self.call(|reply| Command::AddRoot(id, root, reply)).await
    }

    /// Releases the container's allocation, if any; durable before it
    /// returns. `restored` names the volume roots the caller has restored
    /// (or left as the configuration says): if the record holds a root not
    /// among them, nothing is freed ([`AllocError::NotRestored`]), so no
    /// pair goes back to the pool while a volume it did not restore may
    /// still carry it. Callers go through [`crate::volumes::Volumes::release`],
    /// which restores first.
    pub async fn release(
        &self,
        id: ContainerId,
        restored: Vec<PathBuf>,
    ) -> Result<Released, AllocError> {
        self.call(|tx| Command::Release(id, restored, tx)).await
    }

    /// Adds a reservation an operator asked for; durable before it returns.
    pub async fn reserve(&self, reservation: Reservation) -> Result<Reserved, AllocError> {
        self.call(|tx| Command::Reserve(reservation, None, tx))
            .await
    }

    /// Adds a reservation this node's configuration file asks for, marked
    /// as such ([`ReservationRecord::configured_by`]) so a later start can
    /// drop it once the file no longer lists it. An existing operator
    /// reservation is marked too (the file now asks for it, as a reload
    /// would treat it); one another node's configuration holds is left
    /// as it is. Durable before it returns.
    pub async fn reserve_configured(
        &self,
        reservation: Reservation,
    ) -> Result<Reserved, AllocError> {
        let node = self.node().to_owned();
        self.call(|tx| Command::Reserve(reservation, Some(node), tx))
            .await
    }

    /// Removes a reservation; durable before it returns.
    pub async fn unreserve(&self, reservation: Reservation) -> Result<Unreserved, AllocError> {
        self.call(|tx| Command::Unreserve(reservation, tx)).await
    }

    /// Current occupancy.
    pub async fn stats(&self) -> Result<Stats, AllocError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Stats(tx))
            .await
            .map_err(|_| AllocError::ShuttingDown)?;
        rx.await.map_err(|_| AllocError::ShuttingDown)
    }

    /// Every reservation, sorted.
    pub async fn reservations(&self) -> Result<Vec<ReservationRecord>, AllocError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Reservations(tx))
            .await
            .map_err(|_| AllocError::ShuttingDown)?;
        rx.await.map_err(|_| AllocError::ShuttingDown)
    }

    /// The allocation of one container.
    pub async fn get(&self, id: &ContainerId) -> Result<AllocationRecord, AllocError> {
        let _read = self.inner.gate.read().await;
        self.inner
            .store
            .allocation(id)
            .await?
            .ok_or_else(|| AllocError::NotFound(id.clone()))
    }

    /// One step of a listing: scans a bounded number of records after
    /// `after` and returns those matching `filter`. Call again with
    /// `page.next` until it is `None`.
    pub async fn list_page(
        &self,
        filter: &ListFilter,
        after: Option<&ContainerId>,
    ) -> Result<ListPage, AllocError> {
        let scanned = {
            let _read = self.inner.gate.read().await;
            self.inner.store.allocations(after, LIST_SCAN).await?
        };
        let next = (scanned.len() == LIST_SCAN)
            .then(|| scanned.last().map(|r| r.container_id.clone()))
            .flatten();
        let records = scanned.into_iter().filter(|r| filter.matches(r)).collect();
        Ok(ListPage { records, next })
    }

    /// Stops taking requests, finishes the queued ones, and flushes the store.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self
            .inner
            .actor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        self.inner.store.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Owner;
    use crate::store::sled::SledStore;

    #[tokio::test]
    async fn a_pair_is_not_freed_while_a_root_of_its_record_is_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(dir.path()).unwrap());
        let config = EngineConfig {
            range: "c0.c9".parse().unwrap(),
            labels: Labels::default(),
            node: "here".into(),
            on_commit: CommitHook::default(),
        };
        let engine = Engine::start(store, config).await.unwrap();
        let id = ContainerId::new("a").unwrap();
        let request = AllocateRequest {
            container_id: id.clone(),
            owner: Owner::new("t").unwrap(),
            group: None,
            level: None,
        };
        engine.allocate(request).await.unwrap();
        for path in ["/v/one", "/v/two"] {
            let root = RelabeledRoot {
                path: path.into(),
                shared: false,
                original: None,
                hard_links: false,
            };
            engine.add_root(id.clone(), root).await.unwrap();
        }
        // The caller restored only one of them.
        let err = engine
            .release(id.clone(), vec!["/v/one".into()])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AllocError::NotRestored { path, .. } if path == std::path::Path::new("/v/two")),
            "{err}"
        );
        assert!(engine.get(&id).await.is_ok(), "the pair stays held");
        let released = engine
            .release(id.clone(), vec!["/v/one".into(), "/v/two".into()])
            .await
            .unwrap();
        assert!(released.level_freed);
        engine.shutdown().await.unwrap();
    }
}
