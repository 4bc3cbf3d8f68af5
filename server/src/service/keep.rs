//! The ids a Reconcile keeps, read from the client's stream under a count
//! and a byte budget, so that a runaway client cannot exhaust mcsd's
//! memory before the call is refused.

use std::collections::HashSet;

use mcs_proto::v1 as pb;
use tonic::Status;

use super::convert::container_id;
use crate::id::{ContainerId, Owner};

/// Most ids a Reconcile may keep: far above any host's container count,
/// low enough that a runaway client cannot exhaust mcsd's memory.
pub const MAX_RECONCILE_KEEP: usize = 1 << 20;

/// Most memory the ids a Reconcile keeps may take, counted as each id's
/// length plus [`RECONCILE_KEEP_ID_OVERHEAD`]. The count limit alone lets
/// 2^20 ids of 128 characters cost hundreds of MB against the unit's
/// `MemoryMax=512M`; this budget admits a full range (523,776 pairs) of
/// 64-character runtime ids and stays far below that.
pub const MAX_RECONCILE_KEEP_BYTES: usize = 64 << 20;

/// What one kept id costs besides its characters: its string header, the
/// allocator's rounding and its slot in the hash set (with growth slack).
pub const RECONCILE_KEEP_ID_OVERHEAD: usize = 64;

/// The ids a Reconcile keeps, collected under [`MAX_RECONCILE_KEEP`] and a
/// byte budget.
pub(crate) struct KeepSet {
    ids: HashSet<ContainerId>,
    bytes: usize,
    max_bytes: usize,
}

impl KeepSet {
    fn new(max_bytes: usize) -> Self {
        KeepSet {
            ids: HashSet::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The ids of the first message and of every later one on `stream`,
    /// which may not name another owner than `owner`.
    pub(crate) async fn read(
        first: Vec<String>,
        owner: &Owner,
        stream: &mut tonic::Streaming<pb::ReconcileRequest>,
    ) -> Result<HashSet<ContainerId>, Status> {
        let mut keep = KeepSet::new(MAX_RECONCILE_KEEP_BYTES);
        keep.add(first)?;
        while let Some(more) = stream.message().await? {
            if !more.owner.is_empty() && more.owner != owner.as_str() {
                return Err(Status::invalid_argument(format!(
                    "Reconcile: a later message names owner {:?}, but this call reconciles {owner}",
                    more.owner
                )));
            }
            keep.add(more.keep)?;
        }
        Ok(keep.ids)
    }

    /// Adds the ids of one streamed message; a bad id or a set over a
    /// limit refuses the whole call.
    fn add(&mut self, ids: Vec<String>) -> Result<(), Status> {
        for id in ids {
            let id = container_id(id)?;
            let cost = id.as_str().len() + RECONCILE_KEEP_ID_OVERHEAD;
            if self.ids.contains(&id) {
                continue;
            }
            if self.bytes + cost > self.max_bytes {
                return Err(Status::resource_exhausted(format!(
                    "Reconcile: the ids to keep exceed mcsd's limit of {} MiB ({} ids so far, \
                     each counted as its length plus {RECONCILE_KEEP_ID_OVERHEAD} bytes); \
                     nothing was released",
                    self.max_bytes >> 20,
                    self.ids.len()
                )));
            }
            if self.ids.len() == MAX_RECONCILE_KEEP {
                return Err(Status::invalid_argument(format!(
                    "Reconcile: more than {MAX_RECONCILE_KEEP} ids to keep"
                )));
            }
            self.bytes += cost;
            self.ids.insert(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_id(i: usize) -> String {
        format!("{i:064x}")
    }

    #[test]
    fn the_keep_set_is_bounded_in_bytes_and_says_the_limit() {
        // Room for exactly ten 64-character ids.
        let mut keep = KeepSet::new(10 * (64 + RECONCILE_KEEP_ID_OVERHEAD));
        keep.add((0..10).map(runtime_id).collect()).unwrap();
        // Repeats cost nothing.
        keep.add((0..10).map(runtime_id).collect()).unwrap();
        let refused = keep.add(vec![runtime_id(10)]).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("limit of 0 MiB") && refused.message().contains("10 ids"),
            "{}",
            refused.message()
        );
        let mut keep = KeepSet::new(MAX_RECONCILE_KEEP_BYTES);
        let refused = keep.add(vec!["bad id".into()]).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn the_keep_budget_admits_a_full_range_of_runtime_ids_and_no_more_than_it_should() {
        let pairs = 1024 * 1023 / 2;
        let mut keep = KeepSet::new(MAX_RECONCILE_KEEP_BYTES);
        let ids: Vec<String> = (0..pairs).map(runtime_id).collect();
        keep.add(ids).unwrap();
        let more = MAX_RECONCILE_KEEP_BYTES / (64 + RECONCILE_KEEP_ID_OVERHEAD) - pairs;
        let refused = keep
            .add((pairs..pairs + more + 1).map(runtime_id).collect())
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("64 MiB"),
            "{}",
            refused.message()
        );
        // What the set really holds stays within twice the budget (the
        // hash set grows by doubling): a quarter of the unit's
        // MemoryMax=512M at most.
        let held: usize = keep
            .ids
            .iter()
            .map(|id| id.as_str().len() + 24)
            .sum::<usize>()
            + keep.ids.capacity() * (std::mem::size_of::<ContainerId>() + 1);
        assert!(held <= 2 * MAX_RECONCILE_KEEP_BYTES, "{held}");
        const { assert!(2 * MAX_RECONCILE_KEEP_BYTES <= (512 << 20) / 4) };
    }
}
