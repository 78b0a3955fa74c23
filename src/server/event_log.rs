//! The event log as the rest of the server sees it: publishing stores an event durably, then
//! fans it out; subscribing and reading go through the same place.
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use tokio::sync::broadcast::error::RecvError;

use crate::domain::{EventId, Order, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary};
use crate::server::hub::{BusState, Delivery, History, Hub, Subscription};
use crate::server::metrics::Metrics;
use crate::server::retention::Retention;
use crate::server::store::{Appended, EventStore, StoreError};

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

    /// Follows `selection` from `resume`: the stored events after the resume point, then
    /// the live ones, in id order, each once; see [`Follower`].
    ///
    /// It subscribes *before* it reads the store, so an event committed after the read
    /// arrives live and one committed before is in what was read (one in both is skipped).
    pub async fn follow(
        &self,
        selection: Selection,
        resume: Resume,
    ) -> Result<Follower, StoreError> {
        let orders = match selection {
            Selection::All => {
                let subscriptions = vec![self.hub.subscribe_all()];
                // Anything compacted after the resume point is missed.
                let horizon = self.store.horizon().await?;
                let cursor = resume.point();
                let reset = horizon
                    .compacted_through
                    .is_some_and(|through| cursor.is_none_or(|cursor| cursor < through))
                    .then_some(horizon.earliest);
                return Ok(Follower {
                    log: self.clone(),
                    orders: None,
                    subscriptions,
                    cursor,
                    pending: VecDeque::new(),
                    // Every order's stored events come from the store, page by page.
                    stale: true,
                    resumed_at_end: false,
                    reset,
                });
            }
            Selection::Orders(orders) => orders,
        };
        let subscriptions: Vec<Subscription> =
            orders.iter().map(|id| self.hub.subscribe(*id)).collect();
        let stored: Vec<Arc<Delivery>> = match (orders.as_slice(), subscriptions.as_slice()) {
            // One order: its history, from the hub when another subscriber read it already.
            ([one], [subscription]) => match subscription.known_history() {
                Some(history) if knows_resume_point(&history, resume) => history.to_vec(),
                _ => {
                    let mark = subscription.mark();
                    let history = self.history(*one).await?;
                    // The hub keeps whole histories only (`history[i]` has status `i`),
                    // not the tail a compacted order has left.
                    if history
                        .first()
                        .is_none_or(|first| first.status == OrderStatus::Created)
                    {
                        subscription.remember(mark, &history);
                    }
                    history.to_vec()
                }
            },
            (many, _) => self
                .store
                .events_of(many, None)
                .await?
                .iter()
                .map(|event| Arc::new(Delivery::new(event)))
                .collect(),
        };
        // The orders that may have been compacted: their summaries say where their stored
        // events start.
        let maybe_compacted: Vec<Uuid> = orders
            .iter()
            .copied()
            .filter(|&order_id| {
                let first = stored.iter().find(|d| d.order_id == order_id);
                may_be_compacted(first.map(|first| first.status))
            })
            .collect();
        let compacted = if maybe_compacted.is_empty() {
            Vec::new()
        } else {
            self.store.summaries(&maybe_compacted).await?
        };
        let compaction_of = |order_id: Uuid| compacted.iter().find(|c| c.summary.id == order_id);
        let cursor = match resume {
            // The client's point is one of the order's events: stored, or the last of those
            // compaction deleted.
            Resume::AfterOwnEvent(id) => (stored.iter().any(|d| d.id == id)
                || compacted.iter().any(|c| c.last_id == id))
            .then_some(id),
            other => other.point(),
        };
        let seen = |d: &&Arc<Delivery>| cursor.is_some_and(|cursor| d.id <= cursor);
        // An order's events have increasing ids, so those up to the cursor are its first
        // statuses (after its summary's, when compacted), and their number is the index of
        // the status it needs next.
        let orders: Vec<Progress> = orders
            .iter()
            .map(|&order_id| Progress {
                order_id,
                next_status: compaction_of(order_id).map_or(0, |c| c.summary.status.index() + 1)
                    + stored
                        .iter()
                        .filter(|d| d.order_id == order_id)
                        .filter(seen)
                        .count(),
            })
            .collect();
        // Missed: the client's point is before the last event compaction took from an order.
        let missed = compacted
            .iter()
            .any(|c| cursor.is_none_or(|cursor| cursor < c.last_id));
        let reset = if missed {
            Some(self.store.horizon().await?.earliest)
        } else {
            None
        };
        let pending: VecDeque<Arc<Delivery>> =
            stored.iter().filter(|d| !seen(d)).cloned().collect();
        // Nothing left to send: resumed after the end, or compacted once delivered.
        let resumed_at_end = pending.is_empty() && orders.iter().all(Progress::is_finished);
        let mut follower = Follower {
            log: self.clone(),
            orders: Some(orders),
            subscriptions,
            cursor,
            pending,
            stale: false,
            resumed_at_end,
            reset,
        };
        follower.unsubscribe_finished();
        Ok(follower)
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

/// What a stream follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These orders: at least one, each once.
    Orders(Vec<Uuid>),
    /// Every order, for ever.
    All,
}

impl Selection {
    pub fn one(order_id: Uuid) -> Self {
        Selection::Orders(vec![order_id])
    }
}

/// Where a follower starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// With the first stored event.
    Start,
    /// After this id: every event of the selection with a greater id (spec §11).
    After(EventId),
    /// After this event of the one order followed, or from its start when the id is not one
    /// of its events (spec §3).
    AfterOwnEvent(EventId),
}

impl Resume {
    fn point(self) -> Option<EventId> {
        match self {
            Resume::Start => None,
            Resume::After(id) | Resume::AfterOwnEvent(id) => Some(id),
        }
    }
}

/// Whether an order whose first stored event has `first` status (`None`: it has none) may
/// have been compacted, so that only its summary says where it stands. Stored events that
/// begin with `Created` belong to an order never compacted: compaction deletes all of an
/// order's events, and a compacted order cannot be created again.
fn may_be_compacted(first: Option<OrderStatus>) -> bool {
    first != Some(OrderStatus::Created)
}

/// Whether a history the hub knows holds every event of its order up to `resume`'s point.
/// It holds every event delivered here; a client may resume after one that another instance
/// delivered and this one has not heard yet, so a point after its last event means reading
/// the store, which has it.
fn knows_resume_point(history: &History, resume: Resume) -> bool {
    resume
        .point()
        .is_none_or(|point| history.last().is_some_and(|last| point <= last.id))
}

/// What [`Follower::next`] hands out.
#[derive(Debug)]
pub enum Followed {
    /// The next event.
    Event(Arc<Delivery>),
    /// Every order followed is delivered and sent: nothing more will come.
    End,
    /// The follower fell behind the hub's buffer; it must resume from its last event.
    Lagged,
    /// The store failed while catching up.
    Failed,
}

/// One order of a follower, and the index of the status it needs next.
struct Progress {
    order_id: Uuid,
    next_status: usize,
}

impl Progress {
    fn is_finished(&self) -> bool {
        self.next_status >= OrderStatus::ALL.len()
    }
}

/// The most events of every order read from the store at once.
const ALL_ORDERS_PAGE: u32 = 1000;

/// A follower of one order, several, or all: hands out their events in id order, each once,
/// with one cursor (the last id handed out), so one `Last-Event-ID` resumes it exactly.
///
/// The store is the order of events; the hub only rings the bell. A live event is handed out
/// as it arrives only when it provably comes next: it is its order's next status and that
/// order is the only one still open (so for one order, always). Otherwise, when an event of
/// another order with a smaller id might still be on its way, the live event only marks the
/// follower stale, and the next step reads "the selection's events after my cursor" from
/// the store: because ids follow commit order, that read holds every event before the newest
/// one it returns. See [`EventLog::follow`].
pub struct Follower {
    log: EventLog,
    /// The orders followed; `None`: every order.
    orders: Option<Vec<Progress>>,
    /// One per open order (or one for every order).
    subscriptions: Vec<Subscription>,
    /// The id of the last event handed out (or of the resume point).
    cursor: Option<EventId>,
    /// Events read from the store, not handed out yet.
    pending: VecDeque<Arc<Delivery>>,
    /// The store may hold events after the cursor that were not read yet.
    stale: bool,
    resumed_at_end: bool,
    /// Some: events after the resume point are gone (compacted); the smallest id stored.
    reset: Option<Option<EventId>>,
}

impl Follower {
    /// Nothing is left to send: the resume point was after every listed order's
    /// `Delivered`, or each is delivered and compacted.
    pub fn resumed_at_end(&self) -> bool {
        self.resumed_at_end
    }

    /// Once, when events the client would have been sent are no longer stored: the smallest
    /// id stored (if any), for the `reset` frame that comes before the rest (spec §12).
    pub fn take_reset(&mut self) -> Option<Option<EventId>> {
        self.reset.take()
    }

    /// The next event, in id order and once each. Cancel-safe: dropping the future loses
    /// nothing, so it can race a timer in `select!`.
    pub async fn next(&mut self) -> Followed {
        loop {
            if let Some(delivery) = self.pending.pop_front() {
                if self.take(&delivery) {
                    return Followed::Event(delivery);
                }
                continue;
            }
            if self.is_finished() {
                return Followed::End;
            }
            if self.stale {
                if self.read_store().await.is_err() {
                    return Followed::Failed;
                }
                continue;
            }
            match self.recv().await {
                Ok(delivery) if self.is_handed_out(&delivery) => {}
                Ok(delivery) if self.comes_next(&delivery) => {
                    self.take(&delivery);
                    return Followed::Event(delivery);
                }
                Ok(_) => self.stale = true,
                Err(RecvError::Lagged(_)) => return Followed::Lagged,
                Err(RecvError::Closed) => return Followed::End,
            }
        }
    }

    fn is_finished(&self) -> bool {
        self.orders
            .as_ref()
            .is_some_and(|orders| orders.iter().all(Progress::is_finished))
    }

    fn is_handed_out(&self, delivery: &Delivery) -> bool {
        self.cursor.is_some_and(|cursor| delivery.id <= cursor)
    }

    /// The listed orders not delivered and sent yet (none when following every order).
    fn open_orders(&self) -> impl Iterator<Item = &Progress> {
        self.orders
            .iter()
            .flatten()
            .filter(|order| !order.is_finished())
    }

    /// Whether no event can come between the cursor and `delivery`.
    fn comes_next(&self, delivery: &Delivery) -> bool {
        let mut open = self.open_orders();
        match (open.next(), open.next()) {
            (Some(only), None) => {
                only.order_id == delivery.order_id && only.next_status == delivery.status.index()
            }
            _ => false,
        }
    }

    /// Moves the cursor past `delivery` if it is the next event of its order; whether it did.
    fn take(&mut self, delivery: &Delivery) -> bool {
        if self.is_handed_out(delivery) {
            return false;
        }
        if let Some(orders) = &mut self.orders {
            let Some(order) = orders.iter_mut().find(|o| o.order_id == delivery.order_id) else {
                return false;
            };
            if order.next_status != delivery.status.index() {
                return false;
            }
            order.next_status += 1;
            if order.is_finished() {
                self.unsubscribe_finished();
            }
        }
        self.cursor = Some(delivery.id);
        true
    }

    /// Stops listening for orders that are delivered and sent.
    fn unsubscribe_finished(&mut self) {
        let Some(orders) = &self.orders else { return };
        let finished = |id: Uuid| {
            orders
                .iter()
                .any(|order| order.order_id == id && order.is_finished())
        };
        self.subscriptions
            .retain(|s| s.order_id().is_none_or(|id| !finished(id)));
    }

    /// Reads the selection's events after the cursor into `pending`.
    async fn read_store(&mut self) -> Result<(), StoreError> {
        let events = match &self.orders {
            Some(_) => {
                let open: Vec<Uuid> = self.open_orders().map(|order| order.order_id).collect();
                let events = self.log.store.events_of(&open, self.cursor).await?;
                self.stale = false;
                events
            }
            None => {
                let events = self
                    .log
                    .store
                    .events_after(self.cursor, ALL_ORDERS_PAGE)
                    .await?;
                // A full page: there may be more after it.
                self.stale = events.len() == ALL_ORDERS_PAGE as usize;
                events
            }
        };
        self.pending
            .extend(events.iter().map(|event| Arc::new(Delivery::new(event))));
        Ok(())
    }

    /// The next live event of any order followed.
    async fn recv(&mut self) -> Result<Arc<Delivery>, RecvError> {
        match self.subscriptions.as_mut_slice() {
            [one] => one.recv().await,
            many => {
                let receiving = many.iter_mut().map(|s| Box::pin(s.recv()));
                futures::future::select_all(receiving).await.0
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
        async fn append_all_then(
            &self,
            updates: &[OrderStatusUpdate],
            committed: crate::server::store::OnCommit,
        ) -> Result<crate::server::store::Appended, StoreError> {
            self.inner.append_all_then(updates, committed).await
        }
        async fn events(&self, order_id: Uuid) -> Result<Vec<OrderEvent>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.events(order_id).await
        }
        async fn events_of(
            &self,
            orders: &[Uuid],
            after: Option<EventId>,
        ) -> Result<Vec<OrderEvent>, StoreError> {
            self.inner.events_of(orders, after).await
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
        async fn compact(
            &self,
            due: &crate::server::store::Due,
            limit: u32,
        ) -> Result<crate::server::store::Compacted, StoreError> {
            self.inner.compact(due, limit).await
        }
        async fn forget(
            &self,
            before: chrono::DateTime<chrono::Utc>,
            limit: u32,
        ) -> Result<u64, StoreError> {
            self.inner.forget(before, limit).await
        }
        async fn summaries(
            &self,
            orders: &[Uuid],
        ) -> Result<Vec<crate::server::store::Compaction>, StoreError> {
            self.inner.summaries(orders).await
        }
        async fn horizon(&self) -> Result<crate::server::store::Horizon, StoreError> {
            self.inner.horizon().await
        }
        async fn extent(&self) -> Result<crate::server::store::Extent, StoreError> {
            self.inner.extent().await
        }
        async fn reclaim(&self) -> Result<(), StoreError> {
            self.inner.reclaim().await
        }
    }

    /// A log over a store that counts its reads of one order's events.
    async fn counting_log() -> (tempfile::TempDir, Arc<Counting>, EventLog) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store = Arc::new(Counting {
            inner: SqliteStore::open(&url).await.unwrap(),
            reads: AtomicUsize::new(0),
        });
        let log = EventLog::new(store.clone(), Arc::new(LocalHub::default()), Arc::default());
        (dir, store, log)
    }

    async fn log() -> (tempfile::TempDir, EventLog) {
        let (dir, _, log) = counting_log().await;
        (dir, log)
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
                        statuses(
                            log.follow(Selection::one(order), Resume::Start)
                                .await
                                .unwrap(),
                        )
                        .await
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

    /// Follows until the end; returns the events handed out.
    async fn deliveries(mut follower: Follower) -> Vec<Arc<Delivery>> {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), follower.next()).await {
                Ok(Followed::Event(delivery)) => seen.push(delivery),
                Ok(Followed::End) => return seen,
                other => panic!("unexpected {other:?} after {} events", seen.len()),
            }
        }
    }

    fn ids(deliveries: &[Arc<Delivery>]) -> Vec<EventId> {
        deliveries.iter().map(|d| d.id).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn followers_of_several_orders_get_each_event_once_in_id_order_while_publishers_race() {
        let (_dir, log) = log().await;
        for _round in 0..5 {
            let orders: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
            // Followers of overlapping subsets, starting before, during and after publishing.
            let followers: Vec<_> = (0..12u64)
                .map(|n| {
                    let log = log.clone();
                    let subset: Vec<Uuid> = orders
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !(*i as u64 + n).is_multiple_of(3))
                        .map(|(_, id)| *id)
                        .collect();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_micros(n * 400)).await;
                        let follower = log
                            .follow(Selection::Orders(subset.clone()), Resume::Start)
                            .await
                            .unwrap();
                        (subset, deliveries(follower).await)
                    })
                })
                .collect();
            // Two publishers race for every status of every order, orders interleaved.
            let publishers: Vec<_> = (0..2)
                .map(|_| {
                    let (log, orders) = (log.clone(), orders.clone());
                    tokio::spawn(async move {
                        for status in OrderStatus::ALL {
                            for order in &orders {
                                let _ = log.publish(*order, status).await;
                            }
                        }
                    })
                })
                .collect();
            for publisher in publishers {
                publisher.await.unwrap();
            }
            for follower in followers {
                let (subset, seen) = follower.await.unwrap();
                let stored = log.store.events_of(&subset, None).await.unwrap();
                let stored_ids: Vec<EventId> = stored.iter().map(|e| e.id).collect();
                assert_eq!(ids(&seen), stored_ids, "every event once, in id order");
                assert_eq!(seen.len(), subset.len() * OrderStatus::ALL.len());
            }
        }
    }

    #[tokio::test]
    async fn several_orders_resume_from_any_id_with_exactly_the_rest() {
        let (_dir, log) = log().await;
        let (a, b, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut all = Vec::new();
        for status in OrderStatus::ALL {
            for order in [a, other, b] {
                all.push(log.publish(order, status).await.unwrap());
            }
        }
        let listed: Vec<EventId> = all
            .iter()
            .filter(|e| e.update.order_id != other)
            .map(|e| e.id)
            .collect();
        let both = || Selection::Orders(vec![a, b]);
        // Every id, the listed orders' and the other order's, is a resume point.
        for event in &all {
            let follower = log.follow(both(), Resume::After(event.id)).await.unwrap();
            let rest: Vec<EventId> = listed.iter().copied().filter(|id| *id > event.id).collect();
            if rest.is_empty() {
                assert!(follower.resumed_at_end(), "after {:?}", event.id);
            } else {
                assert!(!follower.resumed_at_end());
                assert_eq!(
                    ids(&deliveries(follower).await),
                    rest,
                    "after {:?}",
                    event.id
                );
            }
        }
        let from_start = log.follow(both(), Resume::Start).await.unwrap();
        assert_eq!(ids(&deliveries(from_start).await), listed);
    }

    #[tokio::test]
    async fn a_live_event_that_may_have_an_earlier_one_elsewhere_waits_for_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store = Arc::new(SqliteStore::open(&url).await.unwrap());
        let log = EventLog::new(store.clone(), Arc::new(LocalHub::default()), Arc::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut follower = log
            .follow(Selection::Orders(vec![a, b]), Resume::Start)
            .await
            .unwrap();
        // a's event commits first but its hand-off is late; b's reaches the hub first.
        let first = store
            .append(&OrderStatusUpdate::new(a, OrderStatus::Created, Utc::now()))
            .await
            .unwrap();
        let second = store
            .append(&OrderStatusUpdate::new(b, OrderStatus::Created, Utc::now()))
            .await
            .unwrap();
        log.hub.publish(&second);
        let mut seen = Vec::new();
        for _ in 0..2 {
            match tokio::time::timeout(std::time::Duration::from_secs(5), follower.next())
                .await
                .unwrap()
            {
                Followed::Event(delivery) => seen.push(delivery.id),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, [first.id, second.id]);
        // a's late hand-off is a duplicate now and is skipped.
        log.hub.publish(&first);
        let third = log.publish(a, OrderStatus::PaymentConfirmed).await.unwrap();
        match follower.next().await {
            Followed::Event(delivery) => assert_eq!(delivery.id, third.id),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_event_committed_for_a_publisher_that_went_away_still_reaches_subscribers() {
        use futures::FutureExt;
        let (_dir, log) = log().await;
        let order = Uuid::new_v4();
        let mut follower = log
            .follow(Selection::Orders(vec![order]), Resume::Start)
            .await
            .unwrap();
        // Polled once (the update is queued for the store's writer), then dropped, as when
        // the publisher's connection closes while it waits for the commit.
        assert!(log
            .publish(order, OrderStatus::Created)
            .now_or_never()
            .is_none());
        match tokio::time::timeout(std::time::Duration::from_secs(5), follower.next())
            .await
            .expect("the committed event is fanned out")
        {
            Followed::Event(delivery) => assert_eq!(delivery.status, OrderStatus::Created),
            other => panic!("{other:?}"),
        }
        assert_eq!(log.events(order).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_follower_of_every_order_reads_from_its_cursor_then_live_and_never_ends() {
        let (_dir, log) = log().await;
        let mut earlier = Vec::new();
        for _ in 0..3 {
            earlier.push(
                log.publish(Uuid::new_v4(), OrderStatus::Created)
                    .await
                    .unwrap(),
            );
        }
        let mut follower = log
            .follow(Selection::All, Resume::After(earlier[0].id))
            .await
            .unwrap();
        let order = Uuid::new_v4();
        let mut live = Vec::new();
        for status in OrderStatus::ALL {
            live.push(log.publish(order, status).await.unwrap().id);
        }
        let mut seen = Vec::new();
        for _ in 0..8 {
            match follower.next().await {
                Followed::Event(delivery) => seen.push(delivery.id),
                other => panic!("{other:?}"),
            }
        }
        let expected: Vec<EventId> = [earlier[1].id, earlier[2].id]
            .into_iter()
            .chain(live)
            .collect();
        assert_eq!(seen, expected);
        // Delivered ends nothing: it waits for the next order.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(200), follower.next());
        assert!(waiting.await.is_err());
    }

    #[tokio::test]
    async fn a_follower_resumes_after_its_event_or_from_the_start() {
        let (_dir, log) = log().await;
        let order = Uuid::new_v4();
        let mut ids = Vec::new();
        for status in OrderStatus::ALL {
            ids.push(log.publish(order, status).await.unwrap().id);
        }
        let after_packed = statuses(
            log.follow(Selection::one(order), Resume::AfterOwnEvent(ids[2]))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(after_packed, OrderStatus::ALL[3..]);
        let unknown = statuses(
            log.follow(
                Selection::one(order),
                Resume::AfterOwnEvent(EventId(i64::MAX)),
            )
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(unknown, OrderStatus::ALL);
        let other_order = log
            .publish(Uuid::new_v4(), OrderStatus::Created)
            .await
            .unwrap();
        let foreign = statuses(
            log.follow(Selection::one(order), Resume::AfterOwnEvent(other_order.id))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(foreign, OrderStatus::ALL);
        let at_end = log
            .follow(Selection::one(order), Resume::AfterOwnEvent(ids[5]))
            .await
            .unwrap();
        assert!(at_end.resumed_at_end());
        assert!(!log
            .follow(Selection::one(order), Resume::AfterOwnEvent(ids[4]))
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
        let mut follower = log
            .follow(Selection::one(order), Resume::Start)
            .await
            .unwrap();
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
        let (_dir, store, log) = counting_log().await;
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

    #[tokio::test]
    async fn followers_of_a_watched_order_read_its_history_from_the_store_once() {
        let (_dir, store, log) = counting_log().await;
        let order = Uuid::new_v4();
        let reads = || store.reads.load(Ordering::SeqCst);
        log.publish(order, OrderStatus::Created).await.unwrap();
        log.publish(order, OrderStatus::PaymentConfirmed)
            .await
            .unwrap();
        let follow = || log.follow(Selection::one(order), Resume::Start);
        let first = follow().await.unwrap();
        let second = follow().await.unwrap();
        assert_eq!(reads(), 1);
        // The hub's copy keeps up with what is published while the order is watched.
        log.publish(order, OrderStatus::Packed).await.unwrap();
        let third = follow().await.unwrap();
        assert_eq!(reads(), 1);
        let following = [first, second, third].map(|f| tokio::spawn(statuses(f)));
        for status in &OrderStatus::ALL[3..] {
            log.publish(order, *status).await.unwrap();
        }
        for follower in following {
            assert_eq!(follower.await.unwrap(), OrderStatus::ALL);
        }
        // Nobody watches it now: the next follower reads the store again (once, as it is
        // delivered).
        assert_eq!(statuses(follow().await.unwrap()).await, OrderStatus::ALL);
        assert_eq!(reads(), 2);
    }

    #[tokio::test]
    async fn a_resume_point_the_hub_has_not_heard_of_yet_is_looked_up_in_the_store() {
        let (_dir, store, log) = counting_log().await;
        let order = Uuid::new_v4();
        for status in &OrderStatus::ALL[..2] {
            log.publish(order, *status).await.unwrap();
        }
        let watching = log
            .follow(Selection::one(order), Resume::Start)
            .await
            .unwrap();
        // Committed by another instance and seen by a client there, not heard here yet.
        let packed = store
            .inner
            .append(&OrderStatusUpdate::new(
                order,
                OrderStatus::Packed,
                Utc::now(),
            ))
            .await
            .unwrap();
        let resumed = [Resume::AfterOwnEvent(packed.id), Resume::After(packed.id)]
            .map(|resume| log.follow(Selection::one(order), resume));
        let resumed = futures::future::join_all(resumed).await;
        let following: Vec<_> = resumed
            .into_iter()
            .map(|f| tokio::spawn(statuses(f.unwrap())))
            .collect();
        let watching = tokio::spawn(statuses(watching));
        for status in &OrderStatus::ALL[3..] {
            log.publish(order, *status).await.unwrap();
        }
        for follower in following {
            assert_eq!(follower.await.unwrap(), OrderStatus::ALL[3..]);
        }
        assert_eq!(watching.await.unwrap(), OrderStatus::ALL);
    }
}
