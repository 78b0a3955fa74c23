//! Group commit, for every backend: one writer task takes every append waiting at that moment
//! and stores them in one transaction, so one fsync (and, on Postgres, one turn of the
//! commit-order lock) acknowledges them all instead of one each. No append is answered before
//! its transaction has committed.
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use crate::domain::{OrderEvent, OrderStatusUpdate};

/// The most appends committed together.
const MAX_BATCH: usize = 256;

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

/// An append waiting for the writer, with where to send its outcome.
struct Append {
    update: OrderStatusUpdate,
    done: oneshot::Sender<Result<OrderEvent, StoreError>>,
}

/// The handle appends go through; the writer task ends with the last handle.
#[derive(Clone, Debug)]
pub(super) struct GroupCommit {
    appends: mpsc::Sender<Append>,
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.update.fmt(f)
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
        let (done, outcome) = oneshot::channel();
        let stopped = || StoreError::backend("the store's writer task has stopped");
        self.appends
            .send(Append {
                update: update.clone(),
                done,
            })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn write_appends(mut backend: impl Batch, mut waiting: mpsc::Receiver<Append>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut updates = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        updates.clear();
        updates.extend(batch.iter().map(|append| append.update.clone()));
        match backend.write(&updates).await {
            Ok(outcomes) => {
                for (append, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = append.done.send(outcome);
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
