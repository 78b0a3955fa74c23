//! Several instances (spec §10), with real servers started by the tests: two copies of the
//! real binary on one Postgres database, talking over a real Redis or over Postgres
//! `LISTEN/NOTIFY`; Redis and Postgres stopped under them. Nothing is mocked. The Postgres
//! server is the one `make test` starts with pg_virtualenv.
#![cfg(feature = "ssr")]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// How long an event may take to reach every subscriber on every instance when its bus
/// message is lost (spec §10).
const BOUND: Duration = Duration::from_secs(5);

async fn get_json(url: &str) -> (u16, Value) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until `/healthz` reports the bus as `bus`.
async fn wait_for_bus(base: &str, bus: &str) {
    let deadline = Instant::now() + BOUND * 2;
    loop {
        let (_, health) = get_json(&format!("{base}/healthz")).await;
        if health["bus"] == bus {
            return;
        }
        assert!(Instant::now() < deadline, "bus never {bus}: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn advance(base: &str, id: &str, status: &str) -> reqwest::Response {
    client()
        .post(format!("{base}/api/orders/{id}/status"))
        .json(&serde_json::json!({ "status": status }))
        .send()
        .await
        .unwrap()
}

/// Two instances on one fresh database, with the bus `redis` names (LISTEN/NOTIFY if none).
async fn two_instances(redis: Option<&Redis>) -> (String, Process, Process) {
    let database = postgres_database().await;
    let redis_url = redis.map(Redis::url);
    let env: Vec<(&str, &str)> = redis_url
        .as_deref()
        .map(|url| vec![("REDIS_URL", url)])
        .unwrap_or_default();
    let a = Process::spawn(&database, free_addr(), &env).await;
    let b = Process::spawn(&database, free_addr(), &env).await;
    wait_for_bus(&a.base, "ok").await;
    wait_for_bus(&b.base, "ok").await;
    (database, a, b)
}

/// A subscriber on A gets every event published through B, once each, with the ids B
/// answered, and by the bus: A recovered none of them from the store.
async fn events_published_on_b_reach_a_subscriber_on_a(redis: Option<&Redis>) {
    let (_database, a, b) = two_instances(redis).await;
    let created = client()
        .post(format!("{}/api/orders", b.base))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let mut ids = vec![created["events"][0]["id"].as_str().unwrap().to_owned()];
    let mut reader = SseReader::open(&format!("{}/orders/{id}/stream", a.base), None).await;
    assert_eq!(
        reader.next_event().await.unwrap().id(),
        Some(ids[0].clone())
    );
    for status in &ALL[1..] {
        let response = advance(&b.base, &id, status).await;
        assert_eq!(response.status(), 200);
        let event: Value = response.json().await.unwrap();
        ids.push(event["id"].as_str().unwrap().to_owned());
        // Each arrives on A before the next is published.
        let frame = reader.next_event().await.unwrap();
        assert_eq!(frame.status().as_deref(), Some(*status));
    }
    let rest = reader.events_to_end().await;
    assert!(rest.is_empty(), "duplicates: {rest:?}");
    let seen: Vec<_> = reader
        .raw
        .split(|b| *b == b'\n')
        .filter_map(|line| line.strip_prefix(b"id: "))
        .map(|id| String::from_utf8(id.to_vec()).unwrap())
        .collect();
    assert_eq!(seen, ids);
    // The bus brought them, not the store's catch-up. The catch-up, once a second, can read
    // an event in the millisecond between its commit and its bus message (it is delivered
    // once either way), so one of five may count as recovered; a bus that carries nothing
    // would leave all five to the catch-up.
    let recovered = metric(&a.base, "order_tracking_bus_events_recovered_total").await;
    assert!(
        recovered <= 1.0,
        "{recovered} of 5 events came from the store"
    );
    assert_eq!(metric(&a.base, "order_tracking_bus_connected").await, 1.0);
}

#[tokio::test]
async fn over_redis_a_subscriber_on_one_instance_gets_what_another_publishes() {
    let redis = Redis::start().await;
    events_published_on_b_reach_a_subscriber_on_a(Some(&redis)).await;
}

#[tokio::test]
async fn over_listen_notify_a_subscriber_on_one_instance_gets_what_another_publishes() {
    events_published_on_b_reach_a_subscriber_on_a(None).await;
}

#[tokio::test]
async fn after_kill_9_of_its_instance_a_client_resumes_on_the_other_with_no_gap() {
    let redis = Redis::start().await;
    let (_database, mut a, b) = two_instances(Some(&redis)).await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut reader = SseReader::open(&format!("{}/orders/{id}/stream", a.base), None).await;
    start_simulation(&b.base, &id, 300).await;
    let mut seen = vec![reader.next_event().await.unwrap()];
    seen.push(reader.next_event().await.unwrap());
    a.signal("KILL");
    let killed = Instant::now();
    a.wait_exit(WAIT).await;
    // The rest of A's response, if any, then the broken connection.
    seen.extend(reader.events_to_end().await);
    let last = seen.last().unwrap().id().unwrap();
    let mut resumed = SseReader::open(&format!("{}/orders/{id}/stream", b.base), Some(&last)).await;
    let first_on_b = resumed.next_event().await.unwrap();
    println!(
        "kill -9: the next event arrived from the other instance {:?} after the kill",
        killed.elapsed()
    );
    seen.push(first_on_b);
    seen.extend(resumed.events_to_end().await);
    assert_every_status_once_in_id_order(&seen);
}

/// Subscribes on both instances to each order, runs simulations on both while `outage`
/// does its damage, and returns how long after the last publish every subscriber had all six.
async fn every_subscriber_gets_all_six_despite(
    a: &Process,
    b: &Process,
    outage: impl std::future::Future<Output = ()>,
) -> Duration {
    let orders: Vec<String> = (0..6).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut readers = Vec::new();
    for id in &orders {
        for base in [&a.base, &b.base] {
            let url = format!("{base}/orders/{id}/stream");
            readers.push(tokio::spawn(async move {
                let mut reader = SseReader::open(&url, None).await;
                let events = reader.events_to_end().await;
                (statuses(&events), Instant::now())
            }));
        }
    }
    for (n, id) in orders.iter().enumerate() {
        let base = if n % 2 == 0 { &a.base } else { &b.base };
        start_simulation(base, id, 400).await;
    }
    outage.await;
    // The moment the last status is in the store (polled every 20 ms).
    for id in &orders {
        while order_json(&a.base, id).await["status"] != "Delivered" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let last_publish = Instant::now();
    let mut slowest = Duration::ZERO;
    for reader in readers {
        let (got, done) = tokio::time::timeout(BOUND * 2, reader)
            .await
            .expect("a subscriber never completed")
            .unwrap();
        assert_eq!(got, ALL);
        slowest = slowest.max(done.saturating_duration_since(last_publish));
    }
    slowest
}

#[tokio::test]
async fn redis_down_for_2_s_loses_nothing_and_health_says_degraded() {
    let mut redis = Redis::start().await;
    let (_database, a, b) = two_instances(Some(&redis)).await;
    let a_base = a.base.clone();
    let redis_ref = &mut redis;
    let outage = async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis_ref.stop();
        wait_for_bus(&a_base, "down").await;
        let (status, health) = get_json(&format!("{a_base}/healthz")).await;
        assert_eq!(status, 200);
        assert_eq!(health["status"], "degraded");
        assert_eq!(health["store"], "ok");
        assert_eq!(metric(&a_base, "order_tracking_bus_connected").await, 0.0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis_ref.resume().await;
    };
    let slowest = every_subscriber_gets_all_six_despite(&a, &b, outage).await;
    println!("redis outage: every subscriber complete {slowest:?} after the last publish");
    assert!(slowest <= BOUND, "{slowest:?}");
    wait_for_bus(&a.base, "ok").await;
    assert!(metric(&a.base, "order_tracking_bus_events_recovered_total").await > 0.0);
}

#[tokio::test]
async fn an_event_whose_bus_message_never_arrives_still_reaches_every_instance() {
    let redis = Redis::start().await;
    let (database, a, b) = two_instances(Some(&redis)).await;
    let id = uuid::Uuid::new_v4();
    let mut readers = Vec::new();
    for base in [&a.base, &b.base] {
        readers.push(SseReader::open(&format!("{base}/orders/{id}/stream"), None).await);
    }
    // Written straight into the shared store: no instance announces it.
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let started = Instant::now();
    sqlx::query("INSERT INTO events (order_id, status, at_ms) VALUES ($1, 0, 0)")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    for reader in &mut readers {
        let frame = reader.next_event().await.unwrap();
        assert_eq!(frame.status().as_deref(), Some("Created"));
    }
    let took = started.elapsed();
    println!("lost bus message: every subscriber had it after {took:?}");
    assert!(took <= BOUND, "{took:?}");
}

/// One instance whose Postgres is reached through a relay a test can cut.
async fn instance_through_a_relay() -> (Relay, Process) {
    let database = postgres_database().await;
    let relay_port = free_addr().port();
    let (target, through_relay) = postgres_via(&database, relay_port);
    let relay = Relay::start_on(target, relay_port).await;
    let instance = Process::spawn(&through_relay, free_addr(), &[]).await;
    (relay, instance)
}

#[tokio::test]
async fn postgres_down_for_3_s_gets_503s_loses_nothing_acknowledged_and_streams_resume() {
    let (relay, instance) = instance_through_a_relay().await;
    let base = instance.base.clone();
    let created: Value = client()
        .post(format!("{base}/api/orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let mut reader = SseReader::open(&format!("{base}/orders/{id}/stream"), None).await;
    assert_eq!(
        reader.next_event().await.unwrap().status().as_deref(),
        Some("Created")
    );

    relay.set_cut(true);
    let cut_at = Instant::now();
    // While it is down: 503 JSON within 5 s, and health says so.
    let started = Instant::now();
    let refused = advance(&base, &id, "PaymentConfirmed").await;
    let took = started.elapsed();
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "unavailable"
    );
    assert!(took <= Duration::from_secs(5), "{took:?}");
    println!("postgres outage: a publisher got 503 after {took:?}");
    let (status, health) = get_json(&format!("{base}/healthz")).await;
    assert_eq!((status, health["store"].as_str()), (503, Some("down")));
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(cut_at.elapsed())).await;
    relay.set_cut(false);

    // Back: publishing works again (after the pool reconnects) and the open stream, which
    // stayed open all along, gets every acknowledged event.
    let deadline = Instant::now() + BOUND * 2;
    let mut acknowledged = Vec::new();
    for status in &ALL[1..] {
        loop {
            let response = advance(&base, &id, status).await;
            if response.status() == 200 {
                acknowledged.push(*status);
                break;
            }
            assert_eq!(response.status(), 503);
            assert!(Instant::now() < deadline, "the store never came back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut events = vec!["Created".to_owned()];
    events.extend(statuses(&reader.events_to_end().await));
    assert_eq!(events, ALL);
    assert!(!reader.broken);
    // And the store holds exactly what was acknowledged.
    let order = order_json(&base, &id).await;
    assert_eq!(
        order["events"].as_array().unwrap().len(),
        1 + acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulation_goes_on_after_the_store_was_down_with_each_status_once() {
    let (relay, instance) = instance_through_a_relay().await;
    let base = instance.base.clone();
    let id = uuid::Uuid::new_v4().to_string();
    let mut reader = SseReader::open(&format!("{base}/orders/{id}/stream"), None).await;
    start_simulation(&base, &id, 400).await;
    assert_eq!(
        reader.next_event().await.unwrap().status().as_deref(),
        Some("Created")
    );
    // Down for 2 s under the running simulation, which publishes again until it is back.
    relay.set_cut(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.set_cut(false);
    let mut events = vec!["Created".to_owned()];
    events.extend(statuses(&reader.events_to_end().await));
    assert_eq!(events, ALL);
    assert_eq!(event_ids(&base, &id).await.len(), 6);
}
