//! The SSE stream against a real bound server: wire format, headers, fan-out, history,
//! resume, end, 204, 400, keep-alive, and no gap or duplicate under concurrent publishing.
#![cfg(feature = "ssr")]
mod common;

use std::time::Duration;

use futures::StreamExt;

use common::*;
use serde_json::Value;

fn stream_url(server: &TestServer, id: &str) -> String {
    server.url(&format!("/orders/{id}/stream"))
}

#[tokio::test]
async fn the_wire_format_is_exact_byte_for_byte() {
    let server = TestServer::start().await;
    let id = create_order(&server.base).await;
    deliver(&server.base, &id).await;
    let order = order_json(&server.base, &id).await;

    let mut reader = SseReader::open(&stream_url(&server, &id), None).await;
    let events = reader.events_to_end().await;
    assert_eq!(events.len(), 6);

    // The first frame: this stream's own reconnect delay, between 3 and 6 s (spec §13).
    let raw = String::from_utf8(reader.raw.clone()).unwrap();
    let retry = raw
        .strip_prefix("retry: ")
        .and_then(|rest| rest.split_once("\n\n"))
        .map(|(ms, _)| ms.to_owned())
        .unwrap_or_else(|| panic!("no retry first: {raw:?}"));
    assert!(
        (3000..=6000).contains(&retry.parse::<u64>().unwrap()),
        "{retry}"
    );
    let mut expected = format!("retry: {retry}\n\n");
    for event in order["events"].as_array().unwrap() {
        expected.push_str(&format!(
            "id: {}\nevent: order-update\ndata: {{\"orderId\":\"{}\",\"status\":\"{}\",\"timestamp\":\"{}\"}}\n\n",
            event["id"].as_str().unwrap(),
            id,
            event["status"].as_str().unwrap(),
            event["timestamp"].as_str().unwrap(),
        ));
    }
    assert_eq!(raw, expected);
    // Timestamps: RFC 3339, UTC, milliseconds.
    let stamp = order["events"][0]["timestamp"].as_str().unwrap();
    assert_eq!(stamp.len(), "2026-11-23T23:10:00.123Z".len(), "{stamp}");
    assert!(stamp.ends_with('Z'));
}

#[tokio::test]
async fn the_stream_has_the_right_headers_and_is_never_compressed() {
    let server = TestServer::start().await;
    let id = create_order(&server.base).await;
    let response = client()
        .get(stream_url(&server, &id))
        .header("Accept-Encoding", "gzip, br, deflate")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
}

#[tokio::test]
async fn two_subscribers_of_a_new_order_both_get_all_six_then_the_stream_ends() {
    let server = TestServer::start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut first = SseReader::open(&stream_url(&server, &id), None).await;
    let mut second = SseReader::open(&stream_url(&server, &id), None).await;
    assert_retry(first.next_frame().await);
    assert_retry(second.next_frame().await);

    start_simulation(&server.base, &id, 20).await;

    let a = first.events_to_end().await;
    let b = second.events_to_end().await;
    assert_eq!(statuses(&a), ALL);
    assert_eq!(a, b);
    for frame in &a {
        let Frame::Event { event, data, .. } = frame else {
            unreachable!()
        };
        assert_eq!(event, "order-update");
        assert_eq!(data["orderId"], Value::String(id.clone()));
    }
    let ids: Vec<i64> = a.iter().map(|f| f.id().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn a_late_subscriber_gets_the_history() {
    let server = TestServer::start().await;
    let id = create_order(&server.base).await;
    client()
        .post(server.url(&format!("/api/orders/{id}/status")))
        .json(&serde_json::json!({"status": "PaymentConfirmed"}))
        .send()
        .await
        .unwrap();
    let mut late = SseReader::open(&stream_url(&server, &id), None).await;
    assert_retry(late.next_frame().await);
    assert_eq!(
        late.next_event().await.unwrap().status().unwrap(),
        "Created"
    );
    assert_eq!(
        late.next_event().await.unwrap().status().unwrap(),
        "PaymentConfirmed"
    );
    // Then live.
    client()
        .post(server.url(&format!("/api/orders/{id}/status")))
        .json(&serde_json::json!({"status": "Packed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(late.next_event().await.unwrap().status().unwrap(), "Packed");
}

async fn delivered_order_ids(server: &TestServer) -> (String, Vec<String>) {
    let id = create_order(&server.base).await;
    deliver(&server.base, &id).await;
    let order = order_json(&server.base, &id).await;
    let ids = order["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    (id, ids)
}

#[tokio::test]
async fn resume_by_header_by_query_and_the_header_wins() {
    let server = TestServer::start().await;
    let (id, ids) = delivered_order_ids(&server).await;

    let mut by_header = SseReader::open(&stream_url(&server, &id), Some(&ids[2])).await;
    assert_eq!(statuses(&by_header.events_to_end().await), ALL[3..]);

    let url = format!("{}?last_event_id={}", stream_url(&server, &id), ids[4]);
    let mut by_query = SseReader::open(&url, None).await;
    assert_eq!(statuses(&by_query.events_to_end().await), ALL[5..]);

    let url = format!("{}?last_event_id={}", stream_url(&server, &id), ids[4]);
    let mut both = SseReader::open(&url, Some(&ids[1])).await;
    assert_eq!(statuses(&both.events_to_end().await), ALL[2..]);

    // An empty header falls back to the query.
    let mut empty_header = SseReader::open(&url, Some("")).await;
    assert_eq!(statuses(&empty_header.events_to_end().await), ALL[5..]);
}

#[tokio::test]
async fn an_id_that_is_not_this_orders_replays_from_the_start() {
    let server = TestServer::start().await;
    let (first, first_ids) = delivered_order_ids(&server).await;
    let (second, _) = delivered_order_ids(&server).await;
    for resume in [first_ids[3].as_str(), "999999", "abc", "-1", "ÿ"] {
        let mut reader = SseReader::open(&stream_url(&server, &second), Some(resume)).await;
        assert_eq!(
            statuses(&reader.events_to_end().await),
            ALL,
            "resume {resume:?}"
        );
    }
    assert_ne!(first, second);
}

#[tokio::test]
async fn resuming_at_delivered_gets_204() {
    let server = TestServer::start().await;
    let (id, ids) = delivered_order_ids(&server).await;
    let reader = SseReader::open(&stream_url(&server, &id), Some(&ids[5])).await;
    assert_eq!(reader.response_status, 204);
    let url = format!("{}?last_event_id={}", stream_url(&server, &id), ids[5]);
    assert_eq!(SseReader::open(&url, None).await.response_status, 204);
}

#[tokio::test]
async fn a_malformed_id_gets_400_with_a_json_error_and_any_uuid_form_works() {
    let server = TestServer::start().await;
    for bad in [
        "42",
        "not-a-uuid",
        "%F0%9F%92%A5",
        "67e55044-10b1-426f-9247-bb680e5fe0c",
    ] {
        let response = client()
            .get(server.url(&format!("/orders/{bad}/stream")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_order_id");
        assert!(body["message"].as_str().unwrap().len() > 10);
    }
    let (id, _) = delivered_order_ids(&server).await;
    let simple = id.replace('-', "").to_uppercase();
    for form in [simple, format!("{{{id}}}"), format!("urn:uuid:{id}")] {
        let mut reader = SseReader::open(&stream_url(&server, &form), None).await;
        let events = reader.events_to_end().await;
        assert_eq!(events.len(), 6, "{form}");
        let Frame::Event { data, .. } = &events[0] else {
            unreachable!()
        };
        assert_eq!(data["orderId"], Value::String(id.clone()));
    }
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments() {
    let server = TestServer::start_with(|config| config.keepalive_secs = 1).await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut reader = SseReader::open(&stream_url(&server, &id), None).await;
    assert_retry(reader.next_frame().await);
    assert_eq!(reader.next_frame().await, Some(Frame::KeepAlive));
    assert_eq!(reader.next_frame().await, Some(Frame::KeepAlive));
    assert!(String::from_utf8_lossy(&reader.raw).ends_with(": keep-alive\n\n"));
}

/// A page asks for `heartbeat` to notice a stream that died silently: it is told the period
/// first, then each keep-alive comes as an event it can see, the comment still beside it.
#[tokio::test]
async fn a_heartbeat_stream_tells_its_period_and_shows_every_keep_alive() {
    let server = TestServer::start_with(|config| config.keepalive_secs = 1).await;
    let id = uuid::Uuid::new_v4().to_string();
    for url in [
        format!("{}?heartbeat", stream_url(&server, &id)),
        server.url(&format!("/stream?order={id}&heartbeat=1")),
    ] {
        let mut body = client().get(&url).send().await.unwrap().bytes_stream();
        let mut raw = Vec::new();
        let beat = b"event: keep-alive\ndata: \n\n: keep-alive\n\n";
        while raw.windows(beat.len()).filter(|w| w == beat).count() < 2 {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("a keep-alive within 10 s")
                .unwrap()
                .unwrap();
            raw.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(raw).unwrap();
        let first = text.split("\n\n").next().unwrap();
        let lines: Vec<&str> = first.lines().collect();
        assert!(lines[0].starts_with("retry: "), "{text}");
        assert_eq!(lines[1..], ["event: keep-alive", "data: 1"], "{text}");
        assert_eq!(
            text.replace(first, "")
                .replace(std::str::from_utf8(beat).unwrap(), ""),
            "\n\n",
            "nothing but the period and heartbeats: {text}"
        );
    }
}

/// Subscribers join at every moment of a fast simulation, some resuming part-way: each must
/// see exactly the statuses after its resume point, in order, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_has_no_gap_and_no_duplicate_under_concurrent_publishing() {
    let server = TestServer::start().await;
    for _round in 0..5 {
        let id = uuid::Uuid::new_v4().to_string();
        let url = stream_url(&server, &id);
        let subscribers: Vec<_> = (0..24)
            .map(|n| {
                let url = url.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(n * 3)).await;
                    let mut reader = SseReader::open(&url, None).await;
                    statuses(&reader.events_to_end().await)
                })
            })
            .collect();
        let publisher = client()
            .post(server.url(&format!("/orders/{id}/simulate?interval_ms=10&wait=true")))
            .send();
        assert_eq!(publisher.await.unwrap().status(), 200);
        for subscriber in subscribers {
            assert_eq!(subscriber.await.unwrap(), ALL);
        }
    }
}

#[tokio::test]
async fn more_streams_than_max_streams_get_503_with_retry_after() {
    let server = TestServer::start_with(|config| {
        config.max_streams = 2;
        // Above the total, so that the total is what refuses.
        config.limits.max_streams_per_client = Some(10);
    })
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    let _a = SseReader::open(&stream_url(&server, &id), None).await;
    let _b = SseReader::open(&stream_url(&server, &id), None).await;
    let response = client().get(stream_url(&server, &id)).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "too_many_streams");
}

#[tokio::test]
async fn a_publish_sent_again_answers_the_stored_event_and_is_sent_once() {
    let server = TestServer::start().await;
    let id = create_order(&server.base).await;
    // A back office that lost the answer sends the same status again (spec §14).
    let (first_code, first) = post_status(&server.base, &id, "PaymentConfirmed").await;
    let (again_code, again) = post_status(&server.base, &id, "PaymentConfirmed").await;
    assert_eq!((first_code, again_code), (200, 200));
    assert_eq!(first, again, "a retry must answer the event already stored");
    // Going back, or skipping, is still refused.
    for refused in ["Created", "Shipped"] {
        let (code, body) = post_status(&server.base, &id, refused).await;
        assert_eq!(
            (code, body["error"].as_str()),
            (409, Some("invalid_transition"))
        );
    }
    assert_eq!(event_ids(&server.base, &id).await.len(), 2);
    assert_eq!(
        metric(&server.base, "order_tracking_events_published_total").await,
        2.0
    );

    // The order's stream carries each status once; and a Delivered sent again answers the
    // Delivered event too.
    let mut reader = SseReader::open(&stream_url(&server, &id), None).await;
    for status in [
        "Packed",
        "Shipped",
        "Shipped",
        "OutForDelivery",
        "Delivered",
    ] {
        assert_eq!(
            post_status(&server.base, &id, status).await.0,
            200,
            "{status}"
        );
    }
    let (code, delivered) = post_status(&server.base, &id, "Delivered").await;
    assert_eq!(
        (code, delivered["status"].as_str()),
        (200, Some("Delivered"))
    );
    let events = reader.events_to_end().await;
    assert_every_status_once_in_id_order(&events);
}

#[tokio::test]
async fn each_stream_draws_its_own_retry_so_a_crowd_comes_back_spread_out() {
    let server = TestServer::start().await;
    let id = create_order(&server.base).await;
    let mut delays = Vec::new();
    for _ in 0..30 {
        let mut reader = SseReader::open(&stream_url(&server, &id), None).await;
        match reader.next_frame().await {
            Some(Frame::Retry(ms)) => delays.push(ms.parse::<u64>().unwrap()),
            other => panic!("the first frame was {other:?}"),
        }
    }
    assert!(
        delays.iter().all(|ms| (3000..=6000).contains(ms)),
        "{delays:?}"
    );
    // Spread over the range, not one value: 30 draws of 3,001 values.
    let distinct: std::collections::HashSet<_> = delays.iter().collect();
    assert!(distinct.len() >= 20, "{delays:?}");
    let (low, high) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
    assert!(high - low >= 1500, "{delays:?}");
}
