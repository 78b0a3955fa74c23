//! Many orders on one connection (spec §11) against a real bound server: `GET /stream` with
//! listed orders (one cursor, id order, each once, 204 at the end, 400 for bad input, one
//! stream for `MAX_STREAMS`) and without (every order, token-protected, never ends).
#![cfg(feature = "ssr")]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn selection_url(server: &TestServer, orders: &[String]) -> String {
    let query: Vec<String> = orders.iter().map(|id| format!("order={id}")).collect();
    server.url(&format!("/stream?{}", query.join("&")))
}

fn order_of(frame: &Frame) -> String {
    match frame {
        Frame::Event { data, .. } => data["orderId"].as_str().unwrap().to_owned(),
        other => panic!("not an event: {other:?}"),
    }
}

fn id_of(frame: &Frame) -> i64 {
    frame.id().unwrap().parse().unwrap()
}

/// Every event of every listed order, each once, in increasing id order, and nothing else.
fn assert_each_event_once_in_id_order(frames: &[Frame], orders: &[String]) {
    let ids: Vec<i64> = frames.iter().map(id_of).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let mut by_order: HashMap<String, Vec<String>> = HashMap::new();
    for frame in frames {
        by_order
            .entry(order_of(frame))
            .or_default()
            .push(frame.status().unwrap());
    }
    assert_eq!(by_order.len(), orders.len(), "{by_order:?}");
    for order in orders {
        assert_eq!(by_order[order], ALL, "order {order}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_publishers_on_many_orders_each_client_gets_its_orders_events_once_in_id_order() {
    let server = TestServer::start().await;
    let orders: Vec<String> = (0..12).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    // Clients of overlapping sets of orders join while the publishing goes on.
    let clients: Vec<_> = (0..10usize)
        .map(|n| {
            let mine: Vec<String> = orders
                .iter()
                .enumerate()
                .filter(|(i, _)| !(i + n).is_multiple_of(3))
                .map(|(_, id)| id.clone())
                .collect();
            let url = selection_url(&server, &mine);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(n as u64 * 7)).await;
                let mut reader = SseReader::open(&url, None).await;
                assert_eq!(reader.response_status, 200);
                assert_eq!(reader.headers["content-type"], "text/event-stream");
                (mine, reader.events_to_end().await)
            })
        })
        .collect();
    // A simulation per order, all at once, and two more publishers racing them for every
    // status of every order, the orders interleaved.
    let simulations: Vec<_> = orders
        .iter()
        .map(|id| {
            let url = server.url(&format!("/orders/{id}/simulate?interval_ms=3&wait=true"));
            tokio::spawn(async move { client().post(url).send().await.unwrap().status() })
        })
        .collect();
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (base, orders) = (server.base.clone(), orders.clone());
            tokio::spawn(async move {
                for status in &ALL[1..] {
                    for id in &orders {
                        publish(&base, id, status).await;
                    }
                }
            })
        })
        .collect();
    for racer in racers {
        racer.await.unwrap();
    }
    for simulation in simulations {
        assert_eq!(simulation.await.unwrap(), 200);
    }
    for client in clients {
        let (mine, frames) = client.await.unwrap();
        assert_each_event_once_in_id_order(&frames, &mine);
    }
}

#[tokio::test]
async fn resuming_from_any_id_gives_exactly_the_rest_and_after_the_last_204() {
    let server = TestServer::start().await;
    let (a, b, other) = (
        create_order(&server.base).await,
        create_order(&server.base).await,
        create_order(&server.base).await,
    );
    // Interleave the three orders' events.
    for status in &ALL[1..] {
        for id in [&a, &other, &b] {
            assert!(publish(&server.base, id, status).await);
        }
    }
    let listed = [a.clone(), b.clone()];
    let url = selection_url(&server, &listed);
    let all = SseReader::open(&url, None).await.events_to_end().await;
    assert_each_event_once_in_id_order(&all, &listed);

    // Every id of the store is a resume point, including the other order's.
    let mut everything = Vec::new();
    for id in [&a, &b, &other] {
        everything.extend(event_ids(&server.base, id).await);
    }
    for resume in everything {
        let rest: Vec<&Frame> = all.iter().filter(|f| id_of(f) > resume).collect();
        let by_header = SseReader::open(&url, Some(&resume.to_string())).await;
        let by_query = SseReader::open(&format!("{url}&last_event_id={resume}"), None).await;
        for mut reader in [by_header, by_query] {
            if rest.is_empty() {
                assert_eq!(reader.response_status, 204, "after {resume}");
                continue;
            }
            let got = reader.events_to_end().await;
            assert_eq!(got.iter().collect::<Vec<_>>(), rest, "after {resume}");
        }
    }
}

#[tokio::test]
async fn a_stream_of_orders_not_placed_yet_waits_for_them_and_ends_when_all_are_delivered() {
    let server = TestServer::start().await;
    let (a, b) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let mut reader = SseReader::open(&selection_url(&server, &[a.clone(), b.clone()]), None).await;
    assert_eq!(reader.response_status, 200);
    assert_retry(reader.next_frame().await);
    deliver(&server.base, &a).await;
    let mut frames = Vec::new();
    for _ in 0..6 {
        frames.push(reader.next_event().await.unwrap());
    }
    // a is delivered, b is still open: the stream goes on.
    assert!(!reader.ended);
    deliver(&server.base, &b).await;
    frames.extend(reader.events_to_end().await);
    assert_each_event_once_in_id_order(&frames, &[a, b]);
}

#[tokio::test]
async fn every_bad_query_gets_400_json() {
    let server = TestServer::start().await;
    let hundred_and_one: Vec<String> = (0..101).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let good = uuid::Uuid::new_v4();
    for (query, code) in [
        ("order=".to_owned(), "invalid_order_id"),
        ("order=nope".to_owned(), "invalid_order_id"),
        (format!("order={good}&order=12345"), "invalid_order_id"),
        ("order=%00%FF".to_owned(), "invalid_order_id"),
        (
            hundred_and_one
                .iter()
                .map(|id| format!("order={id}"))
                .collect::<Vec<_>>()
                .join("&"),
            "bad_request",
        ),
    ] {
        let response = client()
            .get(server.url(&format!("/stream?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query:.60}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{query:.60}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A hundred, and the same order named twice in two forms, are fine.
    let mut hundred = hundred_and_one;
    hundred.truncate(100);
    hundred.push(hundred[0].to_uppercase());
    let reader = SseReader::open(&selection_url(&server, &hundred), None).await;
    assert_eq!(reader.response_status, 200);
}

#[tokio::test]
async fn a_stream_of_many_orders_counts_once_for_max_streams() {
    let server = TestServer::start_with(|config| {
        config.max_streams = 2;
        // Above the total, so that the total is what refuses.
        config.limits.max_streams_per_client = Some(10);
    })
    .await;
    let orders: Vec<String> = (0..50).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let _many = SseReader::open(&selection_url(&server, &orders), None).await;
    assert_eq!(_many.response_status, 200);
    let _all = SseReader::open(&server.url("/stream"), None).await;
    assert_eq!(_all.response_status, 200);
    let third = client()
        .get(selection_url(&server, &orders[..1]))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(
        metric(&server.base, "order_tracking_open_streams").await,
        2.0
    );
}

#[tokio::test]
async fn every_orders_stream_replays_after_its_cursor_then_goes_on_after_delivered() {
    let server = TestServer::start().await;
    let first = create_order(&server.base).await;
    let first_id = order_json(&server.base, &first).await["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = create_order(&server.base).await;
    let mut reader = SseReader::open(&server.url("/stream"), Some(&first_id)).await;
    assert_eq!(reader.response_status, 200);
    let replayed = reader.next_event().await.unwrap();
    assert_eq!(
        (order_of(&replayed), replayed.status()),
        (second.clone(), Some("Created".into()))
    );
    deliver(&server.base, &second).await;
    for status in &ALL[1..] {
        assert_eq!(
            reader.next_event().await.unwrap().status().as_deref(),
            Some(*status)
        );
    }
    // Delivered ends nothing: a new order comes next.
    let third = create_order(&server.base).await;
    assert_eq!(order_of(&reader.next_event().await.unwrap()), third);
}

#[tokio::test]
async fn with_a_token_every_orders_stream_needs_it_and_listed_orders_do_not() {
    let server = TestServer::start_with(|config| config.admin_token = Some("s3cret".into())).await;
    for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
        let mut request = client().get(server.url("/stream"));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    let response = client()
        .get(server.url("/stream"))
        .header("Authorization", "Bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let listed = selection_url(&server, &[uuid::Uuid::new_v4().to_string()]);
    assert_eq!(SseReader::open(&listed, None).await.response_status, 200);
}
