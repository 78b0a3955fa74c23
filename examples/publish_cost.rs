//! What a durable publish costs, each figure printed side by side with its peer and the ratio:
//!
//! - SQLite: the server's setting (`synchronous = FULL`, every commit fsynced) against
//!   `NORMAL` (WAL fsynced only at checkpoints: survives a process crash, not a power cut),
//!   one publisher at a time.
//! - Postgres (when the `PG*` variables name a server, as `pg_virtualenv` sets them): ids in
//!   commit order (the advisory lock every batch takes) against no such lock, with two
//!   instances of 16 concurrent publishers each, in publishes per second.
//!
//!     make publish-cost        (runs it inside pg_virtualenv)
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use order_tracking::domain::{OrderStatus, OrderStatusUpdate};
use order_tracking::server::store::{scratch, CommitOrder, EventStore, PostgresStore, SqliteStore};
use sqlx::sqlite::SqliteSynchronous;
use uuid::Uuid;

const ORDERS: usize = 300;

/// Appends every status of `ORDERS` orders, one writer at a time; returns the time per append.
async fn sqlite(synchronous: SqliteSynchronous) -> Duration {
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let store = SqliteStore::open_with(&url, synchronous)
        .await
        .expect("store");
    let started = Instant::now();
    walk_orders(&store, ORDERS).await;
    started.elapsed() / (ORDERS * OrderStatus::ALL.len()) as u32
}

/// Takes `orders` new orders through every status, one append at a time.
async fn walk_orders(store: &dyn EventStore, orders: usize) {
    for _ in 0..orders {
        let order = Uuid::new_v4();
        for status in OrderStatus::ALL {
            store
                .append(&OrderStatusUpdate::new(order, status, Utc::now()))
                .await
                .expect("append");
        }
    }
}

const INSTANCES: usize = 2;
const PUBLISHERS: usize = 16;
const ORDERS_PER_PUBLISHER: usize = 20;

/// Publishes/s with two instances of concurrent publishers, each walking its orders through
/// every status.
async fn postgres(url: &str, order: CommitOrder) -> f64 {
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        let store: Arc<dyn EventStore> =
            Arc::new(PostgresStore::open_with(url, order).await.expect("store"));
        instances.push(store);
    }
    let started = Instant::now();
    let publishers: Vec<_> = (0..INSTANCES * PUBLISHERS)
        .map(|n| {
            let store = instances[n % INSTANCES].clone();
            tokio::spawn(async move { walk_orders(store.as_ref(), ORDERS_PER_PUBLISHER).await })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let appends = INSTANCES * PUBLISHERS * ORDERS_PER_PUBLISHER * OrderStatus::ALL.len();
    appends as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    // Warm the file system and the pool once, then take the better of three runs of each.
    sqlite(SqliteSynchronous::Normal).await;
    let mut full = Duration::MAX;
    let mut normal = Duration::MAX;
    for _ in 0..3 {
        full = full.min(sqlite(SqliteSynchronous::Full).await);
        normal = normal.min(sqlite(SqliteSynchronous::Normal).await);
    }
    let appends = ORDERS * OrderStatus::ALL.len();
    println!("SQLite: {appends} sequential appends, best of 3");
    println!("{:<28} {:>12} {:>14}", "setting", "per append", "appends/s");
    for (name, per) in [
        ("synchronous=FULL (ours)", full),
        ("synchronous=NORMAL (peer)", normal),
    ] {
        println!(
            "{name:<28} {:>9.1} µs {:>14.0}",
            per.as_secs_f64() * 1e6,
            1.0 / per.as_secs_f64()
        );
    }
    println!(
        "ratio FULL/NORMAL: {:.2}x the time per append",
        full.as_secs_f64() / normal.as_secs_f64()
    );

    if std::env::var("PGHOST").is_err() {
        println!("\nPostgres: skipped (no PG* variables; `make publish-cost` sets them)");
        return;
    }
    let mut serialised: f64 = 0.0;
    let mut unordered: f64 = 0.0;
    for _ in 0..3 {
        for (order, best) in [
            (CommitOrder::Serialised, &mut serialised),
            (CommitOrder::Unordered, &mut unordered),
        ] {
            let url = scratch::postgres_database()
                .await
                .expect("a Postgres server");
            *best = best.max(postgres(&url, order).await);
        }
    }
    println!(
        "\nPostgres: {INSTANCES} instances x {PUBLISHERS} concurrent publishers, {} appends, best of 3",
        INSTANCES * PUBLISHERS * ORDERS_PER_PUBLISHER * OrderStatus::ALL.len()
    );
    println!("{:<36} {:>14}", "ids", "appends/s");
    println!(
        "{:<36} {serialised:>14.0}",
        "in commit order (ours: advisory lock)"
    );
    println!("{:<36} {unordered:>14.0}", "unordered (peer: no lock)");
    println!(
        "ratio ours/peer: {:.2}x the publishes per second",
        serialised / unordered
    );
}
