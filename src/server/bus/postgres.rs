//! The bus over Postgres `LISTEN/NOTIFY`, for a cluster that has a Postgres store and no Redis.
//! Announcing is `pg_notify` on a small pool of its own; listening uses sqlx's `PgListener`,
//! read with `try_recv`, which reports a lost connection instead of quietly reconnecting, so
//! that the hub catches up.
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use super::{BoxError, Bus, CHANNEL};
use crate::domain::OrderEvent;

/// How long connecting or notifying may take.
const TIMEOUT: Duration = Duration::from_secs(2);

pub struct PgNotifyBus {
    url: String,
    /// Connects lazily, so it never holds a connection the store might want.
    publisher: PgPool,
}

impl PgNotifyBus {
    pub fn new(database_url: &str) -> Result<Self, BoxError> {
        let publisher = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(TIMEOUT)
            .connect_lazy(database_url)?;
        Ok(Self {
            url: database_url.to_owned(),
            publisher,
        })
    }
}

#[async_trait]
impl Bus for PgNotifyBus {
    async fn announce(&self, events: &[OrderEvent]) -> Result<(), BoxError> {
        let payloads = events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        // One statement, so one round trip; Postgres delivers its notifications in order.
        sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) WITH ORDINALITY AS p(payload, n) ORDER BY n")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(&self.publisher)
            .await?;
        Ok(())
    }

    async fn listen(&self) -> Result<BoxStream<'static, OrderEvent>, BoxError> {
        let mut listener = tokio::time::timeout(TIMEOUT, PgListener::connect(&self.url))
            .await
            .map_err(|_| "connecting to Postgres timed out")??;
        listener.listen(CHANNEL).await?;
        Ok(
            futures::stream::unfold(listener, |mut listener| async move {
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            if let Ok(event) = serde_json::from_str(notification.payload()) {
                                return Some((event, listener));
                            }
                        }
                        // The connection was lost (Ok(None)) or broke: the stream ends.
                        Ok(None) | Err(_) => return None,
                    }
                }
            })
            .boxed(),
        )
    }
}
