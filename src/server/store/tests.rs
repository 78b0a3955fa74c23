//! The store's contract, checked on both backends: every test below runs once on SQLite and
//! once on Postgres (a fresh database on the server that `PG*` variables name, as
//! `pg_virtualenv` sets them; `make test` runs the tests inside one).
use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::{open, Due, EventStore, StoreError};
use crate::domain::{EventId, OrderEvent, OrderStatus, OrderStatusUpdate};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of one backend; kept as long as this value lives.
pub(crate) struct Scratch {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl Scratch {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/nested/orders.db", dir.path().display());
                Scratch {
                    url,
                    backend,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => Scratch {
                url: super::scratch::postgres_database().await.unwrap(),
                backend,
                _dir: None,
            },
        }
    }

    pub async fn open(&self) -> Arc<dyn EventStore> {
        open(&self.url).await.unwrap()
    }

    /// Inserts a row straight into the table, around the store's code: `true` if the
    /// database itself accepted it.
    async fn raw_insert(&self, order: Uuid, status: i64) -> bool {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                sqlx::query("INSERT INTO events (order_id, status, at_ms) VALUES (?, ?, 0)")
                    .bind(order.to_string())
                    .bind(status)
                    .execute(&pool)
                    .await
                    .is_ok()
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                sqlx::query("INSERT INTO events (order_id, status, at_ms) VALUES ($1, $2, 0)")
                    .bind(order)
                    .bind(status as i16)
                    .execute(&pool)
                    .await
                    .is_ok()
            }
        }
    }
}

fn update(order: Uuid, status: OrderStatus) -> OrderStatusUpdate {
    OrderStatusUpdate::new(order, status, Utc::now())
}

/// Stores `order`'s statuses up to `last`, the first `days_ago` days ago and each a second
/// after the one before; returns the events.
async fn order_from(
    store: &dyn EventStore,
    order: Uuid,
    last: OrderStatus,
    days_ago: i64,
) -> Vec<OrderEvent> {
    let start = Utc::now() - chrono::TimeDelta::days(days_ago);
    let mut events = Vec::new();
    for (n, status) in OrderStatus::ALL[..=last.index()].iter().enumerate() {
        let at = start + chrono::TimeDelta::seconds(n as i64);
        let update = OrderStatusUpdate::new(order, *status, at);
        events.push(store.append(&update).await.unwrap());
    }
    events
}

/// What the defaults compact now: delivered 30 days ago, idle for a year.
fn due_by_default() -> Due {
    Due {
        delivered_before: Some(Utc::now() - chrono::TimeDelta::days(30)),
        idle_before: Some(Utc::now() - chrono::TimeDelta::days(365)),
        idle_after: None,
    }
}

/// Runs batches of `limit` until one compacts nothing; the orders compacted.
async fn compact_all(store: &dyn EventStore, mut due: Due, limit: u32) -> u64 {
    let mut orders = 0;
    loop {
        let batch = store.compact(&due, limit).await.unwrap();
        orders += batch.orders;
        if batch.orders == 0 && batch.idle_after.is_none() {
            return orders;
        }
        due.idle_after = batch.idle_after;
    }
}

fn is_conflict(outcome: Result<OrderEvent, StoreError>) -> bool {
    matches!(outcome, Err(StoreError::Conflict(_)))
}

async fn compaction_keeps_a_summary_and_the_rules_hold_against_it(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let store = scratch.open().await;
    let (delivered_long_ago, delivered_lately, idle, busy) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    // Stored in the order of their times, as a server stores them.
    let idle_events = order_from(store.as_ref(), idle, OrderStatus::Shipped, 400).await;
    // Created over a year ago, but with an event since: not idle.
    order_from(store.as_ref(), busy, OrderStatus::Created, 399).await;
    let old = order_from(
        store.as_ref(),
        delivered_long_ago,
        OrderStatus::Delivered,
        40,
    )
    .await;
    order_from(store.as_ref(), delivered_lately, OrderStatus::Delivered, 10).await;
    store
        .append(&update(busy, OrderStatus::PaymentConfirmed))
        .await
        .unwrap();

    let before = store.extent().await.unwrap().events;
    assert_eq!(before, 4 + 1 + 6 + 6 + 1);
    let batch = store.compact(&due_by_default(), 100).await.unwrap();
    assert_eq!((batch.orders, batch.events), (2, 6 + 4));
    assert_eq!(store.extent().await.unwrap().events, before - 10);
    // Nothing more is due.
    assert_eq!(compact_all(store.as_ref(), due_by_default(), 100).await, 0);

    assert!(store.events(delivered_long_ago).await.unwrap().is_empty());
    assert!(store.events(idle).await.unwrap().is_empty());
    assert_eq!(store.events(delivered_lately).await.unwrap().len(), 6);
    assert_eq!(store.events(busy).await.unwrap().len(), 2);
    let mut summaries = store
        .summaries(&[delivered_long_ago, delivered_lately, idle, busy])
        .await
        .unwrap();
    summaries.sort_by_key(|c| c.last_id);
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0].summary.id, idle);
    assert_eq!(summaries[0].summary.status, OrderStatus::Shipped);
    assert_eq!(summaries[0].last_id, idle_events[3].id);
    let (first, last) = (&old[0].update, &old[5]);
    assert_eq!(summaries[1].summary.id, delivered_long_ago);
    assert_eq!(summaries[1].summary.status, OrderStatus::Delivered);
    assert_eq!(summaries[1].summary.created_at, first.timestamp);
    assert_eq!(summaries[1].summary.updated_at, last.update.timestamp);
    assert_eq!(summaries[1].last_id, last.id);

    // The rules hold against the summary: nothing after Delivered, no second Created, no
    // repeat, no skip; the idle order goes on where it stopped.
    for status in OrderStatus::ALL {
        assert!(is_conflict(
            store.append(&update(delivered_long_ago, status)).await
        ));
    }
    for status in [
        OrderStatus::Created,
        OrderStatus::Packed,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
    ] {
        assert!(
            is_conflict(store.append(&update(idle, status)).await),
            "{status}"
        );
    }
    assert!(
        !scratch.raw_insert(idle, 0).await,
        "the schema let a compacted order be created again"
    );
    assert!(
        !scratch.raw_insert(idle, 3).await,
        "the schema let a compacted status repeat"
    );
    let next = store
        .append(&update(idle, OrderStatus::OutForDelivery))
        .await
        .unwrap();
    assert!(is_conflict(
        store
            .append(&update(idle, OrderStatus::OutForDelivery))
            .await
    ));
    // With an event now, the idle order is not idle any more.
    assert_eq!(compact_all(store.as_ref(), due_by_default(), 100).await, 0);
    assert!(
        scratch.raw_insert(idle, 5).await,
        "the schema refused the step after its summary"
    );

    let horizon = store.horizon().await.unwrap();
    let stored = store.events_after(None, 100).await.unwrap();
    assert_eq!(horizon.earliest, stored.first().map(|e| e.id));
    assert_eq!(horizon.compacted_through, Some(old[5].id));
    assert!(next.id > old[5].id);

    // Compacted again (everything is due now): the creation time stays, the status moves on.
    let everything = Due {
        delivered_before: Some(Utc::now() + chrono::TimeDelta::days(1)),
        idle_before: Some(Utc::now() + chrono::TimeDelta::days(1)),
        idle_after: None,
    };
    // The idle order (after its summary), the one delivered lately and the busy one.
    assert_eq!(compact_all(store.as_ref(), everything, 1).await, 3);
    let again = store.summaries(&[idle]).await.unwrap().pop().unwrap();
    assert_eq!(again.summary.status, OrderStatus::Delivered);
    assert_eq!(again.summary.created_at, idle_events[0].update.timestamp);
    assert_eq!(store.extent().await.unwrap(), super::Extent::default());
    let horizon = store.horizon().await.unwrap();
    assert_eq!(horizon.earliest, None);
    assert!(horizon.compacted_through > Some(next.id));
}

async fn forgetting_drops_old_summaries_but_the_newest_and_those_followed_by_events(
    backend: Backend,
) {
    let scratch = Scratch::new(backend).await;
    let store = scratch.open().await;
    let (idle, old, newest) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    order_from(store.as_ref(), idle, OrderStatus::Shipped, 400).await;
    order_from(store.as_ref(), old, OrderStatus::Delivered, 40).await;
    let last = order_from(store.as_ref(), newest, OrderStatus::Delivered, 35).await;
    assert_eq!(compact_all(store.as_ref(), due_by_default(), 100).await, 3);
    // The idle order goes on after its summary.
    store
        .append(&update(idle, OrderStatus::OutForDelivery))
        .await
        .unwrap();
    let days_ago = |days| Utc::now() - chrono::TimeDelta::days(days);

    // Nothing updated before 50 days ago but the idle one, which has an event since.
    assert_eq!(store.forget(days_ago(50), 100).await.unwrap(), 0);
    // Only the oldest summary is looked at: the idle one, kept.
    assert_eq!(store.forget(days_ago(1), 1).await.unwrap(), 0);
    // The old delivered one goes; the newest stays, however old.
    assert_eq!(store.forget(days_ago(1), 100).await.unwrap(), 1);
    let mut kept: Vec<Uuid> = store
        .summaries(&[idle, old, newest])
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.summary.id)
        .collect();
    kept.sort();
    let mut expected = vec![idle, newest];
    expected.sort();
    assert_eq!(kept, expected);
    assert_eq!(
        store.horizon().await.unwrap().compacted_through,
        Some(last[5].id)
    );
    assert_eq!(store.forget(days_ago(1), 100).await.unwrap(), 0);
    // Forgotten: no events, no summary, as an order that never was.
    assert!(store.events(old).await.unwrap().is_empty());
    assert!(store
        .append(&update(old, OrderStatus::Delivered))
        .await
        .is_err());
}

async fn retention_off_compacts_nothing(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let store = scratch.open().await;
    order_from(store.as_ref(), Uuid::new_v4(), OrderStatus::Delivered, 4000).await;
    order_from(store.as_ref(), Uuid::new_v4(), OrderStatus::Packed, 4000).await;
    assert_eq!(compact_all(store.as_ref(), Due::default(), 100).await, 0);
    assert_eq!(store.extent().await.unwrap().events, 9);
}

async fn stores_a_whole_order_in_order(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let store = scratch.open().await;
    let order = Uuid::new_v4();
    let mut ids = Vec::new();
    for status in OrderStatus::ALL {
        ids.push(store.append(&update(order, status)).await.unwrap().id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let events = store.events(order).await.unwrap();
    let statuses: Vec<_> = events.iter().map(|e| e.status()).collect();
    assert_eq!(statuses, OrderStatus::ALL);
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert!(store.events(Uuid::new_v4()).await.unwrap().is_empty());
}

async fn the_schema_refuses_duplicates_skips_and_orphans(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let store = scratch.open().await;
    let order = Uuid::new_v4();
    // Nothing may come before Created.
    assert!(matches!(
        store
            .append(&update(order, OrderStatus::PaymentConfirmed))
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .append(&update(order, OrderStatus::Created))
        .await
        .unwrap();
    assert!(matches!(
        store.append(&update(order, OrderStatus::Created)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.append(&update(order, OrderStatus::Shipped)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.events(order).await.unwrap().len(), 1);
    // The database itself refuses, whatever code writes to it: a duplicate, a skip, an orphan.
    assert!(!scratch.raw_insert(order, 0).await);
    assert!(!scratch.raw_insert(order, 3).await);
    assert!(!scratch.raw_insert(Uuid::new_v4(), 1).await);
    assert!(scratch.raw_insert(order, 1).await);
}

async fn concurrent_writers_of_one_status_store_it_once(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    // Two handles: as two instances sharing the database.
    let stores = [scratch.open().await, scratch.open().await];
    let order = Uuid::new_v4();
    stores[0]
        .append(&update(order, OrderStatus::Created))
        .await
        .unwrap();
    let attempts = (0..16).map(|n| {
        let store = stores[n % 2].clone();
        tokio::spawn(async move {
            store
                .append(&update(order, OrderStatus::PaymentConfirmed))
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(ok, 1);
    assert_eq!(stores[1].events(order).await.unwrap().len(), 2);
}

async fn a_group_commit_answers_each_append_on_its_own_and_keeps_them_all(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let store = scratch.open().await;
    let orders: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    // Each order's Created twice and a skipped status once, all at the same time.
    let attempts = orders.iter().flat_map(|&order| {
        [
            OrderStatus::Created,
            OrderStatus::Created,
            OrderStatus::Packed,
        ]
        .map(|status| {
            let store = store.clone();
            tokio::spawn(async move { store.append(&update(order, status)).await })
        })
    });
    let results = futures::future::join_all(attempts).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r.as_ref().unwrap(), Err(StoreError::Conflict(_))))
        .count();
    assert_eq!((ok, conflicts), (50, 100));
    drop(store);
    let reopened = scratch.open().await;
    for order in orders {
        let events = reopened.events(order).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].status(), OrderStatus::Created);
    }
}

async fn a_batch_is_one_commit_in_its_order_each_update_answered(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let store = scratch.open().await;
    let orders: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
    // Each order's first five statuses, interleaved, then a skip and a duplicate: 1,002.
    let mut batch: Vec<OrderStatusUpdate> = OrderStatus::ALL[..5]
        .iter()
        .flat_map(|&status| orders.iter().map(move |&order| update(order, status)))
        .collect();
    batch.push(update(orders[0], OrderStatus::Created));
    batch.push(update(Uuid::new_v4(), OrderStatus::Packed));
    // Single appends of other orders race it.
    let others: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    let singles = others.iter().map(|&order| {
        let store = store.clone();
        tokio::spawn(async move { store.append(&update(order, OrderStatus::Created)).await })
    });
    let (outcomes, singles) =
        tokio::join!(store.append_all(&batch), futures::future::join_all(singles));
    let outcomes = outcomes.unwrap();
    assert_eq!(outcomes.len(), batch.len(), "one outcome per update");
    let stored: Vec<&OrderEvent> = outcomes[..1000]
        .iter()
        .map(|o| o.as_ref().unwrap())
        .collect();
    for (event, sent) in stored.iter().zip(&batch) {
        assert_eq!(&event.update, sent);
    }
    assert!(
        stored.windows(2).all(|w| w[0].id < w[1].id),
        "ids follow the slice"
    );
    assert!(matches!(outcomes[1000], Err(StoreError::Conflict(_))));
    assert!(matches!(outcomes[1001], Err(StoreError::Conflict(_))));
    // One commit: no other append's id falls inside the batch's.
    let (first, last) = (stored[0].id, stored[999].id);
    for single in singles {
        let id = single.unwrap().unwrap().id;
        assert!(id < first || id > last, "{id:?} inside {first:?}..{last:?}");
    }
    assert_eq!(store.events(orders[7]).await.unwrap().len(), 5);
    assert!(store.append_all(&[]).await.unwrap().is_empty());
}

async fn recent_lists_newest_first_with_current_status(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let store = scratch.open().await;
    let first = Uuid::new_v4();
    let second = Uuid::new_v4();
    store
        .append(&update(first, OrderStatus::Created))
        .await
        .unwrap();
    store
        .append(&update(second, OrderStatus::Created))
        .await
        .unwrap();
    store
        .append(&update(first, OrderStatus::PaymentConfirmed))
        .await
        .unwrap();
    let recent = store.recent(10).await.unwrap();
    let seen: Vec<_> = recent.iter().map(|o| (o.id, o.status)).collect();
    assert_eq!(
        seen,
        [
            (second, OrderStatus::Created),
            (first, OrderStatus::PaymentConfirmed)
        ]
    );
    assert_eq!(store.recent(1).await.unwrap().len(), 1);
}

async fn events_survive_reopening_with_the_same_ids(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let order = Uuid::new_v4();
    let before = {
        let store = scratch.open().await;
        store
            .append(&update(order, OrderStatus::Created))
            .await
            .unwrap();
        store
            .append(&update(order, OrderStatus::PaymentConfirmed))
            .await
            .unwrap();
        store.events(order).await.unwrap()
    };
    let store = scratch.open().await;
    assert_eq!(store.events(order).await.unwrap(), before);
    assert_eq!(store.last_id().await.unwrap(), Some(before[1].id));
}

async fn events_after_reads_every_order_in_id_order(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let store = scratch.open().await;
    assert_eq!(store.last_id().await.unwrap(), None);
    assert!(store.events_after(None, 10).await.unwrap().is_empty());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut ids = Vec::new();
    for (order, status) in [
        (a, OrderStatus::Created),
        (b, OrderStatus::Created),
        (a, OrderStatus::PaymentConfirmed),
        (b, OrderStatus::PaymentConfirmed),
    ] {
        ids.push(store.append(&update(order, status)).await.unwrap().id);
    }
    let all = store.events_after(None, 10).await.unwrap();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    let rest = store.events_after(Some(ids[1]), 10).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), ids[2..]);
    assert_eq!(rest[0].update.order_id, a);
    let limited = store.events_after(Some(ids[0]), 2).await.unwrap();
    assert_eq!(limited.iter().map(|e| e.id).collect::<Vec<_>>(), ids[1..3]);
    assert_eq!(store.last_id().await.unwrap(), Some(ids[3]));
}

async fn events_of_reads_the_listed_orders_after_a_point_in_id_order(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let store = scratch.open().await;
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut ids = Vec::new();
    for (order, status) in [
        (a, OrderStatus::Created),
        (c, OrderStatus::Created),
        (b, OrderStatus::Created),
        (a, OrderStatus::PaymentConfirmed),
        (c, OrderStatus::PaymentConfirmed),
        (b, OrderStatus::PaymentConfirmed),
    ] {
        ids.push(store.append(&update(order, status)).await.unwrap().id);
    }
    let ids_of =
        |events: Vec<crate::domain::OrderEvent>| events.iter().map(|e| e.id).collect::<Vec<_>>();
    let listed = store.events_of(&[b, a], None).await.unwrap();
    assert_eq!(ids_of(listed), [ids[0], ids[2], ids[3], ids[5]]);
    let after = store.events_of(&[a, b], Some(ids[2])).await.unwrap();
    assert_eq!(ids_of(after), [ids[3], ids[5]]);
    assert!(store.events_of(&[], None).await.unwrap().is_empty());
    assert!(store
        .events_of(&[Uuid::new_v4()], None)
        .await
        .unwrap()
        .is_empty());
}

/// What the one-cursor catch-up relies on: a reader that repeatedly asks for "events after
/// the largest id I have seen" while two instances publish concurrently never skips an
/// event, which it would if a smaller id could become visible after a larger one.
async fn ids_become_visible_in_commit_order_under_concurrency(backend: Backend) {
    let scratch = Scratch::new(backend).await;
    let instances = [scratch.open().await, scratch.open().await];
    // Old orders for a sweep to compact while the publishers race: it takes the same lock.
    for n in 0..40 {
        let last = if n % 2 == 0 {
            OrderStatus::Delivered
        } else {
            OrderStatus::Packed
        };
        order_from(instances[0].as_ref(), Uuid::new_v4(), last, 400).await;
    }
    let seeded = instances[0].last_id().await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Two sweepers, as two instances run them: they take turns, and each finds what the
    // other left, so every old order is compacted once.
    let mut sweepers = Vec::new();
    for _ in 0..2 {
        let store = scratch.open().await;
        let done = done.clone();
        sweepers.push(tokio::spawn(async move {
            let mut compacted = 0;
            let mut due = due_by_default();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let batch = store.compact(&due, 3).await.unwrap();
                compacted += batch.orders;
                due.idle_after = batch.idle_after;
                tokio::task::yield_now().await;
            }
            compacted + compact_all(store.as_ref(), due_by_default(), 100).await
        }));
    }
    let reader = {
        let store = scratch.open().await;
        let done = done.clone();
        tokio::spawn(async move {
            let mut cursor: Option<EventId> = seeded;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let batch = store.events_after(cursor, 1000).await.unwrap();
                cursor = batch.last().map(|e| e.id).or(cursor);
                seen.extend(batch.iter().map(|e| e.id));
                if finished && batch.is_empty() {
                    return seen;
                }
            }
        })
    };
    let publishers: Vec<_> = (0..8)
        .map(|n| {
            let store = instances[n % 2].clone();
            tokio::spawn(async move {
                for _ in 0..15 {
                    let order = Uuid::new_v4();
                    for status in &OrderStatus::ALL[..3] {
                        store.append(&update(order, *status)).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let mut compacted = 0;
    for sweeper in sweepers {
        compacted += sweeper.await.unwrap();
    }
    assert_eq!(compacted, 40, "the sweeps compacted every old order once");
    let stored: Vec<_> = instances[0]
        .events_after(seeded, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(stored.len(), 8 * 15 * 3);
    assert_eq!(
        seen, stored,
        "the polling reader skipped or repeated an event"
    );
}

/// Runs each named test once per backend.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_stores!(
    stores_a_whole_order_in_order,
    the_schema_refuses_duplicates_skips_and_orphans,
    concurrent_writers_of_one_status_store_it_once,
    a_group_commit_answers_each_append_on_its_own_and_keeps_them_all,
    a_batch_is_one_commit_in_its_order_each_update_answered,
    recent_lists_newest_first_with_current_status,
    events_survive_reopening_with_the_same_ids,
    events_after_reads_every_order_in_id_order,
    events_of_reads_the_listed_orders_after_a_point_in_id_order,
    ids_become_visible_in_commit_order_under_concurrency,
    compaction_keeps_a_summary_and_the_rules_hold_against_it,
    retention_off_compacts_nothing,
    forgetting_drops_old_summaries_but_the_newest_and_those_followed_by_events,
);

/// The size of a SQLite database on disk: its file and its write-ahead log.
fn sqlite_bytes(url: &str) -> u64 {
    let path = url.trim_start_matches("sqlite://");
    [path.to_owned(), format!("{path}-wal")]
        .iter()
        .map(|file| std::fs::metadata(file).map_or(0, |m| m.len()))
        .sum()
}

#[tokio::test]
async fn sqlite_files_shrink_after_a_sweep() {
    let scratch = Scratch::new(Backend::Sqlite).await;
    let store = scratch.open().await;
    for _ in 0..400 {
        order_from(store.as_ref(), Uuid::new_v4(), OrderStatus::Delivered, 40).await;
    }
    // The log folded into the file and emptied (what the sweep's passive checkpoint and the
    // log's size limit do in time), so that the sizes compare the file itself.
    let checkpoint = || async {
        let pool = sqlx::SqlitePool::connect(&scratch.url).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    };
    checkpoint().await;
    let full = sqlite_bytes(&scratch.url);
    assert_eq!(
        compact_all(store.as_ref(), due_by_default(), 500).await,
        400
    );
    store.reclaim().await.unwrap();
    checkpoint().await;
    let swept = sqlite_bytes(&scratch.url);
    assert!(
        swept * 2 < full,
        "{full} bytes before the sweep, {swept} after: the files did not shrink"
    );
}

#[tokio::test]
async fn an_older_sqlite_file_is_vacuumed_once_into_incremental_auto_vacuum() {
    let scratch = Scratch::new(Backend::Sqlite).await;
    let path = scratch.url.trim_start_matches("sqlite://");
    std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
    // A file as the first release made it: only the first migration, no auto-vacuum.
    let first = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite/0001_events.sql"
        ),
        first.path().join("0001_events.sql"),
    )
    .unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", scratch.url))
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(first.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let mode = |pool: sqlx::SqlitePool| async move {
        sqlx::query_scalar::<_, i64>("PRAGMA auto_vacuum")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(mode(pool.clone()).await, 0);
    pool.close().await;
    let _store = scratch.open().await;
    let pool = sqlx::SqlitePool::connect(&scratch.url).await.unwrap();
    // 2: INCREMENTAL.
    assert_eq!(mode(pool).await, 2);
}

#[tokio::test]
async fn sqlite_creates_its_file_and_folder() {
    let scratch = Scratch::new(Backend::Sqlite).await;
    let _store = scratch.open().await;
    let path = scratch.url.trim_start_matches("sqlite://");
    assert!(std::path::Path::new(path).exists(), "{path}");
}

#[tokio::test]
async fn an_unknown_database_url_is_refused_with_a_clear_error() {
    let err = open("mysql://localhost/orders").await.err().unwrap();
    assert!(
        err.to_string().contains("sqlite:// or postgres://"),
        "{err}"
    );
}
