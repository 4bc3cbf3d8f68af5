//! Batches in flight: starting a planned batch's commit, and finishing the
//! oldest once its commit has ended.
//!
//! A batch's replies go out only once its own commit has ended, and in
//! batch order: the oldest batch is always finished first. While any batch
//! is in flight the actor holds the gate's write side, so readers never see
//! records that are written but not synced. A commit that fails fails its
//! batch's changes only; once nothing is in flight any more, the actor
//! brings the store back to what is durable and reloads the view from it
//! ([`Actor::recover`]).

use std::collections::HashSet;
use std::time::Instant;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::change::Change;
use super::plan::{Entity, Planned};
use super::Actor;
use crate::engine::command::Command;
use crate::engine::view;
use crate::error::AllocError;
use crate::store::StoreError;

/// A planned batch whose commit has started (or that has nothing to
/// commit): its replies wait for the commit, in batch order.
pub(super) struct InFlight {
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

impl Actor {
    /// Plans one batch and starts its commit. Returns the shutdown reply if
    /// the batch asked to stop.
    pub(super) async fn start(&mut self, batch: Vec<Command>) -> Option<oneshot::Sender<()>> {
        if self.in_flight.is_empty() {
            if let Some(error) = self.broken.take() {
                self.recover(error).await;
            }
            self.catch_up();
            self.resync_if_due().await;
        }
        // What the batches in flight touch is off limits too: their records
        // are written but not durable, and may still fail.
        let busy: HashSet<Entity> = self
            .in_flight
            .iter()
            .flat_map(|b| b.touched.iter().cloned())
            .collect();
        let Planned {
            txns,
            changes,
            touched,
            answers,
            reads,
            shutdown,
        } = self.plan(batch, busy).await;
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
            touched,
            answers,
            reads,
        });
        shutdown
    }

    /// Waits for the next request (`Some`; `Some(None)` when the channel
    /// ended) or, if it ends first, finishes the oldest batch in flight
    /// (`None`).
    pub(super) async fn next_or_finished(&mut self) -> Option<Option<Command>> {
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
    pub(super) async fn reap(&mut self) {
        while self.in_flight.front().is_some_and(InFlight::is_done) {
            self.finish_oldest().await;
        }
    }

    /// Waits for the oldest batch in flight and finishes it.
    pub(super) async fn finish_oldest(&mut self) {
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
                    let _ = reply.send(self.view.reservations().cloned().collect());
                }
                _ => unreachable!("only reads are queued here"),
            }
        }
    }

    /// After a failed commit the store may hold more than the view (applied
    /// but not flushed): bring the store back to what is durable and rebuild
    /// the view from it, so both agree again.
    pub(super) async fn recover(&mut self, error: StoreError) {
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
}
