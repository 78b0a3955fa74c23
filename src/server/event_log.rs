//! The event log as the rest of the server sees it: publishing stores an event durably, then
//! fans it out; subscribing and reading go through the same place.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use crate::domain::{Order, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary};
use crate::server::hub::{Delivery, Hub, Subscription};
use crate::server::metrics::Metrics;
use crate::server::store::{EventStore, StoreError};

#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn EventStore>,
    hub: Hub,
    metrics: Arc<Metrics>,
}

impl EventLog {
    pub fn new(store: Arc<dyn EventStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            hub: Hub::default(),
            metrics,
        }
    }

    /// Stores `status` as the order's next event and, once it is durable, hands it to every
    /// subscriber. The returned event is what the publisher may acknowledge.
    pub async fn publish(
        &self,
        order_id: Uuid,
        status: OrderStatus,
    ) -> Result<OrderEvent, StoreError> {
        let update = OrderStatusUpdate::new(order_id, status, Utc::now());
        let event = self.store.append(&update).await?;
        self.metrics
            .events_published
            .fetch_add(1, Ordering::Relaxed);
        self.hub.publish(order_id, Arc::new(Delivery::new(&event)));
        Ok(event)
    }

    /// Creates the order unless it exists; returns its current status.
    pub async fn ensure_created(&self, order_id: Uuid) -> Result<OrderStatus, StoreError> {
        match self.publish(order_id, OrderStatus::Created).await {
            Ok(_) => Ok(OrderStatus::Created),
            Err(StoreError::Conflict(_)) => Ok(self
                .order(order_id)
                .await?
                .map_or(OrderStatus::Created, |order| order.status)),
            Err(err) => Err(err),
        }
    }

    /// Receives every event published for the order from now on.
    pub fn subscribe(&self, order_id: Uuid) -> Subscription {
        self.hub.subscribe(order_id)
    }

    pub async fn events(&self, order_id: Uuid) -> Result<Vec<OrderEvent>, StoreError> {
        self.store.events(order_id).await
    }

    pub async fn order(&self, order_id: Uuid) -> Result<Option<Order>, StoreError> {
        Ok(Order::from_events(self.store.events(order_id).await?))
    }

    pub async fn recent(&self, limit: u32) -> Result<Vec<OrderSummary>, StoreError> {
        self.store.recent(limit).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
