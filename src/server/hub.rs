//! Where events are fanned out: one bounded broadcast channel per order that has
//! subscribers, created by the first subscriber and removed with the last, and one for
//! subscribers of every order (the back office's stream). Every subscriber of an order gets
//! every event; nothing is kept for orders nobody watches (the store has it).
//!
//! The hub carries deliveries: an event encoded once as its frame ([`sse`]), shared by every
//! subscriber, with the id and status followers order them by. It knows nothing of HTTP.
//!
//! While an order is watched the hub also keeps its history, once a subscriber has read it
//! from the store, and extends it with every event it delivers: the order's other
//! subscribers start from it instead of each reading the store (10,000 watchers of one order
//! cost one read, not 10,000).
//!
//! [`Hub`] is the seam between one instance and several: [`LocalHub`] hands an event to this
//! instance's subscribers; the bus-backed hub ([`crate::server::bus::BusHub`]) wraps a local
//! one and also tells the other instances, and hears theirs. The local map sits behind a std
//! `Mutex`, not tokio's: every critical section is a map lookup or insert that never awaits,
//! so an async lock would only add cost.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::domain::{EventId, OrderEvent, OrderStatus};
use crate::server::sse;

/// How many events a subscriber may fall behind before it is dropped. An order has at most
/// six events, so only a subscriber whose connection stalls can ever reach it.
pub const SUBSCRIBER_BUFFER: usize = 16;
/// The same for subscribers of every order, who see every order's events go by.
pub const ALL_ORDERS_BUFFER: usize = 1024;

/// An event as it goes out: encoded once, shared by every subscriber.
#[derive(Debug)]
pub struct Delivery {
    pub id: EventId,
    pub order_id: Uuid,
    pub status: OrderStatus,
    /// The encoded event, written to subscribers as it is.
    pub frame: Bytes,
}

impl Delivery {
    pub fn new(event: &OrderEvent) -> Self {
        Self {
            id: event.id,
            order_id: event.update.order_id,
            status: event.status(),
            frame: sse::event_frame(event),
        }
    }
}

/// An order's events, encoded, oldest first: `history[i]` has status index `i`.
pub type History = Arc<[Arc<Delivery>]>;

/// What `/healthz` and `/metrics` say of the bus between instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusState {
    /// One instance: no bus is configured.
    None,
    Connected,
    /// Configured but not connected now: events still arrive, through the periodic catch-up.
    Disconnected,
}

/// Where committed events are fanned out to the streams that follow them.
pub trait Hub: Send + Sync + 'static {
    /// Starts receiving every event of `order_id` that reaches this instance from now on.
    fn subscribe(&self, order_id: Uuid) -> Subscription;

    /// Starts receiving every event of every order that reaches this instance from now on.
    fn subscribe_all(&self) -> Subscription;

    /// Fans out an event this instance has just committed.
    fn publish(&self, event: &OrderEvent);

    /// The bus between instances, if any.
    fn bus(&self) -> BusState {
        BusState::None
    }
}

type Channels = HashMap<Uuid, Channel>;

/// A watched order.
struct Channel {
    sender: broadcast::Sender<Arc<Delivery>>,
    /// Every event delivered here so far, and perhaps later ones: see [`Subscription::remember`].
    history: Option<History>,
    /// How many events were delivered since the order came to be watched.
    deliveries: u64,
}

impl Channel {
    fn new() -> Self {
        Self {
            sender: broadcast::channel(SUBSCRIBER_BUFFER).0,
            history: None,
            deliveries: 0,
        }
    }

    /// Keeps the history whole: `delivery` is added when it is the next status, left out when
    /// the history has it already (a late copy), and the history is forgotten when one is
    /// missing before it (events of one order heard out of order from two instances).
    fn record(&mut self, delivery: &Arc<Delivery>) {
        self.deliveries += 1;
        let Some(history) = &self.history else { return };
        let next = history.len();
        let status = delivery.status.index();
        if status == next {
            let mut extended = history.to_vec();
            extended.push(delivery.clone());
            self.history = Some(extended.into());
        } else if status > next {
            self.history = None;
        }
    }
}

/// The hub of one instance: a bounded broadcast channel per watched order, and one for
/// every order.
#[derive(Clone)]
pub struct LocalHub {
    channels: Arc<Mutex<Channels>>,
    all_orders: broadcast::Sender<Arc<Delivery>>,
}

impl Default for LocalHub {
    fn default() -> Self {
        Self {
            channels: Arc::default(),
            all_orders: broadcast::channel(ALL_ORDERS_BUFFER).0,
        }
    }
}

impl Hub for LocalHub {
    fn subscribe(&self, order_id: Uuid) -> Subscription {
        LocalHub::subscribe(self, order_id)
    }

    fn subscribe_all(&self) -> Subscription {
        LocalHub::subscribe_all(self)
    }

    fn publish(&self, event: &OrderEvent) {
        self.deliver(event.update.order_id, Arc::new(Delivery::new(event)));
    }
}

impl LocalHub {
    fn channels(&self) -> std::sync::MutexGuard<'_, Channels> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts receiving every event published for `order_id` from now on.
    pub fn subscribe(&self, order_id: Uuid) -> Subscription {
        let receiver = self
            .channels()
            .entry(order_id)
            .or_insert_with(Channel::new)
            .sender
            .subscribe();
        Subscription {
            receiver,
            order_id: Some(order_id),
            hub: self.clone(),
        }
    }

    /// Starts receiving every event of every order delivered from now on.
    pub fn subscribe_all(&self) -> Subscription {
        Subscription {
            receiver: self.all_orders.subscribe(),
            order_id: None,
            hub: self.clone(),
        }
    }

    /// Hands `delivery` to every current subscriber of its order and of every order;
    /// returns how many.
    pub fn deliver(&self, order_id: Uuid, delivery: Arc<Delivery>) -> usize {
        let to_all = if self.all_orders.receiver_count() > 0 {
            self.all_orders.send(delivery.clone()).unwrap_or(0)
        } else {
            0
        };
        let to_order = match self.channels().get_mut(&order_id) {
            Some(channel) => {
                channel.record(&delivery);
                channel.sender.send(delivery).unwrap_or(0)
            }
            None => 0,
        };
        to_all + to_order
    }

    /// Orders with at least one subscriber.
    pub fn watched_orders(&self) -> usize {
        self.channels().len()
    }
}

/// One subscriber's receiving end; leaving unsubscribes.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Delivery>>,
    /// `None`: every order.
    order_id: Option<Uuid>,
    hub: LocalHub,
}

impl Subscription {
    /// The order it receives, `None` for every order.
    pub fn order_id(&self) -> Option<Uuid> {
        self.order_id
    }

    pub async fn recv(&mut self) -> Result<Arc<Delivery>, broadcast::error::RecvError> {
        self.receiver.recv().await
    }

    /// The order's history as the hub knows it: every event delivered here so far (so every
    /// event this subscription will not receive), perhaps more. `None` when the hub does not
    /// know it: read it from the store, then [`Subscription::remember`] it.
    pub fn known_history(&self) -> Option<History> {
        let order_id = self.order_id?;
        self.hub.channels().get(&order_id)?.history.clone()
    }

    /// A mark to take after subscribing and before reading the order's history from the store.
    pub fn mark(&self) -> u64 {
        self.order_id
            .and_then(|order_id| Some(self.hub.channels().get(&order_id)?.deliveries))
            .unwrap_or_default()
    }

    /// Gives the hub `history`, read from the store after `mark` was taken, for the order's
    /// other subscribers. It is kept only if nothing was delivered since the mark: then it
    /// holds every event delivered so far, because an event is committed before it is
    /// delivered. Otherwise it may lack one, and is dropped.
    pub fn remember(&self, mark: u64, history: &History) {
        let Some(order_id) = self.order_id else {
            return;
        };
        let mut channels = self.hub.channels();
        if let Some(channel) = channels.get_mut(&order_id) {
            if channel.history.is_none() && channel.deliveries == mark {
                channel.history = Some(history.clone());
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(order_id) = self.order_id else {
            return;
        };
        let mut channels = self.hub.channels();
        // Subscribing happens under the same lock, so the count cannot change meanwhile;
        // this subscription's own receiver is still alive here and is the one counted.
        if let Some(channel) = channels.get(&order_id) {
            if channel.sender.receiver_count() <= 1 {
                channels.remove(&order_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broadcast::error::RecvError;

    fn delivery(order: Uuid, id: i64, status: OrderStatus) -> Arc<Delivery> {
        Arc::new(Delivery {
            id: EventId(id),
            order_id: order,
            status,
            frame: Bytes::from(format!("{order} {id}")),
        })
    }

    #[tokio::test]
    async fn every_subscriber_of_an_order_gets_every_event() {
        let hub = LocalHub::default();
        let order = Uuid::new_v4();
        let mut first = hub.subscribe(order);
        let mut second = hub.subscribe(order);
        let mut other = hub.subscribe(Uuid::new_v4());
        assert_eq!(
            hub.deliver(order, delivery(order, 1, OrderStatus::Created)),
            2
        );
        assert_eq!(
            hub.deliver(order, delivery(order, 2, OrderStatus::PaymentConfirmed)),
            2
        );
        for sub in [&mut first, &mut second] {
            assert_eq!(sub.recv().await.unwrap().id, EventId(1));
            assert_eq!(sub.recv().await.unwrap().id, EventId(2));
        }
        assert!(other.receiver.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_subscriber_of_every_order_gets_every_orders_events() {
        let hub = LocalHub::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        // Nobody listens: nothing is kept.
        assert_eq!(hub.deliver(a, delivery(a, 1, OrderStatus::Created)), 0);
        let mut all = hub.subscribe_all();
        let mut of_a = hub.subscribe(a);
        assert_eq!(hub.deliver(a, delivery(a, 2, OrderStatus::Created)), 2);
        assert_eq!(hub.deliver(b, delivery(b, 3, OrderStatus::Created)), 1);
        assert_eq!(all.recv().await.unwrap().id, EventId(2));
        assert_eq!(all.recv().await.unwrap().id, EventId(3));
        assert_eq!(of_a.recv().await.unwrap().id, EventId(2));
        drop(all);
        assert_eq!(hub.watched_orders(), 1);
    }

    #[tokio::test]
    async fn the_last_subscriber_leaving_frees_the_channel() {
        let hub = LocalHub::default();
        let order = Uuid::new_v4();
        let first = hub.subscribe(order);
        let second = hub.subscribe(order);
        assert_eq!(hub.watched_orders(), 1);
        drop(first);
        assert_eq!(hub.watched_orders(), 1);
        drop(second);
        assert_eq!(hub.watched_orders(), 0);
        assert_eq!(
            hub.deliver(order, delivery(order, 1, OrderStatus::Created)),
            0
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_rather_than_buffered() {
        let hub = LocalHub::default();
        let order = Uuid::new_v4();
        let mut slow = hub.subscribe(order);
        for id in 0..(SUBSCRIBER_BUFFER as i64 + 1) {
            hub.deliver(order, delivery(order, id, OrderStatus::Created));
        }
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(1))));
    }

    fn statuses(history: Option<History>) -> Option<Vec<OrderStatus>> {
        history.map(|history| history.iter().map(|d| d.status).collect())
    }

    #[tokio::test]
    async fn a_history_read_from_the_store_is_kept_only_if_nothing_was_delivered_meanwhile() {
        use OrderStatus::*;
        let hub = LocalHub::default();
        let order = Uuid::new_v4();
        let subscription = hub.subscribe(order);
        assert!(subscription.known_history().is_none());
        let created = delivery(order, 1, Created);
        // A delivery between the mark and the offer: the history read may lack it.
        let mark = subscription.mark();
        hub.deliver(order, created.clone());
        subscription.remember(mark, &History::from(vec![]));
        assert!(subscription.known_history().is_none());
        // Nothing in between: kept, for every subscriber of the order.
        let mark = subscription.mark();
        subscription.remember(mark, &History::from(vec![created]));
        let other = hub.subscribe(order);
        assert_eq!(statuses(other.known_history()), Some(vec![Created]));
        // Each delivery extends it; a late copy changes nothing.
        hub.deliver(order, delivery(order, 2, PaymentConfirmed));
        hub.deliver(order, delivery(order, 2, PaymentConfirmed));
        let known = other.known_history().unwrap();
        assert_eq!(known.iter().map(|d| d.id.0).collect::<Vec<_>>(), [1, 2]);
        // A gap: forgotten rather than kept with a hole.
        hub.deliver(order, delivery(order, 4, Shipped));
        assert!(other.known_history().is_none());
    }

    #[tokio::test]
    async fn the_last_subscriber_leaving_forgets_the_history() {
        let hub = LocalHub::default();
        let order = Uuid::new_v4();
        let subscription = hub.subscribe(order);
        let mark = subscription.mark();
        subscription.remember(
            mark,
            &History::from(vec![delivery(order, 1, OrderStatus::Created)]),
        );
        drop(subscription);
        assert!(hub.subscribe(order).known_history().is_none());
        // A subscription to every order has no history to keep.
        let all = hub.subscribe_all();
        all.remember(all.mark(), &History::from(vec![]));
        assert!(all.known_history().is_none());
    }
}
