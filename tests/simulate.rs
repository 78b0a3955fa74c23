//! The simulator over HTTP: 202 at once, 200 with `wait=true`, remaining statuses only,
//! 409 while running or once delivered, 400 for a bad interval.
#![cfg(feature = "ssr")]
mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn answers_202_at_once_and_runs_on_without_the_caller() {
    let server = TestServer::start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    start_simulation(&server.base, &id, 50).await;
    assert!(started.elapsed() < Duration::from_millis(250 + 1000));
    // The Created event is stored before the response.
    let order = order_json(&server.base, &id).await;
    assert_eq!(order["events"][0]["status"], "Created");
    // The caller is gone; the simulation still finishes.
    let mut reader = SseReader::open(&server.url(&format!("/orders/{id}/stream")), None).await;
    assert_eq!(statuses(&reader.events_to_end().await), ALL);
}

#[tokio::test]
async fn wait_true_answers_200_with_the_seeds_text_after_the_last_status() {
    let server = TestServer::start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let response = client()
        .post(server.url(&format!("/orders/{id}/simulate?interval_ms=0&wait=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "Order simulation completed."
    );
    assert_eq!(order_json(&server.base, &id).await["status"], "Delivered");
}

#[tokio::test]
async fn a_second_simulation_while_one_runs_or_of_a_delivered_order_gets_409() {
    let server = TestServer::start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let url = server.url(&format!("/orders/{id}/simulate?interval_ms=100"));
    assert_eq!(client().post(&url).send().await.unwrap().status(), 202);
    let response = client().post(&url).send().await.unwrap();
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "simulation_running");

    let id = create_order(&server.base).await;
    deliver(&server.base, &id).await;
    let response = client()
        .post(server.url(&format!("/orders/{id}/simulate")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "order_delivered");
}

#[tokio::test]
async fn only_the_remaining_statuses_are_published() {
    let server = TestServer::start().await;
    let id = create_order(&server.base).await;
    for status in ["PaymentConfirmed", "Packed"] {
        assert!(publish(&server.base, &id, status).await, "{status}");
    }
    deliver(&server.base, &id).await;
    let order = order_json(&server.base, &id).await;
    let seen: Vec<_> = order["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ALL);
}

#[tokio::test]
async fn interval_ms_out_of_range_or_malformed_gets_400() {
    let server = TestServer::start().await;
    let id = uuid::Uuid::new_v4();
    for query in [
        "interval_ms=60001",
        "interval_ms=-1",
        "interval_ms=abc",
        "interval_ms=99999999999999999999",
        "wait=maybe",
    ] {
        let response = client()
            .post(server.url(&format!("/orders/{id}/simulate?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "bad_request");
    }
    // Nothing was created by the refused requests.
    let response = client()
        .get(server.url(&format!("/api/orders/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = client()
        .post(server.url(&format!("/orders/{id}/simulate?interval_ms=60000")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}
