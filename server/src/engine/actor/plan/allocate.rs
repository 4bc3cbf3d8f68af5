//! Planning an Allocate: the same allocation again for an id that holds
//! one, a place in its group, or a pair taken from the pool (the one asked
//! for, or a random free one).

use std::collections::HashSet;

use super::{answer, Entity, Step};
use crate::allocator::ClaimError;
use crate::engine::actor::change::Change;
use crate::engine::actor::Actor;
use crate::engine::command::{Command, Reply};
use crate::engine::{AllocateRequest, Allocated};
use crate::error::{AllocError, Mismatch};
use crate::level::{Level, PairIndex};
use crate::store::{self, AllocationRecord, GroupRecord, Holder, Op, Txn};

impl Actor {
    pub(super) async fn plan_allocate(
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
            let mut picked = self.view.pick(&mut self.rng);
            if picked.is_none() && self.catch_up_with_frees().await {
                picked = self.view.pick(&mut self.rng);
            }
            return match picked {
                Some(index) => {
                    self.batch_claims += 1;
                    Ok((range.level_at(index), index))
                }
                None => Err(AllocError::Exhausted {
                    range,
                    stats: self.view.pool().stats(),
                }),
            };
        };
        let mut claimed = self.view.claim(index);
        if claimed == Err(ClaimError::Held) && self.feed.is_some() {
            // In a shared store the view may lag behind a release elsewhere.
            match self.store.holder(level).await? {
                Some(holder) => return Err(AllocError::LevelHeld { level, holder }),
                None if self.catch_up_with_frees().await => {
                    claimed = self.view.claim(index);
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
