//! The OpenAPI document (`GET /api/openapi.json`, spec §14) against the real router: it is
//! served as JSON, and it lists every route the router has, with each of its methods.
#![cfg(feature = "ssr")]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::Request;
use common::test_state;
use http_body_util::BodyExt;
use order_tracking::server::router;
use serde_json::Value;
use tower::ServiceExt;

/// Routes that are not the HTTP interface: the pages (HTML), their server functions (the
/// pages' own calls, named with a hash) and the catch-all that answers `404` under `/api`.
fn is_page_route(path: &str) -> bool {
    matches!(path, "/" | "/my-orders" | "/orders/{id}" | "/api/{*rest}")
        || path.starts_with("/_server/")
}

/// Every route of the router with its methods, read from the router itself (axum lists its
/// paths and each one's `Allow` header in its `Debug` form; there is no other public walk).
fn router_routes(app: &axum::Router) -> BTreeMap<String, BTreeSet<String>> {
    let text = format!("{app:?}");
    // The main path router only, not the fallback router after it.
    let text = &text[..text
        .find("fallback_router")
        .expect("axum's Debug form changed")];
    let paths_at = text
        .find("node: Node { paths: {")
        .expect("axum's Debug form changed");
    let mut paths = BTreeMap::new();
    for entry in text[paths_at..].split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once("): \"").unwrap();
        paths.insert(id.to_owned(), rest.split('"').next().unwrap().to_owned());
    }
    let mut routes = BTreeMap::new();
    for entry in text[..paths_at].split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once(')').unwrap();
        let allow = rest
            .split_once("allow_header: Bytes(b\"")
            .map(|(_, allow)| allow.split('"').next().unwrap())
            .unwrap_or_default();
        let methods = allow
            .split(',')
            .filter(|m| !m.is_empty() && *m != "HEAD")
            .map(str::to_lowercase)
            .collect();
        routes.insert(paths[id].clone(), methods);
    }
    assert!(routes.len() > 10, "too few routes read: {routes:?}");
    routes
}

#[tokio::test]
async fn the_document_lists_every_route_of_the_router_with_its_methods() {
    let (_dir, state) = test_state(|_| {}).await;
    let app = router(state);
    let response = app
        .clone()
        .oneshot(
            Request::get("/api/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let document: Value = serde_json::from_slice(&body).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let documented = document["paths"].as_object().unwrap();

    let mut checked = 0;
    for (path, methods) in router_routes(&app) {
        if is_page_route(&path) {
            continue;
        }
        let operations = documented
            .get(&path)
            .unwrap_or_else(|| panic!("{path} is a route but not in the document"));
        for method in methods {
            assert!(
                operations.get(&method).is_some(),
                "{method} {path} is a route but not in the document"
            );
            checked += 1;
        }
    }
    assert!(checked >= 11, "{checked} operations checked");
    // And nothing is documented that the router does not have.
    let routes = router_routes(&app);
    for (path, operations) in documented {
        for method in operations.as_object().unwrap().keys() {
            assert!(
                routes.get(path).is_some_and(|m| m.contains(method)),
                "{method} {path} is documented but not a route"
            );
        }
    }
}

#[tokio::test]
async fn guarded_operations_name_the_bearer_scheme_and_errors_their_body() {
    let document: Value =
        serde_json::from_str(order_tracking::server::openapi::document_json()).unwrap();
    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    for (path, method) in [
        ("/api/orders", "post"),
        ("/api/orders", "get"),
        ("/api/orders/{id}/status", "post"),
        ("/api/events", "post"),
        ("/orders/{id}/simulate", "post"),
    ] {
        let operation = &document["paths"][path][method];
        assert!(
            operation["security"].to_string().contains("bearer"),
            "{method} {path}"
        );
        let unauthorized = &operation["responses"]["401"]["content"]["application/json"];
        assert!(
            unauthorized["schema"]["$ref"]
                .as_str()
                .unwrap()
                .ends_with("/ErrorBody"),
            "{method} {path}"
        );
    }
    for path in ["/orders/{id}/stream", "/stream"] {
        let ok = &document["paths"][path]["get"]["responses"]["200"]["content"];
        assert!(ok.get("text/event-stream").is_some(), "{path}: {ok}");
    }
}
