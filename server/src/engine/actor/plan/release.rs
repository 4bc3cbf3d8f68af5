//! Planning a Release: the container's record goes, and its pair with it,
//! unless group members remain; refused while a root of the record is not
//! restored.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{answer, Entity, Step};
use crate::engine::actor::change::Change;
use crate::engine::actor::Actor;
use crate::engine::command::{Command, Reply};
use crate::engine::Released;
use crate::error::AllocError;
use crate::id::ContainerId;
use crate::store::{GroupRecord, Op, Txn};

impl Actor {
    pub(super) async fn plan_release(
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
}
