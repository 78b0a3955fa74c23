//! The embedded SQLite store (sqlx): WAL journal, `synchronous = FULL`, migrations from
//! `migrations/` applied at start-up.
//!
//! Appends go through one writer task that commits whatever appends are waiting as one
//! transaction (group commit): one fsync acknowledges them all, so concurrent publishers do
//! not queue one fsync each. No append is acknowledged before its transaction has committed.
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{EventStore, StoreError};
use crate::domain::{
    EventId, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary, TransitionError,
};

/// SQLite's extended result code for a `RAISE(ABORT, …)` in a trigger.
const SQLITE_CONSTRAINT_TRIGGER: &str = "1811";

/// The most appends committed together.
const MAX_BATCH: usize = 256;

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: mpsc::Sender<Append>,
}

/// An append waiting for the writer, with where to send its outcome.
#[derive(Debug)]
struct Append {
    update: OrderStatusUpdate,
    done: oneshot::Sender<Result<OrderEvent, StoreError>>,
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
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(StoreError::backend)?;
        let (writer, appends) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_appends(pool.clone(), appends));
        Ok(Self { pool, writer })
    }
}

/// The writer task: takes every append waiting, stores them in one transaction, answers
/// each once the transaction has committed. Ends when every store handle is gone.
async fn write_appends(pool: SqlitePool, mut appends: mpsc::Receiver<Append>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while appends.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match write_batch(&pool, &batch).await {
            Ok(outcomes) => {
                for (append, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = append.done.send(outcome);
                }
            }
            // Each publisher is told, and whoever answers it logs the cause once.
            Err(err) => {
                let appends = batch.len();
                for append in batch.drain(..) {
                    let cause = format!("committing {appends} appends together failed: {err}");
                    let _ = append.done.send(Err(StoreError::backend(cause)));
                }
            }
        }
    }
}

/// Inserts each update in one transaction. An insert that breaks a constraint (a duplicate or
/// a skipped status) fails alone: SQLite aborts that statement and keeps the transaction.
async fn write_batch(
    pool: &SqlitePool,
    batch: &[Append],
) -> Result<Vec<Result<OrderEvent, StoreError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for Append { update, .. } in batch {
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
            Err(err) => return Err(err),
        });
    }
    tx.commit().await?;
    Ok(outcomes)
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

/// Why `requested` was refused when the order is at `current`.
fn conflict(current: Option<OrderStatus>, requested: OrderStatus) -> TransitionError {
    OrderStatus::check_transition(current, requested)
        .err()
        // Refused by the database although it now looks allowed: a concurrent duplicate.
        .unwrap_or(TransitionError::NotNext {
            current: current.unwrap_or(OrderStatus::Created),
            expected: requested,
            requested,
        })
}

fn status_from_db(index: i64) -> Option<OrderStatus> {
    usize::try_from(index)
        .ok()
        .and_then(OrderStatus::from_index)
}

fn time_from_db(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn decode_error(what: &str) -> StoreError {
    StoreError::backend(format!("corrupt row: {what}"))
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::backend(err)
    }
}

fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<OrderEvent, StoreError> {
    let order_id: String = row.try_get("order_id")?;
    Ok(OrderEvent {
        id: EventId(row.try_get("id")?),
        update: OrderStatusUpdate {
            order_id: Uuid::parse_str(&order_id).map_err(|_| decode_error("order_id"))?,
            status: status_from_db(row.try_get("status")?).ok_or_else(|| decode_error("status"))?,
            timestamp: time_from_db(row.try_get("at_ms")?),
        },
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, update: &OrderStatusUpdate) -> Result<OrderEvent, StoreError> {
        // UNIQUE and the trigger decide inside the database, so two writers can never both
        // store the same status, nor skip one, whatever the code around them does.
        let (done, outcome) = oneshot::channel();
        let stopped = || StoreError::backend("the SQLite writer task has stopped");
        self.writer
            .send(Append {
                update: update.clone(),
                done,
            })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
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
                    status: status_from_db(row.try_get("status")?)
                        .ok_or_else(|| decode_error("status"))?,
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/orders.db", dir.path().display());
        let store = SqliteStore::open(&url).await.unwrap();
        (dir, store)
    }

    fn update(order: Uuid, status: OrderStatus) -> OrderStatusUpdate {
        OrderStatusUpdate::new(order, status, Utc::now())
    }

    #[tokio::test]
    async fn creates_the_file_and_folder_and_stores_a_whole_order_in_order() {
        let (dir, store) = store().await;
        assert!(dir.path().join("nested/orders.db").exists());
        let order = Uuid::new_v4();
        let mut ids = Vec::new();
        for status in OrderStatus::ALL {
            ids.push(store.append(&update(order, status)).await.unwrap().id);
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let events = store.events(order).await.unwrap();
        let statuses: Vec<_> = events.iter().map(|e| e.status()).collect();
        assert_eq!(statuses, OrderStatus::ALL);
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    }

    #[tokio::test]
    async fn the_schema_refuses_duplicates_skips_and_orphans() {
        let (_dir, store) = store().await;
        let order = Uuid::new_v4();
        // Nothing may come before Created.
        assert!(matches!(
            store
                .append(&update(order, OrderStatus::PaymentConfirmed))
                .await,
            Err(StoreError::Conflict(_))
        ));
        store
            .append(&update(order, OrderStatus::Created))
            .await
            .unwrap();
        assert!(matches!(
            store.append(&update(order, OrderStatus::Created)).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.append(&update(order, OrderStatus::Shipped)).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.events(order).await.unwrap().len(), 1);
        // The database itself refuses, whatever code writes to it.
        let raw = sqlx::query("INSERT INTO events (order_id, status, at_ms) VALUES (?, 0, 0)")
            .bind(order.to_string())
            .execute(&store.pool)
            .await;
        assert!(raw.is_err());
    }

    #[tokio::test]
    async fn concurrent_writers_of_one_status_store_it_once() {
        let (_dir, store) = store().await;
        let order = Uuid::new_v4();
        store
            .append(&update(order, OrderStatus::Created))
            .await
            .unwrap();
        let attempts = (0..16).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(&update(order, OrderStatus::PaymentConfirmed))
                    .await
            })
        });
        let results = futures::future::join_all(attempts).await;
        let ok = results
            .iter()
            .filter(|r| r.as_ref().unwrap().is_ok())
            .count();
        assert_eq!(ok, 1);
        assert_eq!(store.events(order).await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_commit_answers_each_append_on_its_own_and_keeps_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store = SqliteStore::open(&url).await.unwrap();
        let orders: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
        // Each order's Created twice and a skipped status once, all at the same time.
        let attempts = orders.iter().flat_map(|&order| {
            [
                OrderStatus::Created,
                OrderStatus::Created,
                OrderStatus::Packed,
            ]
            .map(|status| {
                let store = store.clone();
                tokio::spawn(async move { store.append(&update(order, status)).await })
            })
        });
        let results = futures::future::join_all(attempts).await;
        let ok = results
            .iter()
            .filter(|r| r.as_ref().unwrap().is_ok())
            .count();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r.as_ref().unwrap(), Err(StoreError::Conflict(_))))
            .count();
        assert_eq!((ok, conflicts), (50, 100));
        drop(store);
        let reopened = SqliteStore::open(&url).await.unwrap();
        for order in orders {
            let events = reopened.events(order).await.unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].status(), OrderStatus::Created);
        }
    }

    #[tokio::test]
    async fn recent_lists_newest_first_with_current_status() {
        let (_dir, store) = store().await;
        let first = Uuid::new_v4();
        let second = Uuid::new_v4();
        store
            .append(&update(first, OrderStatus::Created))
            .await
            .unwrap();
        store
            .append(&update(second, OrderStatus::Created))
            .await
            .unwrap();
        store
            .append(&update(first, OrderStatus::PaymentConfirmed))
            .await
            .unwrap();
        let recent = store.recent(10).await.unwrap();
        let seen: Vec<_> = recent.iter().map(|o| (o.id, o.status)).collect();
        assert_eq!(
            seen,
            [
                (second, OrderStatus::Created),
                (first, OrderStatus::PaymentConfirmed)
            ]
        );
        assert_eq!(store.recent(1).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn events_survive_reopening_with_the_same_ids() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let order = Uuid::new_v4();
        let before = {
            let store = SqliteStore::open(&url).await.unwrap();
            store
                .append(&update(order, OrderStatus::Created))
                .await
                .unwrap();
            store
                .append(&update(order, OrderStatus::PaymentConfirmed))
                .await
                .unwrap();
            store.events(order).await.unwrap()
        };
        let store = SqliteStore::open(&url).await.unwrap();
        assert_eq!(store.events(order).await.unwrap(), before);
    }
}
