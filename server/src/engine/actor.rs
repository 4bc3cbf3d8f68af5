//! The actor behind [`Engine`](super::Engine): batching, planning, group
//! commit and replies. See the module documentation of `engine` for the
//! rules it follows.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, OwnedRwLockWriteGuard};
use tokio::task::JoinHandle;

use self::shared::ReadCache;
use super::gate::Gate;
use super::view::{self, View};
use super::{
    AllocateRequest, Allocated, Command, EngineConfig, Released, Reply, Reserved, Unreserved,
};
use crate::allocator::ClaimError;
use crate::error::{AllocError, Mismatch};
use crate::id::{ContainerId, GroupKey};
use crate::level::{Level, PairIndex};
use crate::reservation::Reservation;
use crate::store::{
    self, AllocationRecord, ChangeFeed, GroupRecord, Holder, Op, RelabeledRoot, ReservationRecord,
    Store, StoreError, Txn,
};

mod shared;
#[cfg(test)]
mod tests;

/// Requests planned together at most; bounds a batch's latency.
const MAX_BATCH: usize = 1024;

/// Batches committing at once at most. While one batch syncs the next is
/// planned and written, so a cycle costs the longer of planning and syncing
/// instead of both; a third would only split the queue into smaller syncs.
const MAX_IN_FLIGHT: usize = 2;

/// A command waiting for a later batch.
struct Deferred {
    /// Plan it once this many commits have ended (or nothing is in flight):
    /// it touched something a batch in flight touches.
    after: u64,
    cmd: Command,
}

impl Deferred {
    /// A command that may go into the next batch.
    fn now(cmd: Command) -> Self {
        Self { after: 0, cmd }
    }
}

/// A planned batch whose commit has started (or that has nothing to
/// commit): its replies wait for the commit, in batch order.
struct InFlight {
    /// The store's commit; `None` when the batch changes nothing.
    commit: Option<JoinHandle<Vec<Result<(), StoreError>>>>,
    changes: Vec<Change>,
    /// What the batch's changes touch: later batches leave it alone until
    /// this one is durable or has failed.
    touched: HashSet<Entity>,
    answers: Vec<Box<dyn FnOnce() + Send>>,
    reads: Vec<Command>,
}

impl InFlight {
    fn is_done(&self) -> bool {
        self.commit.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The commit's results, one per change. A commit task that died (it
    /// panicked) fails every change; the engine then reloads from the store.
    async fn wait(&mut self) -> Vec<Result<(), StoreError>> {
        let Some(commit) = self.commit.as_mut() else {
            return Vec::new();
        };
        let results = commit.await.unwrap_or_else(|e| {
            let error = StoreError::Unreachable {
                store: "the store's commit task".into(),
                detail: e.to_string(),
            };
            vec![Err(error); self.changes.len()]
        });
        self.commit = None;
        results
    }
}

/// What a request touches; two requests touching the same thing never share
/// a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Entity {
    Id(ContainerId),
    Group(GroupKey),
    Pair(PairIndex),
    Reservation(Reservation),
}

/// A planned change waiting for its commit.
enum Change {
    Allocate {
        record: AllocationRecord,
        /// Pair taken from the pool while planning (None when joining a group).
        claimed: Option<PairIndex>,
        new_group: bool,
        reply: Reply<Allocated>,
        /// The request, to plan again after a lost race.
        request: Box<AllocateRequest>,
        /// Plans made so far, this one included.
        attempt: u32,
    },
    Release {
        record: AllocationRecord,
        /// Pair to give back once durable (None while group members remain).
        frees: Option<PairIndex>,
        group_deleted: bool,
        /// The roots the caller restored, to plan again after a lost race.
        restored: Vec<PathBuf>,
        reply: Reply<Released>,
        /// Plans made so far, this one included.
        attempt: u32,
    },
    Reserve {
        record: ReservationRecord,
        /// The record replaced when an existing reservation is marked as
        /// configured (None when the reservation is new).
        replaced: Option<ReservationRecord>,
        covered: u64,
        held: u64,
        reply: Reply<Reserved>,
    },
    Unreserve {
        record: ReservationRecord,
        reply: Reply<Unreserved>,
    },
    Update {
        record: AllocationRecord,
        /// The root added, to plan again after a lost race.
        root: Box<RelabeledRoot>,
        reply: Reply<AllocationRecord>,
        /// Plans made so far, this one included.
        attempt: u32,
    },
}

impl Change {
    /// Applies the after-commit effects and replies.
    fn committed(self, view: &mut View) {
        match self {
            Change::Allocate {
                record,
                new_group,
                reply,
                ..
            } => {
                view.add_container(&record.owner);
                view.groups += u64::from(new_group);
                tracing::info!(container_id = %record.container_id, owner = %record.owner,
                    level = %record.level, group = record.group.as_ref().map_or("", |g| g.as_str()), "allocated");
                let _ = reply.send(Ok(Allocated {
                    record,
                    created: true,
                }));
            }
            Change::Release {
                record,
                frees,
                group_deleted,
                reply,
                ..
            } => {
                let level_freed = frees.is_some_and(|i| view.pool.release(i));
                view.remove_container(&record.owner);
                // Saturating: with a shared store the creation may not be
                // counted yet (out_of_step asks for a reload then).
                view.groups = view.groups.saturating_sub(u64::from(group_deleted));
                tracing::info!(container_id = %record.container_id, owner = %record.owner,
                    level = %record.level, level_freed, "released");
                let _ = reply.send(Ok(Released {
                    record: Some(record),
                    level_freed,
                }));
            }
            Change::Reserve {
                record,
                replaced,
                covered,
                held,
                reply,
            } => {
                if replaced.is_none() {
                    tracing::info!(reservation = %record.reservation, covered, held, "reserved");
                } else {
                    tracing::info!(reservation = %record.reservation, configured_by = record.configured_by.as_deref().unwrap_or(""),
                        "existing reservation now held by the configuration");
                }
                let _ = reply.send(Ok(Reserved {
                    record,
                    created: replaced.is_none(),
                    covered,
                    held,
                }));
            }
            Change::Update { record, reply, .. } => {
                let _ = reply.send(Ok(record));
            }
            Change::Unreserve { record, reply } => {
                view.reservations.remove(&record.reservation);
                let freed = view.pool.unreserve(record.reservation);
                tracing::info!(reservation = %record.reservation, freed, "unreserved");
                let _ = reply.send(Ok(Unreserved {
                    removed: true,
                    freed,
                }));
            }
        }
    }

    /// Reverts the planning effects and replies with the error.
    fn failed(self, view: &mut View, error: AllocError) {
        match self {
            Change::Allocate { claimed, reply, .. } => {
                if let Some(index) = claimed {
                    view.pool.release(index);
                }
                let _ = reply.send(Err(error));
            }
            Change::Release { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Change::Reserve {
                record,
                replaced,
                reply,
                ..
            } => {
                match replaced {
                    Some(old) => {
                        view.reservations.insert(record.reservation, old);
                    }
                    None => {
                        view.reservations.remove(&record.reservation);
                        view.pool.unreserve(record.reservation);
                    }
                }
                let _ = reply.send(Err(error));
            }
            Change::Unreserve { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Change::Update { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// The outcome of planning one command.
enum Step {
    /// It touches something the batch already touches: try next batch.
    Defer(Command),
    /// Answered without changing anything; the answer goes out after the
    /// batch's commit.
    Answer(Box<dyn FnOnce() + Send>),
    /// A change to commit.
    Change(Txn, Vec<Entity>, Change),
}

fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, AllocError>) -> Step {
    Step::Answer(Box::new(move || {
        let _ = reply.send(result);
    }))
}

pub(super) struct Actor {
    rx: mpsc::Receiver<Command>,
    store: Arc<dyn Store>,
    gate: Arc<Gate>,
    view: View,
    config: EngineConfig,
    rng: StdRng,
    deferred: VecDeque<Deferred>,
    /// Batches committing, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Commits ended so far (see [`Deferred::after`]).
    completed: u64,
    /// The gate's write side, held while any batch is in flight.
    run: Option<OwnedRwLockWriteGuard<()>>,
    /// A commit failed: once the batches in flight have ended, reopen the
    /// store and reload the view (see `recover`).
    failed_commit: Option<StoreError>,
    /// What other instances change in a shared store; `None` otherwise.
    feed: Option<Box<dyn ChangeFeed>>,
    /// The view fell out of step with a shared store: why, and when to try
    /// reloading it.
    resync: Option<(String, Instant)>,
    /// The batch's records, read in one go before planning.
    reads: ReadCache,
    /// Pairs this batch took from the pool, not committed yet: the view
    /// counts them held, the store does not yet.
    batch_claims: u64,
    /// This batch already waited for the feed (see `catch_up_with_frees`).
    batch_waited: bool,
    /// The last recovery failed (the disk was still full, say): retry it
    /// before planning anything else, since planning reads the store too.
    broken: Option<StoreError>,
}

impl Actor {
    pub(super) fn new(
        rx: mpsc::Receiver<Command>,
        store: Arc<dyn Store>,
        gate: Arc<Gate>,
        view: View,
        config: EngineConfig,
    ) -> Self {
        Self {
            rx,
            store,
            gate,
            view,
            config,
            // A CSPRNG seeded by the OS: labels must not be predictable.
            rng: StdRng::from_os_rng(),
            deferred: VecDeque::new(),
            in_flight: VecDeque::new(),
            completed: 0,
            run: None,
            failed_commit: None,
            feed: None,
            resync: None,
            reads: ReadCache::default(),
            batch_claims: 0,
            batch_waited: false,
            broken: None,
        }
    }

    pub(super) async fn run(mut self) {
        let mut stopping: Option<oneshot::Sender<()>> = None;
        // The channel ended: every Engine handle is gone.
        let mut closed = false;
        loop {
            self.reap().await;
            if self.in_flight.is_empty() {
                if let Some(error) = self.failed_commit.take() {
                    self.recover(error).await;
                }
            } else if !self.may_overlap() {
                self.finish_oldest().await;
                continue;
            }
            let first = match self.take_deferred() {
                Some(cmd) => cmd,
                None if stopping.is_some() || closed => {
                    if self.in_flight.is_empty() && self.deferred.is_empty() {
                        break;
                    }
                    self.finish_oldest().await;
                    continue;
                }
                None if self.in_flight.is_empty() => match self.next_command().await {
                    Some(cmd) => cmd,
                    None => {
                        closed = true;
                        continue;
                    }
                },
                // A batch is syncing: plan the next one as soon as a request
                // comes, unless the sync ends first.
                None => match self.next_or_finished().await {
                    Some(Some(cmd)) => cmd,
                    Some(None) => {
                        closed = true;
                        continue;
                    }
                    None => continue,
                },
            };
            if !self.in_flight.is_empty() && !self.may_overlap() {
                // A reader came while this request was awaited: let the
                // commits in flight end first.
                self.deferred.push_front(Deferred::now(first));
                continue;
            }
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.take_deferred() {
                    Some(cmd) => batch.push(cmd),
                    None => match self.rx.try_recv() {
                        Ok(cmd) => batch.push(cmd),
                        Err(_) => break,
                    },
                }
            }
            if let Some(done) = self.start(batch).await {
                // Take nothing new; finish what is queued and deferred.
                self.rx.close();
                while let Ok(cmd) = self.rx.try_recv() {
                    self.deferred.push_back(Deferred::now(cmd));
                }
                stopping = Some(done);
            }
        }
        if let Some(done) = stopping {
            let _ = done.send(());
        }
    }

    /// Whether another batch may start committing beside those in flight:
    /// only with a store no other instance writes (with a shared one the
    /// feed and the conflict handling assume one commit at a time), while
    /// nothing failed, and while no reader waits for the gate.
    fn may_overlap(&self) -> bool {
        self.in_flight.len() < MAX_IN_FLIGHT
            && self.feed.is_none()
            && self.failed_commit.is_none()
            && self.broken.is_none()
            && !self.gate.readers_waiting()
    }

    /// The next deferred command that may be planned now: all of them when
    /// nothing is in flight, else those deferred before the latest commit
    /// ended (the others would only be deferred again).
    fn take_deferred(&mut self) -> Option<Command> {
        let ready = self
            .deferred
            .front()
            .is_some_and(|d| self.in_flight.is_empty() || d.after <= self.completed);
        ready
            .then(|| self.deferred.pop_front().map(|d| d.cmd))
            .flatten()
    }

    /// Defers a command until the next commit ends.
    fn defer(&mut self, cmd: Command) {
        self.deferred.push_back(Deferred {
            after: self.completed + 1,
            cmd,
        });
    }

    /// Waits for the next request (`Some`; `Some(None)` when the channel
    /// ended) or, if it ends first, finishes the oldest batch in flight
    /// (`None`).
    async fn next_or_finished(&mut self) -> Option<Option<Command>> {
        let oldest = self.in_flight.front_mut().expect("a batch is in flight");
        let results = tokio::select! {
            biased;
            results = oldest.wait() => results,
            cmd = self.rx.recv() => return Some(cmd),
        };
        self.finished(results).await;
        None
    }

    /// Finishes every batch at the front whose commit has ended.
    async fn reap(&mut self) {
        while self.in_flight.front().is_some_and(InFlight::is_done) {
            self.finish_oldest().await;
        }
    }

    /// Waits for the oldest batch in flight and finishes it.
    async fn finish_oldest(&mut self) {
        if let Some(oldest) = self.in_flight.front_mut() {
            let results = oldest.wait().await;
            self.finished(results).await;
        }
    }

    /// Applies the oldest batch's commit results and sends its replies.
    async fn finished(&mut self, results: Vec<Result<(), StoreError>>) {
        let batch = self
            .in_flight
            .pop_front()
            .expect("results belong to the oldest batch");
        self.completed += 1;
        if self.in_flight.is_empty() {
            // The run of commits ends: readers may look at the store again.
            self.run = None;
        }
        for (change, result) in batch.changes.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    if let Some(reason) = change.out_of_step(&self.view) {
                        self.out_of_step(reason);
                    }
                    change.committed(&mut self.view)
                }
                Err(StoreError::Conflict(why)) => self.conflicted(change, why).await,
                Err(e) => {
                    // Recovered once nothing is in flight any more (see run).
                    self.failed_commit.get_or_insert_with(|| e.clone());
                    change.failed(&mut self.view, AllocError::Store(e));
                }
            }
        }
        for send in batch.answers {
            send();
        }
        for read in batch.reads {
            match read {
                Command::Stats(reply) => {
                    let _ = reply.send(self.view.stats());
                }
                Command::Reservations(reply) => {
                    let _ = reply.send(self.view.reservations.values().cloned().collect());
                }
                _ => unreachable!("only reads are queued here"),
            }
        }
    }

    /// Plans one batch and starts its commit. Returns the shutdown reply if
    /// the batch asked to stop.
    async fn start(&mut self, batch: Vec<Command>) -> Option<oneshot::Sender<()>> {
        if self.in_flight.is_empty() {
            if let Some(error) = self.broken.take() {
                self.recover(error).await;
            }
            self.catch_up();
            self.resync_if_due().await;
        }
        self.prefetch(&batch).await;
        self.batch_claims = 0;
        self.batch_waited = false;
        // What the batches in flight touch is off limits too: their records
        // are written but not durable, and may still fail.
        let mut touched: HashSet<Entity> = self
            .in_flight
            .iter()
            .flat_map(|b| b.touched.iter().cloned())
            .collect();
        let mut mine: HashSet<Entity> = HashSet::new();
        let mut txns = Vec::new();
        let mut changes = Vec::new();
        let mut answers: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        let mut reads = Vec::new();
        let mut shutdown = None;

        for cmd in batch {
            let (cmd, attempt) = match cmd {
                Command::Retry(cmd, attempt) => (*cmd, attempt),
                cmd => (cmd, 0),
            };
            // While the store cannot be reopened, changes fail with the
            // reason (a full disk, say) instead of a generic I/O error.
            let cmd = match (&self.broken, cmd) {
                (Some(e), Command::Allocate(_, reply)) => {
                    let _ = reply.send(Err(AllocError::Store(e.clone())));
                    continue;
                }
                (Some(e), Command::Release(_, _, reply)) => {
                    let _ = reply.send(Err(AllocError::Store(e.clone())));
                    continue;
                }
                (Some(e), Command::Reserve(_, _, reply)) => {
                    let _ = reply.send(Err(AllocError::Store(e.clone())));
                    continue;
                }
                (Some(e), Command::Unreserve(_, reply)) => {
                    let _ = reply.send(Err(AllocError::Store(e.clone())));
                    continue;
                }
                (Some(e), Command::AddRoot(_, _, reply)) => {
                    let _ = reply.send(Err(AllocError::Store(e.clone())));
                    continue;
                }
                (_, cmd) => cmd,
            };
            let step = match cmd {
                Command::Allocate(req, reply) => {
                    self.plan_allocate(req, reply, &touched, attempt + 1).await
                }
                Command::Release(id, restored, reply) => {
                    self.plan_release(id, restored, reply, &touched, attempt + 1)
                        .await
                }
                Command::AddRoot(id, root, reply) => {
                    self.plan_add_root(id, root, reply, &touched, attempt + 1)
                        .await
                }
                Command::Reserve(r, configured_by, reply) => {
                    self.plan_reserve(r, configured_by, reply, &touched)
                }
                Command::Unreserve(r, reply) => self.plan_unreserve(r, reply, &touched),
                Command::Shutdown(done) => {
                    shutdown = Some(done);
                    continue;
                }
                read @ (Command::Stats(_) | Command::Reservations(_)) => {
                    reads.push(read);
                    continue;
                }
                Command::Retry(..) => unreachable!("retries are unwrapped above"),
                #[cfg(test)]
                Command::Panic => panic!("the engine actor panics, as a test asked"),
            };
            match step {
                Step::Defer(cmd) if attempt > 0 => {
                    self.defer(Command::Retry(Box::new(cmd), attempt))
                }
                Step::Defer(cmd) => self.defer(cmd),
                Step::Answer(send) => answers.push(send),
                Step::Change(txn, entities, change) => {
                    touched.extend(entities.iter().cloned());
                    mine.extend(entities);
                    txns.push(txn);
                    changes.push(change);
                }
            }
        }

        self.reads = ReadCache::default();
        let commit = if txns.is_empty() {
            None
        } else {
            if self.run.is_none() {
                self.run = Some(self.gate.write_owned().await);
            }
            let store = self.store.clone();
            let hook = self.config.on_commit.clone();
            Some(tokio::spawn(async move {
                // The write and the sync, for every backend alike.
                let started = Instant::now();
                let results = store.commit(txns).await;
                hook.committed(started.elapsed());
                results
            }))
        };
        self.in_flight.push_back(InFlight {
            commit,
            changes,
            touched: mine,
            answers,
            reads,
        });
        shutdown
    }

    /// After a failed commit the store may hold more than the view (applied
    /// but not flushed): bring the store back to what is durable and rebuild
    /// the view from it, so both agree again.
    async fn recover(&mut self, error: StoreError) {
        tracing::error!(%error, "store commit failed; reopening the store and reloading state");
        let _write = self.gate.write().await;
        let reloaded = match self.store.recover().await {
            Ok(()) => view::load(&*self.store, self.config.range).await,
            Err(e) => Err(e.into()),
        };
        match reloaded {
            Ok(view) => {
                self.view = view;
                // A new feed from the state just loaded.
                self.feed = self.store.changes();
                self.resync = None;
                tracing::info!("store recovered; state reloaded");
            }
            // The view was reverted to its pre-batch state; the next request
            // retries recovery first.
            Err(e) => {
                tracing::error!(error = %e, "store recovery failed; mcsd will retry with the next request");
                self.broken = Some(error);
            }
        }
    }

    async fn plan_allocate(
        &mut self,
        req: AllocateRequest,
        reply: Reply<Allocated>,
        touched: &HashSet<Entity>,
        attempt: u32,
    ) -> Step {
        let range = self.config.range;
        let requested = match req.level {
            Some(level) => match range.index_of(level) {
                Some(index) => Some((level, index)),
                None => return answer(reply, Err(AllocError::OutOfRange { level, range })),
            },
            None => None,
        };
        let mut entities = vec![Entity::Id(req.container_id.clone())];
        entities.extend(req.group.clone().map(Entity::Group));
        entities.extend(requested.map(|(_, i)| Entity::Pair(i)));
        if entities.iter().any(|e| touched.contains(e)) {
            return Step::Defer(Command::Allocate(req, reply));
        }

        match self.read_allocation(&req.container_id).await {
            Err(e) => return answer(reply, Err(e.into())),
            Ok(Some(existing)) => return answer(reply, same_allocation(&req, existing)),
            Ok(None) => {}
        }

        let now = store::now();
        let mut ops = Vec::with_capacity(3);
        let (level, index, claimed, new_group) = match &req.group {
            Some(key) => match self.read_group(key).await {
                Err(e) => return answer(reply, Err(e.into())),
                Ok(Some(group)) => {
                    if let Some((requested, _)) = requested.filter(|(l, _)| *l != group.level) {
                        let e = AllocError::GroupLevel {
                            group: key.clone(),
                            held: group.level,
                            requested,
                        };
                        return answer(reply, Err(e));
                    }
                    let Some(index) = range.index_of(group.level) else {
                        let e = AllocError::Inconsistent(format!(
                            "group {key} holds {}, outside the range",
                            group.level
                        ));
                        return answer(reply, Err(e));
                    };
                    let joined = GroupRecord {
                        members: group.members + 1,
                        ..group.clone()
                    };
                    let level = group.level;
                    ops.push(Op::PutGroup {
                        old: Some(group),
                        new: joined,
                    });
                    (level, index, None, false)
                }
                Ok(None) => {
                    let (level, index) = match self.take_pair(requested).await {
                        Ok(taken) => taken,
                        Err(e) => return answer(reply, Err(e)),
                    };
                    ops.push(Op::PutGroup {
                        old: None,
                        new: GroupRecord {
                            key: key.clone(),
                            level,
                            members: 1,
                            created_at: now,
                        },
                    });
                    ops.push(Op::ClaimPair {
                        level,
                        holder: Holder::Group(key.clone()),
                    });
                    (level, index, Some(index), true)
                }
            },
            None => {
                let (level, index) = match self.take_pair(requested).await {
                    Ok(taken) => taken,
                    Err(e) => return answer(reply, Err(e)),
                };
                ops.push(Op::ClaimPair {
                    level,
                    holder: Holder::Container(req.container_id.clone()),
                });
                (level, index, Some(index), false)
            }
        };
        let request = Box::new(req.clone());
        let labels = &self.config.labels;
        let record = AllocationRecord {
            process_label: labels.process_label(level),
            file_label: labels.file_label(level),
            container_id: req.container_id,
            owner: req.owner,
            group: req.group,
            level,
            created_at: now,
            roots: Vec::new(),
            node: self.config.node.clone(),
        };
        ops.insert(0, Op::CreateAllocation(record.clone()));
        entities.push(Entity::Pair(index));
        Step::Change(
            Txn(ops),
            entities,
            Change::Allocate {
                record,
                claimed,
                new_group,
                reply,
                request,
                attempt,
            },
        )
    }

    /// Takes the requested pair, or a random free one.
    async fn take_pair(
        &mut self,
        requested: Option<(Level, PairIndex)>,
    ) -> Result<(Level, PairIndex), AllocError> {
        let range = self.config.range;
        let Some((level, index)) = requested else {
            let mut picked = self.view.pool.pick(&mut self.rng);
            if picked.is_none() && self.catch_up_with_frees().await {
                picked = self.view.pool.pick(&mut self.rng);
            }
            return match picked {
                Some(index) => {
                    self.batch_claims += 1;
                    Ok((range.level_at(index), index))
                }
                None => Err(AllocError::Exhausted {
                    range,
                    stats: self.view.pool.stats(),
                }),
            };
        };
        let mut claimed = self.view.pool.claim(index);
        if claimed == Err(ClaimError::Held) && self.feed.is_some() {
            // In a shared store the view may lag behind a release elsewhere.
            match self.store.holder(level).await? {
                Some(holder) => return Err(AllocError::LevelHeld { level, holder }),
                None if self.catch_up_with_frees().await => {
                    claimed = self.view.pool.claim(index);
                }
                None => {}
            }
        }
        match claimed {
            Ok(()) => {
                self.batch_claims += 1;
                Ok((level, index))
            }
            Err(ClaimError::Held) => match self.store.holder(level).await? {
                Some(holder) => Err(AllocError::LevelHeld { level, holder }),
                None => Err(AllocError::Inconsistent(format!(
                    "{level} is marked held but the store names no holder"
                ))),
            },
            Err(ClaimError::Reserved) => Err(match self.view.reservation_covering(level) {
                Some(reservation) => AllocError::LevelReserved { level, reservation },
                None => AllocError::Inconsistent(format!(
                    "{level} is marked reserved but no reservation covers it"
                )),
            }),
        }
    }

    async fn plan_add_root(
        &mut self,
        id: ContainerId,
        root: RelabeledRoot,
        reply: Reply<AllocationRecord>,
        touched: &HashSet<Entity>,
        attempt: u32,
    ) -> Step {
        if touched.contains(&Entity::Id(id.clone())) {
            return Step::Defer(Command::AddRoot(id, root, reply));
        }
        let old = match self.read_allocation(&id).await {
            Err(e) => return answer(reply, Err(e.into())),
            Ok(None) => return answer(reply, Err(AllocError::NotFound(id))),
            Ok(Some(record)) => record,
        };
        let mut new = old.clone();
        match new.roots.iter_mut().find(|r| r.path == root.path) {
            Some(known)
                if known.shared == root.shared && (known.hard_links || !root.hard_links) =>
            {
                return answer(reply, Ok(old))
            }
            // Relabeled again in the other mode: the original stays the
            // one from before the first relabel. Once hard links were
            // labeled, restore labels them too.
            Some(known) => {
                known.shared = root.shared;
                known.hard_links |= root.hard_links;
            }
            None => new.roots.push(root.clone()),
        }
        Step::Change(
            Txn(vec![Op::UpdateAllocation {
                old,
                new: new.clone(),
            }]),
            vec![Entity::Id(id)],
            Change::Update {
                record: new,
                root: Box::new(root),
                reply,
                attempt,
            },
        )
    }

    async fn plan_release(
        &mut self,
        id: ContainerId,
        restored: Vec<PathBuf>,
        reply: Reply<Released>,
        touched: &HashSet<Entity>,
        attempt: u32,
    ) -> Step {
        if touched.contains(&Entity::Id(id.clone())) {
            return Step::Defer(Command::Release(id, restored, reply));
        }
        let record = match self.read_allocation(&id).await {
            Err(e) => return answer(reply, Err(e.into())),
            Ok(None) => {
                let nothing = Released {
                    record: None,
                    level_freed: false,
                };
                return answer(reply, Ok(nothing));
            }
            Ok(Some(record)) => record,
        };
        // The last guard of restore-before-free: a root registered after the
        // caller read the record would keep the pair on its files.
        if let Some(root) = record.roots.iter().find(|r| !restored.contains(&r.path)) {
            let e = AllocError::NotRestored {
                id,
                path: root.path.clone(),
            };
            return answer(reply, Err(e));
        }
        let Some(index) = self.config.range.index_of(record.level) else {
            let e = AllocError::Inconsistent(format!(
                "container {id} holds {}, outside the range",
                record.level
            ));
            return answer(reply, Err(e));
        };
        let mut entities = vec![Entity::Id(id.clone()), Entity::Pair(index)];
        entities.extend(record.group.clone().map(Entity::Group));
        if entities.iter().any(|e| touched.contains(e)) {
            return Step::Defer(Command::Release(id, restored, reply));
        }

        let mut ops = vec![Op::DeleteAllocation(record.clone())];
        let (frees, group_deleted) = match &record.group {
            None => {
                ops.push(Op::FreePair {
                    level: record.level,
                    holder: record.holder(),
                });
                (Some(index), false)
            }
            Some(key) => match self.read_group(key).await {
                Err(e) => return answer(reply, Err(e.into())),
                Ok(None) => {
                    let e = AllocError::Inconsistent(format!(
                        "container {id} names group {key}, which does not exist"
                    ));
                    return answer(reply, Err(e));
                }
                Ok(Some(group)) if group.members <= 1 => {
                    ops.push(Op::FreePair {
                        level: record.level,
                        holder: record.holder(),
                    });
                    ops.push(Op::DeleteGroup(group));
                    (Some(index), true)
                }
                Ok(Some(group)) => {
                    let left = GroupRecord {
                        members: group.members - 1,
                        ..group.clone()
                    };
                    ops.push(Op::PutGroup {
                        old: Some(group),
                        new: left,
                    });
                    (None, false)
                }
            },
        };
        Step::Change(
            Txn(ops),
            entities,
            Change::Release {
                record,
                frees,
                group_deleted,
                restored,
                reply,
                attempt,
            },
        )
    }

    fn plan_reserve(
        &mut self,
        reservation: Reservation,
        configured_by: Option<String>,
        reply: Reply<Reserved>,
        touched: &HashSet<Entity>,
    ) -> Step {
        let range = self.config.range;
        if !reservation.fits(range) {
            return answer(
                reply,
                Err(AllocError::ReservationOutOfRange { reservation, range }),
            );
        }
        if touched.contains(&Entity::Reservation(reservation)) {
            return Step::Defer(Command::Reserve(reservation, configured_by, reply));
        }
        if let Some(record) = self.view.reservations.get(&reservation) {
            let covered = reservation.covered(range);
            let held = covered
                .iter()
                .filter(|&&i| self.view.pool.is_held(i))
                .count();
            if configured_by.is_some() && record.configured_by.is_none() {
                // The configuration takes over an operator's reservation.
                let replaced = record.clone();
                let record = ReservationRecord {
                    configured_by,
                    ..replaced.clone()
                };
                self.view.reservations.insert(reservation, record.clone());
                return Step::Change(
                    Txn(vec![Op::ReplaceReservation {
                        old: replaced.clone(),
                        new: record.clone(),
                    }]),
                    vec![Entity::Reservation(reservation)],
                    Change::Reserve {
                        record,
                        replaced: Some(replaced),
                        covered: covered.len() as u64,
                        held: held as u64,
                        reply,
                    },
                );
            }
            let existing = Reserved {
                record: record.clone(),
                created: false,
                covered: covered.len() as u64,
                held: held as u64,
            };
            return answer(reply, Ok(existing));
        }
        let record = ReservationRecord {
            reservation,
            created_at: store::now(),
            configured_by,
        };
        let (covered, held) = self.view.pool.reserve(reservation);
        self.view.reservations.insert(reservation, record.clone());
        Step::Change(
            Txn(vec![Op::PutReservation(record.clone())]),
            vec![Entity::Reservation(reservation)],
            Change::Reserve {
                record,
                replaced: None,
                covered,
                held,
                reply,
            },
        )
    }

    fn plan_unreserve(
        &mut self,
        reservation: Reservation,
        reply: Reply<Unreserved>,
        touched: &HashSet<Entity>,
    ) -> Step {
        if touched.contains(&Entity::Reservation(reservation)) {
            return Step::Defer(Command::Unreserve(reservation, reply));
        }
        let Some(record) = self.view.reservations.get(&reservation).cloned() else {
            let nothing = Unreserved {
                removed: false,
                freed: 0,
            };
            return answer(reply, Ok(nothing));
        };
        Step::Change(
            Txn(vec![Op::DeleteReservation(record.clone())]),
            vec![Entity::Reservation(reservation)],
            Change::Unreserve { record, reply },
        )
    }
}

/// An id asked for again: the same allocation if the request agrees with it.
fn same_allocation(
    req: &AllocateRequest,
    existing: AllocationRecord,
) -> Result<Allocated, AllocError> {
    let mismatch = if existing.owner != req.owner {
        Some(Mismatch::Owner(existing.owner.clone()))
    } else if existing.group != req.group {
        Some(Mismatch::Group(existing.group.clone()))
    } else {
        req.level
            .filter(|l| *l != existing.level)
            .map(Mismatch::Level)
    };
    match mismatch {
        Some(mismatch) => Err(AllocError::IdConflict {
            id: existing.container_id,
            held: existing.level,
            mismatch,
        }),
        None => Ok(Allocated {
            record: existing,
            created: false,
        }),
    }
}
