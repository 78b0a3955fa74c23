//! The Server-Sent Events wire format: the frames a stream is made of, as bytes. It knows
//! nothing of HTTP, of subscribers or of the store, so that both the hub (which shares one
//! encoded frame among every subscriber) and the stream handler (which writes them) sit above it.
use bytes::Bytes;

use crate::domain::{retry_ms, EventId, OrderEvent};

/// The name of every event frame (`event: order-update`), as the seed named it.
pub const EVENT_NAME: &str = "order-update";

/// The first frame of a stream: how long EventSource waits before reconnecting, drawn for
/// each stream between 3 and 6 s (spec §13); for a stream opened with `heartbeat`, the
/// keep-alive period in seconds too.
pub fn retry_frame(heartbeat: Option<u64>) -> Bytes {
    retry_frame_of(retry_ms(fastrand::f64()), heartbeat)
}

/// The `retry` frame for a delay of `ms`. With `heartbeat`, it also holds an event whose data
/// is the keep-alive period in seconds, so that the page knows how long a silence means the
/// stream is dead.
pub fn retry_frame_of(ms: u64, heartbeat: Option<u64>) -> Bytes {
    Bytes::from(match heartbeat {
        Some(secs) => format!("retry: {ms}\nevent: {HEARTBEAT_NAME}\ndata: {secs}\n\n"),
        None => format!("retry: {ms}\n\n"),
    })
}

/// A comment frame sent on a quiet stream so that proxies and clients keep it open.
const KEEPALIVE_FRAME: Bytes = Bytes::from_static(b": keep-alive\n\n");

/// The name of the event a stream opened with `heartbeat` sends beside each keep-alive
/// comment. EventSource hides comments from the page, so without it a page cannot tell a
/// quiet stream from one that died silently (a NAT or a phone's radio dropping it unseen).
pub const HEARTBEAT_NAME: &str = "keep-alive";

/// The keep-alive of a stream opened with `heartbeat`: the same comment, then an event the
/// page sees. It has no `id:` line, so the client's resume point stays its last event's.
const HEARTBEAT_FRAME: Bytes = Bytes::from_static(b"event: keep-alive\ndata: \n\n: keep-alive\n\n");

/// The keep-alive of a stream: the comment, or for a stream opened with `heartbeat` the
/// comment and an event beside it.
pub fn keepalive_frame(heartbeat: bool) -> Bytes {
    if heartbeat {
        HEARTBEAT_FRAME
    } else {
        KEEPALIVE_FRAME
    }
}

/// The name of the frame that tells a client it missed events that are no longer stored
/// (spec §12): it should reload its orders' state.
pub const RESET_NAME: &str = "reset";

/// The `reset` frame: `earliest` is the smallest id still stored (`null` when none is). It
/// has no `id:` line, so the client's resume point stays its last event's.
pub fn reset_frame(earliest: Option<EventId>) -> Bytes {
    let earliest = earliest.map_or_else(|| "null".to_owned(), |id| id.to_string());
    Bytes::from(format!(
        "event: {RESET_NAME}\ndata: {{\"earliest\":{earliest}}}\n\n"
    ))
}

/// One event as its frame: `id`, `event` and `data` lines, then a blank line.
pub fn event_frame(event: &OrderEvent) -> Bytes {
    // An update is a UUID, a status name and a timestamp: it cannot fail to serialise, and
    // none of them can hold a newline that would break the frame.
    let data = serde_json::to_string(&event.update).expect("an update always serialises");
    Bytes::from(format!(
        "id: {}\nevent: {EVENT_NAME}\ndata: {data}\n\n",
        event.id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrderStatus, OrderStatusUpdate};

    #[test]
    fn a_reset_frame_names_the_earliest_id_stored_and_has_no_id_line() {
        assert_eq!(
            &reset_frame(Some(EventId(42)))[..],
            b"event: reset\ndata: {\"earliest\":42}\n\n"
        );
        assert_eq!(
            &reset_frame(None)[..],
            b"event: reset\ndata: {\"earliest\":null}\n\n"
        );
    }

    #[test]
    fn an_event_frame_is_id_event_and_data_lines_then_a_blank_line() {
        let at = chrono::DateTime::from_timestamp_millis(1_795_000_000_123).unwrap();
        let event = OrderEvent {
            id: EventId(7),
            update: OrderStatusUpdate::new(uuid::Uuid::nil(), OrderStatus::Packed, at),
        };
        let frame = event_frame(&event);
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            format!(
                "id: 7\nevent: order-update\ndata: {}\n\n",
                serde_json::to_string(&event.update).unwrap()
            )
        );
    }

    #[test]
    fn a_heartbeat_stream_tells_its_period_first_and_shows_each_keep_alive_as_an_event() {
        assert_eq!(
            &retry_frame_of(4200, Some(15))[..],
            b"retry: 4200\nevent: keep-alive\ndata: 15\n\n"
        );
        // The comment stays, so that it is still the keep-alive of spec §3.
        assert_eq!(
            &keepalive_frame(true)[..],
            b"event: keep-alive\ndata: \n\n: keep-alive\n\n"
        );
    }

    #[test]
    fn each_stream_draws_its_own_retry_between_three_and_six_seconds() {
        assert_eq!(&retry_frame_of(4321, None)[..], b"retry: 4321\n\n");
        assert_eq!(&keepalive_frame(false)[..], b": keep-alive\n\n");
        let drawn: std::collections::HashSet<u64> = (0..200)
            .map(|_| {
                let frame = retry_frame(None);
                let text = std::str::from_utf8(&frame).unwrap();
                let ms: u64 = text
                    .strip_prefix("retry: ")
                    .and_then(|rest| rest.strip_suffix("\n\n"))
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((3000..=6000).contains(&ms), "{ms}");
                ms
            })
            .collect();
        // Spread out, not one value: 200 draws over 3,001 values give well over 100.
        assert!(drawn.len() > 100, "{}", drawn.len());
    }
}
