//! The site's static files through the real router: precompressed copies when the browser
//! accepts them, a year of caching for hashed bundle names and revalidation for the rest,
//! and the app's 404 page (uncached) for a path that is no file.
#![cfg(feature = "ssr")]
mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use leptos::prelude::LeptosOptions;
use order_tracking::server::{router, AppState};
use tower::ServiceExt;

const WASM: &str = "/pkg/order-tracking.YoKO__SYairerWrcNWFqcg.wasm";

async fn app_with_site() -> (tempfile::TempDir, axum::Router) {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let file = pkg.join("order-tracking.YoKO__SYairerWrcNWFqcg.wasm");
    std::fs::write(&file, b"raw wasm bytes").unwrap();
    std::fs::write(file.with_extension("wasm.br"), b"brotli bytes").unwrap();
    std::fs::write(file.with_extension("wasm.gz"), b"gzip bytes").unwrap();
    std::fs::write(dir.path().join("favicon.svg"), b"<svg/>").unwrap();
    let options = LeptosOptions::builder()
        .output_name("order-tracking")
        .site_root(dir.path().display().to_string())
        .build();
    let config = common::config(format!("sqlite://{}/orders.db", dir.path().display()));
    let state = AppState::open(options, config).await.unwrap();
    (dir, router(state))
}

async fn get(
    app: &axum::Router,
    path: &str,
    encoding: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut request = Request::get(path);
    if let Some(encoding) = encoding {
        request = request.header("accept-encoding", encoding);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn the_bundle_goes_out_precompressed_and_cached_for_a_year() {
    let (_dir, app) = app_with_site().await;
    for (accepts, encoding, body) in [
        (Some("gzip, deflate, br"), Some("br"), &b"brotli bytes"[..]),
        (Some("gzip"), Some("gzip"), b"gzip bytes"),
        (None, None, b"raw wasm bytes"),
    ] {
        let (status, headers, got) = get(&app, WASM, accepts).await;
        assert_eq!(status, 200, "{accepts:?}");
        assert_eq!(got, body, "{accepts:?}");
        assert_eq!(
            headers.get("content-encoding").map(|v| v.to_str().unwrap()),
            encoding
        );
        assert_eq!(headers["content-type"], "application/wasm");
        assert_eq!(
            headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
    }
}

#[tokio::test]
async fn other_files_are_revalidated_and_a_missing_one_is_the_404_page() {
    let (_dir, app) = app_with_site().await;
    let (status, headers, _) = get(&app, "/favicon.svg", Some("br")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(headers.contains_key("last-modified"));

    let (status, headers, body) = get(&app, "/pkg/order-tracking.nothere1234.wasm", None).await;
    assert_eq!(status, 404);
    assert!(!headers.contains_key("cache-control"));
    assert!(String::from_utf8_lossy(&body).contains("Page not found"));
}
