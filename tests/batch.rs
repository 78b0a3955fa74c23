//! `POST /api/events` (spec §14) against a bound server: one result per item, in order, with
//! mixed good and bad items; the limit; the token; ids in array order; a batch racing single
//! publishes; a retry answered with the stored event; and what streams see.
#![cfg(feature = "ssr")]
mod common;

use std::collections::HashSet;

use common::{client, create_order, event_ids, order_json, post_status, SseReader, TestServer};
use serde_json::{json, Value};

/// `POST /api/events` with `body` (and `token`, if any): the status code and the JSON answer.
async fn post_batch(base: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
    post_batch_raw(base, body.to_string().into_bytes(), token).await
}

async fn post_batch_raw(base: &str, body: Vec<u8>, token: Option<&str>) -> (u16, Value) {
    let mut request = client()
        .post(format!("{base}/api/events"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or(Value::Null))
}

fn item(order: &str, status: &str) -> Value {
    json!({ "orderId": order, "status": status })
}

fn id_of(result: &Value) -> i64 {
    result["event"]["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn each_item_gets_its_own_result_and_a_bad_one_fails_alone() {
    let server = TestServer::start().await;
    let base = &server.base;
    let a = create_order(base).await;
    let b = create_order(base).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let body = json!([
        item(&a, "PaymentConfirmed"),
        item(&unknown, "PaymentConfirmed"),
        item(&b, "Shipped"),
        item(&b, "Lost"),
        item("not-a-uuid", "Packed"),
        { "orderId": b },
        { "status": "Packed" },
        { "orderId": a, "status": 3 },
        item(&a, "Packed"),
        item(&a, "Packed"),
        item(&b, "PaymentConfirmed"),
        item(&unknown, "Created"),
        item(&b, "Created"),
    ]);
    let (code, results) = post_batch(base, &body, None).await;
    assert_eq!(code, 200, "{results}");
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 13, "one result per item: {results:?}");
    let expected: [(u16, Option<&str>); 13] = [
        (200, None),
        (404, Some("order_not_found")),
        (409, Some("invalid_transition")),
        (422, Some("unknown_status")),
        (400, Some("invalid_order_id")),
        (400, Some("bad_request")),
        (400, Some("bad_request")),
        (400, Some("bad_request")),
        (200, None),
        // The same status again, in the same batch: the event already stored.
        (200, None),
        (200, None),
        (404, Some("order_not_found")),
        // Created again: the order is at PaymentConfirmed by now, so going back is refused.
        (409, Some("invalid_transition")),
    ];
    for (i, (result, (status, code))) in results.iter().zip(expected).enumerate() {
        assert_eq!(result["status"], status, "item {i}: {result}");
        match code {
            Some(code) => {
                assert_eq!(result["error"], code, "item {i}: {result}");
                assert!(result["message"].as_str().is_some_and(|m| !m.is_empty()));
                assert!(result.get("event").is_none(), "item {i}: {result}");
            }
            None => assert!(result["event"]["id"].is_string(), "item {i}: {result}"),
        }
    }
    // The retry inside the batch is the event stored by the item before it.
    assert_eq!(results[8]["event"], results[9]["event"]);
    assert_eq!(results[0]["event"]["orderId"], Value::String(a.clone()));
    assert_eq!(results[10]["event"]["status"], "PaymentConfirmed");
    // What was accepted is stored, once each; nothing else is.
    let order_a = order_json(base, &a).await;
    assert_eq!(order_a["status"], "Packed");
    assert_eq!(event_ids(base, &a).await.len(), 3);
    assert_eq!(order_json(base, &b).await["status"], "PaymentConfirmed");
    assert_eq!(event_ids(base, &b).await.len(), 2);
    let missing = client()
        .get(format!("{base}/api/orders/{unknown}"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "a batch never creates an order");
}

#[tokio::test]
async fn ids_follow_the_array_and_a_thousand_items_fit_in_one_request() {
    let server = TestServer::start().await;
    let base = &server.base;
    let mut orders = Vec::new();
    for _ in 0..200 {
        orders.push(create_order(base).await);
    }
    // Five steps for each of 200 orders, interleaved: 1,000 items, each after the one before.
    let mut body = Vec::new();
    for status in [
        "PaymentConfirmed",
        "Packed",
        "Shipped",
        "OutForDelivery",
        "Delivered",
    ] {
        for order in &orders {
            body.push(item(order, status));
        }
    }
    let (code, results) = post_batch(base, &Value::Array(body.clone()), None).await;
    assert_eq!(code, 200, "{results}");
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 1000);
    let ids: Vec<i64> = results
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 200, "{r}");
            id_of(r)
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids increase along the array"
    );
    for (result, sent) in results.iter().zip(&body) {
        assert_eq!(result["event"]["orderId"], sent["orderId"]);
        assert_eq!(result["event"]["status"], sent["status"]);
    }
    assert_eq!(order_json(base, &orders[17]).await["status"], "Delivered");

    // One more item is refused whole, and nothing of it is stored.
    let fresh = create_order(base).await;
    let mut too_many: Vec<Value> = (0..1000)
        .map(|_| item(&fresh, "PaymentConfirmed"))
        .collect();
    too_many.push(item(&fresh, "PaymentConfirmed"));
    let (code, error) = post_batch(base, &Value::Array(too_many), None).await;
    assert_eq!(code, 413, "{error}");
    assert_eq!(error["error"], "too_many_items");
    assert_eq!(event_ids(base, &fresh).await.len(), 1);
}

#[tokio::test]
async fn a_body_that_is_not_an_array_of_objects_is_one_error() {
    let server = TestServer::start().await;
    let base = &server.base;
    let order = create_order(base).await;
    let cases: [(&[u8], u16, &str); 7] = [
        (b"[]", 400, "bad_request"),
        (
            b"{\"orderId\":\"x\",\"status\":\"Packed\"}",
            400,
            "bad_request",
        ),
        (b"[1, 2]", 400, "bad_request"),
        (b"[\"Packed\"]", 400, "bad_request"),
        (b"[{}, 5]", 400, "bad_request"),
        (b"[{\"orderId\"", 400, "bad_request"),
        (b"", 400, "bad_request"),
    ];
    for (body, status, code) in cases {
        let (got, error) = post_batch_raw(base, body.to_vec(), None).await;
        let shown = String::from_utf8_lossy(body);
        assert_eq!(got, status, "{shown}: {error}");
        assert_eq!(error["error"], code, "{shown}");
    }
    // Without a JSON content type: 415.
    let response = client()
        .post(format!("{base}/api/events"))
        .body(json!([item(&order, "PaymentConfirmed")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    // Over the body limit: 413, whatever it holds.
    let padded = format!(
        r#"[{{"orderId":"{order}","status":"PaymentConfirmed","pad":"{}"}}]"#,
        "x".repeat(300 * 1024)
    );
    let (code, error) = post_batch_raw(base, padded.into_bytes(), None).await;
    assert_eq!(code, 413);
    assert_eq!(error["error"], "payload_too_large");
    // None of it stored anything.
    assert_eq!(event_ids(base, &order).await.len(), 1);
}

#[tokio::test]
async fn with_a_token_a_batch_needs_it() {
    let server = TestServer::start_with(|c| c.admin_token = Some("s3cret".into())).await;
    let base = &server.base;
    let response = client()
        .post(format!("{base}/api/orders"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    let order: Value = response.json().await.unwrap();
    let order = order["id"].as_str().unwrap().to_owned();
    let body = json!([item(&order, "PaymentConfirmed")]);
    for bad in [None, Some("wrong"), Some("s3cret2")] {
        let (code, error) = post_batch(base, &body, bad).await;
        assert_eq!(code, 401, "{bad:?}");
        assert_eq!(error["error"], "unauthorized");
    }
    assert_eq!(order_json(base, &order).await["status"], "Created");
    let (code, results) = post_batch(base, &body, Some("s3cret")).await;
    assert_eq!(code, 200, "{results}");
    assert_eq!(results[0]["status"], 200);
}

#[tokio::test]
async fn a_batch_racing_single_publishes_stores_each_status_once_in_commit_order() {
    let server = TestServer::start().await;
    let base = server.base.clone();
    let mut orders = Vec::new();
    for _ in 0..50 {
        orders.push(create_order(&base).await);
    }
    // The back office's stream sees every event, in commit order.
    let mut all = SseReader::open(&format!("{base}/stream"), None).await;
    let steps = ["PaymentConfirmed", "Packed", "Shipped"];
    let batch: Vec<Value> = steps
        .iter()
        .flat_map(|status| orders.iter().map(move |order| item(order, status)))
        .collect();
    let batch = tokio::spawn({
        let base = base.clone();
        async move { post_batch(&base, &Value::Array(batch), None).await }
    });
    let singles: Vec<_> = orders
        .iter()
        .map(|order| {
            let (base, order) = (base.clone(), order.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for status in steps {
                    answers.push(post_status(&base, &order, status).await);
                }
                (order, answers)
            })
        })
        .collect();
    let (code, results) = batch.await.unwrap();
    assert_eq!(code, 200, "{results}");
    let mut single_answers = Vec::new();
    for single in singles {
        single_answers.push(single.await.unwrap());
    }
    // Every order went through each status once, whoever stored it.
    let mut stored: HashSet<String> = HashSet::new();
    for order in &orders {
        let events = order_json(&base, order).await["events"].clone();
        let statuses: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses,
            ["Created", "PaymentConfirmed", "Packed", "Shipped"],
            "{order}"
        );
        for event in events.as_array().unwrap() {
            stored.insert(event["id"].as_str().unwrap().to_owned());
        }
    }
    // Each answer, the batch's or a single's, is 200 with the stored event (its own, or the
    // other's when it came second), or 409 when the other had already gone past it.
    for result in results.as_array().unwrap() {
        match result["status"].as_u64() {
            Some(200) => assert!(stored.contains(result["event"]["id"].as_str().unwrap())),
            Some(409) => assert_eq!(result["error"], "invalid_transition"),
            _ => panic!("{result}"),
        }
    }
    for (order, answers) in &single_answers {
        for (code, answer) in answers {
            match code {
                200 => assert!(stored.contains(answer["id"].as_str().unwrap()), "{order}"),
                409 => assert_eq!(answer["error"], "invalid_transition"),
                other => panic!("{order}: {other} {answer}"),
            }
        }
    }
    // The stream: each of the 150 new events once, ids increasing.
    let mut ids = Vec::new();
    while ids.len() < 150 {
        let frame = tokio::time::timeout(common::WAIT, all.next_event())
            .await
            .expect("the stream stalled")
            .expect("the stream ended");
        if frame.status().as_deref() != Some("Created") {
            ids.push(frame.id().unwrap().parse::<i64>().unwrap());
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn a_stream_gets_a_batchs_events_of_its_order_in_order() {
    let server = TestServer::start().await;
    let base = &server.base;
    let order = create_order(base).await;
    let other = create_order(base).await;
    let mut stream = SseReader::open(&format!("{base}/orders/{order}/stream"), None).await;
    assert_eq!(
        stream
            .next_event()
            .await
            .and_then(|f| f.status())
            .as_deref(),
        Some("Created")
    );
    let body = json!([
        item(&order, "PaymentConfirmed"),
        item(&other, "PaymentConfirmed"),
        item(&order, "Packed"),
        item(&order, "Shipped"),
    ]);
    let (code, results) = post_batch(base, &body, None).await;
    assert_eq!(code, 200, "{results}");
    for (want, result) in ["PaymentConfirmed", "Packed", "Shipped"].into_iter().zip([
        &results[0],
        &results[2],
        &results[3],
    ]) {
        let frame = tokio::time::timeout(common::WAIT, stream.next_event())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.status().as_deref(), Some(want));
        assert_eq!(frame.id().unwrap(), result["event"]["id"].as_str().unwrap());
    }
    let published = common::metric(base, "order_tracking_events_published_total").await;
    assert_eq!(published, 6.0, "two Created and four from the batch");
}
