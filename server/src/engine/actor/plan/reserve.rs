//! Planning a Reserve or an Unreserve. A new reservation keeps its pairs
//! out of the pool at once; a removed one lets them back only once durable.

use std::collections::HashSet;

use super::{answer, Entity, Step};
use crate::engine::actor::change::Change;
use crate::engine::actor::Actor;
use crate::engine::command::{Command, Reply};
use crate::engine::{Reserved, Unreserved};
use crate::error::AllocError;
use crate::reservation::Reservation;
use crate::store::{self, Op, ReservationRecord, Txn};

impl Actor {
    pub(super) fn plan_reserve(
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
        if let Some(record) = self.view.reservation(&reservation) {
            let covered = reservation.covered(range);
            let held = covered
                .iter()
                .filter(|&&i| self.view.pool().is_held(i))
                .count();
            if configured_by.is_some() && record.configured_by.is_none() {
                // The configuration takes over an operator's reservation.
                let replaced = record.clone();
                let record = ReservationRecord {
                    configured_by,
                    ..replaced.clone()
                };
                self.view.put_reservation(reservation, record.clone());
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
        // New (looked up above): its pairs leave the pool now.
        let (covered, held) = self
            .view
            .put_reservation(reservation, record.clone())
            .expect("a reservation the view does not know is new");
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

    pub(super) fn plan_unreserve(
        &mut self,
        reservation: Reservation,
        reply: Reply<Unreserved>,
        touched: &HashSet<Entity>,
    ) -> Step {
        if touched.contains(&Entity::Reservation(reservation)) {
            return Step::Defer(Command::Unreserve(reservation, reply));
        }
        let Some(record) = self.view.reservation(&reservation).cloned() else {
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
