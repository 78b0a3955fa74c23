//! The site's static files (the WASM and JS bundle, the stylesheet, the favicon), served by
//! Leptos' file handler from the site folder: precompressed (`.br`, `.gz` beside each file,
//! made by `cargo leptos build --release --precompress`) when the browser accepts it, and
//! cached by the browser according to their names. With `hash-files` the bundle's names carry
//! a hash of their content (`order-tracking.<hash>.wasm`), so a name never changes meaning:
//! those are cached for a year, never asked for again. Everything else must be revalidated
//! (`no-cache`: a `304` when unchanged). A path that is not a file gets the app's 404 page.
//! Streams never come here; they are routes of their own and never compressed.
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::Response;

use crate::app::shell;
use crate::server::AppState;

/// For a file whose name carries its content's hash.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
/// For any other file: keep it, but ask whether it changed before using it.
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");

/// The router's fallback: a static file, else the 404 page.
pub async fn static_file(uri: Uri, state: State<AppState>, request: Request) -> Response {
    let policy = cache_policy(uri.path(), &state.leptos_options.site_pkg_dir);
    let files = leptos_axum::file_and_error_handler::<AppState, _>(shell);
    let mut response = files(uri, state, request).await;
    if response.status() == StatusCode::OK || response.status() == StatusCode::NOT_MODIFIED {
        response.headers_mut().insert(header::CACHE_CONTROL, policy);
    }
    response
}

/// How long a browser may keep the file at `path`: a year for a bundle file whose name
/// carries a hash (`/pkg/<name>.<hash>.<ext>`), else only with revalidation.
fn cache_policy(path: &str, pkg_dir: &str) -> HeaderValue {
    let file = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(pkg_dir))
        .and_then(|p| p.strip_prefix('/'));
    let hashed = file.is_some_and(|name| {
        let mut parts = name.rsplit('.');
        let (_ext, hash) = (parts.next(), parts.next());
        parts.next().is_some() && hash.is_some_and(|h| h.len() >= 8 && !h.contains('/'))
    });
    if hashed {
        IMMUTABLE
    } else {
        REVALIDATE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hashed_bundle_files_are_immutable() {
        for hashed in [
            "/pkg/order-tracking.Hk3sP0aZqW1x.wasm",
            "/pkg/order-tracking.0123456789abcdef.js",
            "/pkg/order-tracking.Hk3sP0aZqW1x.css",
        ] {
            assert_eq!(cache_policy(hashed, "pkg"), IMMUTABLE, "{hashed}");
        }
        for plain in [
            "/pkg/order-tracking.wasm",
            "/pkg/order-tracking.css",
            "/favicon.svg",
            "/order-tracking.Hk3sP0aZqW1x.wasm",
            "/pkg/a.b/c.wasm",
            "/pkg/x.short.js",
        ] {
            assert_eq!(cache_policy(plain, "pkg"), REVALIDATE, "{plain}");
        }
    }
}
