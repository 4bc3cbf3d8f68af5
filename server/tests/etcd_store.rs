//! The etcd store and the engine on top of it, in process, against a real
//! etcd: compare-and-swap conflicts, the change feed (others' writes only,
//! compaction, a restarted member), lost races picked again, and refusals
//! at start.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use common::etcd::EtcdCluster;
use mcsd::context::Labels;
use mcsd::engine::{AllocateRequest, CommitHook, Engine, EngineConfig};
use mcsd::error::AllocError;
use mcsd::id::{ContainerId, GroupKey, Owner};
use mcsd::level::{CategoryRange, Level};
use mcsd::reservation::Reservation;
use mcsd::store::backend::EtcdSettings;
use mcsd::store::etcd::EtcdStore;
use mcsd::store::{
    AllocationRecord, ChangeFeed, GroupRecord, Holder, LoadSink, Op, ReadBatch, ReservationRecord,
    Store, StoreChange, StoreError, Txn,
};

fn settings(cluster: &EtcdCluster, prefix: &str) -> EtcdSettings {
    EtcdSettings {
        endpoints: cluster.endpoints(),
        prefix: prefix.into(),
        tls: None,
        auth: None,
        timeout: Duration::from_secs(5),
    }
}

fn range(text: &str) -> CategoryRange {
    text.parse().unwrap()
}

/// Counts what a load delivers.
#[derive(Default)]
struct Count {
    pairs: usize,
    allocations: usize,
}

impl LoadSink for Count {
    fn reservation(&mut self, _: ReservationRecord) -> Result<(), StoreError> {
        Ok(())
    }
    fn pair(&mut self, _: Level, _: Holder) -> Result<(), StoreError> {
        self.pairs += 1;
        Ok(())
    }
    fn group(&mut self, _: GroupRecord) -> Result<(), StoreError> {
        Ok(())
    }
    fn allocation(&mut self, _: AllocationRecord) -> Result<(), StoreError> {
        self.allocations += 1;
        Ok(())
    }
}

fn record(id: &str, level: &str) -> AllocationRecord {
    AllocationRecord {
        container_id: ContainerId::new(id).unwrap(),
        owner: Owner::new("test").unwrap(),
        group: None,
        level: level.parse().unwrap(),
        process_label: format!("u:r:t:{level}"),
        file_label: format!("u:object_r:t:{level}"),
        created_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        node: "other".into(),
        roots: Vec::new(),
    }
}

/// What another instance commits to allocate `r`.
fn claim(r: &AllocationRecord) -> Txn {
    Txn(vec![
        Op::CreateAllocation(r.clone()),
        Op::ClaimPair {
            level: r.level,
            holder: r.holder(),
        },
    ])
}

async fn next(feed: &mut Box<dyn ChangeFeed>) -> Vec<StoreChange> {
    tokio::time::timeout(Duration::from_secs(20), feed.next())
        .await
        .expect("a change within 20 s")
        .expect("the feed is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_claiming_one_pair_conflict_and_each_feed_reports_only_the_other() {
    let cluster = EtcdCluster::start(1);
    let a = EtcdStore::connect(&settings(&cluster, "/p/"), range("c0.c9"))
        .await
        .unwrap();
    let b = EtcdStore::connect(&settings(&cluster, "/p/"), range("c0.c9"))
        .await
        .unwrap();
    a.load(&mut Count::default()).await.unwrap();
    b.load(&mut Count::default()).await.unwrap();
    let mut feed_a = a.changes().unwrap();
    let mut feed_b = b.changes().unwrap();

    let x = record("x", "s0:c1,c2");
    let y = record("y", "s0:c1,c2");
    assert_eq!(a.commit(vec![claim(&x)]).await, vec![Ok(())]);
    let lost = b.commit(vec![claim(&y)]).await;
    let Err(StoreError::Conflict(why)) = &lost[0] else {
        panic!("expected a conflict, got {lost:?}")
    };
    assert_eq!(
        why, "pair s0:c1,c2 was claimed by container x through another mcsd",
        "the failed compare is named"
    );
    // Nothing of y's transaction landed.
    assert_eq!(b.allocation(&y.container_id).await.unwrap(), None);
    assert_eq!(b.holder(x.level).await.unwrap(), Some(x.holder()));

    // Releasing needs the exact record: a stale one conflicts.
    let stale = AllocationRecord {
        owner: Owner::new("someone-else").unwrap(),
        ..x.clone()
    };
    let result = b.commit(vec![Txn(vec![Op::DeleteAllocation(stale)])]).await;
    assert!(
        matches!(&result[0], Err(StoreError::Conflict(m)) if m == "the allocation of container x was changed by another writer"),
        "{result:?}"
    );

    // b sees a's allocation; a does not see its own.
    let changes = next(&mut feed_b).await;
    assert!(changes.contains(&StoreChange::Allocation {
        old: None,
        new: Some(x.clone())
    }));
    assert!(changes.contains(&StoreChange::Pair {
        level: x.level,
        holder: Some(x.holder())
    }));
    let z = record("z", "s0:c3,c4");
    assert_eq!(b.commit(vec![claim(&z)]).await, vec![Ok(())]);
    let changes = next(&mut feed_a).await;
    assert!(
        changes.iter().all(|c| !matches!(c, StoreChange::Allocation { new: Some(r), .. } if r.container_id.as_str() == "x")),
        "a's own write came back: {changes:?}"
    );
    assert!(changes.contains(&StoreChange::Allocation {
        old: None,
        new: Some(z.clone())
    }));

    // A release reports the record it removed.
    let release = Txn(vec![
        Op::DeleteAllocation(z.clone()),
        Op::FreePair {
            level: z.level,
            holder: z.holder(),
        },
    ]);
    assert_eq!(b.commit(vec![release]).await, vec![Ok(())]);
    let changes = next(&mut feed_a).await;
    assert!(changes.contains(&StoreChange::Allocation {
        old: Some(z.clone()),
        new: None
    }));
    assert!(changes.contains(&StoreChange::Pair {
        level: z.level,
        holder: None
    }));

    // Reads in one batch see the same.
    let batch = a
        .read_batch(
            &[x.container_id.clone(), z.container_id.clone()],
            &[GroupKey::new("none").unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        batch,
        ReadBatch {
            allocations: vec![Some(x), None],
            groups: vec![None],
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_behind_a_compaction_asks_for_a_reload() {
    let cluster = EtcdCluster::start(1);
    let a = EtcdStore::connect(&settings(&cluster, "/c/"), range("c0.c9"))
        .await
        .unwrap();
    let b = EtcdStore::connect(&settings(&cluster, "/c/"), range("c0.c9"))
        .await
        .unwrap();
    a.load(&mut Count::default()).await.unwrap();
    for (i, level) in ["s0:c1,c2", "s0:c3,c4", "s0:c5,c6"].iter().enumerate() {
        let r = record(&format!("r{i}"), level);
        assert_eq!(b.commit(vec![claim(&r)]).await, vec![Ok(())]);
    }
    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    let now = client.get("/c/", None).await.unwrap();
    let revision = now.header().unwrap().revision();
    client.compact(revision, None).await.unwrap();

    // a's snapshot is older than what etcd still remembers.
    let mut feed = a.changes().unwrap();
    let changes = next(&mut feed).await;
    assert!(
        matches!(&changes[..], [StoreChange::Resync(reason)] if reason.contains("compacted")),
        "{changes:?}"
    );
    // Reloading catches up and a new feed follows from there.
    let mut count = Count::default();
    a.load(&mut count).await.unwrap();
    assert_eq!((count.pairs, count.allocations), (3, 3));
    let mut feed = a.changes().unwrap();
    let r = record("r3", "s0:c7,c8");
    assert_eq!(b.commit(vec![claim(&r)]).await, vec![Ok(())]);
    assert!(next(&mut feed).await.contains(&StoreChange::Allocation {
        old: None,
        new: Some(r)
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_in_use_with_another_range_or_unknown_keys_is_refused() {
    let cluster = EtcdCluster::start(1);
    EtcdStore::connect(&settings(&cluster, "/r/"), range("c0.c9"))
        .await
        .unwrap();
    let err = EtcdStore::connect(&settings(&cluster, "/r/"), range("c0.c99"))
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("hand out categories c0.c9, but this one is configured with c0.c99"),
        "{text}"
    );

    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    client.put("/r/zzz", "x", None).await.unwrap();
    let store = EtcdStore::connect(&settings(&cluster, "/r/"), range("c0.c9"))
        .await
        .unwrap();
    let err = store.load(&mut Count::default()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { detail, .. } if detail == "record zzz: unexpected key"),
        "{err}"
    );
    // A neighbouring prefix is somebody else's business.
    client.delete("/r/zzz", None).await.unwrap();
    client.put("/r0", "x", None).await.unwrap();
    client.put("/r", "x", None).await.unwrap();
    store.load(&mut Count::default()).await.unwrap();

    // Records without a format version are not taken for an empty prefix.
    client.put("/f/a/x", "x", None).await.unwrap();
    let err = EtcdStore::connect(&settings(&cluster, "/f/"), range("c0.c9"))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("no format version"), "{err}");
}

/// What [`Altered`] does to the change feed.
enum Feed {
    /// No feed: the engine's view lags behind another instance for certain.
    Off,
    /// Every change reported [`LATE`]: watch latency made large enough to
    /// race against for certain.
    Late,
    /// Nothing reported until the gate opens (`true`): the engine commits
    /// as much as it likes before its feed reports any of it.
    Gated(tokio::sync::watch::Receiver<bool>),
}

/// The real etcd store with its change feed altered.
struct Altered(EtcdStore, Feed);

#[async_trait]
impl Store for Altered {
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn load(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError> {
        self.0.load(sink).await
    }
    async fn allocation(&self, id: &ContainerId) -> Result<Option<AllocationRecord>, StoreError> {
        self.0.allocation(id).await
    }
    async fn group(&self, key: &GroupKey) -> Result<Option<GroupRecord>, StoreError> {
        self.0.group(key).await
    }
    async fn holder(&self, level: Level) -> Result<Option<Holder>, StoreError> {
        self.0.holder(level).await
    }
    async fn reservation(
        &self,
        reservation: Reservation,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        self.0.reservation(reservation).await
    }
    async fn held_count(&self) -> Result<Option<u64>, StoreError> {
        self.0.held_count().await
    }
    async fn allocations(
        &self,
        after: Option<&ContainerId>,
        limit: usize,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        self.0.allocations(after, limit).await
    }
    async fn commit(&self, txns: Vec<Txn>) -> Vec<Result<(), StoreError>> {
        self.0.commit(txns).await
    }
    async fn recover(&self) -> Result<(), StoreError> {
        self.0.recover().await
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.0.close().await
    }
    fn changes(&self) -> Option<Box<dyn ChangeFeed>> {
        match &self.1 {
            Feed::Off => None,
            Feed::Late => self.0.changes().map(|inner| {
                Box::new(LateFeed {
                    inner,
                    pending: None,
                }) as Box<dyn ChangeFeed>
            }),
            Feed::Gated(gate) => self.0.changes().map(|inner| {
                Box::new(GatedFeed {
                    inner,
                    gate: gate.clone(),
                }) as Box<dyn ChangeFeed>
            }),
        }
    }
}

fn engine_config(range_text: &str) -> EngineConfig {
    EngineConfig {
        range: range(range_text),
        labels: Labels::default(),
        node: "this-node".into(),
        on_commit: CommitHook::default(),
    }
}

fn request(id: &str) -> AllocateRequest {
    AllocateRequest {
        container_id: ContainerId::new(id).unwrap(),
        owner: Owner::new("test").unwrap(),
        group: None,
        level: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_loses_races_picks_again_until_the_range_is_exhausted() {
    let cluster = EtcdCluster::start(1);
    let settings = settings(&cluster, "/race/");
    // c0.c3: 6 pairs.
    let deaf = Altered(
        EtcdStore::connect(&settings, range("c0.c3")).await.unwrap(),
        Feed::Off,
    );
    let engine = Engine::start(Arc::new(deaf), engine_config("c0.c3"))
        .await
        .unwrap();
    // Another instance takes 5 of the 6 pairs behind the engine's back.
    let other = EtcdStore::connect(&settings, range("c0.c3")).await.unwrap();
    let taken = ["s0:c0,c1", "s0:c0,c2", "s0:c0,c3", "s0:c1,c2", "s0:c1,c3"];
    for (i, level) in taken.iter().enumerate() {
        assert_eq!(
            other
                .commit(vec![claim(&record(&format!("o{i}"), level))])
                .await,
            vec![Ok(())]
        );
    }
    // Whatever it picks first, the engine ends on the one free pair.
    let got = engine.allocate(request("mine")).await.unwrap();
    assert_eq!(got.record.level.to_string(), "s0:c2,c3");
    assert_eq!(got.record.node, "this-node");
    let err = engine.allocate(request("late")).await.unwrap_err();
    assert!(matches!(err, AllocError::Exhausted { .. }), "{err}");
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_follows_other_instances_again_after_its_etcd_member_restarts() {
    let mut cluster = EtcdCluster::start(1);
    let settings = settings(&cluster, "/follow/");
    let store = EtcdStore::connect(&settings, range("c0.c9")).await.unwrap();
    let engine = Engine::start(Arc::new(store), engine_config("c0.c9"))
        .await
        .unwrap();
    let other = EtcdStore::connect(&settings, range("c0.c9")).await.unwrap();
    let wait_for = |containers: u64| {
        let engine = engine.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let stats = engine.stats().await.unwrap();
                if stats.containers == containers && stats.pool.held == containers {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "never saw {containers}: {stats:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let commit = |r: AllocationRecord| {
        let other = &other;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            // The other instance's client reconnects on its own time.
            while other.commit(vec![claim(&r)]).await != vec![Ok(())] {
                assert!(Instant::now() < deadline, "cannot commit {r:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    commit(record("x", "s0:c1,c2")).await;
    wait_for(1).await;

    cluster.kill(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(0);
    commit(record("y", "s0:c3,c4")).await;
    wait_for(2).await;
    // Followed live again, not only reloaded.
    commit(record("z", "s0:c5,c6")).await;
    wait_for(3).await;
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_keeps_losing_gives_up_after_bounded_attempts_with_a_clear_error() {
    let cluster = EtcdCluster::start(1);
    let settings = settings(&cluster, "/lose/");
    // c0.c4: 10 pairs, all taken by another instance the engine cannot see.
    let deaf = Altered(
        EtcdStore::connect(&settings, range("c0.c4")).await.unwrap(),
        Feed::Off,
    );
    let engine = Engine::start(Arc::new(deaf), engine_config("c0.c4"))
        .await
        .unwrap();
    let other = EtcdStore::connect(&settings, range("c0.c4")).await.unwrap();
    let r = range("c0.c4");
    for i in 0..r.pairs() {
        let level = r.level_at(mcsd::level::PairIndex(i)).to_string();
        let taken = record(&format!("o{i}"), &level);
        assert_eq!(other.commit(vec![claim(&taken)]).await, vec![Ok(())]);
    }
    let err = engine.allocate(request("mine")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, AllocError::Store(StoreError::Conflict(_))),
        "{text}"
    );
    assert!(
        text.contains("gave up after 8 attempts") && text.contains("through another mcsd"),
        "{text}"
    );
    // Each lost race taught the pool a held pair: the 2 left are tried next,
    // then the range is known to be full.
    let err = engine.allocate(request("again")).await.unwrap_err();
    assert!(matches!(err, AllocError::Exhausted { .. }), "{err}");
    assert_eq!(
        engine.get(&ContainerId::new("mine").unwrap()).await.ok(),
        None
    );
    engine.shutdown().await.unwrap();
}

/// How late a [`Feed::Late`] feed reports changes: well past the time an engine
/// takes to answer, well within the engine's wait for the feed.
const LATE: Duration = Duration::from_millis(200);

struct LateFeed {
    inner: Box<dyn ChangeFeed>,
    /// Changes received, and when they may be reported. Kept here so that
    /// `next` stays cancellation safe (the engine races it against
    /// requests).
    pending: Option<(Vec<StoreChange>, tokio::time::Instant)>,
}

#[async_trait]
impl ChangeFeed for LateFeed {
    async fn next(&mut self) -> Option<Vec<StoreChange>> {
        if self.pending.is_none() {
            let changes = self.inner.next().await?;
            self.pending = Some((changes, tokio::time::Instant::now() + LATE));
        }
        let at = self.pending.as_ref().map(|(_, at)| *at)?;
        tokio::time::sleep_until(at).await;
        self.pending.take().map(|(changes, _)| changes)
    }
    fn try_next(&mut self) -> Option<Vec<StoreChange>> {
        None
    }
}

/// A feed that reports nothing while its gate is shut. Waiting on the gate
/// is cancellation safe, and so is the inner feed.
struct GatedFeed {
    inner: Box<dyn ChangeFeed>,
    gate: tokio::sync::watch::Receiver<bool>,
}

#[async_trait]
impl ChangeFeed for GatedFeed {
    async fn next(&mut self) -> Option<Vec<StoreChange>> {
        // A dropped sender counts as open.
        let _ = self.gate.wait_for(|open| *open).await;
        self.inner.next().await
    }
    fn try_next(&mut self) -> Option<Vec<StoreChange>> {
        if *self.gate.borrow() {
            self.inner.try_next()
        } else {
            None
        }
    }
}

/// Waits until the engine counts `held` held pairs, and returns its stats
/// then.
async fn held(engine: &Engine, held: u64) -> mcsd::engine::Stats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = engine.stats().await.unwrap();
        if stats.pool.held == held {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {held} held pairs: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the store itself holds: allocations and held pairs.
async fn store_counts(store: &EtcdStore) -> (u64, u64) {
    let allocations = store.allocations(None, 10_000).await.unwrap().len() as u64;
    (allocations, store.held_count().await.unwrap().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_to_one_key_before_the_feed_catches_up_are_not_taken_for_another_instance() {
    let cluster = EtcdCluster::start(1);
    let settings = settings(&cluster, "/own/");
    let (open, gate) = tokio::sync::watch::channel(false);
    let store = Altered(
        EtcdStore::connect(&settings, range("c0.c9")).await.unwrap(),
        Feed::Gated(gate),
    );
    let engine = Engine::start(Arc::new(store), engine_config("c0.c9"))
        .await
        .unwrap();
    // The same container and pair written again and again (allocated,
    // released, allocated at the same level, released) while the feed
    // reports nothing.
    let first = engine.allocate(request("x")).await.unwrap().record.level;
    engine
        .release(ContainerId::new("x").unwrap(), Vec::new())
        .await
        .unwrap();
    let again = AllocateRequest {
        level: Some(first),
        ..request("x")
    };
    engine.allocate(again).await.unwrap();
    engine
        .release(ContainerId::new("x").unwrap(), Vec::new())
        .await
        .unwrap();
    let kept = engine.allocate(request("kept")).await.unwrap().record.level;
    assert_eq!(engine.stats().await.unwrap().containers, 1);

    // The feed reports all of it, then one change of another instance; once
    // the engine shows that one, it has applied everything before it.
    open.send(true).unwrap();
    let other = EtcdStore::connect(&settings, range("c0.c9")).await.unwrap();
    // A pair kept does not hold (it drew one at random).
    let free = ["s0:c8,c9", "s0:c7,c9"]
        .into_iter()
        .find(|l| kept.to_string() != *l)
        .unwrap();
    let theirs = record("theirs", free);
    assert_eq!(other.commit(vec![claim(&theirs)]).await, vec![Ok(())]);
    // Pairs are state, not counts: the pool reaches 2 held either way, and
    // theirs came in the same watch response as their pair.
    let stats = held(&engine, 2).await;
    assert_eq!(
        store_counts(&other).await,
        (stats.containers, stats.pool.held),
        "the view's counts drifted from the store's: {stats:?}"
    );
    assert_eq!(stats.pool.free, stats.pool.total - 2);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_released_elsewhere_are_handed_out_before_the_feed_reports_them() {
    let cluster = EtcdCluster::start(1);
    let settings = settings(&cluster, "/late/");
    // c0.c2: 3 pairs, all taken by the engine under test.
    let store = Altered(
        EtcdStore::connect(&settings, range("c0.c2")).await.unwrap(),
        Feed::Late,
    );
    let engine = Engine::start(Arc::new(store), engine_config("c0.c2"))
        .await
        .unwrap();
    let mut levels = Vec::new();
    for id in ["a", "b", "c"] {
        levels.push(engine.allocate(request(id)).await.unwrap().record.level);
    }
    let other_store = EtcdStore::connect(&settings, range("c0.c2")).await.unwrap();
    let other = Engine::start(Arc::new(other_store), engine_config("c0.c2"))
        .await
        .unwrap();

    // Another instance frees a pair; the engine's feed tells it only later,
    // yet the next allocation gets it instead of "exhausted".
    other
        .release(ContainerId::new("a").unwrap(), Vec::new())
        .await
        .unwrap();
    let got = engine.allocate(request("d")).await.unwrap();
    assert_eq!(got.record.level, levels[0]);

    // The same for a pair asked for by name.
    other
        .release(ContainerId::new("b").unwrap(), Vec::new())
        .await
        .unwrap();
    let asked = AllocateRequest {
        level: Some(levels[1]),
        ..request("e")
    };
    assert_eq!(
        engine.allocate(asked).await.unwrap().record.level,
        levels[1]
    );

    // Nothing freed: exhausted, and a held pair is held.
    let err = engine.allocate(request("f")).await.unwrap_err();
    assert!(matches!(err, AllocError::Exhausted { .. }), "{err}");
    let held = AllocateRequest {
        level: Some(levels[2]),
        ..request("g")
    };
    let err = engine.allocate(held).await.unwrap_err();
    assert!(matches!(err, AllocError::LevelHeld { .. }), "{err}");
    engine.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

/// Two engines on one etcd: `a` follows the store; `b`'s feed stays shut
/// (the gate is returned: keep it, dropping it opens the feed), so `b`
/// hears of nothing `a` does unless it reads the store itself.
async fn engines_with_b_deaf(
    cluster: &EtcdCluster,
    prefix: &str,
    range_text: &str,
) -> (Engine, Engine, tokio::sync::watch::Sender<bool>) {
    let settings = settings(cluster, prefix);
    let a = EtcdStore::connect(&settings, range(range_text))
        .await
        .unwrap();
    let a = Engine::start(Arc::new(a), engine_config(range_text))
        .await
        .unwrap();
    let (gate, shut) = tokio::sync::watch::channel(false);
    let b = Altered(
        EtcdStore::connect(&settings, range(range_text))
            .await
            .unwrap(),
        Feed::Gated(shut),
    );
    let b = Engine::start(Arc::new(b), engine_config(range_text))
        .await
        .unwrap();
    (a, b, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_reserved_through_another_instance_is_refused_before_the_feed_reports_it() {
    let cluster = EtcdCluster::start(1);
    let (a, b, _gate) = engines_with_b_deaf(&cluster, "/resv/", "c0.c9").await;
    let asked = |id: &str, level: &str| AllocateRequest {
        level: Some(level.parse().unwrap()),
        ..request(id)
    };

    // The pair itself reserved through a.
    let pair: Reservation = "s0:c1,c2".parse().unwrap();
    a.reserve(pair).await.unwrap();
    let err = b.allocate(asked("x", "s0:c1,c2")).await.unwrap_err();
    assert!(
        matches!(err, AllocError::LevelReserved { reservation, .. } if reservation == pair),
        "{err}"
    );
    // One of its categories reserved through a.
    let category: Reservation = "c5".parse().unwrap();
    a.reserve(category).await.unwrap();
    let err = b.allocate(asked("y", "s0:c3,c5")).await.unwrap_err();
    assert!(
        matches!(err, AllocError::LevelReserved { reservation, .. } if reservation == category),
        "{err}"
    );
    // Nothing of either was recorded, and b now counts both reservations.
    for id in ["x", "y"] {
        let err = a.get(&ContainerId::new(id).unwrap()).await.unwrap_err();
        assert!(matches!(err, AllocError::NotFound(_)), "{id}: {err}");
    }
    assert_eq!(b.stats().await.unwrap().pool.reserved, 1 + 9);
    // A pair no reservation covers is still handed out.
    let free = b.allocate(asked("z", "s0:c3,c4")).await.unwrap();
    assert_eq!(free.record.level.to_string(), "s0:c3,c4");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_draws_never_hand_out_pairs_reserved_through_another_instance() {
    let cluster = EtcdCluster::start(1);
    // c0.c2: 3 pairs; reserving c0 through a leaves s0:c1,c2 alone free.
    let (a, b, _gate) = engines_with_b_deaf(&cluster, "/draw/", "c0.c2").await;
    a.reserve("c0".parse().unwrap()).await.unwrap();
    assert_eq!(b.stats().await.unwrap().pool.free, 3, "b heard of it early");

    // b's view still has all 3 free, so without the store refusing its
    // claims it would hand out all three.
    let mut results = Vec::new();
    for id in ["d1", "d2", "d3"] {
        results.push(b.allocate(request(id)).await.map(|got| got.record.level));
    }
    let levels: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(ToString::to_string))
        .collect();
    assert_eq!(levels, ["s0:c1,c2"], "{results:?}");
    for result in &results {
        if let Err(err) = result {
            assert!(matches!(err, AllocError::Exhausted { .. }), "{err}");
        }
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// `encoded` with a field this build does not know appended (tag 99, a
/// string), as a newer mcsd that added one would write it: protobuf
/// decoders skip it, but re-encoding what was decoded drops it.
fn with_unknown_field(mut encoded: Vec<u8>) -> Vec<u8> {
    let value = b"from a newer mcsd";
    // Key: tag 99, wire type 2 (length-delimited), as a varint.
    encoded.extend_from_slice(&[0x9a, 0x06, value.len() as u8]);
    encoded.extend_from_slice(value);
    encoded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_by_a_newer_mcsd_with_unknown_fields_are_released() {
    use mcsd::store::codec;
    let cluster = EtcdCluster::start(1);
    let settings = settings(&cluster, "/newer/");
    // Connecting records the format and the range under the prefix.
    let store = EtcdStore::connect(&settings, range("c0.c9")).await.unwrap();
    let group = GroupKey::new("pod").unwrap();
    let mut one = record("one", "s0:c1,c2");
    one.group = Some(group.clone());
    let two = AllocationRecord {
        container_id: ContainerId::new("two").unwrap(),
        ..one.clone()
    };
    let pod = GroupRecord {
        key: group.clone(),
        level: one.level,
        members: 2,
        created_at: one.created_at,
    };
    let lone = record("lone", "s0:c3,c4");
    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    let key = |logical: Vec<u8>| [b"/newer/".to_vec(), logical].concat();
    let writes = [
        (
            codec::allocation_key(&one.container_id),
            codec::encode_allocation(&one),
        ),
        (
            codec::allocation_key(&two.container_id),
            codec::encode_allocation(&two),
        ),
        (codec::group_key(&group), codec::encode_group(&pod)),
        (
            codec::pair_key(one.level),
            codec::encode_holder(&one.holder()),
        ),
        (
            codec::allocation_key(&lone.container_id),
            codec::encode_allocation(&lone),
        ),
        (
            codec::pair_key(lone.level),
            codec::encode_holder(&lone.holder()),
        ),
    ];
    for (logical, value) in writes {
        client
            .put(key(logical), with_unknown_field(value), None)
            .await
            .unwrap();
    }
    // The records decode as they were meant.
    assert_eq!(
        store.allocation(&one.container_id).await.unwrap(),
        Some(one.clone())
    );
    assert_eq!(store.group(&group).await.unwrap(), Some(pod));

    let engine = Engine::start(Arc::new(store), engine_config("c0.c9"))
        .await
        .unwrap();
    assert_eq!(engine.stats().await.unwrap().containers, 3);
    for id in ["lone", "one", "two"] {
        let released = engine
            .release(ContainerId::new(id).unwrap(), Vec::new())
            .await;
        assert!(released.is_ok(), "{id}: {released:?}");
    }
    let left = client
        .get(
            "/newer/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let keys: Vec<String> = left
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    assert_eq!(
        keys,
        ["/newer/meta/format", "/newer/meta/range"],
        "not released"
    );
    let stats = engine.stats().await.unwrap();
    assert_eq!((stats.containers, stats.pool.held), (0, 0));
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_another_writer_rewrote_after_it_was_read_is_not_deleted_blindly() {
    use mcsd::store::codec;
    let cluster = EtcdCluster::start(1);
    let settings = settings(&cluster, "/rewrite/");
    let store = EtcdStore::connect(&settings, range("c0.c9")).await.unwrap();
    let x = record("x", "s0:c1,c2");
    assert_eq!(store.commit(vec![claim(&x)]).await, vec![Ok(())]);
    let release = |r: &AllocationRecord| {
        Txn(vec![
            Op::DeleteAllocation(r.clone()),
            Op::FreePair {
                level: r.level,
                holder: r.holder(),
            },
        ])
    };
    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    let a_x = [
        b"/rewrite/".to_vec(),
        codec::allocation_key(&x.container_id),
    ]
    .concat();

    // Read here, then written again by another writer with the very same
    // bytes (another mcsd took it over, say): what was read is no longer
    // what is there, even if it looks the same.
    assert_eq!(
        store.allocation(&x.container_id).await.unwrap(),
        Some(x.clone())
    );
    client
        .put(a_x.clone(), codec::encode_allocation(&x), None)
        .await
        .unwrap();
    let result = store.commit(vec![release(&x)]).await;
    assert!(
        matches!(&result[0], Err(StoreError::Conflict(m)) if m == "the allocation of container x was changed by another writer"),
        "{result:?}"
    );
    assert_eq!(client.get(a_x.clone(), None).await.unwrap().count(), 1);

    // Changed for real after it was read: the same.
    assert_eq!(
        store.allocation(&x.container_id).await.unwrap(),
        Some(x.clone())
    );
    let moved = AllocationRecord {
        node: "elsewhere".into(),
        ..x.clone()
    };
    client
        .put(a_x.clone(), codec::encode_allocation(&moved), None)
        .await
        .unwrap();
    let result = store.commit(vec![release(&x)]).await;
    assert!(
        matches!(&result[0], Err(StoreError::Conflict(_))),
        "{result:?}"
    );
    let kept = client.get(a_x.clone(), None).await.unwrap();
    assert_eq!(kept.kvs()[0].value(), codec::encode_allocation(&moved));

    // Planned again from a fresh read, the release goes through.
    let fresh = store.allocation(&x.container_id).await.unwrap().unwrap();
    assert_eq!(fresh, moved);
    assert_eq!(store.commit(vec![release(&fresh)]).await, vec![Ok(())]);
    assert_eq!(client.get(a_x, None).await.unwrap().count(), 0);
    assert_eq!(store.held_count().await.unwrap(), Some(0));
}
