//! The streams, as Server-Sent Events:
//! - `GET /orders/{id}/stream`: one order (spec §3);
//! - `GET /stream?order=<id>&order=<id>…`: 1 to 100 orders on one connection, one cursor
//!   (spec §11);
//! - `GET /stream`: every order, for the back office; needs the token when one is set.
//!
//! All three are one [`Follower`](crate::server::event_log::Follower), which owns the order
//! of events (no gap, no duplicate, id order); the frames are [`sse`]'s. This module owns
//! the HTTP side: the query, the resume point, the stream limit, keep-alives and ending the
//! response. Its routes are long-lived by design, so they are under no timeout.
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::{parse_order_id, EventId};
use crate::server::auth::Admin;
use crate::server::error::AppError;
use crate::server::event_log::{Followed, Resume, Selection};
use crate::server::extract::OrderId;
use crate::server::{sse, AppState};

/// The most orders one stream may follow.
pub const MAX_ORDERS_PER_STREAM: usize = 100;

/// The streams' routes, never under a timeout. An order's stream is public (its id is its
/// capability); so is a stream of listed orders; every order's needs the admin token.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/orders/{id}/stream", get(order_stream))
        .route("/stream", get(selection_stream))
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

/// `GET /orders/{id}/stream`: resumes after one of the order's own events (spec §3).
pub async fn order_stream(
    State(state): State<AppState>,
    OrderId(order_id): OrderId,
    // A malformed query string is ignored like an unknown id: the stream starts over.
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let resume = resume_point(&headers, &query)
        .flatten()
        .map_or(Resume::Start, Resume::AfterOwnEvent);
    respond(state, Selection::one(order_id), resume).await
}

/// `GET /stream`: the listed orders, or every order when none is listed.
pub async fn selection_stream(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    admin: Result<Admin, AppError>,
) -> Result<Response, AppError> {
    let (orders, query) = parse_selection(raw.as_deref().unwrap_or_default())?;
    let selection = if orders.is_empty() {
        // Listing every order's events lists their ids: the back office's alone.
        admin?;
        Selection::All
    } else {
        Selection::Orders(orders)
    };
    let resume = resume_point(&headers, &query)
        .flatten()
        .map_or(Resume::Start, Resume::After);
    respond(state, selection, resume).await
}

/// The `order` parameters (distinct, in the order given; an id named twice, in any form,
/// counts once) and the rest of the query. Other parameters are ignored.
fn parse_selection(raw: &str) -> Result<(Vec<Uuid>, StreamQuery), AppError> {
    let mut orders = Vec::new();
    let mut query = StreamQuery::default();
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        match &*key {
            "order" => {
                let id = parse_order_id(&value)?;
                if !orders.contains(&id) {
                    if orders.len() == MAX_ORDERS_PER_STREAM {
                        return Err(AppError::BadRequest(format!(
                            "a stream follows at most {MAX_ORDERS_PER_STREAM} orders"
                        )));
                    }
                    orders.push(id);
                }
            }
            "last_event_id" => query.last_event_id = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok((orders, query))
}

/// Follows `selection` from `resume` as an event stream, or `204` when nothing is left.
async fn respond(
    state: AppState,
    selection: Selection,
    resume: Resume,
) -> Result<Response, AppError> {
    let metrics = state.event_log.metrics().clone();
    let open = metrics
        .open_stream(state.config.max_streams)
        .ok_or(AppError::TooManyStreams)?;

    let mut follower = state.event_log.follow(selection, resume).await?;
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
    fn a_selection_is_its_distinct_orders_in_any_form() {
        let a = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let b = "c5e6c4b8-4a43-4a8e-9d55-2f9d0e6b1f00";
        let (orders, query) = parse_selection(&format!(
            "order={a}&order={}&order=%7B{b}%7D&last_event_id=12&x=1",
            a.to_uppercase()
        ))
        .unwrap();
        assert_eq!(orders, [a.parse::<Uuid>().unwrap(), b.parse().unwrap()]);
        assert_eq!(query.last_event_id.as_deref(), Some("12"));
        assert!(parse_selection("").unwrap().0.is_empty());
        assert!(parse_selection("last_event_id=3").unwrap().0.is_empty());
    }

    #[test]
    fn a_malformed_order_or_more_than_a_hundred_is_refused() {
        for bad in ["order=", "order=nope", "order=67e55044", "order=%FF"] {
            assert!(
                matches!(parse_selection(bad), Err(AppError::InvalidOrderId)),
                "{bad}"
            );
        }
        let many = |n: usize| {
            (0..n)
                .map(|_| format!("order={}", Uuid::new_v4()))
                .collect::<Vec<_>>()
                .join("&")
        };
        assert_eq!(parse_selection(&many(100)).unwrap().0.len(), 100);
        assert!(matches!(
            parse_selection(&many(101)),
            Err(AppError::BadRequest(_))
        ));
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
