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
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::group_commit::{Batch, GroupCommit};
use super::sql::{conflict, status_column, status_from_db, time_from_db, FORGET};
use super::{
    idle_candidates, Appended, Compacted, Compaction, Due, EventStore, Extent, Horizon, OnCommit,
    StoreError, IDLE_SCAN,
};
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
    /// from the order's current status. The one-status-each constraint and the trigger stay as
    /// the database's own guard against any other writer.
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
                     WHERE ($2 = 0 AND NOT EXISTS (SELECT 1 FROM compacted WHERE order_id = $1))
                        OR EXISTS (SELECT 1 FROM events WHERE order_id = $1 AND status = $2 - 1)
                        OR EXISTS (SELECT 1 FROM compacted WHERE order_id = $1 AND status = $2 - 1)
                     ON CONFLICT DO NOTHING
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
    let max: Option<i16> = sqlx::query_scalar(
        "SELECT max(status) FROM (SELECT status FROM events WHERE order_id = $1
                                  UNION ALL SELECT status FROM compacted WHERE order_id = $1) s",
    )
    .bind(order_id)
    .fetch_one(conn)
    .await?;
    Ok(max.and_then(|index| status_from_db(index.into())))
}

/// Summaries for the listed orders, from their events; an order compacted before keeps its
/// creation time and takes the later status.
const SUMMARISE: &str = "INSERT INTO compacted (order_id, status, created_ms, updated_ms, last_id)
     SELECT order_id, max(status), coalesce(min(at_ms) FILTER (WHERE status = 0), min(at_ms)),
            max(at_ms), max(id)
     FROM events WHERE order_id = ANY($1) GROUP BY order_id
     ON CONFLICT (order_id) DO UPDATE SET
         status = GREATEST(compacted.status, excluded.status),
         updated_ms = GREATEST(compacted.updated_ms, excluded.updated_ms),
         last_id = GREATEST(compacted.last_id, excluded.last_id)";

/// The sweep's transaction, under the commit-order lock that appends take: picks the orders
/// due and compacts them, so that no append of one of them runs in between, on this
/// instance or another. Instances sweeping at once take turns, and each finds what the
/// other left.
async fn compact_due(
    conn: &mut PgConnection,
    due: &Due,
    limit: u32,
) -> Result<Compacted, StoreError> {
    // Delivered orders first, before the lock: nothing can follow `Delivered`, so the
    // answer holds until they are compacted, and appends do not wait for this read.
    let mut orders: Vec<Uuid> = Vec::new();
    if let Some(before) = due.delivered_before {
        orders = sqlx::query_scalar(
            "SELECT order_id FROM events WHERE status = 5 AND at_ms < $1 ORDER BY at_ms LIMIT $2",
        )
        .bind(before.timestamp_millis())
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(COMMIT_ORDER_LOCK)
        .execute(&mut *conn)
        .await?;
    // Unless the look for idle orders runs, it goes on where it was.
    let mut idle_after = due.idle_after;
    if let Some(before) = due.idle_before.filter(|_| (orders.len() as u32) < limit) {
        let rows = sqlx::query(
            "SELECT id, order_id, at_ms FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(due.idle_after.map_or(0, |id| id.0))
        .bind(i64::from(IDLE_SCAN))
        .fetch_all(&mut *conn)
        .await?;
        let oldest = rows
            .iter()
            .map(|row| {
                Ok((
                    EventId(row.try_get("id")?),
                    row.try_get("order_id")?,
                    time_from_db(row.try_get("at_ms")?),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (candidates, next) = idle_candidates(&oldest, before);
        idle_after = next;
        let idle: Vec<Uuid> = sqlx::query_scalar(
            "SELECT order_id FROM events WHERE order_id = ANY($1)
             GROUP BY order_id HAVING max(at_ms) < $2 LIMIT $3",
        )
        .bind(&candidates)
        .bind(before.timestamp_millis())
        .bind(i64::from(limit) - orders.len() as i64)
        .fetch_all(&mut *conn)
        .await?;
        for id in idle {
            if !orders.contains(&id) {
                orders.push(id);
            }
        }
    }
    if orders.is_empty() {
        return Ok(Compacted {
            idle_after,
            ..Compacted::default()
        });
    }
    let summarised = sqlx::query(SUMMARISE)
        .bind(&orders)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let deleted = sqlx::query("DELETE FROM events WHERE order_id = ANY($1)")
        .bind(&orders)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(Compacted {
        orders: summarised,
        events: deleted,
        idle_after,
    })
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

    async fn append_all_then(
        &self,
        updates: &[OrderStatusUpdate],
        committed: OnCommit,
    ) -> Result<Appended, StoreError> {
        self.writer.append_all(updates.to_vec(), committed).await
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

    async fn compact(&self, due: &Due, limit: u32) -> Result<Compacted, StoreError> {
        in_time(async {
            let mut tx = self.pool.begin().await?;
            let compacted = compact_due(&mut tx, due, limit).await?;
            tx.commit().await?;
            Ok(compacted)
        })
        .await
    }

    async fn forget(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        in_time(async {
            let mut tx = self.pool.begin().await?;
            // An append checks the summary it follows under this lock: a summary is never
            // forgotten between that check and the append's commit.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(COMMIT_ORDER_LOCK)
                .execute(&mut *tx)
                .await?;
            let forgotten = sqlx::query(FORGET)
                .bind(i64::from(limit))
                .bind(before.timestamp_millis())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(forgotten)
        })
        .await
    }

    async fn summaries(&self, orders: &[Uuid]) -> Result<Vec<Compaction>, StoreError> {
        in_time(async {
            let rows = sqlx::query(
                "SELECT order_id, status, created_ms, updated_ms, last_id FROM compacted
                 WHERE order_id = ANY($1)",
            )
            .bind(orders)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(Compaction {
                        summary: OrderSummary {
                            id: row.try_get("order_id")?,
                            status: status_column(row.try_get::<i16, _>("status")?.into())?,
                            created_at: time_from_db(row.try_get("created_ms")?),
                            updated_at: time_from_db(row.try_get("updated_ms")?),
                        },
                        last_id: EventId(row.try_get("last_id")?),
                    })
                })
                .collect()
        })
        .await
    }

    async fn horizon(&self) -> Result<Horizon, StoreError> {
        in_time(async {
            let row = sqlx::query(
                "SELECT (SELECT min(id) FROM events) AS earliest,
                        (SELECT max(last_id) FROM compacted) AS compacted_through",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok(Horizon {
                earliest: row.try_get::<Option<i64>, _>("earliest")?.map(EventId),
                compacted_through: row
                    .try_get::<Option<i64>, _>("compacted_through")?
                    .map(EventId),
            })
        })
        .await
    }

    async fn extent(&self) -> Result<Extent, StoreError> {
        in_time(async {
            let row = sqlx::query(
                "SELECT count(*) AS events,
                        (SELECT at_ms FROM events ORDER BY id LIMIT 1) AS oldest_ms
                 FROM events",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok(Extent {
                events: row.try_get::<i64, _>("events")? as u64,
                oldest_at: row
                    .try_get::<Option<i64>, _>("oldest_ms")?
                    .map(time_from_db),
            })
        })
        .await
    }

    async fn reclaim(&self) -> Result<(), StoreError> {
        // Autovacuum reclaims deleted rows' space for new rows; nothing to do here.
        Ok(())
    }
}
