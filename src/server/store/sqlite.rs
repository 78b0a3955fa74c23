//! The embedded SQLite store (sqlx): WAL journal, `synchronous = FULL`, migrations from
//! `migrations/sqlite/` applied at start-up. Appends go through [`GroupCommit`]; SQLite has
//! one writer at a time, so ids are assigned, and become visible, in commit order.
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::group_commit::{Batch, GroupCommit};
use super::sql::{conflict, decode_error, status_column, status_from_db, time_from_db, FORGET};
use super::{
    idle_candidates, Appended, Compacted, Compaction, Due, EventStore, Extent, Horizon, OnCommit,
    StoreError, IDLE_SCAN,
};
use crate::domain::{EventId, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary};

/// Free pages kept after a sweep, as a share of the file: new events reuse them.
const FREE_SLACK_PERCENT: i64 = 10;
/// Pages given back to the file system in one step (4 MiB of 4 KiB pages)...
const VACUUM_STEP_PAGES: i64 = 1024;
/// ...with this pause between steps, in which appends take the lock.
const VACUUM_PAUSE: Duration = Duration::from_millis(20);
/// The write-ahead log is cut back to this size whenever it restarts (bytes).
const WAL_SIZE_LIMIT: &str = "8388608";

/// SQLite's extended result code for a `RAISE(ABORT, …)` in a trigger.
const SQLITE_CONSTRAINT_TRIGGER: &str = "1811";

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: GroupCommit,
    /// Taken by whatever writes (the group commit's batches, the sweep's), so that they
    /// queue here, in turn, instead of meeting SQLite's lock: a writer that finds it taken
    /// gets `SQLITE_BUSY` and its busy handler sleeps 1, 2, 5, 10… ms before it tries again,
    /// which made a sweep wait tens of milliseconds a batch behind steady appends (and
    /// appends behind it). tokio's mutex, not std's: it is held across the awaits of a
    /// transaction, and it is fair.
    write_turn: Arc<tokio::sync::Mutex<()>>,
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
            // Set before anything else on a new file; an older file gets it from the one
            // `VACUUM` of `incremental_auto_vacuum` at start-up.
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .pragma("journal_size_limit", WAL_SIZE_LIMIT)
            .busy_timeout(Duration::from_secs(5));
        if let Some(folder) = Path::new(options.get_filename()).parent() {
            if !folder.as_os_str().is_empty() {
                std::fs::create_dir_all(folder).map_err(StoreError::backend)?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // An embedded connection cannot go stale; a ping before each use would be one
            // more trip to its worker thread per query.
            .test_before_acquire(false)
            // The pool reads, and writes only what the sweep writes (compactions, forgetting,
            // vacuum steps): those commits need not wait for an fsync while appends wait
            // behind them. In WAL mode that stays atomic, and the next append's commit
            // (FULL, on the group commit's own connection) syncs the log they are in; a power
            // cut before it undoes a compaction, which the next sweep does again.
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        incremental_auto_vacuum(&options).await?;
        let write_turn = Arc::new(tokio::sync::Mutex::new(()));
        let writer = GroupCommit::start(Writer {
            connection: Some(options.connect().await?),
            options,
            write_turn: write_turn.clone(),
        });
        Ok(Self {
            pool,
            writer,
            write_turn,
        })
    }
}

/// Makes the file one that shrinks: with incremental auto-vacuum the pages a sweep frees go
/// back to the file system (`PRAGMA incremental_vacuum` in [`EventStore::reclaim`]). A new
/// file has it from its connection options; a file made before retention existed needs one
/// `VACUUM` for the setting to take, run here once at start-up. (Not a migration: sqlx runs
/// every SQLite migration inside a transaction, and `VACUUM` cannot run in one.)
async fn incremental_auto_vacuum(options: &SqliteConnectOptions) -> Result<(), StoreError> {
    const INCREMENTAL: i64 = 2;
    let mut conn = options.connect().await?;
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&mut conn)
        .await?;
    if mode != INCREMENTAL {
        tracing::info!("converting the SQLite file to incremental auto-vacuum (once)");
        sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
            .execute(&mut conn)
            .await?;
        sqlx::query("VACUUM").execute(&mut conn).await?;
    }
    conn.close().await?;
    Ok(())
}

/// The group commit's side of the database: a connection of its own, outside the pool. A
/// pooled connection is pinged each time it goes back to the pool (sqlx 0.8), which for SQLite
/// is one more trip to its worker thread per batch; SQLite has one writer at a time anyway.
struct Writer {
    options: SqliteConnectOptions,
    /// Opened with the store, and again after a failure that may have left it unusable.
    connection: Option<SqliteConnection>,
    /// See [`SqliteStore::write_turn`].
    write_turn: Arc<tokio::sync::Mutex<()>>,
}

/// The whole batch in one statement: the updates go in as one JSON array, so the statement
/// is prepared once whatever the batch's size, and run in autocommit it is one transaction.
const INSERT_BATCH: &str = "INSERT INTO events (order_id, status, at_ms) \
     SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) ORDER BY key \
     RETURNING id, order_id, status";

#[async_trait]
impl Batch for Writer {
    /// Stores the batch in one statement: each call to SQLite's worker thread costs two
    /// thread wake-ups, so a batch of eight costs one call instead of ten. Should any row break
    /// a constraint (a duplicate or a skipped status), the statement stores nothing and the
    /// batch is stored again row by row, so that the others still succeed.
    async fn write(
        &mut self,
        updates: &[OrderStatusUpdate],
    ) -> Result<Vec<Result<OrderEvent, StoreError>>, StoreError> {
        let _turn = self.write_turn.lock().await;
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => self.options.connect().await?,
        };
        let outcomes = match insert_batch(&mut connection, updates).await {
            Ok(inserted) => match_ids(updates, &inserted),
            Err(sqlx::Error::Database(db)) if is_refusal(db.as_ref()) => {
                write_each(&mut connection, updates).await
            }
            Err(err) => Err(err.into()),
        };
        // Kept only while it works: a failed batch opens a fresh connection for the next.
        if outcomes.is_ok() {
            self.connection = Some(connection);
        }
        outcomes
    }
}

/// The batch as one statement: every row, or none when one is refused.
async fn insert_batch(
    connection: &mut SqliteConnection,
    updates: &[OrderStatusUpdate],
) -> Result<Vec<SqliteRow>, sqlx::Error> {
    let rows: Vec<(&Uuid, usize, i64)> = updates
        .iter()
        .map(|u| {
            (
                &u.order_id,
                u.status.index(),
                u.timestamp.timestamp_millis(),
            )
        })
        .collect();
    let json = serde_json::to_string(&rows).map_err(|err| sqlx::Error::Encode(err.into()))?;
    sqlx::query(INSERT_BATCH)
        .bind(json)
        .fetch_all(connection)
        .await
}

/// Inserts each update in one transaction. An insert that breaks a constraint fails alone:
/// SQLite aborts that statement and keeps the transaction.
async fn write_each(
    connection: &mut SqliteConnection,
    updates: &[OrderStatusUpdate],
) -> Result<Vec<Result<OrderEvent, StoreError>>, StoreError> {
    let mut tx = connection.begin().await?;
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
            Err(sqlx::Error::Database(db)) if is_refusal(db.as_ref()) => {
                let current = current_status(&mut tx, update.order_id).await?;
                Err(StoreError::Conflict(conflict(current, update.status)))
            }
            Err(err) => return Err(err.into()),
        });
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Whether the database refused a row for a rule of the schema: `UNIQUE` (a status stored
/// twice) or the trigger (a status skipped).
fn is_refusal(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.is_unique_violation() || db.code().as_deref() == Some(SQLITE_CONSTRAINT_TRIGGER)
}

/// Gives each update the id its row got. SQLite does not promise `RETURNING` in row order,
/// so rows are matched on (order, status), which `UNIQUE` makes one row each.
fn match_ids(
    updates: &[OrderStatusUpdate],
    inserted: &[SqliteRow],
) -> Result<Vec<Result<OrderEvent, StoreError>>, StoreError> {
    let mut ids = HashMap::with_capacity(inserted.len());
    for row in inserted {
        let order_id: String = row.try_get("order_id")?;
        let order_id = order_id_column(&order_id)?;
        let status = status_column(row.try_get("status")?)?;
        ids.insert((order_id, status), EventId(row.try_get("id")?));
    }
    updates
        .iter()
        .map(|update| {
            let id = ids
                .get(&(update.order_id, update.status))
                .copied()
                .ok_or_else(|| StoreError::backend("a stored row was not returned"))?;
            Ok(Ok(OrderEvent {
                id,
                update: update.clone(),
            }))
        })
        .collect()
}

/// The order's status: its last event's, or its summary's when it was compacted.
async fn current_status(
    conn: &mut SqliteConnection,
    order_id: Uuid,
) -> Result<Option<OrderStatus>, sqlx::Error> {
    let max: Option<i64> = sqlx::query_scalar(
        "SELECT max(status) FROM (SELECT status FROM events WHERE order_id = ?1
                                  UNION ALL SELECT status FROM compacted WHERE order_id = ?1)",
    )
    .bind(order_id.to_string())
    .fetch_one(conn)
    .await?;
    Ok(max.and_then(status_from_db))
}

/// Summaries for the listed orders (a JSON array of ids), from their events; an order
/// compacted before keeps its creation time and takes the later status.
const SUMMARISE: &str = "INSERT INTO compacted (order_id, status, created_ms, updated_ms, last_id)
     SELECT order_id, max(status), coalesce(min(CASE WHEN status = 0 THEN at_ms END), min(at_ms)),
            max(at_ms), max(id)
     FROM events WHERE order_id IN (SELECT value FROM json_each(?1)) GROUP BY order_id
     ON CONFLICT (order_id) DO UPDATE SET
         status = max(compacted.status, excluded.status),
         updated_ms = max(compacted.updated_ms, excluded.updated_ms),
         last_id = max(compacted.last_id, excluded.last_id)";

/// The delivered orders due, read before the write lock is taken: nothing can follow
/// `Delivered`, so the answer holds until they are compacted.
async fn delivered_due(pool: &SqlitePool, due: &Due, limit: u32) -> Result<Vec<Uuid>, StoreError> {
    let Some(before) = due.delivered_before else {
        return Ok(Vec::new());
    };
    let delivered: Vec<String> = sqlx::query_scalar(
        "SELECT order_id FROM events WHERE status = 5 AND at_ms < ? ORDER BY at_ms LIMIT ?",
    )
    .bind(before.timestamp_millis())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    delivered.iter().map(|id| order_id_column(id)).collect()
}

/// The sweep's transaction, holding the write lock: adds the idle orders due (which an
/// append could otherwise move on meanwhile) to `orders` and compacts them all.
async fn compact_due(
    conn: &mut SqliteConnection,
    due: &Due,
    limit: u32,
    mut orders: Vec<Uuid>,
) -> Result<Compacted, StoreError> {
    // Unless the look for idle orders runs, it goes on where it was.
    let mut idle_after = due.idle_after;
    if let Some(before) = due.idle_before.filter(|_| (orders.len() as u32) < limit) {
        let rows =
            sqlx::query("SELECT id, order_id, at_ms FROM events WHERE id > ? ORDER BY id LIMIT ?")
                .bind(due.idle_after.map_or(0, |id| id.0))
                .bind(i64::from(IDLE_SCAN))
                .fetch_all(&mut *conn)
                .await?;
        let oldest = rows
            .iter()
            .map(|row| {
                let order: String = row.try_get("order_id")?;
                Ok((
                    EventId(row.try_get("id")?),
                    order_id_column(&order)?,
                    time_from_db(row.try_get("at_ms")?),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (candidates, next) = idle_candidates(&oldest, before);
        idle_after = next;
        let ids = serde_json::to_string(&candidates).map_err(StoreError::backend)?;
        let idle: Vec<String> = sqlx::query_scalar(
            "SELECT order_id FROM events WHERE order_id IN (SELECT value FROM json_each(?))
             GROUP BY order_id HAVING max(at_ms) < ? LIMIT ?",
        )
        .bind(ids)
        .bind(before.timestamp_millis())
        .bind(i64::from(limit) - orders.len() as i64)
        .fetch_all(&mut *conn)
        .await?;
        for id in idle {
            let id = order_id_column(&id)?;
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
    let ids = serde_json::to_string(&orders).map_err(StoreError::backend)?;
    let summarised = sqlx::query(SUMMARISE)
        .bind(&ids)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let deleted =
        sqlx::query("DELETE FROM events WHERE order_id IN (SELECT value FROM json_each(?))")
            .bind(&ids)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    Ok(Compacted {
        orders: summarised,
        events: deleted,
        idle_after,
    })
}

/// An order id as stored (lowercase hyphenated text).
fn order_id_column(stored: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(stored).map_err(|_| decode_error("order_id"))
}

fn event_from_row(row: &SqliteRow) -> Result<OrderEvent, StoreError> {
    let order_id: String = row.try_get("order_id")?;
    Ok(OrderEvent {
        id: EventId(row.try_get("id")?),
        update: OrderStatusUpdate {
            order_id: order_id_column(&order_id)?,
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

    async fn append_all_then(
        &self,
        updates: &[OrderStatusUpdate],
        committed: OnCommit,
    ) -> Result<Appended, StoreError> {
        self.writer.append_all(updates.to_vec(), committed).await
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
                    id: order_id_column(&id)?,
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

    async fn compact(&self, due: &Due, limit: u32) -> Result<Compacted, StoreError> {
        let delivered = delivered_due(&self.pool, due, limit).await?;
        let mut conn = self.pool.acquire().await?;
        let _turn = self.write_turn.lock().await;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let compacted = compact_due(&mut tx, due, limit, delivered).await?;
        tx.commit().await?;
        Ok(compacted)
    }

    async fn forget(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let _turn = self.write_turn.lock().await;
        let forgotten = sqlx::query(FORGET)
            .bind(i64::from(limit))
            .bind(before.timestamp_millis())
            .execute(&mut *conn)
            .await?
            .rows_affected();
        Ok(forgotten)
    }

    async fn summaries(&self, orders: &[Uuid]) -> Result<Vec<Compaction>, StoreError> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(orders).map_err(StoreError::backend)?;
        let rows = sqlx::query(
            "SELECT order_id, status, created_ms, updated_ms, last_id FROM compacted
             WHERE order_id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("order_id")?;
                Ok(Compaction {
                    summary: OrderSummary {
                        id: order_id_column(&id)?,
                        status: status_column(row.try_get("status")?)?,
                        created_at: time_from_db(row.try_get("created_ms")?),
                        updated_at: time_from_db(row.try_get("updated_ms")?),
                    },
                    last_id: EventId(row.try_get("last_id")?),
                })
            })
            .collect()
    }

    async fn horizon(&self) -> Result<Horizon, StoreError> {
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
    }

    async fn extent(&self) -> Result<Extent, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS events, (SELECT at_ms FROM events ORDER BY id LIMIT 1) AS oldest_ms
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
    }

    async fn reclaim(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        // Free pages go back to the file system a step at a time, each a short write that
        // appends wait behind, down to a slack the next sweep's appends will reuse anyway
        // (vacuuming it too would shrink the file only to grow it again).
        loop {
            let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
                .fetch_one(&mut *conn)
                .await?;
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(&mut *conn)
                .await?;
            let excess = free - pages * FREE_SLACK_PERCENT / 100;
            if excess <= 0 {
                break;
            }
            let turn = self.write_turn.lock().await;
            sqlx::query(&format!(
                "PRAGMA incremental_vacuum({})",
                excess.min(VACUUM_STEP_PAGES)
            ))
            .execute(&mut *conn)
            .await?;
            drop(turn);
            tokio::time::sleep(VACUUM_PAUSE).await;
        }
        // The log into the file, without blocking appends: the file shrinks once its last
        // pages are copied back, and the log is cut to `journal_size_limit` when it restarts.
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    /// A writer on a fresh database, and a pool to look at what it stored.
    async fn writer() -> (tempfile::TempDir, Writer, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store = SqliteStore::open(&url).await.unwrap();
        let options = SqliteConnectOptions::from_str(&url).unwrap();
        let writer = Writer {
            connection: Some(options.connect().await.unwrap()),
            options,
            write_turn: Arc::default(),
        };
        (dir, writer, store.pool)
    }

    fn update(order_id: Uuid, status: OrderStatus) -> OrderStatusUpdate {
        OrderStatusUpdate::new(order_id, status, Utc::now())
    }

    fn statuses(outcomes: &[Result<OrderEvent, StoreError>]) -> Vec<Option<OrderStatus>> {
        outcomes
            .iter()
            .map(|outcome| outcome.as_ref().ok().map(OrderEvent::status))
            .collect()
    }

    #[tokio::test]
    async fn a_batch_stores_several_steps_of_one_order_in_order_with_their_ids() {
        let (_dir, mut writer, pool) = writer().await;
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let batch = [
            update(a, OrderStatus::Created),
            update(b, OrderStatus::Created),
            update(a, OrderStatus::PaymentConfirmed),
            update(a, OrderStatus::Packed),
        ];
        // In one statement, not row by row after a refusal: the trigger sees the rows before.
        let (_scratch, mut other, _) = self::writer().await;
        let connection = other.connection.as_mut().unwrap();
        assert_eq!(insert_batch(connection, &batch).await.unwrap().len(), 4);
        let outcomes = writer.write(&batch).await.unwrap();
        let events: Vec<OrderEvent> = outcomes.into_iter().map(Result::unwrap).collect();
        for (event, sent) in events.iter().zip(&batch) {
            assert_eq!(&event.update, sent);
        }
        let ids: Vec<i64> = events.iter().map(|e| e.id.0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let stored = sqlx::query_scalar::<_, i64>("SELECT id FROM events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(stored, ids);
    }

    #[tokio::test]
    async fn a_refused_row_fails_alone_and_the_rest_of_its_batch_is_stored() {
        let (_dir, mut writer, pool) = writer().await;
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let batch = [
            update(a, OrderStatus::Created),
            update(a, OrderStatus::Created),
            update(b, OrderStatus::Packed),
            update(b, OrderStatus::Created),
            update(a, OrderStatus::PaymentConfirmed),
        ];
        let outcomes = writer.write(&batch).await.unwrap();
        assert_eq!(
            statuses(&outcomes),
            [
                Some(OrderStatus::Created),
                None,
                None,
                Some(OrderStatus::Created),
                Some(OrderStatus::PaymentConfirmed),
            ]
        );
        assert!(matches!(outcomes[1], Err(StoreError::Conflict(_))));
        assert!(matches!(outcomes[2], Err(StoreError::Conflict(_))));
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stored, 3);
    }

    #[tokio::test]
    async fn a_writer_without_its_connection_opens_a_fresh_one() {
        let (_dir, mut writer, _) = writer().await;
        // As after a failed batch.
        writer.connection = None;
        let order = Uuid::new_v4();
        let outcomes = writer.write(&[update(order, OrderStatus::Created)]).await;
        assert_eq!(statuses(&outcomes.unwrap()), [Some(OrderStatus::Created)]);
        assert!(writer.connection.is_some());
    }
}
