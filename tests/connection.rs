//! The accept loop against a real bound server, over raw sockets: a stream request is
//! written straight to the socket, anything else goes to the router, and one connection can
//! carry both, one after the other. The two stream writers (straight to the socket, and the
//! router's route) answer every stream request alike.
#![cfg(feature = "ssr")]
mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::raw::*;
use common::*;
use http_body_util::BodyExt;
use order_tracking::server::router;
use tower::ServiceExt;

async fn delivered_order(server: &TestServer) -> String {
    let id = create_order(&server.base).await;
    deliver(&server.base, &id).await;
    id
}

#[tokio::test]
async fn after_a_204_or_an_error_the_connection_serves_the_next_request_and_after_a_stream_it_closes(
) {
    let server = TestServer::start().await;
    let id = delivered_order(&server).await;
    let last = event_ids(&server.base, &id).await[5];
    let stream = format!("/orders/{id}/stream");
    let mut connection = Connection::open(&server).await;

    connection
        .send(&get(&stream, &format!("Last-Event-ID: {last}\r\n")))
        .await;
    assert_eq!(connection.response().await.status, 204);

    connection.send(&get("/orders/nope/stream", "")).await;
    let error = connection.response().await;
    assert_eq!(error.status, 400);
    assert!(String::from_utf8_lossy(&error.body).contains("invalid_order_id"));

    connection.send(&get(&stream, "")).await;
    let streamed = connection.response().await;
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    assert_eq!(streamed.header("connection"), Some("close"));
    assert_eq!(
        String::from_utf8_lossy(&streamed.body)
            .matches("event: order-update")
            .count(),
        6
    );
    assert!(connection.is_closed().await);

    // A page after a 204: the rest of the connection belongs to the router, streams too.
    let mut connection = Connection::open(&server).await;
    connection
        .send(&get(&stream, &format!("Last-Event-ID: {last}\r\n")))
        .await;
    assert_eq!(connection.response().await.status, 204);
    connection.send(&get("/healthz", "")).await;
    assert_eq!(connection.response().await.status, 200);
    connection.send(&get(&stream, "")).await;
    let through_router = connection.response().await;
    assert_eq!(through_router.status, 200);
    assert_eq!(
        same_but_retry(&through_router.body),
        same_but_retry(&streamed.body)
    );
}

#[tokio::test]
async fn requests_sent_together_are_answered_in_order() {
    let server = TestServer::start().await;
    let id = delivered_order(&server).await;
    let last = event_ids(&server.base, &id).await[5];
    let mut connection = Connection::open(&server).await;
    let mut pipelined = get(
        &format!("/orders/{id}/stream"),
        &format!("Last-Event-ID: {last}\r\n"),
    );
    pipelined.extend(get("/stream?order=nope", ""));
    pipelined.extend(get(&format!("/api/orders/{id}"), ""));
    connection.send(&pipelined).await;

    assert_eq!(connection.response().await.status, 204);
    assert_eq!(connection.response().await.status, 400);
    let order = connection.response().await;
    assert_eq!(order.status, 200);
    assert_eq!(order.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn a_head_that_arrives_a_byte_at_a_time_is_still_a_stream() {
    let server = TestServer::start().await;
    let id = delivered_order(&server).await;
    let mut connection = Connection::open(&server).await;
    connection.socket.set_nodelay(true).unwrap();
    for byte in get(&format!("/orders/{id}/stream"), "") {
        connection.send(&[byte]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let response = connection.response().await;
    assert_eq!(response.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&response.body)
            .matches("event: order-update")
            .count(),
        6
    );
}

#[tokio::test]
async fn a_stream_and_an_error_asked_to_close_close_the_connection() {
    let server = TestServer::start().await;
    let id = delivered_order(&server).await;
    for path in [format!("/orders/{id}/stream"), "/orders/nope/stream".into()] {
        let mut connection = Connection::open(&server).await;
        connection.send(&get(&path, "Connection: close\r\n")).await;
        let response = connection.response().await;
        assert_eq!(response.header("connection"), Some("close"), "{path}");
        assert!(connection.is_closed().await, "{path}");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_lets_its_stream_go_at_once() {
    let server = TestServer::start().await;
    let id = create_order(&server.base).await;
    let mut open = Vec::new();
    for _ in 0..20 {
        let mut connection = Connection::open(&server).await;
        connection
            .send(&get(&format!("/orders/{id}/stream"), ""))
            .await;
        connection.take_line().await;
        open.push(connection);
    }
    assert_eq!(
        metric(&server.base, "order_tracking_open_streams").await,
        20.0
    );
    drop(open);
    // Nothing is published: only reading the close can tell the server.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while metric(&server.base, "order_tracking_open_streams").await > 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "streams still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn http_1_0_and_bodies_go_to_the_router_and_get_the_same_stream() {
    let server = TestServer::start().await;
    let id = delivered_order(&server).await;
    let path = format!("/orders/{id}/stream");

    let mut direct = Connection::open(&server).await;
    direct.send(&get(&path, "")).await;
    let direct = direct.response().await;

    let mut old = Connection::open(&server).await;
    old.send(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await;
    let status = old.take_line().await;
    assert!(status.starts_with("HTTP/1.0 200"), "{status}");
    while !old.take_line().await.is_empty() {}
    while old.fill().await {}
    assert_eq!(
        same_but_retry(&old.read),
        same_but_retry(&direct.body),
        "HTTP/1.0: the body ends with the connection"
    );

    let mut with_body = Connection::open(&server).await;
    with_body.send(&get(&path, "Content-Length: 2\r\n")).await;
    with_body.send(b"{}").await;
    assert_eq!(
        same_but_retry(&with_body.response().await.body),
        same_but_retry(&direct.body)
    );
}

/// What the router's stream route answers to `request`: status, the headers both writers
/// send, and the body.
async fn through_the_router(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router(server.state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = compared_headers(
        response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned())),
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

/// The headers that say what a response is (not how it is framed or when it was sent).
fn compared_headers(headers: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut headers: Vec<_> = headers
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "date" | "transfer-encoding" | "content-length" | "connection"
            )
        })
        .collect();
    headers.sort();
    headers
}

#[tokio::test]
async fn both_stream_writers_answer_every_request_alike() {
    let server = TestServer::start_with(|config| {
        config.admin_token = Some("secret".into());
    })
    .await;
    let id = {
        let response = client()
            .post(server.url("/api/orders"))
            .bearer_auth("secret")
            .send()
            .await
            .unwrap();
        let order: serde_json::Value = response.json().await.unwrap();
        order["id"].as_str().unwrap().to_owned()
    };
    let simulate = client()
        .post(server.url(&format!("/orders/{id}/simulate?interval_ms=0&wait=true")))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(simulate.status(), 200);
    let ids = event_ids(&server.base, &id).await;
    let many = (0..101)
        .map(|_| format!("order={}", uuid::Uuid::new_v4()))
        .collect::<Vec<_>>()
        .join("&");
    let cases: Vec<(String, Vec<(&str, String)>)> = vec![
        (format!("/orders/{id}/stream"), vec![]),
        (format!("/orders/{}/stream", id.to_uppercase()), vec![]),
        (
            format!("/orders/{id}/stream"),
            vec![("last-event-id", ids[2].to_string())],
        ),
        (
            format!("/orders/{id}/stream?last_event_id={}", ids[5]),
            vec![],
        ),
        ("/orders/nope/stream".into(), vec![]),
        ("/orders/%FF/stream".into(), vec![]),
        (
            format!("/stream?order={id}&last_event_id={}", ids[3]),
            vec![],
        ),
        ("/stream?order=nope".into(), vec![]),
        (format!("/stream?{many}"), vec![]),
        ("/stream".into(), vec![]),
        (
            "/stream".into(),
            vec![("authorization", "Bearer wrong".into())],
        ),
    ];
    for (path, headers) in cases {
        let mut connection = Connection::open(&server).await;
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        connection.send(&get(&path, &extra)).await;
        let direct = connection.response().await;
        let direct = (
            direct.status,
            compared_headers(direct.headers.into_iter()),
            direct.body,
        );
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let routed = through_the_router(&server, &path, &headers).await;
        assert_eq!(direct.0, routed.0, "{path}");
        assert_eq!(direct.1, routed.1, "{path}");
        assert_eq!(
            same_but_retry(&direct.2),
            same_but_retry(&routed.2),
            "{path}"
        );
    }
}
