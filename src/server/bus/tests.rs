//! The bus-backed hub against an in-memory bus that can lose messages and connections (the
//! real buses, Redis and Postgres, are exercised by `tests/cluster.rs` with real servers).
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use tokio::sync::broadcast;

use super::*;
use crate::domain::{OrderStatus, OrderStatusUpdate};
use crate::server::store::SqliteStore;

/// A bus inside the process. `lose` drops announcements; `cut` ends every listener.
struct MemoryBus {
    sender: broadcast::Sender<OrderEvent>,
    lose: AtomicBool,
    cut: broadcast::Sender<()>,
}

impl MemoryBus {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            sender: broadcast::channel(1024).0,
            lose: AtomicBool::new(false),
            cut: broadcast::channel(1).0,
        })
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn announce(&self, events: &[OrderEvent]) -> Result<(), BoxError> {
        if !self.lose.load(Ordering::SeqCst) {
            for event in events {
                let _ = self.sender.send(event.clone());
            }
        }
        Ok(())
    }

    async fn listen(&self) -> Result<BoxStream<'static, OrderEvent>, BoxError> {
        let mut events = self.sender.subscribe();
        let mut cut = self.cut.subscribe();
        Ok(async_stream::stream! {
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(event) => yield event,
                        Err(_) => break,
                    },
                    _ = cut.recv() => break,
                }
            }
        }
        .boxed())
    }
}

/// Two instances sharing one store and one bus.
struct Cluster {
    _dir: tempfile::TempDir,
    store: Arc<dyn EventStore>,
    bus: Arc<MemoryBus>,
    hubs: [Arc<BusHub>; 2],
    metrics: [Arc<Metrics>; 2],
    shutdown: CancellationToken,
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&url).await.unwrap());
        let bus = MemoryBus::new();
        let shutdown = CancellationToken::new();
        let metrics = [Arc::new(Metrics::new(true)), Arc::new(Metrics::new(true))];
        let mut hubs = Vec::new();
        for metrics in &metrics {
            hubs.push(
                BusHub::start(
                    bus.clone(),
                    store.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                )
                .await
                .unwrap(),
            );
        }
        let cluster = Self {
            _dir: dir,
            store,
            bus,
            hubs: [hubs[0].clone(), hubs[1].clone()],
            metrics,
            shutdown,
        };
        cluster.wait_connected().await;
        cluster
    }

    async fn wait_connected(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.hubs.iter().any(|hub| hub.bus() != BusState::Connected) {
            assert!(tokio::time::Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Commits an event and publishes it through instance `on`, as the event log does.
    async fn publish(&self, on: usize, order: Uuid, status: OrderStatus) -> OrderEvent {
        let event = self
            .store
            .append(&OrderStatusUpdate::new(order, status, Utc::now()))
            .await
            .unwrap();
        self.hubs[on].publish(&event);
        event
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The next delivery, within `limit`.
async fn next(subscription: &mut Subscription, limit: Duration) -> Option<Arc<Delivery>> {
    tokio::time::timeout(limit, subscription.recv())
        .await
        .ok()
        .map(|delivery| delivery.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_on_one_instance_reaches_the_others_subscribers_once() {
    let cluster = Cluster::start().await;
    let order = Uuid::new_v4();
    let mut on_b = cluster.hubs[1].subscribe(order);
    let mut on_a = cluster.hubs[0].subscribe(order);
    let created = cluster.publish(0, order, OrderStatus::Created).await;
    for subscription in [&mut on_a, &mut on_b] {
        let delivery = next(subscription, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(delivery.id, created.id);
    }
    // The bus brings A's own announcement back, and the catch-up reads it from the store
    // (it may even read it before the bus brings it): neither is delivered a second time.
    tokio::time::sleep(CATCH_UP_EVERY * 2).await;
    assert!(next(&mut on_a, Duration::from_millis(10)).await.is_none());
    assert!(next(&mut on_b, Duration::from_millis(10)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_message_arrives_through_the_store_within_the_bound() {
    let cluster = Cluster::start().await;
    let order = Uuid::new_v4();
    let mut on_b = cluster.hubs[1].subscribe(order);
    cluster.bus.lose.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let created = cluster.publish(0, order, OrderStatus::Created).await;
    let delivery = next(&mut on_b, Duration::from_secs(5))
        .await
        .expect("within 5 s");
    assert_eq!(delivery.id, created.id);
    assert!(
        started.elapsed() <= CATCH_UP_EVERY * 2,
        "{:?}",
        started.elapsed()
    );
    let bus = cluster.metrics[1].bus.as_ref().unwrap();
    assert_eq!(bus.events_recovered.get(), 1);
    assert!(bus.catch_up_reads.get() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_reported_and_caught_up_when_it_returns() {
    let cluster = Cluster::start().await;
    let order = Uuid::new_v4();
    let mut on_b = cluster.hubs[1].subscribe(order);
    // Cut every listener and drop what is announced until they are back.
    cluster.bus.lose.store(true, Ordering::SeqCst);
    let _ = cluster.bus.cut.send(());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while cluster.hubs[1].bus() == BusState::Connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cut was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(cluster.metrics[1].bus.as_ref().unwrap().connected.get(), 0);
    let mut ids = Vec::new();
    for status in &OrderStatus::ALL[..3] {
        ids.push(cluster.publish(0, order, *status).await.id);
    }
    cluster.bus.lose.store(false, Ordering::SeqCst);
    cluster.wait_connected().await;
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(
            next(&mut on_b, Duration::from_secs(5))
                .await
                .expect("caught up")
                .id,
        );
    }
    assert_eq!(got, ids);
}
