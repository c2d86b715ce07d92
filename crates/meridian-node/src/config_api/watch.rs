//! `Watch`: changes as this node's replica applies them, from a revision on.

use std::pin::Pin;

use futures::Stream;
use meridian_proto::v1 as pb;
use meridian_store::{Event, StateMachineStore};
use tokio::sync::watch;
use tonic::Status;

use super::convert::to_pb_event;
use crate::error::ApiError;

pub(super) type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// Every watch ends when the node shuts down (`shutdown` turns true).
pub(super) fn watch(
    sm: &StateMachineStore,
    shutdown: &watch::Receiver<bool>,
    msg: pb::WatchRequest,
) -> Result<WatchStream, ApiError> {
    let kind = msg.kind.clone();
    // The retained events, the receiver and the revision they reach are
    // taken together: the first message's revision is exactly what it
    // covers, so a client resuming from it neither skips nor repeats.
    let (initial, mut rx, at) = sm.subscribe_at(msg.from_revision).map_err(|e| {
        ApiError::Conflict(format!(
            "{e}; list again and watch from the listed revision"
        ))
    })?;
    // A replica behind the revision asked for (a follower that has not
    // applied it yet) still broadcasts those older changes as it catches
    // up: the watch starts strictly after `from_revision` either way.
    let from = msg.from_revision;
    let matches = move |e: &Event| e.revision > from && (kind.is_empty() || e.key.kind == kind);
    let (tx, out) = tokio::sync::mpsc::channel(64);
    let start_rev = at.max(msg.from_revision);
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        let first: Vec<pb::WatchEvent> = initial
            .iter()
            .filter(|e| matches(e))
            .map(to_pb_event)
            .collect();
        let rev = initial
            .last()
            .map(|e| e.revision)
            .unwrap_or(start_rev)
            .max(start_rev);
        if tx
            .send(Ok(pb::WatchResponse {
                events: first,
                revision: rev,
            }))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let batch = tokio::select! {
                b = rx.recv() => b,
                _ = shutdown.changed() => {
                    let _ = tx.send(Err(ApiError::Unavailable("node is shutting down; watch again from the last revision".into()).into())).await;
                    return;
                }
            };
            match batch {
                Ok(events) => {
                    let rev = events.iter().map(|e| e.revision).max().unwrap_or(0);
                    let events: Vec<pb::WatchEvent> = events
                        .iter()
                        .filter(|e| matches(e))
                        .map(to_pb_event)
                        .collect();
                    if events.is_empty() {
                        continue;
                    }
                    if tx
                        .send(Ok(pb::WatchResponse {
                            events,
                            revision: rev,
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let _ = tx
                            .send(Err(ApiError::Conflict(format!(
                                "compacted: the watcher fell {n} changes behind; list again and watch from the listed revision"
                            )).into()))
                            .await;
                    return;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    let _ = tx
                            .send(Err(ApiError::Conflict(
                                "compacted: the replica was replaced by a snapshot; list again and watch from the listed revision".into(),
                            ).into()))
                            .await;
                    return;
                }
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out)))
}
