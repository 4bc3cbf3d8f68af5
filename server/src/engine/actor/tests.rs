//! The commit pipeline: a batch is planned and written while the previous
//! one syncs, without giving up what the engine promises (replies only once
//! durable, one batch never building on another's unsynced records, readers
//! never seeing them, a failed commit recovered from).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::context::Labels;
use crate::engine::{AllocateRequest, CommitHook, Engine, EngineConfig};
use crate::error::AllocError;
use crate::id::{ContainerId, GroupKey, Owner};
use crate::level::Level;
use crate::reservation::Reservation;
use crate::store::sled::SledStore;
use crate::store::{
    AllocationRecord, GroupRecord, Holder, LoadSink, ReadBatch, ReservationRecord, Store,
    StoreError, Txn,
};

/// A sled store whose commits wait after writing, as if their fsync took
/// until the test says so (commits end in the order they started); the
/// first commit can be made to fail.
struct SlowSync {
    inner: SledStore,
    /// How many commits may end, counted from the first.
    released: watch::Sender<usize>,
    started: AtomicUsize,
    fail_first: AtomicBool,
    recovered: AtomicUsize,
}

impl SlowSync {
    fn new(dir: &std::path::Path) -> Arc<Self> {
        Arc::new(Self {
            inner: SledStore::open(dir).unwrap(),
            released: watch::Sender::new(0),
            started: AtomicUsize::new(0),
            fail_first: AtomicBool::new(false),
            recovered: AtomicUsize::new(0),
        })
    }

    /// Lets `n` more commits end.
    fn release(&self, n: usize) {
        self.released.send_modify(|r| *r += n);
    }

    /// Waits until `n` commits have started.
    async fn started(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.started.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} commits did not start"));
    }

    /// Commits started so far, after giving the engine time to start more.
    async fn started_after_a_while(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.started.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Store for SlowSync {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn load(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError> {
        self.inner.load(sink).await
    }
    async fn allocation(&self, id: &ContainerId) -> Result<Option<AllocationRecord>, StoreError> {
        self.inner.allocation(id).await
    }
    async fn group(&self, key: &GroupKey) -> Result<Option<GroupRecord>, StoreError> {
        self.inner.group(key).await
    }
    async fn holder(&self, level: Level) -> Result<Option<Holder>, StoreError> {
        self.inner.holder(level).await
    }
    async fn reservation(
        &self,
        reservation: Reservation,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        self.inner.reservation(reservation).await
    }
    async fn allocations(
        &self,
        after: Option<&ContainerId>,
        limit: usize,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        self.inner.allocations(after, limit).await
    }
    async fn read_batch(
        &self,
        ids: &[ContainerId],
        groups: &[GroupKey],
    ) -> Result<ReadBatch, StoreError> {
        self.inner.read_batch(ids, groups).await
    }
    async fn commit(&self, txns: Vec<Txn>) -> Vec<Result<(), StoreError>> {
        let count = txns.len();
        let ticket = self.started.fetch_add(1, Ordering::SeqCst);
        let results = self.inner.commit(txns).await;
        let mut released = self.released.subscribe();
        released.wait_for(|&r| r > ticket).await.unwrap();
        if ticket == 0 && self.fail_first.load(Ordering::SeqCst) {
            let error = StoreError::Io {
                path: "test".into(),
                detail: "the disk went away".into(),
            };
            return vec![Err(error); count];
        }
        results
    }
    async fn recover(&self) -> Result<(), StoreError> {
        self.recovered.fetch_add(1, Ordering::SeqCst);
        self.inner.recover().await
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}

fn request(id: &str) -> AllocateRequest {
    AllocateRequest {
        container_id: ContainerId::new(id).unwrap(),
        owner: Owner::new("t").unwrap(),
        group: None,
        level: None,
    }
}

async fn engine(store: Arc<SlowSync>) -> Engine {
    engine_with_hook(store, CommitHook::default()).await
}

async fn engine_with_hook(store: Arc<SlowSync>, on_commit: CommitHook) -> Engine {
    let config = EngineConfig {
        range: "c0.c9".parse().unwrap(),
        labels: Labels::default(),
        node: "here".into(),
        on_commit,
    };
    Engine::start(store, config).await.unwrap()
}

/// Runs `f` on a task; the handle tells whether it answered yet.
fn spawn<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::spawn(f)
}

/// Allocates `id` on a task.
fn allocating(
    engine: &Engine,
    id: &str,
) -> tokio::task::JoinHandle<Result<crate::engine::Allocated, AllocError>> {
    let engine = engine.clone();
    let request = request(id);
    tokio::spawn(async move { engine.allocate(request).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_commits_while_one_syncs_and_replies_wait_for_their_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = SlowSync::new(dir.path());
    let engine = engine(store.clone()).await;

    let a = allocating(&engine, "a");
    store.started(1).await;
    let b = allocating(&engine, "b");
    // b is planned and written while a's sync is still running...
    store.started(2).await;
    // ...but a third batch waits for one of them to end.
    let c = allocating(&engine, "c");
    assert_eq!(store.started_after_a_while().await, 2);
    assert!(
        !a.is_finished() && !b.is_finished(),
        "no reply before its sync"
    );

    store.release(1);
    let a = a.await.unwrap().unwrap();
    store.started(3).await;
    store.release(2);
    let b = b.await.unwrap().unwrap();
    let c = c.await.unwrap().unwrap();
    let levels = [a.record.level, b.record.level, c.record.level];
    assert!(
        levels[0] != levels[1] && levels[1] != levels[2] && levels[0] != levels[2],
        "overlapping batches never pick one pair twice: {levels:?}"
    );
    assert_eq!(engine.stats().await.unwrap().containers, 3);
    store.release(100);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_record_in_flight_waits_for_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = SlowSync::new(dir.path());
    let engine = engine(store.clone()).await;

    let a = allocating(&engine, "a");
    store.started(1).await;
    // The release of a cannot be planned from a's unsynced record: it waits.
    let release = spawn({
        let engine = engine.clone();
        async move {
            engine
                .release(ContainerId::new("a").unwrap(), Vec::new())
                .await
        }
    });
    assert_eq!(store.started_after_a_while().await, 1);
    store.release(1);
    a.await.unwrap().unwrap();
    store.started(2).await;
    store.release(1);
    let released = release.await.unwrap().unwrap();
    assert!(released.record.is_some() && released.level_freed);
    assert_eq!(engine.stats().await.unwrap().containers, 0);
    store.release(100);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_stops_commits_overlapping_and_sees_only_synced_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = SlowSync::new(dir.path());
    let engine = engine(store.clone()).await;

    let a = allocating(&engine, "a");
    store.started(1).await;
    // a is written but not synced: a reader must not see it, and must not
    // wait behind an endless run of overlapping commits either.
    let get = spawn({
        let engine = engine.clone();
        async move { engine.get(&ContainerId::new("a").unwrap()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = allocating(&engine, "b");
    assert_eq!(
        store.started_after_a_while().await,
        1,
        "no overlapping commit while a reader waits"
    );
    assert!(!get.is_finished(), "the reader waits for the sync");
    store.release(1);
    a.await.unwrap().unwrap();
    let got = get.await.unwrap().unwrap();
    assert_eq!(got.container_id.as_str(), "a");
    store.release(1);
    b.await.unwrap().unwrap();
    store.release(100);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_its_batch_only_and_the_engine_recovers_after_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = SlowSync::new(dir.path());
    store.fail_first.store(true, Ordering::SeqCst);
    let engine = engine(store.clone()).await;

    let a = allocating(&engine, "a");
    store.started(1).await;
    let b = allocating(&engine, "b");
    store.started(2).await;
    store.release(2);
    let err = a.await.unwrap().unwrap_err();
    assert!(matches!(err, AllocError::Store(_)), "{err}");
    let b = b.await.unwrap().unwrap();
    // Recovery waits until nothing is in flight, then reloads the view from
    // what the store holds (a's write was applied before its "sync" failed).
    store.release(100);
    let c = engine.allocate(request("c")).await.unwrap();
    assert_eq!(store.recovered.load(Ordering::SeqCst), 1);
    let stats = engine.stats().await.unwrap();
    let listed = engine
        .list_page(&Default::default(), None)
        .await
        .unwrap()
        .records;
    assert_eq!(
        stats.containers as usize,
        listed.len(),
        "view and store agree"
    );
    assert!(listed.iter().any(|r| r.level == b.record.level));
    assert!(listed.iter().any(|r| r.level == c.record.level));
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_committed_batch_reports_how_long_its_write_and_sync_took() {
    let dir = tempfile::tempdir().unwrap();
    let store = SlowSync::new(dir.path());
    let took = Arc::new(Mutex::new(Vec::new()));
    let hook = CommitHook::new({
        let took = took.clone();
        move |d| took.lock().unwrap().push(d)
    });
    let engine = engine_with_hook(store.clone(), hook).await;
    let sync = Duration::from_millis(30);

    // Two batches, one after the other, each with a "sync" of at least 30 ms.
    for (n, id) in ["a", "b"].into_iter().enumerate() {
        let allocated = allocating(&engine, id);
        store.started(n + 1).await;
        tokio::time::sleep(sync).await;
        assert!(
            took.lock().unwrap().len() == n,
            "no report before the commit ends"
        );
        store.release(1);
        allocated.await.unwrap().unwrap();
    }
    // A batch that changes nothing makes no commit and no report.
    engine.stats().await.unwrap();
    engine.allocate(request("a")).await.unwrap();
    store.release(100);
    engine.shutdown().await.unwrap();

    let took = took.lock().unwrap().clone();
    assert_eq!(store.started.load(Ordering::SeqCst), 2);
    assert_eq!(took.len(), 2, "one report per committed batch: {took:?}");
    for d in took {
        assert!(
            d >= sync && d < Duration::from_secs(10),
            "a commit that synced for {sync:?} reported {d:?}"
        );
    }
}
