use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::OrderStatus;

/// How long a client waits before it reconnects to a stream that ended, in milliseconds: the
/// stream's `retry:` line, and the delay before the page reopens a source the browser gave up
/// on. Drawn for each stream and each reopening between these two (spec §13), so that a crowd
/// cut off at once (an instance dying under 10,000 streams) does not come back at once.
pub const RETRY_MIN_MS: u64 = 3000;
pub const RETRY_MAX_MS: u64 = 6000;

/// The reconnect delay for a uniform draw `unit` in `[0, 1)` (the server's generator, the
/// browser's `Math.random()`): spread evenly from [`RETRY_MIN_MS`] to [`RETRY_MAX_MS`].
pub fn retry_ms(unit: f64) -> u64 {
    let spread = (RETRY_MAX_MS - RETRY_MIN_MS) as f64;
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    RETRY_MIN_MS + (unit * spread).round() as u64
}

/// The id of a stored event: opaque to clients, increasing within an order (and across the
/// whole store), the same across restarts. On the wire it is a decimal string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "ssr",
    derive(utoipa::ToSchema),
    schema(value_type = String, pattern = "^[0-9]+$", example = "42")
)]
pub struct EventId(pub i64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for EventId {
    type Err = std::num::ParseIntError;

    /// Only plain positive decimal numbers are ids; anything else is an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            // Reuse the integer parser's error for signs, spaces and other text.
            return "x".parse::<i64>().map(EventId);
        }
        s.parse().map(EventId)
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// One status change of one order: the seed's `OrderStatusUpdate`, and the SSE `data` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderStatusUpdate {
    pub order_id: Uuid,
    pub status: OrderStatus,
    /// RFC 3339, UTC, millisecond precision.
    #[serde(with = "millis")]
    pub timestamp: DateTime<Utc>,
}

impl OrderStatusUpdate {
    /// An update stamped with `at` truncated to whole milliseconds, so that what is stored,
    /// sent and read back are the same instant.
    pub fn new(order_id: Uuid, status: OrderStatus, at: DateTime<Utc>) -> Self {
        let timestamp = at.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(at);
        Self {
            order_id,
            status,
            timestamp,
        }
    }
}

/// A stored event: an update with its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct OrderEvent {
    pub id: EventId,
    #[serde(flatten)]
    pub update: OrderStatusUpdate,
}

impl OrderEvent {
    pub fn status(&self) -> OrderStatus {
        self.update.status
    }
}

/// `at` as RFC 3339 in UTC with exactly three fractional digits and `Z`
/// (`2026-11-23T23:10:00.123Z`): the wire format of every time (spec §3).
///
/// Written from the date's parts rather than with chrono's formatter, so that the browser's
/// bundle, which renders times in `datetime` attributes, carries no formatting machinery
/// (issue 22); a test holds it to chrono's `to_rfc3339_opts(Millis, true)`.
pub fn rfc3339_millis(at: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let year = at.year();
    // chrono's own rule: four digits within 0..=9999, else a sign and at least four.
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+05}")
    };
    format!(
        "{year}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.timestamp_subsec_millis().min(999),
    )
}

/// Serde for `DateTime<Utc>` as [`rfc3339_millis`].
pub(crate) mod millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::rfc3339_millis(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(deserializer)?;
        super::parse_time(&raw).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
    }
}

/// An RFC 3339 time; on the server with chrono's strict parser.
#[cfg(not(feature = "hydrate"))]
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// An RFC 3339 time; in the browser with its own `Date.parse`: what is read there was written
/// by the server, and chrono's parser would add 17 KB to the bundle (issue 22).
#[cfg(feature = "hydrate")]
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let ms = js_sys::Date::parse(raw);
    if ms.is_finite() {
        DateTime::from_timestamp_millis(ms as i64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_reconnect_delay_is_spread_over_three_to_six_seconds() {
        assert_eq!(retry_ms(0.0), 3000);
        assert_eq!(retry_ms(0.5), 4500);
        assert_eq!(retry_ms(0.999_999_9), 6000);
        // Whatever a generator gives, the delay stays in range.
        for odd in [-1.0, 2.0, f64::NAN, f64::INFINITY] {
            assert!(
                (RETRY_MIN_MS..=RETRY_MAX_MS).contains(&retry_ms(odd)),
                "{odd}"
            );
        }
    }

    fn sample() -> OrderEvent {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 23, 10, 0).unwrap()
            + TimeDelta::nanoseconds(123_456_789);
        OrderEvent {
            id: EventId(42),
            update: OrderStatusUpdate::new(
                "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap(),
                OrderStatus::Packed,
                at,
            ),
        }
    }

    #[test]
    fn update_json_is_camel_case_with_wire_status_and_millisecond_utc_time() {
        let json = serde_json::to_string(&sample().update).unwrap();
        assert_eq!(
            json,
            r#"{"orderId":"67e55044-10b1-426f-9247-bb680e5fe0c8","status":"Packed","timestamp":"2026-11-23T23:10:00.123Z"}"#
        );
    }

    #[test]
    fn event_json_carries_its_id_as_a_string_and_round_trips() {
        let event = sample();
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"id":"42","orderId":"67e55044-10b1-426f-9247-bb680e5fe0c8","status":"Packed","timestamp":"2026-11-23T23:10:00.123Z"}"#
        );
        assert_eq!(serde_json::from_str::<OrderEvent>(&json).unwrap(), event);
    }

    #[test]
    fn whole_seconds_still_get_three_fraction_digits() {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let update = OrderStatusUpdate::new(Uuid::nil(), OrderStatus::Created, at);
        let json = serde_json::to_value(&update).unwrap();
        assert_eq!(json["timestamp"], "2026-01-02T03:04:05.000Z");
    }

    #[test]
    fn the_wire_time_is_chronos_rfc_3339_with_milliseconds() {
        use chrono::SecondsFormat;
        let mut at = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        // Every day of four centuries, at a time that moves through hours, minutes, seconds
        // and milliseconds, and the edges of chrono's four-digit years.
        for step in 0..146_097 {
            at += TimeDelta::days(1) + TimeDelta::milliseconds(3_723_001 + step % 997);
            assert_eq!(
                rfc3339_millis(at),
                at.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
        for at in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + TimeDelta::milliseconds(999),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
        ] {
            assert_eq!(
                rfc3339_millis(at),
                at.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
    }

    #[test]
    fn event_ids_are_plain_decimal_numbers() {
        assert_eq!("17".parse::<EventId>(), Ok(EventId(17)));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1.0",
            "abc",
            "99999999999999999999",
            "١",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
        }
    }
}
