//! Several instances: every committed event is announced on a bus (Redis pub/sub, or
//! Postgres `LISTEN/NOTIFY`), and every instance hands what it hears to its own subscribers.
//!
//! **The bus is a doorbell, the log is the truth.** A message lost while the bus is down,
//! restarting or slow must never lose an event, so [`BusHub`] also reads the store: right
//! after every (re)connection, and every [`CATCH_UP_EVERY`] in any case. Because ids are
//! global and follow commit order, that read is one indexed query, "events with an id above
//! the highest this instance has read", whatever the number of orders it watches. Every
//! event reaches every subscriber on every instance within `CATCH_UP_EVERY` plus one query
//! even if its message never arrives; normally the bus brings it within milliseconds.
//!
//! Deliveries that arrive twice (by the bus and by the catch-up, or this instance's own
//! announcement coming back) are dropped here; followers would skip them anyway.
mod postgres;
mod redis;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use self::postgres::PgNotifyBus;
pub use self::redis::RedisBus;
use crate::domain::{EventId, OrderEvent};
use crate::server::hub::{BusState, Delivery, Hub, LocalHub, Subscription};
use crate::server::metrics::{BusMetrics, Metrics};
use crate::server::store::EventStore;

/// The channel every instance announces on and listens to.
pub const CHANNEL: &str = "order_tracking_events";

/// How often an instance reads the store for events the bus did not bring.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(1);
/// The most events one catch-up query reads; it goes on until it has read them all.
const CATCH_UP_PAGE: u32 = 1000;
/// Announcements waiting to be sent; past that they are dropped (the catch-up covers them).
const ANNOUNCE_QUEUE: usize = 4096;
/// The most announcements sent in one round trip.
const ANNOUNCE_BATCH: usize = 256;
/// Wait between two attempts to reach the bus.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A message bus between instances. It carries events as JSON (`OrderEvent`) and knows
/// nothing of subscribers or of the store.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Announces committed events, in order, to every instance (this one included), in one
    /// round trip: under load, events committed together go out together instead of each
    /// waiting for the one before it.
    async fn announce(&self, events: &[OrderEvent]) -> Result<(), BoxError>;

    /// Connects and subscribes; the stream yields every event announced from then on and
    /// ends when the connection is lost.
    async fn listen(&self) -> Result<BoxStream<'static, OrderEvent>, BoxError>;
}

/// The bus `config` asks for: Redis with `REDIS_URL`, else `LISTEN/NOTIFY` on a Postgres
/// store, else none (one instance).
pub fn from_config(
    redis_url: Option<&str>,
    database_url: &str,
) -> Result<Option<Arc<dyn Bus>>, BoxError> {
    if let Some(url) = redis_url {
        return Ok(Some(Arc::new(RedisBus::new(url)?)));
    }
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        return Ok(Some(Arc::new(PgNotifyBus::new(database_url)?)));
    }
    Ok(None)
}

/// A [`LocalHub`] that also announces this instance's events on the bus and delivers what
/// the bus and the store's catch-up bring from the others.
pub struct BusHub {
    local: LocalHub,
    announcements: mpsc::Sender<OrderEvent>,
    seen: Mutex<Seen>,
    metrics: Arc<Metrics>,
}

/// What this instance has delivered: every event up to `cursor` (read from the store in id
/// order), and those above it that came by the bus or from this instance.
struct Seen {
    cursor: Option<EventId>,
    above_cursor: HashSet<EventId>,
}

impl Seen {
    /// Whether `id` is new here; marks it delivered.
    fn first_time(&mut self, id: EventId) -> bool {
        self.cursor.is_none_or(|cursor| id > cursor) && self.above_cursor.insert(id)
    }
}

impl BusHub {
    /// Starts the hub and its tasks (announcing, listening, catching up), which end with
    /// `shutdown`. Events stored before this call are not delivered again: followers read
    /// them from the store.
    pub async fn start(
        bus: Arc<dyn Bus>,
        store: Arc<dyn EventStore>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, crate::server::store::StoreError> {
        let (announcements, queue) = mpsc::channel(ANNOUNCE_QUEUE);
        let hub = Arc::new(Self {
            local: LocalHub::default(),
            announcements,
            seen: Mutex::new(Seen {
                cursor: store.last_id().await?,
                above_cursor: HashSet::new(),
            }),
            metrics,
        });
        let reconnected = Arc::new(Notify::new());
        tokio::spawn(announce(bus.clone(), queue, shutdown.clone()));
        tokio::spawn(listen(
            hub.clone(),
            bus,
            reconnected.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(catch_up(hub.clone(), store, reconnected, shutdown));
        Ok(hub)
    }

    fn bus_metrics(&self) -> Option<&BusMetrics> {
        self.metrics.bus.as_ref()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `event` to this instance's subscribers unless it has been delivered already.
    fn deliver(&self, event: &OrderEvent) {
        if self.seen().first_time(event.id) {
            self.hand_out(event);
        }
    }

    fn hand_out(&self, event: &OrderEvent) {
        self.local
            .deliver(event.update.order_id, Arc::new(Delivery::new(event)));
    }

    /// Reads the store from the cursor on and delivers what is new; returns how many events
    /// the bus had not brought.
    async fn catch_up_once(
        &self,
        store: &dyn EventStore,
    ) -> Result<u64, crate::server::store::StoreError> {
        let mut recovered = 0;
        loop {
            let cursor = self.seen().cursor;
            if let Some(bus) = self.bus_metrics() {
                bus.catch_up_reads.inc();
            }
            let page = store.events_after(cursor, CATCH_UP_PAGE).await?;
            // The page is in id order and every smaller id is already visible, so the cursor
            // passes the whole page for good; what the bus or this instance already
            // delivered is left out.
            let missed: Vec<&OrderEvent> = {
                let mut seen = self.seen();
                let missed = page
                    .iter()
                    .filter(|event| !seen.above_cursor.remove(&event.id))
                    .collect();
                if let Some(last) = page.last() {
                    seen.cursor = Some(last.id);
                    seen.above_cursor.retain(|id| *id > last.id);
                }
                missed
            };
            // Counted before they are delivered, so whoever receives one can see the count.
            recovered += missed.len() as u64;
            if let Some(bus) = self.bus_metrics() {
                bus.events_recovered.inc_by(missed.len() as u64);
            }
            for event in missed {
                self.hand_out(event);
            }
            if page.len() < CATCH_UP_PAGE as usize {
                return Ok(recovered);
            }
        }
    }
}

impl Hub for BusHub {
    fn subscribe(&self, order_id: Uuid) -> Subscription {
        self.local.subscribe(order_id)
    }

    fn subscribe_all(&self) -> Subscription {
        self.local.subscribe_all()
    }

    fn publish(&self, event: &OrderEvent) {
        self.deliver(event);
        // Never makes the publisher wait: a full queue means the bus is far behind, and the
        // other instances' catch-up will find the event in the store.
        let _ = self.announcements.try_send(event.clone());
    }

    fn bus(&self) -> BusState {
        match self.bus_metrics() {
            Some(bus) if bus.connected.get() == 1 => BusState::Connected,
            _ => BusState::Disconnected,
        }
    }
}

/// Sends this instance's events to the bus in commit order: every event waiting at that
/// moment in one round trip.
async fn announce(
    bus: Arc<dyn Bus>,
    mut queue: mpsc::Receiver<OrderEvent>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(ANNOUNCE_BATCH);
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = queue.recv_many(&mut batch, ANNOUNCE_BATCH) => received,
        };
        if received == 0 {
            return;
        }
        if let Err(err) = bus.announce(&batch).await {
            // The store has them; the other instances' catch-up will find them.
            tracing::debug!(error = %err, events = batch.len(), "announcing events failed");
        }
        batch.clear();
    }
}

/// Listens to the bus for as long as the instance runs, reconnecting when it is lost.
async fn listen(
    hub: Arc<BusHub>,
    bus: Arc<dyn Bus>,
    reconnected: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let set_connected = |up: bool| {
        if let Some(metrics) = hub.bus_metrics() {
            metrics.connected.set(i64::from(up));
        }
    };
    let mut warned = false;
    loop {
        let connection = tokio::select! {
            _ = shutdown.cancelled() => return,
            connection = bus.listen() => connection,
        };
        match connection {
            Ok(mut events) => {
                set_connected(true);
                if warned {
                    tracing::info!("bus reconnected; catching up from the store");
                }
                // Whatever was announced while this instance was not listening is in the store.
                reconnected.notify_one();
                loop {
                    let event = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        event = events.next() => event,
                    };
                    match event {
                        Some(event) => hub.deliver(&event),
                        None => break,
                    }
                }
                set_connected(false);
                tracing::warn!("bus connection lost; events arrive through the store meanwhile");
                warned = true;
            }
            Err(err) => {
                set_connected(false);
                if !warned {
                    tracing::warn!(error = %err, "cannot reach the bus; events arrive through the store meanwhile");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_AFTER) => {}
        }
    }
}

/// Reads the store for missed events every [`CATCH_UP_EVERY`], and at once after the bus
/// reconnects.
async fn catch_up(
    hub: Arc<BusHub>,
    store: Arc<dyn EventStore>,
    reconnected: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(CATCH_UP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
            _ = reconnected.notified() => {}
        }
        match hub.catch_up_once(store.as_ref()).await {
            Ok(0) => {}
            Ok(recovered) => {
                tracing::debug!(recovered, "caught up from the store")
            }
            // The store is down: nothing new can be committed meanwhile; try again later.
            Err(err) => tracing::debug!(error = %err, "catching up failed"),
        }
    }
}

#[cfg(test)]
mod tests;
