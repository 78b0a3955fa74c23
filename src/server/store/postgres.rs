//! The Postgres store (sqlx), shared by several instances: migrations from
//! `migrations/postgres/` applied at start-up (sqlx takes a lock, so instances starting
//! together do not race), appends through [`GroupCommit`].
//!
//! **Ids in commit order.** A plain identity column hands out ids when rows are inserted, but
//! two transactions may commit in the other order, so a reader of "events after N" could see
//! N+2 and then, later, N+1, and skip it. Every batch therefore takes one transaction-level
//! advisory lock before it inserts: id assignment and commit happen one transaction at a time
//! across every instance, and Postgres makes a commit visible before it releases the lock. Group
//! commit spreads the cost of that lock over every append waiting on this instance.
//!
//! **Outages.** Acquiring a connection gives up after 3 s and a whole batch after 4 s, so a
//! publisher learns within 5 s that nothing was stored (a `503`), not after a pool's 30 s.
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::group_commit::{Batch, GroupCommit};
use super::sql::{conflict, status_column, status_from_db, time_from_db};
use super::{EventStore, StoreError};
use crate::domain::{EventId, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary};

/// The advisory lock key that serialises id assignment (any constant shared by all instances).
const COMMIT_ORDER_LOCK: i64 = 0x6f72_6465_7273; // "orders"

/// How long a caller waits for a connection from the pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a batch of appends or a read may take in all.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(4);

/// Whether appends serialise id assignment. Only `Serialised` keeps the store's promise; the
/// other exists to measure what the promise costs (`make publish-cost-postgres`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOrder {
    Serialised,
    Unordered,
}

#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    writer: GroupCommit,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`) and
    /// brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, CommitOrder::Serialised).await
    }

    /// [`PostgresStore::open`], choosing whether ids follow commit order (for measuring).
    pub async fn open_with(url: &str, order: CommitOrder) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let writer = GroupCommit::start(Writer {
            pool: pool.clone(),
            order,
        });
        Ok(Self { pool, writer })
    }
}

/// Runs `work`, giving up after [`OPERATION_TIMEOUT`] with [`StoreError::Unavailable`].
async fn in_time<T>(
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, work)
        .await
        .map_err(|_| StoreError::unavailable("Postgres did not answer within 4 s"))?
}

struct Writer {
    pool: PgPool,
    order: CommitOrder,
}

#[async_trait]
impl Batch for Writer {
    /// One transaction: the commit-order lock, then each insert. An update that is not its
    /// order's next status inserts nothing (so it cannot abort the others) and is explained
    /// from the order's current status. UNIQUE and the trigger stay as the database's own
    /// guard against any other writer.
    async fn write(
        &mut self,
        updates: &[OrderStatusUpdate],
    ) -> Result<Vec<Result<OrderEvent, StoreError>>, StoreError> {
        in_time(async {
            let mut tx = self.pool.begin().await?;
            if self.order == CommitOrder::Serialised {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(COMMIT_ORDER_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut outcomes = Vec::with_capacity(updates.len());
            for update in updates {
                let status = update.status.index() as i16;
                let inserted: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO events (order_id, status, at_ms)
                     SELECT $1, $2, $3
                     WHERE $2 = 0 OR EXISTS (
                         SELECT 1 FROM events WHERE order_id = $1 AND status = $2 - 1)
                     ON CONFLICT (order_id, status) DO NOTHING
                     RETURNING id",
                )
                .bind(update.order_id)
                .bind(status)
                .bind(update.timestamp.timestamp_millis())
                .fetch_optional(&mut *tx)
                .await?;
                outcomes.push(match inserted {
                    Some(id) => Ok(OrderEvent {
                        id: EventId(id),
                        update: update.clone(),
                    }),
                    None => {
                        let current = current_status(&mut tx, update.order_id).await?;
                        Err(StoreError::Conflict(conflict(current, update.status)))
                    }
                });
            }
            tx.commit().await?;
            Ok(outcomes)
        })
        .await
    }
}

async fn current_status(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<OrderStatus>, sqlx::Error> {
    let max: Option<i16> = sqlx::query_scalar("SELECT max(status) FROM events WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(conn)
        .await?;
    Ok(max.and_then(|index| status_from_db(index.into())))
}

fn event_from_row(row: &PgRow) -> Result<OrderEvent, StoreError> {
    Ok(OrderEvent {
        id: EventId(row.try_get("id")?),
        update: OrderStatusUpdate {
            order_id: row.try_get("order_id")?,
            status: status_column(row.try_get::<i16, _>("status")?.into())?,
            timestamp: time_from_db(row.try_get("at_ms")?),
        },
    })
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, update: &OrderStatusUpdate) -> Result<OrderEvent, StoreError> {
        self.writer.append(update).await
    }

    async fn events(&self, order_id: Uuid) -> Result<Vec<OrderEvent>, StoreError> {
        in_time(async {
            let rows = sqlx::query(
                "SELECT id, order_id, status, at_ms FROM events WHERE order_id = $1 ORDER BY id",
            )
            .bind(order_id)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(event_from_row).collect()
        })
        .await
    }

    async fn events_of(
        &self,
        orders: &[Uuid],
        after: Option<EventId>,
    ) -> Result<Vec<OrderEvent>, StoreError> {
        in_time(async {
            let rows = sqlx::query(
                "SELECT id, order_id, status, at_ms FROM events \
                 WHERE order_id = ANY($1) AND id > $2 ORDER BY id",
            )
            .bind(orders)
            .bind(after.map_or(0, |id| id.0))
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(event_from_row).collect()
        })
        .await
    }

    async fn events_after(
        &self,
        after: Option<EventId>,
        limit: u32,
    ) -> Result<Vec<OrderEvent>, StoreError> {
        in_time(async {
            let rows = sqlx::query(
                "SELECT id, order_id, status, at_ms FROM events WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after.map_or(0, |id| id.0))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(event_from_row).collect()
        })
        .await
    }

    async fn last_id(&self) -> Result<Option<EventId>, StoreError> {
        in_time(async {
            let max: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM events")
                .fetch_one(&self.pool)
                .await?;
            Ok(max.map(EventId))
        })
        .await
    }

    async fn recent(&self, limit: u32) -> Result<Vec<OrderSummary>, StoreError> {
        in_time(async {
            let rows = sqlx::query(
                "SELECT c.order_id, c.at_ms AS created_ms, l.status, l.at_ms AS updated_ms
                 FROM (SELECT id, order_id, at_ms FROM events WHERE status = 0
                       ORDER BY id DESC LIMIT $1) AS c
                 JOIN events AS l ON l.order_id = c.order_id
                  AND l.status = (SELECT max(status) FROM events WHERE order_id = c.order_id)
                 ORDER BY c.id DESC",
            )
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(OrderSummary {
                        id: row.try_get("order_id")?,
                        status: status_column(row.try_get::<i16, _>("status")?.into())?,
                        created_at: time_from_db(row.try_get("created_ms")?),
                        updated_at: time_from_db(row.try_get("updated_ms")?),
                    })
                })
                .collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        in_time(async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }
}
