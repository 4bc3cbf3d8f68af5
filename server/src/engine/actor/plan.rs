//! Planning: turning the commands of one batch into store transactions and
//! the replies that wait for them, against the view.
//!
//! Each command is planned on its own ([`Step`]): answered at once without
//! a change (an error, an id that already holds its pair, a read), turned
//! into one transaction and its [`Change`], or deferred to a later batch
//! because it touches something ([`Entity`]) the batch, or a batch in
//! flight, already changes. So every transaction of a batch stands alone
//! and can fail alone. One file per kind of change sits under `plan/`.

use std::collections::HashSet;

use tokio::sync::oneshot;

use super::change::Change;
use super::shared::ReadCache;
use super::Actor;
use crate::engine::command::{Command, Reply};
use crate::error::AllocError;
use crate::id::{ContainerId, GroupKey};
use crate::level::PairIndex;
use crate::reservation::Reservation;
use crate::store::Txn;

mod add_root;
mod allocate;
mod release;
mod reserve;

/// What a request touches; two requests touching the same thing never share
/// a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Entity {
    Id(ContainerId),
    Group(GroupKey),
    Pair(PairIndex),
    Reservation(Reservation),
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

/// An answer that waits for the batch's commit, though it changes nothing.
fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, AllocError>) -> Step {
    Step::Answer(Box::new(move || {
        let _ = reply.send(result);
    }))
}

/// A planned batch: what to commit, and what to answer once it is durable.
pub(super) struct Planned {
    /// One transaction per change, in the same order.
    pub(super) txns: Vec<Txn>,
    pub(super) changes: Vec<Change>,
    /// What the changes touch.
    pub(super) touched: HashSet<Entity>,
    /// Answers that change nothing, sent after the changes' replies.
    pub(super) answers: Vec<Box<dyn FnOnce() + Send>>,
    /// Reads of the view, answered last.
    pub(super) reads: Vec<Command>,
    /// The reply to a shutdown the batch asked for.
    pub(super) shutdown: Option<oneshot::Sender<()>>,
}

impl Actor {
    /// Plans `batch`, leaving alone what `busy` names (what the batches in
    /// flight touch: their records are written but not durable, and may
    /// still fail). Commands that must wait are deferred.
    pub(super) async fn plan(&mut self, batch: Vec<Command>, busy: HashSet<Entity>) -> Planned {
        self.prefetch(&batch).await;
        self.batch_claims = 0;
        self.batch_waited = false;
        let mut touched = busy;
        let mut planned = Planned {
            txns: Vec::new(),
            changes: Vec::new(),
            touched: HashSet::new(),
            answers: Vec::new(),
            reads: Vec::new(),
            shutdown: None,
        };

        for cmd in batch {
            let (cmd, attempt) = match cmd {
                Command::Retry(cmd, attempt) => (*cmd, attempt),
                cmd => (cmd, 0),
            };
            // While the store cannot be reopened, changes fail with the
            // reason (a full disk, say) instead of a generic I/O error.
            if let Some(e) = &self.broken {
                if cmd.changes_store() {
                    cmd.fail(AllocError::Store(e.clone()));
                    continue;
                }
            }
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
                    planned.shutdown = Some(done);
                    continue;
                }
                read @ (Command::Stats(_) | Command::Reservations(_)) => {
                    planned.reads.push(read);
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
                Step::Answer(send) => planned.answers.push(send),
                Step::Change(txn, entities, change) => {
                    touched.extend(entities.iter().cloned());
                    planned.touched.extend(entities);
                    planned.txns.push(txn);
                    planned.changes.push(change);
                }
            }
        }
        self.reads = ReadCache::default();
        planned
    }
}
