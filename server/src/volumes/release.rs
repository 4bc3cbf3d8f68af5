//! Release: restore every root of a container, then free its pair.

use super::*;

impl Volumes {
    /// Restores every root of `id`, then frees its pair: the one way a pair
    /// goes back to the pool. Running relabels of `id` are stopped first.
    /// If a root cannot be fully restored, the allocation is kept.
    pub async fn release(&self, id: ContainerId) -> Result<(Released, Vec<Restored>), VolumeError> {
        for _ in 0..RELEASE_ATTEMPTS {
            let Some(record) = self.lookup(&id).await? else {
                return Ok((self.engine.release(id, Vec::new()).await?, Vec::new()));
            };
            self.cancel_walks(&id);
            let mut keys = vec![Key::Container(id.clone())];
            keys.extend(record.roots.iter().map(|r| Key::Root(r.path.clone())));
            let held = self.locks.lock(keys).await;
            // What the record lists now, with the container locked: no root
            // can be added until the pair is freed.
            let Some(record) = self.lookup(&id).await? else {
                return Ok((self.engine.release(id, Vec::new()).await?, Vec::new()));
            };
            let locked = |r: &RelabeledRoot| held.holds(&Key::Root(r.path.clone()));
            if !record.roots.iter().all(locked) {
                // A relabel registered a root between the two reads.
                continue;
            }
            let restored = self.restore_all(&record).await?;
            let paths = record.roots.iter().map(|r| r.path.clone()).collect();
            let released = self.engine.release(id.clone(), paths).await?;
            self.forget(&id, &record.roots).await;
            return Ok((released, restored));
        }
        Err(VolumeError::Alloc(AllocError::Store(
            crate::store::StoreError::Conflict(format!(
                "container {id}: volumes kept being registered while it was released ({RELEASE_ATTEMPTS} attempts); retry"
            )),
        )))
    }

    fn cancel_walks(&self, id: &ContainerId) {
        let walks = self.walks.lock().unwrap_or_else(|e| e.into_inner());
        for counters in walks.get(id).into_iter().flatten() {
            counters.cancel();
        }
    }

    /// Restores each root of `record` (the caller holds their locks).
    async fn restore_all(&self, record: &AllocationRecord) -> Result<Vec<Restored>, VolumeError> {
        // Freeing the pair while the other host's volumes still carry it
        // would let the next holder read them.
        if !record.roots.is_empty() && self.relabeler().config().restore != RestoreMode::None {
            self.local(record, "release it")?;
        }
        let mut restored = Vec::new();
        for root in &record.roots {
            let others = self
                .with_index(|index| index.others(&root.path, &record.container_id))
                .await?;
            restored.push(self.restore(record, root, &others).await?);
        }
        Ok(restored)
    }

    /// Restores one root of `record`. With `others` (live containers that
    /// registered the same root), the tree is labeled for them instead:
    /// the shared label if any registered it shared, else the newest one's
    /// private label.
    async fn restore(
        &self,
        record: &AllocationRecord,
        root: &RelabeledRoot,
        others: &[Registrant],
    ) -> Result<Restored, VolumeError> {
        let mode = self.relabeler().config().restore;
        let skipped = |note: String| Restored {
            path: root.path.clone(),
            mode,
            totals: Totals::default(),
            note: Some(note),
        };
        let fail = |error: String| VolumeError::RestoreFailed {
            id: record.container_id.clone(),
            level: record.level.to_string(),
            path: root.path.clone(),
            error,
        };
        let handed_on = if others.is_empty() {
            None
        } else if others.iter().any(|r| r.shared) {
            Some(self.engine.labels().shared_file_label())
        } else {
            others.last().map(|r| r.file_label.clone())
        };
        let labels: Box<dyn LabelFor + Send> = match (mode, &root.original, &handed_on) {
            (RestoreMode::None, _, _) => return Ok(skipped("restore = none".into())),
            (_, _, Some(label)) => Box::new(Fixed(label.clone().into_bytes())),
            (RestoreMode::Original, None, None) => {
                return Ok(skipped(
                    "the root had no label before its first relabel; left as is".into(),
                ))
            }
            (RestoreMode::Original, Some(label), None) => {
                Box::new(Fixed(label.clone().into_bytes()))
            }
            (RestoreMode::Policy, _, None) => {
                Box::new(FromPolicy::new().map_err(|e| fail(e.to_string()))?)
            }
        };
        // The root is judged again: it must still be where it was.
        let relabeler = self.relabeler();
        let path = root.path.clone();
        let now = blocking(move || Ok::<_, VolumeError>(relabeler.resolve(&path))).await?;
        match now {
            Ok(resolved) if resolved == root.path => {}
            Err(Refused::Unresolvable { .. }) => {
                return Ok(skipped("the root no longer exists".into()))
            }
            Ok(elsewhere) => {
                return Err(fail(format!(
                    "it now leads to {}; not followed",
                    elsewhere.display()
                )))
            }
            Err(e) => return Err(fail(e.to_string())),
        }
        let outcome = self
            // The same hard-link rule as the relabel: a file whose other
            // links are outside keeps its own label.
            .walk(
                root.path.clone(),
                BoxedLabels(labels),
                false,
                root.hard_links,
                Arc::default(),
                None,
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        tracing::info!(container_id = %record.container_id, root = %root.path.display(), %mode,
            changed = outcome.totals.changed, failed = outcome.totals.failed,
            hardlinks_skipped = outcome.totals.hardlinks_skipped,
            handed_on_to = others.len(), "root restored");
        if outcome.totals.failed > 0 {
            return Err(fail(format!(
                "{} of {} entries could not be labeled{}",
                outcome.totals.failed,
                outcome.totals.seen,
                first_errors(&outcome)
            )));
        }
        let note = (!others.is_empty()).then(|| {
            let ids: Vec<&str> = others.iter().take(3).map(|r| r.id.as_str()).collect();
            format!(
                "still a volume of {} other container(s) ({}{}): labeled for them, restored when the last is released",
                others.len(),
                ids.join(", "),
                if others.len() > 3 { ", ..." } else { "" }
            )
        });
        Ok(Restored {
            path: root.path.clone(),
            mode,
            totals: outcome.totals,
            note,
        })
    }
}
