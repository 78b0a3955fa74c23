//! The bus over Redis pub/sub (the `redis` crate on tokio): announcements go through a
//! `ConnectionManager`, which reconnects by itself; listening uses a pub/sub connection of
//! its own whose message stream ends when the connection is lost, so the hub knows to catch
//! up and reconnect.
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::{BoxError, Bus, CHANNEL};
use crate::domain::OrderEvent;

/// How long connecting to or asking Redis may take.
const TIMEOUT: Duration = Duration::from_secs(1);

pub struct RedisBus {
    client: redis::Client,
    /// Made on the first announcement that finds Redis up, then kept (it reconnects itself).
    publisher: Mutex<Option<ConnectionManager>>,
}

impl RedisBus {
    /// A bus on the Redis at `url` (`redis://host:port`); it connects when first used, so an
    /// instance starts even while Redis is down.
    pub fn new(url: &str) -> Result<Self, BoxError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            publisher: Mutex::new(None),
        })
    }

    async fn publisher(&self) -> Result<ConnectionManager, BoxError> {
        let mut publisher = self.publisher.lock().await;
        if let Some(connection) = publisher.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let connection = self
            .client
            .get_connection_manager_with_config(config)
            .await?;
        *publisher = Some(connection.clone());
        Ok(connection)
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn announce(&self, events: &[OrderEvent]) -> Result<(), BoxError> {
        let mut pipeline = redis::pipe();
        for event in events {
            pipeline
                .cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(serde_json::to_string(event)?)
                .ignore();
        }
        let mut connection = self.publisher().await?;
        pipeline.exec_async(&mut connection).await?;
        Ok(())
    }

    async fn listen(&self) -> Result<BoxStream<'static, OrderEvent>, BoxError> {
        let mut pubsub = tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| "connecting to Redis timed out")??;
        pubsub.subscribe(CHANNEL).await?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|message| async move {
                let payload: Vec<u8> = message.get_payload().ok()?;
                serde_json::from_slice(&payload).ok()
            })
            .boxed())
    }
}
