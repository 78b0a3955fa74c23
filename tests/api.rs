//! Every status code of the HTTP interface, table-driven against the real router
//! (`tower::ServiceExt::oneshot`), and publisher auth on every mutating route.
#![cfg(feature = "ssr")]
mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use common::test_state;
use http_body_util::BodyExt;
use order_tracking::server::router;
use serde_json::Value;
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_vec())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = if headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "text/event-stream")
    {
        Vec::new()
    } else {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// One row of the table: method, path, headers, body, expected status, expected error code.
type Case<'a> = (
    Method,
    String,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    u16,
    Option<&'a str>,
);

async fn created_order(app: &Router, auth: &[(&str, &str)]) -> String {
    let reply = send(app, Method::POST, "/api/orders", auth, b"").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    reply.json()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_route_answers_with_the_right_status_and_error_code() {
    let (_dir, state) = test_state(|_| {}).await;
    let app = router(state);

    // Create: 201, Location, the order.
    let reply = send(&app, Method::POST, "/api/orders", &[], b"").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let order = reply.json();
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.headers[header::LOCATION], format!("/orders/{id}"));
    assert_eq!(order["status"], "Created");
    assert_eq!(order["events"].as_array().unwrap().len(), 1);
    assert!(order["createdAt"].is_string() && order["updatedAt"].is_string());

    let unknown = uuid::Uuid::new_v4();
    let big = format!(r#"{{"status":"Packed","pad":"{}"}}"#, "x".repeat(17 * 1024));
    let status_uri = format!("/api/orders/{id}/status");
    #[rustfmt::skip]
    let table: Vec<Case> = vec![
        (Method::GET, "/api/orders".into(), vec![], vec![], 200, None),
        (Method::GET, "/api/orders?limit=100".into(), vec![], vec![], 200, None),
        (Method::GET, "/api/orders?limit=0".into(), vec![], vec![], 400, Some("bad_request")),
        (Method::GET, "/api/orders?limit=101".into(), vec![], vec![], 400, Some("bad_request")),
        (Method::GET, "/api/orders?limit=abc".into(), vec![], vec![], 400, Some("bad_request")),
        (Method::GET, "/api/orders?limit=-1".into(), vec![], vec![], 400, Some("bad_request")),
        (Method::GET, "/api/orders?limit=99999999999".into(), vec![], vec![], 400, Some("bad_request")),
        (Method::GET, format!("/api/orders/{id}"), vec![], vec![], 200, None),
        (Method::GET, format!("/api/orders/{}", id.to_uppercase()), vec![], vec![], 200, None),
        (Method::GET, format!("/api/orders/{unknown}"), vec![], vec![], 404, Some("order_not_found")),
        (Method::GET, "/api/orders/nope".into(), vec![], vec![], 400, Some("invalid_order_id")),
        (Method::GET, "/api/orders/%FF%FE".into(), vec![], vec![], 400, Some("invalid_order_id")),
        (Method::POST, status_uri.clone(), vec![JSON], br#"{"status":"Packed"}"#.to_vec(), 409, Some("invalid_transition")),
        (Method::POST, status_uri.clone(), vec![JSON], br#"{"status":"Created"}"#.to_vec(), 200, None),
        (Method::POST, status_uri.clone(), vec![JSON], br#"{"status":"Lost"}"#.to_vec(), 422, Some("unknown_status")),
        (Method::POST, status_uri.clone(), vec![JSON], br#"{"status":"packed"}"#.to_vec(), 422, Some("unknown_status")),
        (Method::POST, status_uri.clone(), vec![JSON], br#"{"status":5}"#.to_vec(), 400, Some("bad_request")),
        (Method::POST, status_uri.clone(), vec![JSON], br#"{"state":"Packed"}"#.to_vec(), 400, Some("bad_request")),
        (Method::POST, status_uri.clone(), vec![JSON], b"{not json".to_vec(), 400, Some("bad_request")),
        (Method::POST, status_uri.clone(), vec![JSON], b"".to_vec(), 400, Some("bad_request")),
        (Method::POST, status_uri.clone(), vec![JSON], b"\xff\xfe".to_vec(), 400, Some("bad_request")),
        (Method::POST, status_uri.clone(), vec![], br#"{"status":"PaymentConfirmed"}"#.to_vec(), 415, Some("unsupported_media_type")),
        (Method::POST, status_uri.clone(), vec![("content-type", "text/plain")], br#"{"status":"PaymentConfirmed"}"#.to_vec(), 415, Some("unsupported_media_type")),
        (Method::POST, status_uri.clone(), vec![JSON], big.into_bytes(), 413, Some("payload_too_large")),
        (Method::POST, format!("/api/orders/{unknown}/status"), vec![JSON], br#"{"status":"PaymentConfirmed"}"#.to_vec(), 404, Some("order_not_found")),
        (Method::POST, format!("/api/orders/{unknown}/status"), vec![JSON], br#"{"status":"Delivered"}"#.to_vec(), 404, Some("order_not_found")),
        (Method::POST, format!("/api/orders/{unknown}/status"), vec![JSON], br#"{"status":"Created"}"#.to_vec(), 404, Some("order_not_found")),
        (Method::POST, "/api/orders/123/status".into(), vec![JSON], br#"{"status":"PaymentConfirmed"}"#.to_vec(), 400, Some("invalid_order_id")),
        (Method::POST, status_uri.clone(), vec![JSON], br#"{"status":"PaymentConfirmed"}"#.to_vec(), 200, None),
        (Method::POST, "/orders/xyz/simulate".into(), vec![], vec![], 400, Some("invalid_order_id")),
        (Method::GET, "/orders/xyz/stream".into(), vec![], vec![], 400, Some("invalid_order_id")),
        (Method::GET, "/api/nothing/here".into(), vec![], vec![], 404, Some("not_found")),
        (Method::DELETE, "/api/orders".into(), vec![], vec![], 405, Some("method_not_allowed")),
        (Method::GET, format!("/orders/{id}/simulate"), vec![], vec![], 405, Some("method_not_allowed")),
        (Method::POST, "/api/events".into(), vec![JSON], b"[]".to_vec(), 400, Some("bad_request")),
        (Method::POST, "/api/events".into(), vec![], b"[]".to_vec(), 415, Some("unsupported_media_type")),
        (Method::GET, "/api/events".into(), vec![], vec![], 405, Some("method_not_allowed")),
        (Method::GET, "/healthz".into(), vec![], vec![], 200, None),
        (Method::GET, "/metrics".into(), vec![], vec![], 200, None),
    ];
    for (method, uri, headers, body, status, code) in table {
        let reply = send(&app, method.clone(), &uri, &headers, &body).await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{method} {uri}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        if let Some(code) = code {
            let error = reply.json();
            assert_eq!(error["error"], code, "{method} {uri}");
            assert!(
                error["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{method} {uri}"
            );
            assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
        }
    }

    // The successful advance returned the new event.
    let order = send(&app, Method::GET, &format!("/api/orders/{id}"), &[], b"")
        .await
        .json();
    assert_eq!(order["status"], "PaymentConfirmed");
    assert_eq!(order["events"][1]["status"], "PaymentConfirmed");
    // Advancing an unknown order, even to Created, did not create it.
    let reply = send(
        &app,
        Method::GET,
        &format!("/api/orders/{unknown}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn advancing_returns_the_new_event() {
    let (_dir, state) = test_state(|_| {}).await;
    let app = router(state);
    let id = created_order(&app, &[]).await;
    let reply = send(
        &app,
        Method::POST,
        &format!("/api/orders/{id}/status"),
        &[JSON],
        br#"{"status":"PaymentConfirmed"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let event = reply.json();
    assert_eq!(event["orderId"], Value::String(id));
    assert_eq!(event["status"], "PaymentConfirmed");
    assert!(event["id"].as_str().unwrap().parse::<u64>().is_ok());
    assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn recent_orders_are_newest_first_and_limited() {
    let (_dir, state) = test_state(|_| {}).await;
    let app = router(state);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(created_order(&app, &[]).await);
    }
    let list = send(&app, Method::GET, "/api/orders?limit=2", &[], b"")
        .await
        .json();
    let listed: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, [ids[2].clone(), ids[1].clone()]);
}

#[tokio::test]
async fn metrics_show_the_stream_and_process_figures() {
    let (_dir, state) = test_state(|_| {}).await;
    let app = router(state);
    let id = created_order(&app, &[]).await;
    let text = String::from_utf8(send(&app, Method::GET, "/metrics", &[], b"").await.body).unwrap();
    for name in [
        "order_tracking_open_streams 0",
        "order_tracking_events_published_total 1",
        "order_tracking_events_delivered_total 0",
        "order_tracking_slow_subscribers_dropped_total 0",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let _ = id;
}

#[tokio::test]
async fn with_an_admin_token_publishing_and_listing_need_it_and_one_order_stays_public() {
    let (_dir, state) = test_state(|config| config.admin_token = Some("s3cret".into())).await;
    let app = router(state);
    let good = [("authorization", "Bearer s3cret")];
    let id = created_order(&app, &good).await;

    let batch = format!(r#"[{{"orderId":"{id}","status":"PaymentConfirmed"}}]"#);
    let guarded: [(Method, String, Vec<u8>, u16); 5] = [
        (Method::POST, "/api/orders".into(), vec![], 201),
        (
            Method::POST,
            format!("/api/orders/{id}/status"),
            br#"{"status":"PaymentConfirmed"}"#.to_vec(),
            200,
        ),
        (
            Method::POST,
            format!("/orders/{id}/simulate?interval_ms=0"),
            vec![],
            202,
        ),
        (Method::POST, "/api/events".into(), batch.into_bytes(), 200),
        // A list of ids is a list of capabilities: listing is guarded like publishing.
        (Method::GET, "/api/orders".into(), vec![], 200),
    ];
    for (method, uri, body, ok) in guarded {
        for bad in [
            vec![],
            vec![("authorization", "Bearer wrong")],
            vec![("authorization", "s3cret")],
            vec![("authorization", "Bearer s3cret2")],
            vec![("authorization", "Basic czNjcmV0")],
        ] {
            let mut headers = bad.clone();
            headers.push(JSON);
            let reply = send(&app, method.clone(), &uri, &headers, &body).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri} {bad:?}");
            assert_eq!(reply.json()["error"], "unauthorized");
            assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer", "{uri}");
            assert!(
                !String::from_utf8_lossy(&reply.body).contains(&id),
                "{uri} leaked an id"
            );
        }
        let reply = send(&app, method.clone(), &uri, &[good[0], JSON], &body).await;
        assert_eq!(
            reply.status.as_u16(),
            ok,
            "{uri}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    // With the token, the list is there.
    let listed = send(&app, Method::GET, "/api/orders", &good, b"").await;
    assert!(String::from_utf8_lossy(&listed.body).contains(&id));

    for uri in [
        format!("/api/orders/{id}"),
        format!("/orders/{id}/stream"),
        format!("/orders/{id}"),
        "/".into(),
        "/healthz".into(),
    ] {
        assert_eq!(
            send(&app, Method::GET, &uri, &[], b"").await.status,
            StatusCode::OK,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn without_a_token_listing_is_open_for_the_demo() {
    let (_dir, state) = test_state(|_| {}).await;
    let app = router(state);
    let id = created_order(&app, &[]).await;
    let reply = send(&app, Method::GET, "/api/orders", &[], b"").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&reply.body).contains(&id));
    let home = send(&app, Method::GET, "/", &[], b"").await;
    let html = String::from_utf8_lossy(&home.body);
    assert!(
        html.contains("Recent orders") && html.contains(&id[..8]),
        "{html}"
    );
}

/// A server function's answer, called the way the page's own script calls it.
async fn call_server_fn(app: &Router, path: &str) -> Reply {
    send(
        app,
        Method::POST,
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
        b"",
    )
    .await
}

#[tokio::test]
async fn with_a_token_the_home_page_lists_no_order_and_offers_the_track_field() {
    let (_dir, state) = test_state(|config| config.admin_token = Some("t".into())).await;
    let app = router(state);
    let good = [("authorization", "Bearer t")];
    let ids = [
        created_order(&app, &good).await,
        created_order(&app, &good).await,
    ];
    let page = send(&app, Method::GET, "/", &[], b"").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&page.body).into_owned();
    assert!(html.contains("Track an order"), "{html}");
    assert!(!html.contains("Recent orders"));
    assert!(!html.contains("Place a demo order"));
    for id in &ids {
        // Neither whole nor shortened, in the markup or in the data sent for hydration.
        assert!(!html.contains(&id[..8]), "the home page shows {id}");
    }
    // The server function behind the page is public too: it must not list them either.
    use leptos::server_fn::ServerFn;
    let path = <order_tracking::pages::home::LoadHome as ServerFn>::PATH;
    let reply = call_server_fn(&app, path).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = String::from_utf8_lossy(&reply.body);
    for id in &ids {
        assert!(!body.contains(id.as_str()), "load_home lists {id}: {body}");
    }
}

#[tokio::test]
async fn the_track_field_leads_to_the_order_or_says_what_is_wrong() {
    let (_dir, state) = test_state(|config| config.admin_token = Some("t".into())).await;
    let app = router(state);
    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    for pasted in [
        id.to_owned(),
        id.to_uppercase(),
        format!("https://shop.example/orders/{id}?from=mail"),
    ] {
        let uri = format!("/?order={}", urlencode(&pasted));
        // As a browser submits the form: it accepts HTML, which makes the answer a real 302.
        let reply = send(&app, Method::GET, &uri, &[("accept", "text/html")], b"").await;
        assert_eq!(reply.status, StatusCode::FOUND, "{pasted}");
        assert_eq!(
            reply.headers[header::LOCATION],
            format!("/orders/{id}"),
            "{pasted}"
        );
    }
    let reply = send(&app, Method::GET, "/?order=order%2042", &[], b"").await;
    assert_eq!(reply.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&reply.body);
    assert!(html.contains("data-testid=\"track-error\""), "{html}");
    assert!(html.contains("That is not an order number"));
}

fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn pages_send_the_headers_that_keep_their_url_to_themselves() {
    let (_dir, state) = test_state(|_| {}).await;
    let app = router(state);
    let id = created_order(&app, &[]).await;
    for uri in [
        "/".to_owned(),
        format!("/orders/{id}"),
        "/no/such/page".into(),
    ] {
        let reply = send(&app, Method::GET, &uri, &[], b"").await;
        let headers = &reply.headers;
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{uri}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("frame-ancestors 'none'"), "{uri}: {policy}");
        assert!(policy.contains("default-src 'self'"), "{uri}: {policy}");
        assert!(!policy.contains("unsafe-inline"), "{uri}: {policy}");
        // The hydration script carries this response's nonce, and nothing inline runs without it.
        let nonce = policy
            .split("'nonce-")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap_or_else(|| panic!("{uri}: no nonce in {policy}"));
        let html = String::from_utf8_lossy(&reply.body);
        let scripts = html.matches("<script").count();
        let with_nonce = html.matches(&format!("nonce=\"{nonce}\"")).count();
        assert!(scripts > 0, "{uri}");
        assert!(
            with_nonce >= scripts,
            "{uri}: {scripts} scripts, {with_nonce} with the nonce"
        );
        assert!(
            !html.contains(" style=\""),
            "{uri}: an inline style the policy refuses"
        );
    }
    // A fresh nonce for every response.
    let policy = |reply: Reply| reply.headers[header::CONTENT_SECURITY_POLICY].clone();
    let first = policy(send(&app, Method::GET, "/", &[], b"").await);
    let second = policy(send(&app, Method::GET, "/", &[], b"").await);
    assert_ne!(first, second);
    // Not on the stream: it is not a page, and router-wide header layers cost memory for
    // every open stream (see pages::ssr::secure_document).
    let reply = send(&app, Method::GET, &format!("/orders/{id}/stream"), &[], b"").await;
    assert!(reply.headers.get(header::CONTENT_SECURITY_POLICY).is_none());
}

#[tokio::test]
async fn the_demo_button_is_offered_only_without_an_admin_token() {
    let (_dir, open) = test_state(|_| {}).await;
    let (_dir2, locked) = test_state(|config| config.admin_token = Some("t".into())).await;
    let page = send(&router(open), Method::GET, "/", &[], b"").await;
    assert!(String::from_utf8_lossy(&page.body).contains("Place a demo order"));
    let page = send(&router(locked.clone()), Method::GET, "/", &[], b"").await;
    let html = String::from_utf8_lossy(&page.body).into_owned();
    assert!(html.contains("Where is my order?"), "{html}");
    assert!(!html.contains("Place a demo order"));
    // And the server function behind it refuses too.
    use leptos::server_fn::ServerFn;
    let path = <order_tracking::pages::home::PlaceDemoOrder as ServerFn>::PATH;
    let reply = call_server_fn(&router(locked), path).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_order_on_its_way_opens_its_stream_from_the_head_and_a_delivered_one_does_not() {
    let (_dir, state) = test_state(|_| {}).await;
    let app = router(state);
    let id = created_order(&app, &[]).await;
    let mut last = String::new();
    for status in ["PaymentConfirmed", "Packed"] {
        let body = format!(r#"{{"status":"{status}"}}"#);
        let uri = format!("/api/orders/{id}/status");
        let reply = send(&app, Method::POST, &uri, &[JSON], body.as_bytes()).await;
        last = reply.json()["id"].as_str().unwrap().to_owned();
    }
    let page = |reply: Reply| String::from_utf8_lossy(&reply.body).into_owned();
    let html = page(send(&app, Method::GET, &format!("/orders/{id}"), &[], b"").await);
    // In the head, before the stylesheet (a script after it would wait for it), resuming
    // after the page's last event, as the tab's holder would.
    let script = html
        .find("window.__streamHeadStart")
        .expect("the page starts its stream");
    let stylesheet = html.find("rel=\"stylesheet\"").unwrap();
    let head_end = html.find("</head>").unwrap();
    assert!(script < stylesheet && stylesheet < head_end, "{html}");
    let url = format!("\"/stream?order={id}&last_event_id={last}&heartbeat\"");
    assert!(html.contains(&url), "{url} in {html}");
    assert!(html.contains("ifAvailable: true"), "{html}");

    for status in ["Shipped", "OutForDelivery", "Delivered"] {
        let body = format!(r#"{{"status":"{status}"}}"#);
        let uri = format!("/api/orders/{id}/status");
        assert_eq!(
            send(&app, Method::POST, &uri, &[JSON], body.as_bytes())
                .await
                .status,
            200
        );
    }
    let html = page(send(&app, Method::GET, &format!("/orders/{id}"), &[], b"").await);
    // The order's page, with its timeline, but no stream to open.
    assert!(html.contains("id=\"tracker-data\""), "{html}");
    assert!(!html.contains("__streamHeadStart"), "{html}");
}
