//! The embedded SQLite store (sqlx): WAL journal, `synchronous = FULL`, migrations from
//! `migrations/` applied at start-up.
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::{EventStore, StoreError};
use crate::domain::{EventId, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary};

/// SQLite's extended result code for a `RAISE(ABORT, …)` in a trigger.
const SQLITE_CONSTRAINT_TRIGGER: &str = "1811";

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
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
                std::fs::create_dir_all(folder)
                    .map_err(|err| StoreError::Backend(sqlx::Error::Io(err)))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|err| StoreError::Backend(err.into()))?;
        Ok(Self { pool })
    }

    async fn current_status(&self, order_id: Uuid) -> Result<Option<OrderStatus>, StoreError> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT max(status) FROM events WHERE order_id = ?")
                .bind(order_id.to_string())
                .fetch_one(&self.pool)
                .await?;
        Ok(max.and_then(status_from_db))
    }
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
    StoreError::Backend(sqlx::Error::Protocol(format!("corrupt row: {what}")))
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
        // One autocommit statement: UNIQUE and the trigger decide atomically, so two writers
        // can never both store the same status, nor skip one.
        let inserted = sqlx::query_scalar::<_, i64>(
            "INSERT INTO events (order_id, status, at_ms) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(update.order_id.to_string())
        .bind(update.status.index() as i64)
        .bind(update.timestamp.timestamp_millis())
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(id) => Ok(OrderEvent {
                id: EventId(id),
                update: update.clone(),
            }),
            Err(sqlx::Error::Database(db))
                if db.is_unique_violation()
                    || db.code().as_deref() == Some(SQLITE_CONSTRAINT_TRIGGER) =>
            {
                let current = self.current_status(update.order_id).await?;
                match OrderStatus::check_transition(current, update.status) {
                    Err(transition) => Err(StoreError::Conflict(transition)),
                    // The order moved on between the failed insert and this read; report it
                    // as the duplicate it was.
                    Ok(()) => Err(StoreError::Conflict(
                        crate::domain::TransitionError::NotNext {
                            current: current.unwrap_or(OrderStatus::Created),
                            expected: update.status,
                            requested: update.status,
                        },
                    )),
                }
            }
            Err(err) => Err(err.into()),
        }
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
