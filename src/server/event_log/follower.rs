//! A stream's follower: the events of one order, several or all, from a resume point, the
//! stored ones and then the live ones, in id order, each once (see [`Follower`]); and how
//! [`EventLog::follow`] sets one up from the hub and the store.
use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::{may_be_compacted, EventLog};
use crate::domain::{EventId, OrderStatus};
use crate::server::hub::{Delivery, History, Subscription};
use crate::server::store::StoreError;

impl EventLog {
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
