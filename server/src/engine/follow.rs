//! Keeping the view in step with a shared store: applying what other mcsd
//! instances changed, as reported by [`Store::changes`](crate::store::Store::changes).
//!
//! Pairs and reservations are state (held or not, reserved or not), so a
//! change sets that state and applying it twice does no harm. Containers,
//! groups and owners are counters moved by each creation and deletion, in
//! whatever order this engine and the feed happen to apply them. When a
//! count would drop below zero (this engine removed something another
//! instance created before the feed reported the creation), the view is
//! out of step: the engine reloads it from the store instead of guessing.
//!
//! The pool is never trusted for uniqueness here: the store's compare-and-
//! swap is. A view that lags only costs a lost race and a second pick.

use super::view::View;
use crate::level::CategoryRange;
use crate::store::StoreChange;

/// Why the view must be reloaded.
pub(crate) type OutOfStep = String;

/// Applies one change made by another writer.
pub(crate) fn apply(
    view: &mut View,
    range: CategoryRange,
    change: StoreChange,
) -> Result<(), OutOfStep> {
    match change {
        StoreChange::Pair { level, holder } => {
            let index = range.index_of(level).ok_or_else(|| {
                format!("another instance changed {level}, outside this instance's range {range}")
            })?;
            match holder {
                Some(_) => {
                    view.mark_held(index);
                }
                None => {
                    view.release(index);
                }
            }
        }
        StoreChange::Reservation {
            reservation,
            record,
        } => match record {
            Some(record) => {
                view.put_reservation(reservation, record);
            }
            None => {
                view.remove_reservation(reservation);
            }
        },
        StoreChange::Allocation { old, new } => {
            if let Some(old) = old {
                remove_container(view, &old.owner)?;
            }
            if let Some(new) = new {
                view.add_container(&new.owner);
            }
        }
        StoreChange::Group { old, new } => match (old, new) {
            (None, Some(_)) => view.add_group(),
            (Some(old), None) => {
                let counted = view.remove_group();
                if !counted {
                    return Err(format!(
                        "group {} was deleted before it was counted",
                        old.key
                    ));
                }
            }
            _ => {}
        },
        StoreChange::Resync(reason) => return Err(reason),
    }
    Ok(())
}

/// Takes one container off `owner`'s count, if the view counted it.
pub(crate) fn remove_container(view: &mut View, owner: &crate::id::Owner) -> Result<(), OutOfStep> {
    if !view.counts_container_of(owner) {
        return Err(format!(
            "an allocation of owner {owner} was released before it was counted"
        ));
    }
    view.remove_container(owner);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::id::{ContainerId, GroupKey, Owner};
    use crate::store::{AllocationRecord, GroupRecord, Holder, ReservationRecord};

    fn view(range: CategoryRange) -> View {
        View::new(range)
    }

    fn allocation(id: &str) -> AllocationRecord {
        AllocationRecord {
            container_id: ContainerId::new(id).unwrap(),
            owner: Owner::new("crio").unwrap(),
            group: None,
            level: "s0:c1,c2".parse().unwrap(),
            process_label: String::new(),
            file_label: String::new(),
            created_at: UNIX_EPOCH,
            node: String::new(),
            roots: Vec::new(),
        }
    }

    #[test]
    fn pairs_and_reservations_follow_the_store_and_tolerate_repeats() {
        let range: CategoryRange = "c0.c4".parse().unwrap();
        let mut v = view(range);
        let level = "s0:c1,c2".parse().unwrap();
        let holder = Some(Holder::Container(ContainerId::new("x").unwrap()));
        for _ in 0..2 {
            apply(
                &mut v,
                range,
                StoreChange::Pair {
                    level,
                    holder: holder.clone(),
                },
            )
            .unwrap();
        }
        assert_eq!(v.pool().stats().held, 1);
        apply(
            &mut v,
            range,
            StoreChange::Pair {
                level,
                holder: None,
            },
        )
        .unwrap();
        assert_eq!(v.pool().stats().free, 10);

        let reservation = "c0".parse().unwrap();
        let record = ReservationRecord {
            reservation,
            created_at: UNIX_EPOCH,
            configured_by: None,
        };
        for _ in 0..2 {
            let change = StoreChange::Reservation {
                reservation,
                record: Some(record.clone()),
            };
            apply(&mut v, range, change).unwrap();
        }
        assert_eq!(v.pool().stats().reserved, 4);
        for _ in 0..2 {
            let change = StoreChange::Reservation {
                reservation,
                record: None,
            };
            apply(&mut v, range, change).unwrap();
        }
        assert_eq!(
            (v.pool().stats().reserved, v.reservations().count()),
            (0, 0)
        );

        let outside = StoreChange::Pair {
            level: "s0:c1,c9".parse().unwrap(),
            holder,
        };
        assert!(apply(&mut v, range, outside)
            .unwrap_err()
            .contains("outside"));
    }

    #[test]
    fn counters_move_and_an_impossible_release_asks_for_a_reload() {
        let range: CategoryRange = "c0.c4".parse().unwrap();
        let mut v = view(range);
        let a = allocation("a");
        let created = StoreChange::Allocation {
            old: None,
            new: Some(a.clone()),
        };
        apply(&mut v, range, created).unwrap();
        assert_eq!((v.stats().containers, v.stats().owners.len()), (1, 1));
        let group = GroupRecord {
            key: GroupKey::new("pod").unwrap(),
            level: a.level,
            members: 1,
            created_at: UNIX_EPOCH,
        };
        let joined = GroupRecord {
            members: 2,
            ..group.clone()
        };
        apply(
            &mut v,
            range,
            StoreChange::Group {
                old: None,
                new: Some(group.clone()),
            },
        )
        .unwrap();
        let update = StoreChange::Group {
            old: Some(group.clone()),
            new: Some(joined.clone()),
        };
        apply(&mut v, range, update).unwrap();
        assert_eq!(v.stats().groups, 1);
        let deleted = StoreChange::Group {
            old: Some(joined),
            new: None,
        };
        apply(&mut v, range, deleted.clone()).unwrap();
        assert_eq!(v.stats().groups, 0);
        assert!(apply(&mut v, range, deleted).is_err());

        let released = StoreChange::Allocation {
            old: Some(a),
            new: None,
        };
        apply(&mut v, range, released.clone()).unwrap();
        assert_eq!((v.stats().containers, v.stats().owners.len()), (0, 0));
        let err = apply(&mut v, range, released).unwrap_err();
        assert!(err.contains("before it was counted"), "{err}");
        let err = apply(&mut v, range, StoreChange::Resync("compacted".into())).unwrap_err();
        assert_eq!(err, "compacted");
    }
}
