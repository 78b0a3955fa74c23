//! The event log with a real SQLite store and the local hub: publishers racing followers.
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
