//! Retention against a real bound server (spec §12): a delivered order is compacted a few
//! seconds after `Delivered`, and then its API answer, its stream, its page and the streams
//! that resume before its events are what the spec says.
mod common;

use std::time::Duration;

use common::{
    client, create_order, deliver, event_ids, metric, order_json, post_status, Frame, SseReader,
};
use order_tracking::server::retention::{Keep, Retention};

/// A server that compacts delivered orders two seconds after `Delivered`.
async fn server() -> common::TestServer {
    common::TestServer::start_with(|config| {
        config.retention = Retention {
            retain_delivered: Keep(Some(Duration::from_secs(2))),
            retain_idle: Keep(None),
            retain_summary: Keep(None),
        };
    })
    .await
}

/// Waits until the API says the order is expired; its JSON then.
async fn compacted(base: &str, id: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let order = order_json(base, id).await;
        if order["expired"] == true {
            return order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not compacted: {order}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The frames up to and including the first event, or the end.
async fn opening(reader: &mut SseReader) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(frame) = reader.next_frame().await {
        let is_event = matches!(frame, Frame::Event { .. });
        frames.push(frame);
        if is_event {
            break;
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_order_keeps_its_summary_and_its_stream_says_204() {
    let server = server().await;
    let id = create_order(&server.base).await;
    deliver(&server.base, &id).await;
    let ids = event_ids(&server.base, &id).await;
    assert_eq!(ids.len(), 6);
    // Not yet: within its retention it keeps its events.
    assert_eq!(order_json(&server.base, &id).await["expired"], false);

    let order = compacted(&server.base, &id).await;
    assert_eq!(order["status"], "Delivered");
    assert_eq!(order["events"], serde_json::json!([]));
    assert!(order["createdAt"].is_string() && order["updatedAt"].is_string());

    // Its stream: 204, whether it resumes or not, on the direct path.
    for last_event_id in [None, Some(ids[2].to_string()), Some("0".to_owned())] {
        let reader = SseReader::open(
            &server.url(&format!("/orders/{id}/stream")),
            last_event_id.as_deref(),
        )
        .await;
        assert_eq!(
            reader.response_status, 204,
            "resuming after {last_event_id:?}"
        );
    }
    // Going back is refused, against the summary.
    assert_eq!(post_status(&server.base, &id, "Shipped").await.0, 409);

    // Its page: the final status and its time, and that the steps are gone.
    let page = client()
        .get(server.url(&format!("/orders/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("data-testid=\"expired\""), "{html}");
    assert!(html.contains("Delivered"), "{html}");
    assert!(html.contains("no longer kept"), "{html}");

    // The figures, as the sweep's end sets them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&server.base, "order_tracking_events_stored").await != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events_stored never 0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&server.base, "order_tracking_orders_compacted_total").await,
        1.0
    );
    assert_eq!(
        metric(&server.base, "order_tracking_oldest_event_age_seconds").await,
        0.0
    );
    assert!(metric(&server.base, "order_tracking_last_sweep_seconds").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resuming_before_compacted_events_starts_with_reset_and_none_after_them() {
    let server = server().await;
    let gone = create_order(&server.base).await;
    deliver(&server.base, &gone).await;
    let gone_ids = event_ids(&server.base, &gone).await;
    let live = create_order(&server.base).await;
    assert!(common::publish(&server.base, &live, "PaymentConfirmed").await);
    let live_ids = event_ids(&server.base, &live).await;
    compacted(&server.base, &gone).await;
    let earliest = live_ids[0];

    // Before the compacted events: reset first, then what is stored after the point.
    let both = format!("/stream?order={gone}&order={live}");
    let mut reader = SseReader::open(&server.url(&both), Some("0")).await;
    assert_eq!(reader.response_status, 200);
    let frames = opening(&mut reader).await;
    assert!(matches!(frames[0], Frame::Retry(_)), "{frames:?}");
    assert_eq!(
        frames[1],
        Frame::Reset(serde_json::json!({ "earliest": earliest })),
        "{frames:?}"
    );
    assert_eq!(frames[2].id(), Some(live_ids[0].to_string()), "{frames:?}");
    assert_eq!(frames.len(), 3);

    // Resuming inside the compacted order's events: still reset.
    let mut reader = SseReader::open(&server.url(&both), Some(&gone_ids[3].to_string())).await;
    let frames = opening(&mut reader).await;
    assert!(matches!(frames[1], Frame::Reset(_)), "{frames:?}");

    // After its last event: nothing it would have sent is gone, so no reset.
    let after = gone_ids[5].to_string();
    let mut reader = SseReader::open(&server.url(&both), Some(&after)).await;
    let frames = opening(&mut reader).await;
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Reset(_))),
        "{frames:?}"
    );
    assert_eq!(
        frames.last().and_then(Frame::id),
        Some(live_ids[0].to_string())
    );

    // The back office's stream of every order: the same rule.
    let mut reader = SseReader::open(&server.url("/stream"), Some("0")).await;
    let frames = opening(&mut reader).await;
    assert_eq!(
        frames[1],
        Frame::Reset(serde_json::json!({ "earliest": earliest })),
        "{frames:?}"
    );
    let mut reader = SseReader::open(&server.url("/stream"), Some(&gone_ids[5].to_string())).await;
    let frames = opening(&mut reader).await;
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Reset(_))),
        "{frames:?}"
    );

    // An order stream of the live order never lost anything: no reset.
    let mut reader = SseReader::open(&server.url(&format!("/orders/{live}/stream")), None).await;
    let frames = opening(&mut reader).await;
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Reset(_))),
        "{frames:?}"
    );
}

#[test]
fn a_malformed_retention_refuses_to_start_naming_the_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_order-tracking"))
        .env("RETAIN_DELIVERED", "thirty days")
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("RETAIN_DELIVERED") && stderr.contains("30d"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_past_retain_summary_is_forgotten_and_its_order_is_unknown() {
    let server = common::TestServer::start_with(|config| {
        config.retention = Retention {
            retain_delivered: Keep(Some(Duration::from_secs(1))),
            retain_idle: Keep(None),
            retain_summary: Keep(Some(Duration::from_secs(3))),
        };
    })
    .await;
    let (old, newest) = (
        create_order(&server.base).await,
        create_order(&server.base).await,
    );
    deliver(&server.base, &old).await;
    deliver(&server.base, &newest).await;
    compacted(&server.base, &old).await;

    let api = |id: &str| {
        client()
            .get(server.url(&format!("/api/orders/{id}")))
            .send()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while api(&old).await.unwrap().status() != 404 {
        assert!(tokio::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Unknown everywhere, as an order that never was: its stream waits for its first event
    // (spec §3), with neither a replay nor a reset.
    let mut stream = SseReader::open(&server.url(&format!("/orders/{old}/stream")), None).await;
    assert_eq!(stream.response_status, 200);
    assert!(matches!(stream.next_frame().await, Some(Frame::Retry(_))));
    let next = tokio::time::timeout(Duration::from_millis(500), stream.next_frame()).await;
    assert!(next.is_err(), "a forgotten order's stream sent {next:?}");
    let page = client()
        .get(server.url(&format!("/orders/{old}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    assert_eq!(post_status(&server.base, &old, "Delivered").await.0, 404);
    // The newest summary stays: it says how far the log was compacted through.
    let kept = order_json(&server.base, &newest).await;
    assert_eq!(
        (kept["expired"].clone(), kept["status"].clone()),
        (true.into(), "Delivered".into())
    );
    assert_eq!(
        metric(&server.base, "order_tracking_orders_forgotten_total").await,
        1.0
    );
}
