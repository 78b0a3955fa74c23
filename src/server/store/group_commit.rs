//! Group commit, for every backend: one writer task takes every append waiting at that moment
//! and stores them in one transaction, so one fsync (and, on Postgres, one turn of the
//! commit-order lock) acknowledges them all instead of one each. No append is answered before
//! its transaction has committed.
//!
//! Once a transaction commits, the writer first runs every publisher's [`OnCommit`] (the
//! event log's fan-out), in commit order, and only then wakes the publishers: a subscriber's
//! event does not wait for its publisher's task to be scheduled again, nor for the other
//! publishers' answers to be written, and it is fanned out even if its publisher went away.
//!
//! A publisher's batch (`POST /api/events`) is one unit here: its updates go into one
//! transaction together, in their order, never split across two.
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{Appended, OnCommit, StoreError};
use crate::domain::{OrderEvent, OrderStatusUpdate};

/// The most appends taken from the queue at once.
const MAX_BATCH: usize = 256;
/// The most updates committed together, unless one publisher's batch alone is larger (it is
/// never split).
const MAX_UPDATES: usize = 1024;

/// What a backend does with a batch. The writer task owns it, so it may keep state of its own
/// (SQLite keeps its connection).
#[async_trait]
pub(super) trait Batch: Send + 'static {
    /// Stores the updates in one transaction. Each gets its own outcome: an update that is not
    /// its order's next status fails alone. `Err`: the transaction failed and none is stored.
    async fn write(
        &mut self,
        updates: &[OrderStatusUpdate],
    ) -> Result<Vec<Result<OrderEvent, StoreError>>, StoreError>;
}

/// What the writer answers for one publisher's updates: each update's outcome, in order, or
/// the transaction's failure.
type Outcomes = Result<Appended, StoreError>;

/// One publisher's updates waiting for the writer (one, or a batch), with where to send their
/// outcomes.
struct Append {
    updates: Vec<OrderStatusUpdate>,
    committed: OnCommit,
    done: oneshot::Sender<Outcomes>,
}

/// The handle appends go through; the writer task ends with the last handle.
#[derive(Clone, Debug)]
pub(super) struct GroupCommit {
    appends: mpsc::Sender<Append>,
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.updates.fmt(f)
    }
}

impl GroupCommit {
    pub(super) fn start(backend: impl Batch) -> Self {
        let (appends, waiting) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_appends(backend, waiting));
        Self { appends }
    }

    pub(super) async fn append(
        &self,
        update: &OrderStatusUpdate,
    ) -> Result<OrderEvent, StoreError> {
        self.append_all(vec![update.clone()], Box::new(|_| {}))
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::backend("the writer answered no outcome")))
    }

    /// Stores `updates` in one transaction, in their order: each update's outcome, or
    /// `Err` when the transaction failed and none is stored. `committed` gets the outcomes
    /// on the writer, as soon as the transaction has committed.
    pub(super) async fn append_all(
        &self,
        updates: Vec<OrderStatusUpdate>,
        committed: OnCommit,
    ) -> Outcomes {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let (done, outcome) = oneshot::channel();
        let stopped = || StoreError::backend("the store's writer task has stopped");
        self.appends
            .send(Append {
                updates,
                committed,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn write_appends(mut backend: impl Batch, mut waiting: mpsc::Receiver<Append>) {
    let mut batch: Vec<Append> = Vec::with_capacity(MAX_BATCH);
    let mut updates = Vec::with_capacity(MAX_UPDATES);
    // An append taken from the queue that would have made the last transaction too large.
    let mut held: Option<Append> = None;
    loop {
        match held.take() {
            Some(append) => batch.push(append),
            None => match waiting.recv().await {
                Some(append) => batch.push(append),
                None => return,
            },
        }
        let mut count = batch[0].updates.len();
        while batch.len() < MAX_BATCH && count < MAX_UPDATES {
            let Ok(append) = waiting.try_recv() else {
                break;
            };
            if count + append.updates.len() > MAX_UPDATES {
                held = Some(append);
                break;
            }
            count += append.updates.len();
            batch.push(append);
        }
        updates.clear();
        updates.extend(
            batch
                .iter()
                .flat_map(|append| append.updates.iter().cloned()),
        );
        match backend.write(&updates).await {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                let answers: Vec<(oneshot::Sender<Outcomes>, Appended)> = batch
                    .drain(..)
                    .map(|append| {
                        let own: Appended = outcomes.by_ref().take(append.updates.len()).collect();
                        (append.committed)(own.as_slice());
                        (append.done, own)
                    })
                    .collect();
                for (done, own) in answers {
                    let _ = done.send(Ok(own));
                }
            }
            // Each publisher is told, and whoever answers it logs the cause once.
            Err(err) => {
                for append in batch.drain(..) {
                    let _ = append.done.send(Err(err.for_each_waiter()));
                }
            }
        }
    }
}
