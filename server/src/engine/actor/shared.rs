//! The actor's side of a store shared by several mcsd instances: waiting
//! for requests while following the other instances' changes, reloading a
//! view that fell out of step, reading a batch's records in one round trip,
//! and planning again a request that lost a race.
//!
//! With a store only this process writes (sled) there is no feed and no
//! conflict, and all of this reduces to waiting for requests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::change::Change;
use super::{Actor, Deferred};
use crate::engine::command::Command;
use crate::engine::follow;
use crate::engine::view::{self, View};
use crate::error::AllocError;
use crate::id::{ContainerId, GroupKey};
use crate::level::Level;
use crate::reservation::Reservation;
use crate::store::{AllocationRecord, ChangeFeed, GroupRecord, StoreChange, StoreError};

/// Times an Allocate or Release is planned before a lost race in a shared
/// store is reported to the caller.
pub(in crate::engine) const MAX_ATTEMPTS: u32 = 8;

/// Wait between attempts to reload a view that fell out of step while the
/// store does not answer.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// Longest wait for the feed to report releases the store already shows:
/// it normally takes milliseconds, and the actor waits for nobody else
/// meanwhile.
const FEED_WAIT: Duration = Duration::from_millis(500);

/// Records read for the batch being planned. Valid for the whole planning
/// pass: a request only reads records no earlier request of the batch
/// changes (those are deferred), and the store's compares catch anything
/// another instance changed meanwhile.
#[derive(Default)]
pub(super) struct ReadCache {
    pub allocations: HashMap<ContainerId, Option<AllocationRecord>>,
    pub groups: HashMap<GroupKey, Option<GroupRecord>>,
}

impl Change {
    /// Why applying this committed change would leave the view's counters
    /// wrong: it removes something the view has not counted yet, which
    /// happens when another instance sharing the store created it and the
    /// change feed has not reported that yet.
    pub(super) fn out_of_step(&self, view: &View) -> Option<String> {
        match self {
            Change::Release {
                record,
                group_deleted,
                ..
            } => {
                if *group_deleted && !view.counts_a_group() {
                    return Some(format!(
                        "released the last member of group {} before the group was counted",
                        record.group.as_ref().map_or("", |g| g.as_str())
                    ));
                }
                (!view.counts_container_of(&record.owner)).then(|| {
                    format!(
                        "released an allocation of owner {} before it was counted",
                        record.owner
                    )
                })
            }
            _ => None,
        }
    }
}

impl Actor {
    /// Follows what other instances change in a shared store.
    pub(in crate::engine) fn following(mut self, feed: Option<Box<dyn ChangeFeed>>) -> Self {
        self.feed = feed;
        self
    }

    /// Waits for the next request, applying other instances' changes (and
    /// reloading the view if it fell out of step) while it waits.
    pub(super) async fn next_command(&mut self) -> Option<Command> {
        enum Event {
            Command(Option<Command>),
            Changes(Option<Vec<StoreChange>>),
            RetryResync,
        }
        loop {
            self.resync_if_due().await;
            let retry_at = self.resync.as_ref().map(|(_, at)| *at);
            let event = match self.feed.as_mut() {
                Some(feed) => tokio::select! {
                    biased;
                    cmd = self.rx.recv() => Event::Command(cmd),
                    changes = feed.next() => Event::Changes(changes),
                },
                None => match retry_at {
                    Some(at) => tokio::select! {
                        cmd = self.rx.recv() => Event::Command(cmd),
                        _ = tokio::time::sleep_until(at.into()) => Event::RetryResync,
                    },
                    None => Event::Command(self.rx.recv().await),
                },
            };
            match event {
                Event::Command(cmd) => return cmd,
                Event::Changes(Some(changes)) => self.apply_changes(changes),
                Event::Changes(None) => {
                    self.feed = None;
                    self.out_of_step("the store's change feed ended".into());
                }
                Event::RetryResync => {}
            }
        }
    }

    /// Applies every change the feed has ready, without waiting.
    pub(super) fn catch_up(&mut self) {
        while let Some(changes) = self.feed.as_mut().and_then(|f| f.try_next()) {
            self.apply_changes(changes);
        }
    }

    fn apply_changes(&mut self, changes: Vec<StoreChange>) {
        for change in changes {
            if let StoreChange::Resync(reason) = change {
                // The feed stops after this; a reload starts a new one.
                self.feed = None;
                self.out_of_step(reason);
                return;
            }
            if let Err(reason) = follow::apply(&mut self.view, self.config.range, change) {
                self.out_of_step(reason);
            }
        }
    }

    /// The view has no free pair, or holds one the store says is free: in a
    /// shared store, another instance may have released pairs the feed has
    /// not reported yet. While the store counts fewer held pairs than the
    /// view (less this batch's own uncommitted claims), applies the feed
    /// for at most [`FEED_WAIT`], once per batch. Returns whether anything
    /// changed. A truly exhausted pool costs one count, equal to the view's.
    pub(super) async fn catch_up_with_frees(&mut self) -> bool {
        if self.feed.is_none() || self.batch_waited {
            return false;
        }
        self.batch_waited = true;
        let held = match self.store.held_count().await {
            Ok(Some(held)) => held,
            Ok(None) | Err(_) => return false,
        };
        let deadline = tokio::time::Instant::now() + FEED_WAIT;
        let mut changed = false;
        while self.view.pool().stats().held > held + self.batch_claims {
            let Some(feed) = self.feed.as_mut() else {
                break;
            };
            match tokio::time::timeout_at(deadline, feed.next()).await {
                Ok(Some(changes)) => {
                    self.apply_changes(changes);
                    changed = true;
                }
                Ok(None) | Err(_) => break,
            }
        }
        changed
    }

    pub(super) fn out_of_step(&mut self, reason: String) {
        if self.resync.is_none() {
            tracing::warn!(%reason, "the view is out of step with the shared store; reloading it");
            self.resync = Some((reason, Instant::now()));
        }
    }

    /// Reloads the view (and restarts the feed) if it is out of step and
    /// the last attempt is long enough ago.
    pub(super) async fn resync_if_due(&mut self) {
        let Some((reason, at)) = self.resync.take() else {
            return;
        };
        if Instant::now() < at {
            self.resync = Some((reason, at));
            return;
        }
        let _write = self.gate.write().await;
        match view::load(&*self.store, self.config.range).await {
            Ok(view) => {
                self.view = view;
                self.feed = self.store.changes();
                let stats = self.view.stats();
                tracing::info!(
                    held = stats.pool.held,
                    containers = stats.containers,
                    "view reloaded from the shared store"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reload the view; retrying shortly");
                self.resync = Some((reason, Instant::now() + RESYNC_RETRY));
            }
        }
    }

    /// Reads the records the batch's requests will look at, in one call.
    pub(super) async fn prefetch(&mut self, batch: &[Command]) {
        self.reads = ReadCache::default();
        let mut ids = Vec::new();
        let mut groups = Vec::new();
        for cmd in batch {
            let cmd = match cmd {
                Command::Retry(cmd, _) => cmd,
                cmd => cmd,
            };
            match cmd {
                Command::Allocate(req, _) => {
                    ids.push(req.container_id.clone());
                    groups.extend(req.group.clone());
                }
                Command::Release(id, _, _) | Command::AddRoot(id, _, _) => ids.push(id.clone()),
                _ => {}
            }
        }
        if ids.is_empty() {
            return;
        }
        // On failure plan from single reads, which report their own errors.
        if let Ok(read) = self.store.read_batch(&ids, &groups).await {
            self.reads.allocations = ids.into_iter().zip(read.allocations).collect();
            self.reads.groups = groups.into_iter().zip(read.groups).collect();
        }
    }

    pub(super) async fn read_allocation(
        &mut self,
        id: &ContainerId,
    ) -> Result<Option<AllocationRecord>, StoreError> {
        match self.reads.allocations.remove(id) {
            Some(record) => Ok(record),
            None => self.store.allocation(id).await,
        }
    }

    pub(super) async fn read_group(
        &mut self,
        key: &GroupKey,
    ) -> Result<Option<GroupRecord>, StoreError> {
        match self.reads.groups.remove(key) {
            Some(record) => Ok(record),
            None => self.store.group(key).await,
        }
    }

    /// Applies the reservations covering `level` that the store holds and
    /// the view has not heard of yet (made through another instance whose
    /// change the feed has not reported). Applying one again when the feed
    /// reports it does no harm: reservations are state, not counts. A read
    /// that fails is left to the next attempt, whose claim the store
    /// refuses again if the reservation is still there.
    async fn learn_reservations(&mut self, level: Level) {
        let unknown = [
            Reservation::Pair(level),
            Reservation::Category(level.low()),
            Reservation::Category(level.high()),
        ]
        .into_iter()
        .filter(|r| self.view.reservation(r).is_none());
        for reservation in unknown.collect::<Vec<_>>() {
            match self.store.reservation(reservation).await {
                Ok(Some(record)) => {
                    let change = StoreChange::Reservation {
                        reservation,
                        record: Some(record),
                    };
                    if let Err(reason) = follow::apply(&mut self.view, self.config.range, change) {
                        self.out_of_step(reason);
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%error, %reservation, "cannot read a reservation after a lost claim");
                }
            }
        }
    }

    /// A change lost a race with another instance sharing the store: plan
    /// it again, unless it has lost too often.
    pub(super) async fn conflicted(&mut self, change: Change, why: String) {
        let Some(attempt) = change.attempt() else {
            change.failed(&mut self.view, AllocError::Store(StoreError::Conflict(why)));
            return;
        };
        if let Change::Allocate {
            record,
            claimed: Some(index),
            ..
        } = &change
        {
            let (level, index) = (record.level, *index);
            // If another instance holds the pair now, keep it out of the
            // pool (the feed confirms it later); else put it back.
            if !matches!(self.store.holder(level).await, Ok(Some(_))) {
                self.view.release(index);
            }
            // The claim may have lost to a reservation made through another
            // instance instead: learn it now, so the next plan picks another
            // pair or refuses the one asked for.
            self.learn_reservations(level).await;
        }
        let cmd = change.into_command();
        if attempt < MAX_ATTEMPTS {
            tracing::debug!(attempt, %why, "lost a race in the shared store; planning again");
            self.deferred
                .push_front(Deferred::now(Command::Retry(Box::new(cmd), attempt)));
            return;
        }
        cmd.fail(AllocError::Store(StoreError::Conflict(format!(
            "gave up after {MAX_ATTEMPTS} attempts: each time, another mcsd sharing the store changed the same records first (last: {why}); retry"
        ))));
    }
}
