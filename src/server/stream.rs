//! `GET /orders/{id}/stream`: the order's stored events after the resume point, then its live
//! events, as Server-Sent Events; ends after `Delivered`. The order of events (no gap, no
//! duplicate) is [`EventLog::follow`](crate::server::event_log::EventLog::follow)'s job and
//! the frames are [`sse`]'s; this module owns the HTTP side: the resume point, the stream
//! limit, keep-alives and ending the response. Its route is long-lived by design, so it is
//! under no timeout.
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;

use crate::domain::EventId;
use crate::server::error::AppError;
use crate::server::event_log::Followed;
use crate::server::extract::OrderId;
use crate::server::{sse, AppState};

/// The stream's route: public (an order id is its capability), never under a timeout.
pub fn routes() -> Router<AppState> {
    Router::new().route("/orders/{id}/stream", get(stream))
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    last_event_id: Option<String>,
}

/// The resume point: the `Last-Event-ID` header when present and non-empty, else the
/// `last_event_id` query parameter when non-empty. A value that is not an id resumes from
/// the start, like an id of another order.
fn resume_point(headers: &HeaderMap, query: &StreamQuery) -> Option<Option<EventId>> {
    let from_header = headers
        .get("last-event-id")
        .map(HeaderValue::as_bytes)
        .filter(|raw| !raw.is_empty())
        .map(|raw| std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok()));
    let from_query = || {
        query
            .last_event_id
            .as_deref()
            .filter(|raw| !raw.is_empty())
            .map(|raw| raw.parse().ok())
    };
    from_header.or_else(from_query)
}

pub async fn stream(
    State(state): State<AppState>,
    OrderId(order_id): OrderId,
    // A malformed query string is ignored like an unknown id: the stream starts over.
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let resume = resume_point(&headers, &query).flatten();

    let metrics = state.event_log.metrics().clone();
    let open = metrics
        .open_stream(state.config.max_streams)
        .ok_or(AppError::TooManyStreams)?;

    let mut follower = state.event_log.follow(order_id, resume).await?;
    if follower.resumed_at_end() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }

    let shutdown = state.shutdown.clone();
    let mut keepalive = state.keepalive.clone();
    let body = async_stream::stream! {
        let _open = open;
        yield Ok::<_, Infallible>(sse::RETRY_FRAME.clone());
        loop {
            enum Step {
                Send(Bytes),
                KeepAlive,
                End,
            }
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Step::End,
                next = follower.next() => match next {
                    Followed::Event(delivery) => Step::Send(delivery.frame.clone()),
                    Followed::Lagged => {
                        metrics.slow_subscribers_dropped.inc();
                        Step::End
                    }
                    Followed::End | Followed::Failed => Step::End,
                },
                changed = keepalive.changed() => match changed {
                    Ok(()) => Step::KeepAlive,
                    Err(_) => Step::End,
                },
            };
            match step {
                Step::End => break,
                Step::KeepAlive => yield Ok(sse::KEEPALIVE_FRAME),
                Step::Send(frame) => {
                    metrics.events_delivered.inc();
                    yield Ok(frame);
                }
            }
        }
    };

    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(value: Option<&str>) -> StreamQuery {
        StreamQuery {
            last_event_id: value.map(str::to_owned),
        }
    }

    fn header(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn the_header_wins_over_the_query_unless_it_is_empty() {
        assert_eq!(
            resume_point(&header(b"7"), &query(Some("3"))),
            Some(Some(EventId(7)))
        );
        assert_eq!(
            resume_point(&header(b""), &query(Some("3"))),
            Some(Some(EventId(3)))
        );
        assert_eq!(
            resume_point(&HeaderMap::new(), &query(Some("3"))),
            Some(Some(EventId(3)))
        );
        assert_eq!(resume_point(&HeaderMap::new(), &query(Some(""))), None);
        assert_eq!(resume_point(&HeaderMap::new(), &query(None)), None);
    }

    #[test]
    fn odd_values_resume_from_the_start() {
        assert_eq!(resume_point(&header(b"abc"), &query(Some("3"))), Some(None));
        assert_eq!(
            resume_point(&header(&[0xff, 0xfe]), &query(None)),
            Some(None)
        );
        assert_eq!(
            resume_point(&header(&[b'9'; 4000]), &query(None)),
            Some(None)
        );
        assert_eq!(
            resume_point(&HeaderMap::new(), &query(Some("-5"))),
            Some(None)
        );
    }
}
