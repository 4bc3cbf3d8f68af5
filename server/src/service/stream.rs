//! What feeds the server streams: List's pages of allocations and
//! Relabel's progress. Each producer runs on its own task (see
//! [`super::call`]), sends its messages on the feed it is given and returns
//! the call's outcome; the one path audits it and sends a failure as the
//! stream's last item.

use std::path::PathBuf;

use mcs_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use super::call::Feed;
use super::convert::{allocation_to_proto, progress_message, summary_message, ListQuery};
use crate::engine::Engine;
use crate::id::ContainerId;
use crate::volumes::{Progress, VolumeError, Volumes};

/// Allocations per streamed List message.
const LIST_CHUNK: usize = 512;

/// The allocations `query` selects, [`LIST_CHUNK`] to a message, read from
/// the engine a page at a time.
pub(crate) async fn list(
    engine: Engine,
    query: ListQuery,
    tx: Feed<pb::ListResponse>,
) -> Result<(), Status> {
    let ListQuery {
        filter,
        mut after,
        limit: mut remaining,
    } = query;
    let mut chunk = Vec::with_capacity(LIST_CHUNK);
    loop {
        let page = engine.list_page(&filter, after.as_ref()).await?;
        for record in &page.records {
            if remaining == 0 {
                break;
            }
            remaining -= 1;
            chunk.push(allocation_to_proto(record));
            if chunk.len() == LIST_CHUNK {
                let allocations = std::mem::replace(&mut chunk, Vec::with_capacity(LIST_CHUNK));
                if tx.send(Ok(pb::ListResponse { allocations })).await.is_err() {
                    return Ok(()); // the client went away
                }
            }
        }
        after = page.next;
        if after.is_none() || remaining == 0 {
            break;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(pb::ListResponse { allocations: chunk })).await;
    }
    Ok(())
}

/// Relabels `req.path` for container `id`, forwarding the walk's progress
/// and ending with its summary (also when the walk was incomplete).
pub(crate) async fn relabel(
    volumes: Volumes,
    id: ContainerId,
    req: pb::RelabelRequest,
    tx: Feed<pb::RelabelProgress>,
) -> Result<(), Status> {
    let (progress_tx, mut progress_rx) = mpsc::channel(4);
    let work = volumes.relabel(
        id,
        PathBuf::from(req.path),
        req.shared,
        req.cross_mounts,
        req.hard_links,
        progress_tx,
    );
    tokio::pin!(work);
    let forward = |(root, label, totals): Progress| {
        // A client that stopped reading must not stall the walk.
        let _ = tx.try_send(Ok(progress_message(&root, &label, &totals)));
    };
    let result = loop {
        tokio::select! {
            biased;
            Some(progress) = progress_rx.recv() => forward(progress),
            result = &mut work => break result,
        }
    };
    while let Ok(progress) = progress_rx.try_recv() {
        forward(progress);
    }
    match result {
        Ok(done) => {
            let _ = tx
                .send(Ok(summary_message(&done.outcome, &done.label)))
                .await;
            Ok(())
        }
        Err(VolumeError::Incomplete(outcome)) => {
            let _ = tx.send(Ok(summary_message(&outcome, ""))).await;
            Err(Status::from(VolumeError::Incomplete(outcome)))
        }
        Err(e) => Err(Status::from(e)),
    }
}
