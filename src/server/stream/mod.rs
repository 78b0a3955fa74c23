//! The streams, as Server-Sent Events:
//! - `GET /orders/{id}/stream`: one order (spec §3);
//! - `GET /stream?order=<id>&order=<id>…`: 1 to 100 orders on one connection, one cursor
//!   (spec §11);
//! - `GET /stream`: every order, for the back office; needs the token when one is set.
//!
//! All three are one [`Follower`](crate::server::event_log::Follower), which owns the order
//! of events (no gap, no duplicate, id order); the frames are [`sse`]'s. This module owns
//! what a stream request means (its target, its resume point, the stream limit, the token)
//! and the frames a stream is made of ([`Frames`]: a first `retry`, the events, keep-alives,
//! and the end). Two writers put them on the wire:
//! - [`direct`]: straight to the socket, one `writev` per batch of frames, for the HTTP/1.1
//!   stream requests the accept loop ([`crate::server::serve`]) reads itself: nearly all;
//! - [`route`]: as axum routes, for what reaches the router instead (HTTP/2, a request
//!   with a body, tests that call the router).
//!
//! Streams are long-lived by design, so they are under no timeout.
pub mod direct;
pub mod route;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{parse_order_id, EventId};
use crate::server::auth::Admin;
use crate::server::edge::ClientStream;
use crate::server::error::AppError;
use crate::server::event_log::{Followed, Follower, Resume, Selection};
use crate::server::metrics::{Metrics, OpenStream};
use crate::server::{sse, AppState};

pub use route::routes;

/// The most orders one stream may follow.
pub const MAX_ORDERS_PER_STREAM: usize = 100;

/// The headers of every stream response, whichever writer sends it. `X-Accel-Buffering`
/// tells nginx not to buffer it.
pub const HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
];

/// Which stream a request path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/orders/{id}/stream`, with the id as sent (still percent-encoded).
    Order(&'a str),
    /// `/stream`: listed orders, or every order.
    Selection,
}

impl<'a> Target<'a> {
    /// The stream `path` names, if it names one: the same paths the router's routes match.
    pub fn of_path(path: &'a str) -> Option<Self> {
        if path == "/stream" {
            return Some(Target::Selection);
        }
        let id = path.strip_prefix("/orders/")?.strip_suffix("/stream")?;
        (!id.is_empty() && !id.contains('/')).then_some(Target::Order(id))
    }
}

/// A stream request, as read by either writer.
#[derive(Debug, Clone, Copy)]
pub struct StreamRequest<'a> {
    pub target: Target<'a>,
    /// The query string without its `?`; empty when there is none.
    pub query: &'a str,
    /// The `Last-Event-ID` header.
    pub last_event_id: Option<&'a [u8]>,
    /// The `Authorization` header.
    pub authorization: Option<&'a [u8]>,
    /// Who asks ([`crate::server::edge::Clients::client_of`]), counted against its share;
    /// `None` only for a router called without the accept loop (tests).
    pub client: Option<IpAddr>,
}

/// What a stream request opened.
// Frames is large and NoContent empty, but an `Opened` lives only from the opening to its
// writer, which keeps the frames where they are; a box would be an allocation per stream.
#[allow(clippy::large_enum_variant)]
pub enum Opened {
    /// Resumed after the last event of orders that are all delivered: `204`, so that
    /// EventSource stops reconnecting (spec §3).
    NoContent,
    Stream(Frames),
}

/// Checks a stream request and starts following what it names. Errors come in the order
/// a client can mend them: a malformed request, then the token, then the client's share,
/// then the stream limit.
pub async fn open(state: &AppState, request: StreamRequest<'_>) -> Result<Opened, AppError> {
    let (selection, resume) = match request.target {
        Target::Order(raw) => {
            let id = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| AppError::InvalidOrderId)?;
            let order_id = parse_order_id(&id)?;
            // A resume id that is not one of this order's events replays it from the start.
            let resume = resume_point(request.last_event_id, last_event_id_of(request.query))
                .flatten()
                .map_or(Resume::Start, Resume::AfterOwnEvent);
            (Selection::one(order_id), resume)
        }
        Target::Selection => {
            let (orders, last_event_id) = parse_selection(request.query)?;
            let selection = if orders.is_empty() {
                // Listing every order's events lists their ids: the back office's alone.
                Admin::check(state, request.authorization)?;
                Selection::All
            } else {
                Selection::Orders(orders)
            };
            let resume = resume_point(request.last_event_id, last_event_id)
                .flatten()
                .map_or(Resume::Start, Resume::After);
            (selection, resume)
        }
    };

    let client = match request.client {
        Some(client) => Some(
            state
                .clients
                .open_stream(client)
                .map_err(|_| AppError::TooManyClientStreams)?,
        ),
        None => None,
    };
    let metrics = state.event_log.metrics().clone();
    let open = metrics
        .open_stream(state.config.max_streams)
        .ok_or(AppError::TooManyStreams)?;
    let follower = state.event_log.follow(selection, resume).await?;
    if follower.resumed_at_end() {
        return Ok(Opened::NoContent);
    }
    Ok(Opened::Stream(Frames {
        follower,
        metrics,
        shutdown: state.shutdown.clone(),
        keepalive: state.keepalive.clone(),
        heartbeat: wants_heartbeat(request.query).then_some(state.config.keepalive_secs),
        retry_sent: false,
        ended: false,
        _open: open,
        _client: client,
    }))
}

/// The resume point: the `Last-Event-ID` header when present and non-empty, else the
/// `last_event_id` query parameter when non-empty. A value that is not an id resumes from
/// the start, like an id of another order.
fn resume_point(header: Option<&[u8]>, query: Option<String>) -> Option<Option<EventId>> {
    let from_header = header
        .filter(|raw| !raw.is_empty())
        .map(|raw| std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok()));
    let from_query = || {
        query
            .as_deref()
            .filter(|raw| !raw.is_empty())
            .map(|raw| raw.parse().ok())
    };
    from_header.or_else(from_query)
}

/// The `last_event_id` query parameter (the last one, when there are several). Nothing in
/// an order stream's query is an error: an odd one starts the stream over.
fn last_event_id_of(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "last_event_id")
        .last()
        .map(|(_, value)| value.into_owned())
}

/// Whether the query asks for keep-alives the page can see (`heartbeat`, with any value or
/// none): the browser's pages do, to notice a stream that died silently.
fn wants_heartbeat(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "heartbeat")
}

/// The `order` parameters (distinct, in the order given; an id named twice, in any form,
/// counts once) and `last_event_id`. Other parameters are ignored.
fn parse_selection(query: &str) -> Result<(Vec<Uuid>, Option<String>), AppError> {
    let mut orders = Vec::new();
    let mut last_event_id = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
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
            "last_event_id" => last_event_id = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok((orders, last_event_id))
}

/// The frames of one open stream, in the order they are to be written: `retry`, `reset` when
/// the client missed events that are no longer stored, then each event as the follower
/// hands it out, with a keep-alive comment on every shared tick. It counts as an open
/// stream until it is dropped.
pub struct Frames {
    follower: Follower,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    keepalive: watch::Receiver<()>,
    /// Opened with `heartbeat`: the keep-alive period, told first and shown as an event.
    heartbeat: Option<u64>,
    retry_sent: bool,
    ended: bool,
    _open: OpenStream,
    _client: Option<ClientStream>,
}

impl Frames {
    /// Counts this stream as dropped for a write that made no progress.
    pub fn stalled(&self) {
        self.metrics.timed_out("write");
    }

    /// The next frame, or `None` once the stream is over: its orders are delivered and sent,
    /// the subscriber fell too far behind, the store failed, or the server is shutting down.
    ///
    /// Cancel-safe: a frame is only taken from the follower when it is returned, so a
    /// caller may drop this future for another (the client going away, a batch of what is
    /// ready now) and call again.
    pub async fn next(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        if !self.retry_sent {
            self.retry_sent = true;
            return Some(sse::retry_frame(self.heartbeat));
        }
        // Then, when the client missed events that are gone, `reset` (spec §12).
        if let Some(earliest) = self.follower.take_reset() {
            return Some(sse::reset_frame(earliest));
        }
        let frame = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            next = self.follower.next() => match next {
                Followed::Event(delivery) => {
                    self.metrics.events_delivered.inc();
                    Some(delivery.frame.clone())
                }
                Followed::Lagged => {
                    self.metrics.slow_subscribers_dropped.inc();
                    None
                }
                Followed::End | Followed::Failed => None,
            },
            changed = self.keepalive.changed() => changed
                .ok()
                .map(|()| sse::keepalive_frame(self.heartbeat.is_some())),
        };
        self.ended = frame.is_none();
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(value: Option<&str>) -> Option<String> {
        value.map(str::to_owned)
    }

    fn header(value: &[u8]) -> Option<&[u8]> {
        Some(value)
    }

    #[test]
    fn the_header_wins_over_the_query_unless_it_is_empty() {
        assert_eq!(
            resume_point(header(b"7"), query(Some("3"))),
            Some(Some(EventId(7)))
        );
        assert_eq!(
            resume_point(header(b""), query(Some("3"))),
            Some(Some(EventId(3)))
        );
        assert_eq!(resume_point(None, query(Some("3"))), Some(Some(EventId(3))));
        assert_eq!(resume_point(None, query(Some(""))), None);
        assert_eq!(resume_point(None, query(None)), None);
    }

    #[test]
    fn heartbeat_is_asked_for_by_name_with_any_value_or_none() {
        assert!(wants_heartbeat("heartbeat"));
        assert!(wants_heartbeat("order=x&heartbeat=1"));
        assert!(wants_heartbeat("heartbeat=&last_event_id=3"));
        assert!(!wants_heartbeat(""));
        assert!(!wants_heartbeat(
            "order=x&heartbeats=1&last_event_id=heartbeat"
        ));
    }

    #[test]
    fn a_selection_is_its_distinct_orders_in_any_form() {
        let a = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let b = "c5e6c4b8-4a43-4a8e-9d55-2f9d0e6b1f00";
        let (orders, last_event_id) = parse_selection(&format!(
            "order={a}&order={}&order=%7B{b}%7D&last_event_id=12&x=1",
            a.to_uppercase()
        ))
        .unwrap();
        assert_eq!(orders, [a.parse::<Uuid>().unwrap(), b.parse().unwrap()]);
        assert_eq!(last_event_id.as_deref(), Some("12"));
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
    fn a_stream_is_one_of_the_routes_paths() {
        assert_eq!(Target::of_path("/stream"), Some(Target::Selection));
        assert_eq!(
            Target::of_path("/orders/%7Babc%7D/stream"),
            Some(Target::Order("%7Babc%7D"))
        );
        for other in [
            "/",
            "/stream/",
            "/streams",
            "/orders/stream",
            "/orders//stream",
            "/orders/a/b/stream",
            "/orders/a/stream/",
            "/orders/a",
            "/api/orders/a/stream",
        ] {
            assert_eq!(Target::of_path(other), None, "{other}");
        }
    }

    #[test]
    fn an_order_stream_takes_the_last_resume_id_of_its_query_and_nothing_else() {
        assert_eq!(
            last_event_id_of("last_event_id=3&last_event_id=5"),
            query(Some("5"))
        );
        assert_eq!(last_event_id_of("order=nope&x=%FF"), None);
        assert_eq!(last_event_id_of(""), None);
    }

    #[test]
    fn odd_values_resume_from_the_start() {
        assert_eq!(resume_point(header(b"abc"), query(Some("3"))), Some(None));
        assert_eq!(resume_point(header(&[0xff, 0xfe]), query(None)), Some(None));
        assert_eq!(resume_point(header(&[b'9'; 4000]), query(None)), Some(None));
        assert_eq!(resume_point(None, query(Some("-5"))), Some(None));
    }
}
