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
use crate::server::error::{AppError, ErrorBody};
use crate::server::serve::Peer;
use crate::server::AppState;

/// The streams' routes, never under a timeout. An order's stream is public (its id is its
/// capability); so is a stream of listed orders; every order's needs the admin token.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/orders/{id}/stream", get(order_stream))
        .route("/stream", get(selection_stream))
}

/// How the streams' frames are written, for the document.
const FRAMES: &str = "Server-Sent Events (`text/event-stream`, UTF-8). The first frame is \
`retry: <ms>` (3000 to 6000, drawn per stream). Each event is `id: <event id>`, \
`event: order-update`, `data: {\"orderId\", \"status\", \"timestamp\"}` (an `OrderStatusUpdate`) and a \
blank line; a client that reconnects sends the last id as `Last-Event-ID` and gets what came \
after it. `: keep-alive` comments come every `KEEPALIVE_SECS`. With `heartbeat` in the query, the \
first frame also holds `event: keep-alive` with `data: <KEEPALIVE_SECS>`, and each keep-alive \
comes as `event: keep-alive` with empty data beside the comment, so that a browser's \
EventSource (which hides comments) can tell a quiet stream from a dead one. A resume point before events \
that compaction removed gets first `event: reset` with `data: {\"earliest\": <id as a number>|null}`. \
The stream ends once every order followed is delivered and sent.";

/// `GET /orders/{id}/stream`: one order's events (spec §3).
#[utoipa::path(
    get, path = "/orders/{id}/stream", tag = "streams",
    description = FRAMES,
    params(
        ("id" = uuid::Uuid, Path, description = "The order's id, a UUID."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event of the order."),
        ("last_event_id" = Option<String>, Query, description = "The same, for clients that cannot set the header."),
        ("heartbeat" = Option<String>, Query, description = "Present (any value): keep-alives as events the page sees, the period told first."),
    ),
    responses(
        (status = 200, description = "The stream: the order's events from the resume point on, then live ones.", content_type = "text/event-stream", body = String),
        (status = 204, description = "Resumed after the last event of a delivered order: nothing more will come."),
        (status = 400, description = "The id is not a UUID.", body = ErrorBody),
        (status = 429, description = "This address holds its share of streams (`Retry-After`).", body = ErrorBody),
        (status = 503, description = "`MAX_STREAMS` are open, or the store is unavailable (`Retry-After`).", body = ErrorBody),
    )
)]
async fn order_stream(
    state: State<AppState>,
    peer: Option<Extension<Peer>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    stream(state, peer, version, uri, headers).await
}

/// `GET /stream`: several orders on one connection (spec §11), or every order.
#[utoipa::path(
    get, path = "/stream", tag = "streams",
    description = FRAMES,
    params(
        ("order" = Option<Vec<String>>, Query, explode = true, description = "1 to 100 order ids, the parameter repeated; none: every order (the back office's, with the token)."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this id: every event of the orders with a greater one."),
        ("last_event_id" = Option<String>, Query, description = "The same, for clients that cannot set the header."),
        ("heartbeat" = Option<String>, Query, description = "Present (any value): keep-alives as events the page sees, the period told first."),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The stream, in id order, each event once.", content_type = "text/event-stream", body = String),
        (status = 204, description = "Resumed after the last event of orders that are all delivered."),
        (status = 400, description = "An id is not a UUID, or more than 100 orders.", body = ErrorBody),
        (status = 401, description = "Every order's stream, without the token that is configured.", body = ErrorBody),
        (status = 429, description = "This address holds its share of streams (`Retry-After`).", body = ErrorBody),
        (status = 503, description = "`MAX_STREAMS` are open, or the store is unavailable (`Retry-After`).", body = ErrorBody),
    )
)]
async fn selection_stream(
    state: State<AppState>,
    peer: Option<Extension<Peer>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    stream(state, peer, version, uri, headers).await
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
