//! The embedded SQLite store (sqlx): WAL journal, `synchronous = FULL`, migrations from
//! `migrations/sqlite/` applied at start-up. Appends go through [`GroupCommit`]; SQLite has
//! one writer at a time, so ids are assigned, and become visible, in commit order.
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::group_commit::{Batch, GroupCommit};
use super::sql::{conflict, decode_error, status_column, status_from_db, time_from_db};
use super::{EventStore, StoreError};
use crate::domain::{EventId, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary};

/// SQLite's extended result code for a `RAISE(ABORT, …)` in a trigger.
const SQLITE_CONSTRAINT_TRIGGER: &str = "1811";

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: GroupCommit,
}

impl SqliteStore {
    /// Opens (creating when missing, with its folder) the database at `url`, such as
    /// `sqlite://data/orders.db`, and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        // FULL: a commit is on disk before `append` returns, even across a power cut.
        Self::open_with(url, SqliteSynchronous::Full).await
    }

    /// [`SqliteStore::open`] with another `synchronous` setting (for measuring its cost).
    pub async fn open_with(url: &str, synchronous: SqliteSynchronous) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(5));
        if let Some(folder) = Path::new(options.get_filename()).parent() {
            if !folder.as_os_str().is_empty() {
                std::fs::create_dir_all(folder).map_err(StoreError::backend)?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let writer = GroupCommit::start(Writer { pool: pool.clone() });
        Ok(Self { pool, writer })
    }
}

struct Writer {
    pool: SqlitePool,
}

#[async_trait]
impl Batch for Writer {
    /// Inserts each update in one transaction. An insert that breaks a constraint (a duplicate
    /// or a skipped status) fails alone: SQLite aborts that statement and keeps the transaction.
    async fn write(
        &self,
        updates: &[OrderStatusUpdate],
    ) -> Result<Vec<Result<OrderEvent, StoreError>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(updates.len());
        for update in updates {
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO events (order_id, status, at_ms) VALUES (?, ?, ?) RETURNING id",
            )
            .bind(update.order_id.to_string())
            .bind(update.status.index() as i64)
            .bind(update.timestamp.timestamp_millis())
            .fetch_one(&mut *tx)
            .await;
            outcomes.push(match inserted {
                Ok(id) => Ok(OrderEvent {
                    id: EventId(id),
                    update: update.clone(),
                }),
                Err(sqlx::Error::Database(db))
                    if db.is_unique_violation()
                        || db.code().as_deref() == Some(SQLITE_CONSTRAINT_TRIGGER) =>
                {
                    let current = current_status(&mut tx, update.order_id).await?;
                    Err(StoreError::Conflict(conflict(current, update.status)))
                }
                Err(err) => return Err(err.into()),
            });
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

async fn current_status(
    conn: &mut SqliteConnection,
    order_id: Uuid,
) -> Result<Option<OrderStatus>, sqlx::Error> {
    let max: Option<i64> = sqlx::query_scalar("SELECT max(status) FROM events WHERE order_id = ?")
        .bind(order_id.to_string())
        .fetch_one(conn)
        .await?;
    Ok(max.and_then(status_from_db))
}

fn event_from_row(row: &SqliteRow) -> Result<OrderEvent, StoreError> {
    let order_id: String = row.try_get("order_id")?;
    Ok(OrderEvent {
        id: EventId(row.try_get("id")?),
        update: OrderStatusUpdate {
            order_id: Uuid::parse_str(&order_id).map_err(|_| decode_error("order_id"))?,
            status: status_column(row.try_get("status")?)?,
            timestamp: time_from_db(row.try_get("at_ms")?),
        },
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, update: &OrderStatusUpdate) -> Result<OrderEvent, StoreError> {
        // UNIQUE and the trigger decide inside the database, so two writers can never both
        // store the same status, nor skip one, whatever the code around them does.
        self.writer.append(update).await
    }

    async fn events(&self, order_id: Uuid) -> Result<Vec<OrderEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, order_id, status, at_ms FROM events WHERE order_id = ? ORDER BY id",
        )
        .bind(order_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_of(
        &self,
        orders: &[Uuid],
        after: Option<EventId>,
    ) -> Result<Vec<OrderEvent>, StoreError> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = vec!["?"; orders.len()].join(", ");
        let sql = format!(
            "SELECT id, order_id, status, at_ms FROM events \
             WHERE order_id IN ({placeholders}) AND id > ? ORDER BY id"
        );
        let mut query = sqlx::query(&sql);
        for order in orders {
            query = query.bind(order.to_string());
        }
        let rows = query
            .bind(after.map_or(0, |id| id.0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_after(
        &self,
        after: Option<EventId>,
        limit: u32,
    ) -> Result<Vec<OrderEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, order_id, status, at_ms FROM events WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after.map_or(0, |id| id.0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_id(&self) -> Result<Option<EventId>, StoreError> {
        let max: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(max.map(EventId))
    }

    async fn recent(&self, limit: u32) -> Result<Vec<OrderSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.order_id, c.at_ms AS created_ms, l.status, l.at_ms AS updated_ms
             FROM (SELECT id, order_id, at_ms FROM events WHERE status = 0
                   ORDER BY id DESC LIMIT ?) AS c
             JOIN events AS l ON l.order_id = c.order_id
              AND l.status = (SELECT max(status) FROM events WHERE order_id = c.order_id)
             ORDER BY c.id DESC",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("order_id")?;
                Ok(OrderSummary {
                    id: Uuid::parse_str(&id).map_err(|_| decode_error("order_id"))?,
                    status: status_column(row.try_get("status")?)?,
                    created_at: time_from_db(row.try_get("created_ms")?),
                    updated_at: time_from_db(row.try_get("updated_ms")?),
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
