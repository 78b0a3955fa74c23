//! The server as the pages see it: [`Backend`], provided as context to every page and
//! server function (see [`super::router`]).
use async_trait::async_trait;
use uuid::Uuid;

use super::simulate::DEFAULT_INTERVAL_MS;
use super::AppState;
use crate::domain::{EventId, Order, OrderSummary};
use crate::pages::ssr::{Backend, BackendError};

#[async_trait]
impl Backend for AppState {
    fn demo_mode(&self) -> bool {
        self.tokens.demo_mode()
    }

    async fn order(&self, id: Uuid) -> Result<Option<Order>, BackendError> {
        Ok(self.event_log.order(id).await?)
    }

    async fn last_id(&self) -> Result<Option<EventId>, BackendError> {
        Ok(self.event_log.last_id().await?)
    }

    async fn recent(&self, limit: u32) -> Result<Vec<OrderSummary>, BackendError> {
        Ok(self.event_log.recent(limit).await?)
    }

    async fn place_demo_order(&self) -> Result<Uuid, BackendError> {
        let order_id = Uuid::new_v4();
        self.simulations
            .start(
                &self.event_log,
                order_id,
                std::time::Duration::from_millis(DEFAULT_INTERVAL_MS),
            )
            .await?;
        Ok(order_id)
    }
}
