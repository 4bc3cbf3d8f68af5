//! What an [`Engine`](super::Engine) handle sends its actor, and the one way
//! any of it fails.
//!
//! Every request carries the channel its answer goes back on. Whatever stage
//! a request fails at (the store cannot be written, it lost too many races
//! in a shared store, its commit failed), the caller gets the error through
//! [`Command::fail`], so no path can forget a kind of request or answer it
//! differently.

use std::path::PathBuf;

use tokio::sync::oneshot;

use super::{AllocateRequest, Allocated, Released, Reserved, Stats, Unreserved};
use crate::error::AllocError;
use crate::id::ContainerId;
use crate::reservation::Reservation;
use crate::store::{AllocationRecord, RelabeledRoot, ReservationRecord};

/// Where the answer to a request goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, AllocError>>;

/// A request for the actor.
pub(super) enum Command {
    Allocate(AllocateRequest, Reply<Allocated>),
    /// A release, with the roots the caller has restored (or, by the
    /// configuration, left as they are).
    Release(ContainerId, Vec<PathBuf>, Reply<Released>),
    AddRoot(ContainerId, RelabeledRoot, Reply<AllocationRecord>),
    /// A reservation, with the node whose configuration asks for it.
    Reserve(Reservation, Option<String>, Reply<Reserved>),
    Unreserve(Reservation, Reply<Unreserved>),
    Stats(oneshot::Sender<Stats>),
    Reservations(oneshot::Sender<Vec<ReservationRecord>>),
    Shutdown(oneshot::Sender<()>),
    /// An Allocate or Release planned again after it lost a race in a
    /// shared store, with the attempts made so far.
    Retry(Box<Command>, u32),
    /// Makes the actor panic, so tests can see what follows its death.
    /// Unit tests only: no production build has it.
    #[cfg(test)]
    Panic,
}

impl Command {
    /// Whether the command asks for a change to the store (as opposed to a
    /// read of the view, or a shutdown).
    pub(super) fn changes_store(&self) -> bool {
        match self {
            Command::Allocate(..)
            | Command::Release(..)
            | Command::AddRoot(..)
            | Command::Reserve(..)
            | Command::Unreserve(..) => true,
            Command::Retry(cmd, _) => cmd.changes_store(),
            Command::Stats(_) | Command::Reservations(_) | Command::Shutdown(_) => false,
            #[cfg(test)]
            Command::Panic => false,
        }
    }

    /// Answers `error` to whoever sent the command, whatever its kind. A
    /// read or a shutdown has no error to carry: its channel is dropped,
    /// which its caller sees as [`AllocError::ShuttingDown`].
    pub(super) fn fail(self, error: AllocError) {
        match self {
            Command::Allocate(_, reply) => send_error(reply, error),
            Command::Release(_, _, reply) => send_error(reply, error),
            Command::AddRoot(_, _, reply) => send_error(reply, error),
            Command::Reserve(_, _, reply) => send_error(reply, error),
            Command::Unreserve(_, reply) => send_error(reply, error),
            Command::Retry(cmd, _) => cmd.fail(error),
            Command::Stats(_) | Command::Reservations(_) | Command::Shutdown(_) => {}
            #[cfg(test)]
            Command::Panic => {}
        }
    }
}

/// A caller that gave up waiting is not an error of the engine's.
fn send_error<T>(reply: Reply<T>, error: AllocError) {
    let _ = reply.send(Err(error));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Owner;

    #[test]
    fn every_change_fails_with_the_error_and_a_read_sees_its_channel_close() {
        let id = ContainerId::new("a").unwrap();
        let reservation: Reservation = "c0".parse().unwrap();
        let request = AllocateRequest {
            container_id: id.clone(),
            owner: Owner::new("t").unwrap(),
            group: None,
            level: None,
        };
        let root = RelabeledRoot {
            path: "/v".into(),
            shared: false,
            original: None,
            hard_links: false,
        };
        let error = || AllocError::NotFound(id.clone());
        let failed = |e: Result<(), AllocError>| e == Err(error());

        let (tx, mut rx) = oneshot::channel();
        let retried = Command::Retry(Box::new(Command::Allocate(request, tx)), 3);
        assert!(retried.changes_store());
        retried.fail(error());
        assert!(failed(rx.try_recv().unwrap().map(drop)));

        let (tx, mut rx) = oneshot::channel();
        Command::Release(id.clone(), Vec::new(), tx).fail(error());
        assert!(failed(rx.try_recv().unwrap().map(drop)));

        let (tx, mut rx) = oneshot::channel();
        Command::AddRoot(id.clone(), root, tx).fail(error());
        assert!(failed(rx.try_recv().unwrap().map(drop)));

        let (tx, mut rx) = oneshot::channel();
        Command::Reserve(reservation, None, tx).fail(error());
        assert!(failed(rx.try_recv().unwrap().map(drop)));

        let (tx, mut rx) = oneshot::channel();
        Command::Unreserve(reservation, tx).fail(error());
        assert!(failed(rx.try_recv().unwrap().map(drop)));

        let (tx, mut rx) = oneshot::channel();
        let read = Command::Stats(tx);
        assert!(!read.changes_store());
        read.fail(error());
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }
}
