//! The event log as the rest of the server sees it: publishing stores an event durably, then
//! fans it out; subscribing and reading go through the same place.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use uuid::Uuid;

use tokio::sync::broadcast::error::RecvError;

use crate::domain::{EventId, Order, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary};
use crate::server::hub::{BusState, Delivery, Hub, Subscription};
use crate::server::metrics::Metrics;
use crate::server::store::{EventStore, StoreError};

/// An order's events, encoded, oldest first.
pub type History = Arc<[Arc<Delivery>]>;

/// How many delivered orders' histories are kept encoded in memory.
const DELIVERED_CACHE: usize = 10_000;

#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn EventStore>,
    hub: Arc<dyn Hub>,
    metrics: Arc<Metrics>,
    /// Histories of delivered orders: final, so they can be served without the store.
    delivered: Arc<Mutex<HashMap<Uuid, History>>>,
}

impl EventLog {
    /// The log over `store`, fanning out through `hub`.
    pub fn new(store: Arc<dyn EventStore>, hub: Arc<dyn Hub>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            hub,
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
        self.metrics.events_published.inc();
        self.hub.publish(&event);
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

    /// Follows an order from just after `resume` (from its start when `resume` is none or
    /// not one of its events): its stored events, then its live ones, in order, each once.
    ///
    /// It subscribes *before* it reads the history, so an event committed after the read
    /// arrives live and one committed before is in the history (one in both is skipped).
    pub async fn follow(
        &self,
        order_id: Uuid,
        resume: Option<EventId>,
    ) -> Result<Follower, StoreError> {
        let subscription = self.subscribe(order_id);
        let history = self.history(order_id).await?;
        // Position i of a history holds status i (the schema guarantees it), so the position
        // after the resume event is also the index of the next status the follower needs.
        let start = resume
            .and_then(|id| history.iter().position(|delivery| delivery.id == id))
            .map_or(0, |position| position + 1);
        Ok(Follower {
            log: self.clone(),
            order_id,
            subscription,
            resumed_at_end: start > 0 && history[start - 1].status.is_final(),
            pending: history[start..].iter().cloned().collect(),
            next_status: start,
            catching_up: false,
        })
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

    /// The bus between instances, as `/healthz` reports it.
    pub fn bus(&self) -> BusState {
        self.hub.bus()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// What [`Follower::next`] hands out.
#[derive(Debug)]
pub enum Followed {
    /// The order's next event.
    Event(Arc<Delivery>),
    /// Delivered: nothing more will come.
    End,
    /// The follower fell behind the hub's buffer; it must resume from its last event.
    Lagged,
    /// The store failed while catching up.
    Failed,
}

/// One follower of one order. See [`EventLog::follow`].
pub struct Follower {
    log: EventLog,
    order_id: Uuid,
    subscription: Subscription,
    resumed_at_end: bool,
    /// Events read from the store, not handed out yet.
    pending: VecDeque<Arc<Delivery>>,
    /// Index of the status the follower needs next.
    next_status: usize,
    /// A live event skipped ahead: what came before it is read back from the store.
    catching_up: bool,
}

impl Follower {
    /// The resume point was the order's `Delivered` event: there is nothing to follow.
    pub fn resumed_at_end(&self) -> bool {
        self.resumed_at_end
    }

    /// The next event, in order and once each. Cancel-safe: dropping the future loses
    /// nothing, so it can race a timer in `select!`.
    pub async fn next(&mut self) -> Followed {
        loop {
            if self.next_status >= OrderStatus::ALL.len() {
                return Followed::End;
            }
            if let Some(delivery) = self.pending.pop_front() {
                if delivery.status.index() == self.next_status {
                    self.next_status += 1;
                    return Followed::Event(delivery);
                }
                continue;
            }
            if self.catching_up {
                // Concurrent publishers' events reached the hub out of order.
                let Ok(stored) = self.log.history(self.order_id).await else {
                    return Followed::Failed;
                };
                self.pending
                    .extend(stored.iter().skip(self.next_status).cloned());
                self.catching_up = false;
                continue;
            }
            match self.subscription.recv().await {
                Ok(delivery) if delivery.status.index() == self.next_status => {
                    self.next_status += 1;
                    return Followed::Event(delivery);
                }
                // Newer than the next one: catch up. Older: already handed out.
                Ok(delivery) => self.catching_up = delivery.status.index() > self.next_status,
                Err(RecvError::Lagged(_)) => return Followed::Lagged,
                Err(RecvError::Closed) => return Followed::End,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::server::hub::LocalHub;
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
        async fn events_after(
            &self,
            after: Option<EventId>,
            limit: u32,
        ) -> Result<Vec<OrderEvent>, StoreError> {
            self.inner.events_after(after, limit).await
        }
        async fn last_id(&self) -> Result<Option<EventId>, StoreError> {
            self.inner.last_id().await
        }
        async fn recent(&self, limit: u32) -> Result<Vec<OrderSummary>, StoreError> {
            self.inner.recent(limit).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
    }

    async fn log() -> (tempfile::TempDir, EventLog) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store = Arc::new(SqliteStore::open(&url).await.unwrap());
        (
            dir,
            EventLog::new(store, Arc::new(LocalHub::default()), Arc::default()),
        )
    }

    /// Follows until the end; returns the statuses handed out.
    async fn statuses(mut follower: Follower) -> Vec<OrderStatus> {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), follower.next()).await {
                Ok(Followed::Event(delivery)) => seen.push(delivery.status),
                Ok(Followed::End) => return seen,
                other => panic!("unexpected {other:?} after {seen:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn followers_get_every_event_once_in_order_while_publishers_race() {
        let (_dir, log) = log().await;
        for _round in 0..20 {
            let order = Uuid::new_v4();
            // Followers start before, during and after publishing.
            let followers: Vec<_> = (0..12u64)
                .map(|n| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_micros(n * 150)).await;
                        statuses(log.follow(order, None).await.unwrap()).await
                    })
                })
                .collect();
            // Three publishers race for every status; the store lets one win each.
            let publishers: Vec<_> = (0..3)
                .map(|_| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        for status in OrderStatus::ALL {
                            let _ = log.publish(order, status).await;
                        }
                    })
                })
                .collect();
            for publisher in publishers {
                publisher.await.unwrap();
            }
            for follower in followers {
                assert_eq!(follower.await.unwrap(), OrderStatus::ALL);
            }
        }
    }

    #[tokio::test]
    async fn a_follower_resumes_after_its_event_or_from_the_start() {
        let (_dir, log) = log().await;
        let order = Uuid::new_v4();
        let mut ids = Vec::new();
        for status in OrderStatus::ALL {
            ids.push(log.publish(order, status).await.unwrap().id);
        }
        let after_packed = statuses(log.follow(order, Some(ids[2])).await.unwrap()).await;
        assert_eq!(after_packed, OrderStatus::ALL[3..]);
        let unknown = statuses(log.follow(order, Some(EventId(i64::MAX))).await.unwrap()).await;
        assert_eq!(unknown, OrderStatus::ALL);
        let other_order = log
            .publish(Uuid::new_v4(), OrderStatus::Created)
            .await
            .unwrap();
        let foreign = statuses(log.follow(order, Some(other_order.id)).await.unwrap()).await;
        assert_eq!(foreign, OrderStatus::ALL);
        let at_end = log.follow(order, Some(ids[5])).await.unwrap();
        assert!(at_end.resumed_at_end());
        assert!(!log
            .follow(order, Some(ids[4]))
            .await
            .unwrap()
            .resumed_at_end());
    }

    #[tokio::test]
    async fn a_live_event_that_skips_ahead_makes_the_follower_catch_up_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store = Arc::new(SqliteStore::open(&url).await.unwrap());
        let log = EventLog::new(store.clone(), Arc::new(LocalHub::default()), Arc::default());
        let order = Uuid::new_v4();
        log.publish(order, OrderStatus::Created).await.unwrap();
        let mut follower = log.follow(order, None).await.unwrap();
        // Two events stored, but only the later one reaches the hub (as when two
        // publishers' hand-offs cross).
        let update = |status| OrderStatusUpdate::new(order, status, Utc::now());
        store
            .append(&update(OrderStatus::PaymentConfirmed))
            .await
            .unwrap();
        let packed = store.append(&update(OrderStatus::Packed)).await.unwrap();
        log.hub.publish(&packed);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), follower.next());
            match next
                .await
                .expect("the follower caught up instead of waiting")
            {
                Followed::Event(delivery) => seen.push(delivery.status),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                OrderStatus::Created,
                OrderStatus::PaymentConfirmed,
                OrderStatus::Packed
            ]
        );
    }

    #[tokio::test]
    async fn a_delivered_orders_history_is_read_from_the_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store = Arc::new(Counting {
            inner: SqliteStore::open(&url).await.unwrap(),
            reads: AtomicUsize::new(0),
        });
        let log = EventLog::new(store.clone(), Arc::new(LocalHub::default()), Arc::default());
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
            assert_eq!(delivery.frame, crate::server::sse::event_frame(event));
        }
    }
}
