//! Which live containers of this host registered each volume root.
//!
//! One directory can be a volume of several containers: a shared (`:z`)
//! volume of a pod, or a private one handed from one container to the
//! next. Releasing one of them must not restore the tree under the others'
//! feet, and the label the tree had before the *first* relabel is the one
//! to restore when the *last* registrant goes. This index answers both.
//!
//! It is built from the store on first use (one listing) and then kept by
//! [`Volumes`](super::Volumes), the only writer of roots. Changes to one
//! root are serialized by the root's lock, so the index never sees a root
//! registered and released at the same time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::engine::{Engine, ListFilter};
use crate::error::AllocError;
use crate::id::ContainerId;
use crate::store::{AllocationRecord, RelabeledRoot};

/// One container's registration of a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Registrant {
    /// The container.
    pub id: ContainerId,
    /// Registered with the shared label.
    pub shared: bool,
    /// Its private file label.
    pub file_label: String,
    /// The root's label before the first relabel of anyone.
    pub original: Option<String>,
}

/// Root path → its registrants, oldest first.
#[derive(Debug, Default)]
pub(super) struct RootIndex {
    by_path: HashMap<PathBuf, Vec<Registrant>>,
}

impl RootIndex {
    /// Builds the index from every allocation of this node.
    pub(super) async fn load(engine: &Engine) -> Result<Self, AllocError> {
        let here = engine.node().to_owned();
        let mut index = Self::default();
        let mut after = None;
        loop {
            let page = engine
                .list_page(&ListFilter::default(), after.as_ref())
                .await?;
            for record in page.records {
                // Records from before nodes were recorded are this host's.
                if record.node.is_empty() || record.node == here {
                    for root in &record.roots {
                        index.add(&record, root);
                    }
                }
            }
            after = page.next;
            if after.is_none() {
                return Ok(index);
            }
        }
    }

    /// Records that `record`'s container registered `root`.
    pub(super) fn add(&mut self, record: &AllocationRecord, root: &RelabeledRoot) {
        let list = self.by_path.entry(root.path.clone()).or_default();
        let registrant = Registrant {
            id: record.container_id.clone(),
            shared: root.shared,
            file_label: record.file_label.clone(),
            // A later registrant found the tree already relabeled; what to
            // restore is what it was before the first.
            original: match list.first() {
                Some(first) => first.original.clone(),
                None => root.original.clone(),
            },
        };
        match list.iter_mut().find(|r| r.id == registrant.id) {
            Some(known) => known.shared = registrant.shared,
            None => list.push(registrant),
        }
    }

    /// Forgets every root of container `id`.
    pub(super) fn remove(&mut self, id: &ContainerId, roots: &[RelabeledRoot]) {
        for root in roots {
            if let Some(list) = self.by_path.get_mut(&root.path) {
                list.retain(|r| r.id != *id);
                if list.is_empty() {
                    self.by_path.remove(&root.path);
                }
            }
        }
    }

    /// The registrants of `path` other than `id`, oldest first.
    pub(super) fn others(&self, path: &Path, id: &ContainerId) -> Vec<Registrant> {
        self.by_path
            .get(path)
            .map(|list| list.iter().filter(|r| r.id != *id).cloned().collect())
            .unwrap_or_default()
    }

    /// The label `path` had before anyone relabeled it, if it is registered.
    pub(super) fn first_original(&self, path: &Path) -> Option<Option<String>> {
        self.by_path
            .get(path)
            .and_then(|list| list.first())
            .map(|r| r.original.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Owner;

    fn record(id: &str, label: &str) -> AllocationRecord {
        AllocationRecord {
            container_id: ContainerId::new(id).unwrap(),
            owner: Owner::new("t").unwrap(),
            group: None,
            level: "s0:c1,c2".parse().unwrap(),
            process_label: String::new(),
            file_label: label.into(),
            created_at: std::time::SystemTime::UNIX_EPOCH,
            node: String::new(),
            roots: Vec::new(),
        }
    }

    fn root(path: &str, shared: bool, original: &str) -> RelabeledRoot {
        RelabeledRoot {
            path: path.into(),
            shared,
            original: Some(original.into()),
            hard_links: false,
        }
    }

    #[test]
    fn others_and_the_first_original_follow_registrations() {
        let mut index = RootIndex::default();
        let (a, b) = (record("a", "la"), record("b", "lb"));
        index.add(&a, &root("/v", true, "orig"));
        // B registered after A relabeled: its own "original" is A's label.
        index.add(&b, &root("/v", true, "shared-label"));
        assert_eq!(
            index.first_original(Path::new("/v")),
            Some(Some("orig".into()))
        );
        let others: Vec<_> = index
            .others(Path::new("/v"), &a.container_id)
            .into_iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(others, ["b"]);
        index.remove(&a.container_id, &[root("/v", true, "orig")]);
        assert!(index.others(Path::new("/v"), &b.container_id).is_empty());
        assert_eq!(
            index.first_original(Path::new("/v")),
            Some(Some("orig".into())),
            "the last registrant restores what was there before the first"
        );
        index.remove(&b.container_id, &[root("/v", true, "x")]);
        assert_eq!(index.first_original(Path::new("/v")), None);
    }
}
