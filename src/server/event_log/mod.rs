//! The event log as the rest of the server sees it: publishing stores an event durably, then
//! fans it out; subscribing and reading go through the same place.
//!
//! [`follower`] is a stream's side of it: one subscriber's events, the stored ones and then
//! the live ones, in id order, each once.
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::domain::{EventId, Order, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary};
use crate::server::hub::{BusState, Delivery, History, Hub};
use crate::server::metrics::Metrics;
use crate::server::retention::Retention;
use crate::server::store::{Appended, EventStore, StoreError};

mod follower;
#[cfg(test)]
mod tests;

pub use follower::{Followed, Follower, Resume, Selection};

/// How many delivered orders' histories are kept encoded in memory.
const DELIVERED_CACHE: usize = 10_000;

/// Delivered orders' histories, each with the time of its `Delivered`.
type DeliveredCache = HashMap<Uuid, (History, DateTime<Utc>)>;

#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn EventStore>,
    hub: Arc<dyn Hub>,
    metrics: Arc<Metrics>,
    /// Histories of delivered orders, with when they were delivered: final until compacted,
    /// so they can be served without the store.
    delivered: Arc<Mutex<DeliveredCache>>,
    /// How long after `Delivered` an order may be compacted (the shorter retention that
    /// applies); `None`: never.
    compacted_after: Option<TimeDelta>,
}

impl EventLog {
    /// The log over `store`, fanning out through `hub`.
    pub fn new(store: Arc<dyn EventStore>, hub: Arc<dyn Hub>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            hub,
            metrics,
            delivered: Arc::default(),
            compacted_after: None,
        }
    }

    /// The log under `retention`: a delivered order's history is served from memory only
    /// until it may have been compacted.
    pub fn with_retention(mut self, retention: &Retention) -> Self {
        self.compacted_after = retention.shortest().delta();
        self
    }

    /// Stores `status` as the order's next event and, once it is durable, hands it to every
    /// subscriber. The returned event is what the publisher may acknowledge.
    ///
    /// A publish of the status the order already has is a retry whose answer was lost
    /// (spec §14): it answers the event already stored, and nothing is stored or sent again.
    /// Going back or skipping stays a conflict.
    pub async fn publish(
        &self,
        order_id: Uuid,
        status: OrderStatus,
    ) -> Result<OrderEvent, StoreError> {
        // One update is a batch of one: the same commit, fan-out and retry rule.
        self.publish_all(&[(order_id, status)])
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::backend("the store answered no outcome")))
    }

    /// Stores `updates` in one commit, in their order, then fans the stored events out, in
    /// that order: each one's outcome, as [`EventLog::publish`] would answer it alone (a
    /// status the order already had at that point in the batch is the stored event). `Err`:
    /// the commit failed and nothing is stored.
    ///
    /// The store's writer hands the events to the hub the moment they commit, all of a
    /// transaction's before any subscriber runs again (a stream that follows several of the
    /// batch's events is woken once for all of them) and before this call is woken: in
    /// commit order, and even if the publisher went away meanwhile.
    pub async fn publish_all(
        &self,
        updates: &[(Uuid, OrderStatus)],
    ) -> Result<Appended, StoreError> {
        let now = Utc::now();
        let updates: Vec<OrderStatusUpdate> = updates
            .iter()
            .map(|&(order_id, status)| OrderStatusUpdate::new(order_id, status, now))
            .collect();
        let (hub, metrics) = (self.hub.clone(), self.metrics.clone());
        let fan_out = move |outcomes: &[Result<OrderEvent, StoreError>]| {
            let mut published = 0;
            for event in outcomes.iter().filter_map(|o| o.as_ref().ok()) {
                hub.publish(event);
                published += 1;
            }
            metrics.events_published.inc_by(published);
        };
        let mut outcomes = self
            .store
            .append_all_then(&updates, Box::new(fan_out))
            .await?;
        // A refused update is a retry when its status was the order's last at its place in
        // the batch: among the order's events, leaving out those this batch stored after it.
        let mut histories: HashMap<Uuid, Vec<OrderEvent>> = HashMap::new();
        for i in 0..outcomes.len() {
            let Err(StoreError::Conflict(_)) = &outcomes[i] else {
                continue;
            };
            let update = &updates[i];
            let order_id = update.order_id;
            let later = outcomes[i + 1..]
                .iter()
                .zip(&updates[i + 1..])
                .filter(|(_, u)| u.order_id == order_id)
                .find_map(|(outcome, _)| outcome.as_ref().ok().map(|event| event.id));
            let history = match histories.entry(order_id) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(unread) => unread.insert(self.store.events(order_id).await?),
            };
            let at_its_place = history
                .iter()
                .take_while(|event| later.is_none_or(|later| event.id < later))
                .last();
            if let Some(last) = at_its_place.filter(|last| last.status() == update.status) {
                outcomes[i] = Ok(last.clone());
            }
        }
        Ok(outcomes)
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

    /// The order's events, encoded for streaming. A delivered order's history never changes,
    /// so it is read from the store once and then served from memory.
    pub async fn history(&self, order_id: Uuid) -> Result<History, StoreError> {
        let cache = || {
            self.delivered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        let compacted_by = |delivered_at: DateTime<Utc>| {
            self.compacted_after
                .is_some_and(|after| delivered_at + after <= Utc::now())
        };
        {
            let mut cache = cache();
            match cache.get(&order_id) {
                Some((history, delivered_at)) if !compacted_by(*delivered_at) => {
                    return Ok(history.clone());
                }
                // Perhaps compacted by now: the store says.
                Some(_) => {
                    cache.remove(&order_id);
                }
                None => {}
            }
        }
        let events = self.store.events(order_id).await?;
        let history: History = events
            .iter()
            .map(|event| Arc::new(Delivery::new(event)))
            .collect();
        if let Some(last) = events.last().filter(|last| last.status().is_final()) {
            let mut cache = cache();
            if cache.len() >= DELIVERED_CACHE {
                // Bounded: make room by dropping an arbitrary entry.
                if let Some(evicted) = cache.keys().next().copied() {
                    cache.remove(&evicted);
                }
            }
            cache.insert(order_id, (history.clone(), last.update.timestamp));
        }
        Ok(history)
    }

    pub async fn events(&self, order_id: Uuid) -> Result<Vec<OrderEvent>, StoreError> {
        self.store.events(order_id).await
    }

    /// The order with its stored events, and its summary when it was compacted.
    pub async fn order(&self, order_id: Uuid) -> Result<Option<Order>, StoreError> {
        let events = self.store.events(order_id).await?;
        let summary = if may_be_compacted(events.first().map(OrderEvent::status)) {
            self.store
                .summaries(&[order_id])
                .await?
                .pop()
                .map(|compaction| compaction.summary)
        } else {
            None
        };
        Ok(Order::from_history(summary, events))
    }

    pub async fn recent(&self, limit: u32) -> Result<Vec<OrderSummary>, StoreError> {
        self.store.recent(limit).await
    }

    /// The largest id stored: a page that lists orders resumes every order's stream after it.
    pub async fn last_id(&self) -> Result<Option<EventId>, StoreError> {
        self.store.last_id().await
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

/// Whether an order whose first stored event has `first` status (`None`: it has none) may
/// have been compacted, so that only its summary says where it stands. Stored events that
/// begin with `Created` belong to an order never compacted: compaction deletes all of an
/// order's events, and a compacted order cannot be created again.
fn may_be_compacted(first: Option<OrderStatus>) -> bool {
    first != Some(OrderStatus::Created)
}
