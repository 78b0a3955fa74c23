//! What a durable publish costs: appends events to the SQLite store with the server's setting
//! (`synchronous = FULL`, every commit fsynced) and, as the peer, with `NORMAL` (WAL fsynced
//! only at checkpoints: survives a process crash, not a power cut), and prints both side by
//! side with their ratio.
//!
//!     make publish-cost        (or: cargo run --release --example publish_cost --features ssr)
use std::time::{Duration, Instant};

use chrono::Utc;
use order_tracking::domain::{OrderStatus, OrderStatusUpdate};
use order_tracking::server::store::{EventStore, SqliteStore};
use sqlx::sqlite::SqliteSynchronous;
use uuid::Uuid;

const ORDERS: usize = 300;

/// Appends every status of `ORDERS` orders, one writer at a time; returns the time per append.
async fn measure(synchronous: SqliteSynchronous) -> Duration {
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let store = SqliteStore::open_with(&url, synchronous)
        .await
        .expect("store");
    let started = Instant::now();
    for _ in 0..ORDERS {
        let order = Uuid::new_v4();
        for status in OrderStatus::ALL {
            store
                .append(&OrderStatusUpdate::new(order, status, Utc::now()))
                .await
                .expect("append");
        }
    }
    started.elapsed() / (ORDERS * OrderStatus::ALL.len()) as u32
}

#[tokio::main]
async fn main() {
    // Warm the file system and the pool once, then take the better of three runs of each.
    measure(SqliteSynchronous::Normal).await;
    let mut full = Duration::MAX;
    let mut normal = Duration::MAX;
    for _ in 0..3 {
        full = full.min(measure(SqliteSynchronous::Full).await);
        normal = normal.min(measure(SqliteSynchronous::Normal).await);
    }
    let appends = ORDERS * OrderStatus::ALL.len();
    println!("publish cost: {appends} sequential appends, best of 3");
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
}
