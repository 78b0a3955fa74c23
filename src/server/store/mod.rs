//! Where events are stored: the durable log behind a small trait, with two backends:
//! embedded SQLite (the default) and Postgres, shared by several instances. The store is the
//! source of truth; the hub and the bus only carry what it holds. Nothing in this file names
//! a driver: each backend turns its own errors into a [`StoreError`].
mod group_commit;
mod postgres;
pub mod scratch;
mod sql;
mod sqlite;

use std::sync::Arc;

pub use postgres::{CommitOrder, PostgresStore};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{EventId, OrderEvent, OrderStatusUpdate, OrderSummary, TransitionError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The update's status is not the order's next one (a duplicate, a skip, or after Delivered).
    #[error(transparent)]
    Conflict(#[from] TransitionError),
    /// The store cannot be reached now (down, restarting, or not answering in time); nothing
    /// was stored. Worth retrying later.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The backend failed otherwise: refused the request, or returned something unreadable.
    #[error("store: {0}")]
    Backend(#[source] BoxError),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// A backend failure with its cause (a driver's error, or a sentence).
    pub fn backend(cause: impl Into<BoxError>) -> Self {
        StoreError::Backend(cause.into())
    }

    /// The store could not be reached, with its cause.
    pub fn unavailable(cause: impl Into<BoxError>) -> Self {
        StoreError::Unavailable(cause.into())
    }

    /// The same error again, for each of several waiters (a cause is not `Clone`).
    fn for_each_waiter(&self) -> StoreError {
        match self {
            StoreError::Conflict(transition) => StoreError::Conflict(*transition),
            StoreError::Unavailable(cause) => StoreError::unavailable(cause.to_string()),
            StoreError::Backend(cause) => StoreError::backend(cause.to_string()),
        }
    }
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Stores `update` as its order's next event and returns it with its id. Returns only once
    /// the event is durable. A status that is not the next one is a [`StoreError::Conflict`],
    /// decided by the store itself so that concurrent writers cannot both succeed.
    ///
    /// Ids are global and follow commit order: once an event is visible, no event with a
    /// smaller id becomes visible later.
    async fn append(&self, update: &OrderStatusUpdate) -> Result<OrderEvent, StoreError>;

    /// Every event of the order, oldest first (`Created` first); empty for an unknown order.
    async fn events(&self, order_id: Uuid) -> Result<Vec<OrderEvent>, StoreError>;

    /// The events of the listed orders with an id above `after` (all of them when none), in
    /// id order: what a stream of several orders replays and catches up with. At most six
    /// events per order, so no limit is needed.
    async fn events_of(
        &self,
        orders: &[Uuid],
        after: Option<EventId>,
    ) -> Result<Vec<OrderEvent>, StoreError>;

    /// Up to `limit` events of any order with an id above `after` (from the start when none),
    /// in id order: the one indexed query an instance catches up with, whatever the number of
    /// orders it watches.
    async fn events_after(
        &self,
        after: Option<EventId>,
        limit: u32,
    ) -> Result<Vec<OrderEvent>, StoreError>;

    /// The largest id stored, if any.
    async fn last_id(&self) -> Result<Option<EventId>, StoreError>;

    /// The most recently created orders, newest first.
    async fn recent(&self, limit: u32) -> Result<Vec<OrderSummary>, StoreError>;

    /// Answers when the store can serve requests.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens the store a `DATABASE_URL` names: `sqlite://…` (file and folder created when
/// missing) or `postgres://…` / `postgresql://…` (shared by several instances).
pub async fn open(url: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else {
        Err(StoreError::backend(format!(
            "DATABASE_URL must start with sqlite:// or postgres://, not {:?}",
            url.split(':').next().unwrap_or_default()
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests;
