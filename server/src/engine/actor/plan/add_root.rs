//! Planning an AddRoot: the container's record, with the root it is about
//! to relabel (or the new mode of one it relabeled before).

use std::collections::HashSet;

use super::{answer, Entity, Step};
use crate::engine::actor::change::Change;
use crate::engine::actor::Actor;
use crate::engine::command::{Command, Reply};
use crate::error::AllocError;
use crate::id::ContainerId;
use crate::store::{AllocationRecord, Op, RelabeledRoot, Txn};

impl Actor {
    pub(super) async fn plan_add_root(
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
}
