//! The event log as the rest of the server sees it: publishing stores an event durably, then
//! fans it out; subscribing and reading go through the same place.
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use uuid::Uuid;

use crate::domain::{Order, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary};
use crate::server::hub::{Delivery, Hub, Subscription};
use crate::server::metrics::Metrics;
use crate::server::store::{EventStore, StoreError};

/// An order's events, encoded, oldest first.
pub type History = Arc<[Arc<Delivery>]>;

/// How many delivered orders' histories are kept encoded in memory.
const DELIVERED_CACHE: usize = 10_000;

#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn EventStore>,
    hub: Hub,
    metrics: Arc<Metrics>,
    /// Histories of delivered orders: final, so they can be served without the store.
    delivered: Arc<Mutex<HashMap<Uuid, History>>>,
}

impl EventLog {
    pub fn new(store: Arc<dyn EventStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            hub: Hub::default(),
            metrics,
            delivered: Arc::default(),
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

    /// The order's events, encoded for streaming. A delivered order's history never changes,
    /// so it is read from the store once and then served from memory.
    pub async fn history(&self, order_id: Uuid) -> Result<History, StoreError> {
        let cache = || {
            self.delivered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(history) = cache().get(&order_id) {
            return Ok(history.clone());
        }
        let events = self.store.events(order_id).await?;
        let history: History = events
            .iter()
            .map(|event| Arc::new(Delivery::new(event)))
            .collect();
        if history.last().is_some_and(|last| last.status.is_final()) {
            let mut cache = cache();
            if cache.len() >= DELIVERED_CACHE {
                // Bounded: make room by dropping an arbitrary entry.
                if let Some(evicted) = cache.keys().next().copied() {
                    cache.remove(&evicted);
                }
            }
            cache.insert(order_id, history.clone());
        }
        Ok(history)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;

    use super::*;
    use crate::server::store::SqliteStore;

    /// Counts how often the events of an order are read from the store.
    struct Counting {
        inner: SqliteStore,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl EventStore for Counting {
        async fn append(&self, update: &OrderStatusUpdate) -> Result<OrderEvent, StoreError> {
            self.inner.append(update).await
        }
        async fn events(&self, order_id: Uuid) -> Result<Vec<OrderEvent>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.events(order_id).await
        }
        async fn recent(&self, limit: u32) -> Result<Vec<OrderSummary>, StoreError> {
            self.inner.recent(limit).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
    }

    #[tokio::test]
    async fn a_delivered_orders_history_is_read_from_the_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store = Arc::new(Counting {
            inner: SqliteStore::open(&url).await.unwrap(),
            reads: AtomicUsize::new(0),
        });
        let log = EventLog::new(store.clone(), Arc::default());
        let order = Uuid::new_v4();
        for status in &OrderStatus::ALL[..5] {
            log.publish(order, *status).await.unwrap();
        }
        // Not delivered yet: every read goes to the store, and sees new events.
        assert_eq!(log.history(order).await.unwrap().len(), 5);
        assert_eq!(log.history(order).await.unwrap().len(), 5);
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
        log.publish(order, OrderStatus::Delivered).await.unwrap();
        let first = log.history(order).await.unwrap();
        let again = log.history(order).await.unwrap();
        assert_eq!(store.reads.load(Ordering::SeqCst), 3);
        assert_eq!(first.len(), 6);
        assert!(Arc::ptr_eq(&first, &again));
        let stored = store.inner.events(order).await.unwrap();
        for (delivery, event) in first.iter().zip(&stored) {
            assert_eq!(delivery.id, event.id);
            assert_eq!(delivery.frame, crate::server::stream::encode_event(event));
        }
    }
}
