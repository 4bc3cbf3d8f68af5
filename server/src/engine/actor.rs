//! The actor behind [`Engine`](super::Engine): the single writer's loop.
//! See the module documentation of `engine` for the rules it follows.
//!
//! The loop takes whatever requests have queued into a batch, has it
//! planned (`plan`: commands become transactions and deferred replies,
//! against the view), starts its commit and, while that commit syncs, may
//! plan and start the next one (`commit`: batches in flight, their replies
//! in order, recovery after a failed commit). What a planned change does to
//! the view once its commit has ended is in `change`; what only a store
//! shared with other instances needs is in `shared`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, OwnedRwLockWriteGuard};

use self::commit::InFlight;
use self::shared::ReadCache;
use super::command::Command;
use super::gate::Gate;
use super::view::View;
use super::EngineConfig;
use crate::store::{ChangeFeed, Store, StoreError};

mod change;
mod commit;
mod plan;
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

/// The engine's single writer: it owns the view, plans every change and
/// makes every commit.
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

    /// Takes requests until a shutdown, or until every [`Engine`](super::Engine)
    /// handle is gone, and answers each.
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
}
