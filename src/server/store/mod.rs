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
use chrono::{DateTime, Utc};
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

    /// Stores `updates` in one transaction, in their order (ids increase along the slice),
    /// and returns each one's outcome in the same order: the event, or why it alone was
    /// refused ([`StoreError::Conflict`]). An update may follow an earlier one of the same
    /// order in the slice. `Err`: the transaction failed and none is stored. Returns only
    /// once they are durable.
    ///
    /// `committed` gets the outcomes the moment the transaction has committed: on the
    /// store's writer, before any publisher waiting for it is woken, and whether or not this
    /// call is still awaited then. The event log fans out from there, so that subscribers do
    /// not wait for a publisher's task to be scheduled again, and an event committed for a
    /// publisher that went away still reaches them.
    async fn append_all_then(
        &self,
        updates: &[OrderStatusUpdate],
        committed: OnCommit,
    ) -> Result<Appended, StoreError>;

    /// [`EventStore::append_all_then`] with nothing to do on commit.
    async fn append_all(&self, updates: &[OrderStatusUpdate]) -> Result<Appended, StoreError> {
        self.append_all_then(updates, Box::new(|_| {})).await
    }

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

    /// Compacts up to `limit` orders that are `due` (spec §12), in one transaction that
    /// appends wait for (SQLite's one writer, Postgres' commit-order lock), so that an order
    /// is never compacted as an event of it is stored: each gets a summary (its last status,
    /// created and updated times) and loses its events. Idle orders are looked for among
    /// the oldest events after `due.idle_after`; the answer says where to look next.
    async fn compact(&self, due: &Due, limit: u32) -> Result<Compacted, StoreError>;

    /// What the listed orders that were compacted keep (the others are not listed). An
    /// order compacted while idle may have events after its summary.
    async fn summaries(&self, orders: &[Uuid]) -> Result<Vec<Compaction>, StoreError>;

    /// Forgets up to `limit` compacted orders whose last event is older than `before`
    /// (`RETAIN_SUMMARY`), among the oldest summaries: their summary is deleted and they
    /// are unknown from then on. Never the newest summary, which says where the log was
    /// compacted through ([`Horizon::compacted_through`]), nor one of an order with events
    /// after it. In one transaction that appends wait for, as [`EventStore::compact`].
    /// Returns how many were forgotten.
    async fn forget(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;

    /// Where the stored log begins: what a stream needs to know whether its client missed
    /// events that are gone (spec §12). Two indexed lookups.
    async fn horizon(&self) -> Result<Horizon, StoreError>;

    /// How much the store holds now, for `/metrics` (counts every event: once a sweep).
    async fn extent(&self) -> Result<Extent, StoreError>;

    /// Gives the space a sweep freed back to the file system where the backend can (SQLite:
    /// an incremental vacuum in steps, then a passive checkpoint of its log); Postgres'
    /// autovacuum does it there.
    async fn reclaim(&self) -> Result<(), StoreError>;
}

/// Each update's outcome, in the order of the updates.
pub type Appended = Vec<Result<OrderEvent, StoreError>>;

/// What is done with a transaction's outcomes once it has committed
/// ([`EventStore::append_all_then`]). It must not block: it runs on the store's writer.
pub type OnCommit = Box<dyn FnOnce(&[Result<OrderEvent, StoreError>]) + Send>;

/// Which orders a sweep compacts: delivered before `delivered_before`, or with no event
/// since `idle_before`; `None` turns that rule off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub delivered_before: Option<DateTime<Utc>>,
    pub idle_before: Option<DateTime<Utc>>,
    /// Where the look for idle orders among the oldest events goes on from (`None`: the
    /// first event), as the previous batch's [`Compacted::idle_after`] said.
    pub idle_after: Option<EventId>,
}

/// What one batch of compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Orders compacted.
    pub orders: u64,
    /// Events deleted.
    pub events: u64,
    /// Where the next batch looks for idle orders: after this event, or from the first
    /// (`None`) once the look reached events too recent to be idle.
    pub idle_after: Option<EventId>,
}

/// What a compacted order keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct Compaction {
    /// Its status and times when it was compacted.
    pub summary: OrderSummary,
    /// The id of its last event deleted.
    pub last_id: EventId,
}

/// Where the stored log begins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Horizon {
    /// The smallest id stored.
    pub earliest: Option<EventId>,
    /// The largest id ever deleted by compaction: a stream of every order resuming before
    /// it missed events.
    pub compacted_through: Option<EventId>,
}

/// How much a store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    /// Events stored.
    pub events: u64,
    /// When the oldest event stored happened.
    pub oldest_at: Option<DateTime<Utc>>,
}

/// How many of the oldest events one batch looks at for idle orders.
const IDLE_SCAN: u32 = 1000;

/// The idle orders among the oldest events (`(id, order, time)`, in id order, as read after
/// `due.idle_after`, at most [`IDLE_SCAN`]): the orders with an event before `before`, to be
/// kept only if they have no later event, and where the next look starts. The look stops at
/// the first event at or after `before`: ids follow time, so what comes after is recent.
fn idle_candidates(
    oldest: &[(EventId, Uuid, DateTime<Utc>)],
    before: DateTime<Utc>,
) -> (Vec<Uuid>, Option<EventId>) {
    let mut seen = std::collections::HashSet::new();
    let mut orders = Vec::new();
    for (_, order, at) in oldest {
        if *at >= before {
            return (orders, None);
        }
        if seen.insert(*order) {
            orders.push(*order);
        }
    }
    let next = if oldest.len() as u32 >= IDLE_SCAN {
        oldest.last().map(|(id, _, _)| *id)
    } else {
        None
    };
    (orders, next)
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
