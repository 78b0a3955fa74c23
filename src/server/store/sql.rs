//! What the two sqlx backends share: how a driver error becomes a [`StoreError`], how a
//! refused append is explained, and how stored columns become domain values.
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{OrderStatus, TransitionError};

impl From<sqlx::Error> for StoreError {
    /// Errors that mean "cannot reach the store now" are [`StoreError::Unavailable`] (a `503`
    /// for publishers); the rest are backend failures.
    fn from(err: sqlx::Error) -> Self {
        let unreachable = match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // Postgres: 08 connection exceptions, 57P operator intervention (shutting down,
            // cannot connect now), 53 insufficient resources.
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
            }),
            _ => false,
        };
        if unreachable {
            StoreError::unavailable(err)
        } else {
            StoreError::backend(err)
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        match err {
            sqlx::migrate::MigrateError::Execute(err) => err.into(),
            other => StoreError::backend(other),
        }
    }
}

/// Why `requested` was refused when the order is at `current`.
pub(super) fn conflict(current: Option<OrderStatus>, requested: OrderStatus) -> TransitionError {
    OrderStatus::check_transition(current, requested)
        .err()
        // Refused by the database although it now looks allowed: a concurrent duplicate.
        .unwrap_or(TransitionError::NotNext {
            current: current.unwrap_or(OrderStatus::Created),
            expected: requested,
            requested,
        })
}

pub(super) fn status_from_db(index: i64) -> Option<OrderStatus> {
    usize::try_from(index)
        .ok()
        .and_then(OrderStatus::from_index)
}

pub(super) fn status_column(index: i64) -> Result<OrderStatus, StoreError> {
    status_from_db(index).ok_or_else(|| decode_error("status"))
}

pub(super) fn time_from_db(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(super) fn decode_error(what: &str) -> StoreError {
    StoreError::backend(format!("corrupt row: {what}"))
}

/// Forgets compacted orders (`RETAIN_SUMMARY`), the same statement on both backends: `$1`
/// the most summaries looked at, `$2` the time in milliseconds their last event must be
/// older than. Only the oldest `$1` summaries by their last id are looked at, so that a
/// batch costs the same however many summaries there are (ids follow time: those are the
/// oldest updates). Kept: one with events after it (an idle order that went on), and the
/// newest, whose `last_id` is how far the log was compacted through.
pub(super) const FORGET: &str = "DELETE FROM compacted WHERE order_id IN (
         SELECT oldest.order_id
         FROM (SELECT order_id, updated_ms FROM compacted ORDER BY last_id LIMIT $1) AS oldest
         WHERE oldest.updated_ms < $2
           AND NOT EXISTS (SELECT 1 FROM events WHERE events.order_id = oldest.order_id))
     AND last_id < (SELECT max(last_id) FROM compacted)";
