//! The streams as axum routes: for the requests the accept loop does not write itself
//! (HTTP/2, a stream request with a body, HTTP/1.0) and for tests that call the router.
//! Same request, same frames as [`super::direct`]; hyper does the framing.
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{open, Opened, StreamRequest, Target, HEADERS};
use crate::server::error::AppError;
use crate::server::serve::Peer;
use crate::server::AppState;

/// The streams' routes, never under a timeout. An order's stream is public (its id is its
/// capability); so is a stream of listed orders; every order's needs the admin token.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/orders/{id}/stream", get(stream))
        .route("/stream", get(stream))
}

/// Either route: the path says which stream.
async fn stream(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let target = Target::of_path(uri.path()).ok_or(AppError::NoRoute)?;
    let header = |name| headers.get(name).map(|value| value.as_bytes());
    let client = peer.map(|Extension(Peer(peer))| {
        let forwarded_for = headers.get_all("x-forwarded-for").iter();
        state
            .clients
            .client_of(peer, forwarded_for.map(|value| value.as_bytes()))
    });
    let request = StreamRequest {
        target,
        query: uri.query().unwrap_or_default(),
        last_event_id: header("last-event-id"),
        authorization: header(header::AUTHORIZATION.as_str()),
        client,
    };
    let frames = match open(&state, request).await? {
        Opened::NoContent => return Ok(StatusCode::NO_CONTENT.into_response()),
        Opened::Stream(frames) => frames,
    };
    let body = futures::stream::unfold(frames, |mut frames| async move {
        let frame = frames.next().await?;
        Some((Ok::<_, Infallible>(frame), frames))
    });
    let mut response = Body::from_stream(body).into_response();
    for (name, value) in HEADERS {
        response.headers_mut().insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from_static(value),
        );
    }
    // Over HTTP/1.1 the connection closes after a stream, as on the direct path (HTTP/2
    // has no such header: its stream ends, the connection stays).
    if version == Version::HTTP_11 {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}
