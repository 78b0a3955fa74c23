//! Property tests: whatever a client sends as an id, query string, body or `Last-Event-ID`,
//! the server never panics and never answers 5xx for the client's mistake.
#![cfg(feature = "ssr")]
mod common;

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use http_body_util::BodyExt;
use order_tracking::server::router;
use proptest::prelude::*;
use tower::ServiceExt;

/// One router over one database for all cases, on a runtime that outlives them.
fn app() -> &'static (tokio::runtime::Runtime, Router) {
    static APP: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let app = runtime.block_on(async {
            let (dir, state) = common::test_state(|_| {}).await;
            std::mem::forget(dir); // kept for the whole test run
            router(state)
        });
        (runtime, app)
    })
}

/// Sends the request; returns the status. Bodies that are not streams are read in full.
fn status_of(request: Request<Body>) -> u16 {
    let (runtime, app) = app();
    runtime.block_on(async {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let is_stream = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "text/event-stream");
        if !is_stream {
            response.into_body().collect().await.unwrap();
        }
        status
    })
}

fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn any_id() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-fA-F-]{0,40}",
        Just(uuid::Uuid::new_v4().to_string()),
        any::<u128>().prop_map(|n| format!("urn:uuid:{}", uuid::Uuid::from_u128(n))),
        any::<u128>().prop_map(|n| format!("{{{}}}", uuid::Uuid::from_u128(n).simple())),
    ]
}

/// Header values as HTTP allows them: visible ASCII, spaces, tabs and obs-text bytes.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')],
        0..300,
    )
}

fn assert_not_server_error(status: u16, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{what} got {status}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_order_id_on_any_route(id in any_id(), route in 0usize..5) {
        let id = percent_encode(&id);
        let (method, uri) = match route {
            0 => (Method::GET, format!("/orders/{id}/stream")),
            1 => (Method::GET, format!("/api/orders/{id}")),
            2 => (Method::POST, format!("/api/orders/{id}/status")),
            3 => (Method::POST, format!("/orders/{id}/simulate?interval_ms=0")),
            _ => (Method::GET, format!("/orders/{id}")),
        };
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"status":"PaymentConfirmed"}"#))
            .unwrap();
        assert_not_server_error(status_of(request), &uri)?;
    }

    #[test]
    fn any_query_string(query in any::<String>(), route in 0usize..4) {
        let query = percent_encode(&query).replace("%3D", "=").replace("%26", "&");
        let id = uuid::Uuid::new_v4();
        let (method, uri) = match route {
            0 => (Method::GET, format!("/api/orders?{query}")),
            1 => (Method::POST, format!("/orders/{id}/simulate?{query}")),
            2 => (Method::GET, format!("/stream?order={id}&{query}")),
            _ => (Method::GET, format!("/orders/{id}/stream?{query}")),
        };
        let request = Request::builder().method(method).uri(&uri).body(Body::empty()).unwrap();
        assert_not_server_error(status_of(request), &uri)?;
    }

    #[test]
    fn any_status_body(body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2000),
        any::<String>().prop_map(|s| format!(r#"{{"status":{}}}"#, serde_json::Value::String(s)).into_bytes()),
        Just(br#"{"status":null}"#.to_vec()),
        Just(br#"[1,2,3]"#.to_vec()),
    ], content_type in prop_oneof![Just("application/json"), Just("text/plain"), Just("application/json; charset=utf-8")]) {
        let (runtime, app) = app();
        let id = runtime.block_on(async {
            let response = app.clone()
                .oneshot(Request::post("/api/orders").body(Body::empty()).unwrap())
                .await
                .unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_owned()
        });
        let request = Request::post(format!("/api/orders/{id}/status"))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        assert_not_server_error(status_of(request), "status body")?;
    }

    #[test]
    fn any_last_event_id(value in header_bytes(), query in any::<String>()) {
        let Ok(header) = axum::http::HeaderValue::from_bytes(&value) else { return Ok(()) };
        let uri = format!("/orders/{}/stream?last_event_id={}", uuid::Uuid::new_v4(), percent_encode(&query));
        let request = Request::get(&uri).header("last-event-id", header).body(Body::empty()).unwrap();
        let status = status_of(request);
        prop_assert_eq!(status, 200, "{:?}", value);
    }
}
