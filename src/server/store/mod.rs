//! Where events are stored: the durable log behind a small trait. The store is the source of
//! truth; the hub only fans out what it holds. Nothing here names a driver: each backend turns
//! its own errors into a [`StoreError`].
mod sqlite;

pub use sqlite::SqliteStore;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{OrderEvent, OrderStatusUpdate, OrderSummary, TransitionError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The update's status is not the order's next one (a duplicate, a skip, or after Delivered).
    #[error(transparent)]
    Conflict(#[from] TransitionError),
    /// The backend failed: unreachable, refused the request, or returned something unreadable.
    #[error("store: {0}")]
    Backend(#[source] BoxError),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// A backend failure with its cause (a driver's error, or a sentence).
    pub fn backend(cause: impl Into<BoxError>) -> Self {
        StoreError::Backend(cause.into())
    }
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Stores `update` as its order's next event and returns it with its id. Returns only once
    /// the event is durable. A status that is not the next one is a [`StoreError::Conflict`],
    /// decided by the store itself so that concurrent writers cannot both succeed.
    async fn append(&self, update: &OrderStatusUpdate) -> Result<OrderEvent, StoreError>;

    /// Every event of the order, oldest first (`Created` first); empty for an unknown order.
    async fn events(&self, order_id: Uuid) -> Result<Vec<OrderEvent>, StoreError>;

    /// The most recently created orders, newest first.
    async fn recent(&self, limit: u32) -> Result<Vec<OrderSummary>, StoreError>;

    /// Answers when the store can serve requests.
    async fn ping(&self) -> Result<(), StoreError>;
}
