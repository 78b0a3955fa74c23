use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::OrderEvent;

/// Where an order is on its way to the customer. The wire names are the variant names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub enum OrderStatus {
    Created,
    PaymentConfirmed,
    Packed,
    Shipped,
    OutForDelivery,
    Delivered,
}

/// A status that may not follow the order's current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("order is already {current}; the next status is {expected}, not {requested}")]
    NotNext {
        current: OrderStatus,
        expected: OrderStatus,
        requested: OrderStatus,
    },
    #[error("order is already Delivered; no status may follow it")]
    AlreadyDelivered,
}

/// A status name that is not one of the six wire names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}; expected one of Created, PaymentConfirmed, Packed, Shipped, OutForDelivery, Delivered")]
pub struct UnknownStatus(pub String);

impl OrderStatus {
    /// Every status, in the order an order goes through them.
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Created,
        OrderStatus::PaymentConfirmed,
        OrderStatus::Packed,
        OrderStatus::Shipped,
        OrderStatus::OutForDelivery,
        OrderStatus::Delivered,
    ];

    /// Position in [`OrderStatus::ALL`]: 0 for `Created`, 5 for `Delivered`.
    pub const fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }

    /// The wire name, as in JSON and in the SSE `data` line.
    pub const fn wire_name(self) -> &'static str {
        match self {
            OrderStatus::Created => "Created",
            OrderStatus::PaymentConfirmed => "PaymentConfirmed",
            OrderStatus::Packed => "Packed",
            OrderStatus::Shipped => "Shipped",
            OrderStatus::OutForDelivery => "OutForDelivery",
            OrderStatus::Delivered => "Delivered",
        }
    }

    /// What a customer reads.
    pub const fn label(self) -> &'static str {
        match self {
            OrderStatus::Created => "Created",
            OrderStatus::PaymentConfirmed => "Payment confirmed",
            OrderStatus::Packed => "Packed",
            OrderStatus::Shipped => "Shipped",
            OrderStatus::OutForDelivery => "Out for delivery",
            OrderStatus::Delivered => "Delivered",
        }
    }

    /// The status that may follow this one, if any.
    pub fn next(self) -> Option<Self> {
        Self::from_index(self.index() + 1)
    }

    pub const fn is_final(self) -> bool {
        matches!(self, OrderStatus::Delivered)
    }

    /// Checks that `requested` may follow `current` (`None`: the order does not exist yet,
    /// so only `Created` may come).
    pub fn check_transition(
        current: Option<OrderStatus>,
        requested: OrderStatus,
    ) -> Result<(), TransitionError> {
        let expected = match current {
            None => OrderStatus::Created,
            Some(current) => current.next().ok_or(TransitionError::AlreadyDelivered)?,
        };
        if requested == expected {
            Ok(())
        } else {
            Err(TransitionError::NotNext {
                current: current.unwrap_or(OrderStatus::Created),
                expected,
                requested,
            })
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_name())
    }
}

impl FromStr for OrderStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.wire_name() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// An order id that no UUID parser accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("order id is not a UUID")]
pub struct InvalidOrderId;

/// Parses an order id in any form a UUID parser accepts (hyphenated, simple, braced,
/// `urn:uuid:`, any case). Its `Display` is always the lowercase hyphenated form.
pub fn parse_order_id(raw: &str) -> Result<Uuid, InvalidOrderId> {
    Uuid::try_parse(raw).map_err(|_| InvalidOrderId)
}

/// What a customer pastes to find their order: the id in any UUID form, or a link to its
/// page (`https://shop.example/orders/<id>`, with or without a query or fragment, or just
/// the path). Surrounding white space is ignored.
pub fn parse_order_reference(raw: &str) -> Result<Uuid, InvalidOrderId> {
    let raw = raw.trim();
    if let Ok(id) = parse_order_id(raw) {
        return Ok(id);
    }
    let (_, after) = raw.rsplit_once("/orders/").ok_or(InvalidOrderId)?;
    let segment = after.split(['/', '?', '#']).next().unwrap_or_default();
    parse_order_id(segment)
}

/// An order with its whole history, as `GET /api/orders/{id}` returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: Uuid,
    pub status: OrderStatus,
    #[serde(with = "super::event::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "super::event::millis")]
    pub updated_at: DateTime<Utc>,
    /// Its stored events, oldest first: every one, or, once it is `expired`, those that came
    /// after it was compacted (none, for a delivered order).
    pub events: Vec<OrderEvent>,
    /// Compacted (spec §12): its step-by-step history is no longer kept; its status and
    /// times are its summary's, or its last event's when it has any.
    #[serde(default)]
    pub expired: bool,
}

impl Order {
    /// Builds an order from its events, oldest first; `None` when there are none.
    pub fn from_events(events: Vec<OrderEvent>) -> Option<Self> {
        Self::from_history(None, events)
    }

    /// Builds an order from the summary it kept when compacted, if it was, and the events
    /// stored after (every event, when it never was); `None` when there is neither.
    pub fn from_history(summary: Option<OrderSummary>, events: Vec<OrderEvent>) -> Option<Self> {
        let last = events
            .last()
            .map(|last| (last.update.status, last.update.timestamp));
        let (id, created_at) = match (&summary, events.first()) {
            (Some(summary), _) => (summary.id, summary.created_at),
            (None, Some(first)) => (first.update.order_id, first.update.timestamp),
            (None, None) => return None,
        };
        let (status, updated_at) = match (last, &summary) {
            (Some(last), _) => last,
            (None, Some(summary)) => (summary.status, summary.updated_at),
            (None, None) => return None,
        };
        Some(Order {
            id,
            status,
            created_at,
            updated_at,
            events,
            expired: summary.is_some(),
        })
    }
}

/// An order without its events, as listed by `GET /api/orders`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderSummary {
    pub id: Uuid,
    pub status: OrderStatus,
    #[serde(with = "super::event::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "super::event::millis")]
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_but_the_last_has_exactly_one_successor() {
        for pair in OrderStatus::ALL.windows(2) {
            assert_eq!(pair[0].next(), Some(pair[1]));
            assert_eq!(
                OrderStatus::check_transition(Some(pair[0]), pair[1]),
                Ok(())
            );
        }
        assert_eq!(OrderStatus::Delivered.next(), None);
        assert!(OrderStatus::Delivered.is_final());
    }

    #[test]
    fn an_order_starts_at_created() {
        assert_eq!(
            OrderStatus::check_transition(None, OrderStatus::Created),
            Ok(())
        );
        assert_eq!(
            OrderStatus::check_transition(None, OrderStatus::Packed),
            Err(TransitionError::NotNext {
                current: OrderStatus::Created,
                expected: OrderStatus::Created,
                requested: OrderStatus::Packed
            })
        );
    }

    #[test]
    fn no_skipping_no_going_back_no_repeating() {
        for current in OrderStatus::ALL {
            for requested in OrderStatus::ALL {
                let allowed = OrderStatus::check_transition(Some(current), requested).is_ok();
                assert_eq!(
                    allowed,
                    requested.index() == current.index() + 1,
                    "{current} -> {requested}"
                );
            }
        }
        assert_eq!(
            OrderStatus::check_transition(Some(OrderStatus::Delivered), OrderStatus::Delivered),
            Err(TransitionError::AlreadyDelivered)
        );
    }

    #[test]
    fn wire_names_round_trip_and_labels_read_well() {
        let labels: Vec<_> = OrderStatus::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            [
                "Created",
                "Payment confirmed",
                "Packed",
                "Shipped",
                "Out for delivery",
                "Delivered"
            ]
        );
        for status in OrderStatus::ALL {
            assert_eq!(status.wire_name().parse::<OrderStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{}\"", status.wire_name())
            );
        }
        assert!("packed".parse::<OrderStatus>().is_err());
        assert!("Lost".parse::<OrderStatus>().is_err());
    }

    #[test]
    fn order_ids_parse_in_every_uuid_form_and_print_lowercase_hyphenated() {
        let canonical = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        for form in [
            canonical,
            "67E55044-10B1-426F-9247-BB680E5FE0C8",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
        ] {
            assert_eq!(
                parse_order_id(form).unwrap().to_string(),
                canonical,
                "{form}"
            );
        }
        for bad in [
            "",
            "42",
            "not-a-uuid",
            "67e55044-10b1-426f-9247-bb680e5fe0c",
            "💥",
        ] {
            assert_eq!(parse_order_id(bad), Err(InvalidOrderId), "{bad}");
        }
    }

    #[test]
    fn an_order_is_found_by_its_id_or_a_link_to_its_page() {
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        for pasted in [
            id.to_owned(),
            format!("  {}\n", id.to_uppercase()),
            format!("https://shop.example/orders/{id}"),
            format!("http://127.0.0.1:3000/orders/{id}?utm=mail#top"),
            format!("/orders/{id}/"),
            format!("shop.example/orders/{{{id}}}"),
        ] {
            assert_eq!(
                parse_order_reference(&pasted).map(|id| id.to_string()),
                Ok(id.to_owned()),
                "{pasted:?}"
            );
        }
        for bad in [
            "",
            "   ",
            "order 42",
            "https://shop.example/",
            "https://shop.example/orders/",
            "https://shop.example/orders/not-an-id",
            &format!("https://shop.example/orders/{id}x"),
        ] {
            assert_eq!(parse_order_reference(bad), Err(InvalidOrderId), "{bad:?}");
        }
    }

    #[test]
    fn a_compacted_order_is_its_summary_then_what_came_after() {
        use crate::domain::{EventId, OrderStatusUpdate};
        let id = Uuid::new_v4();
        let at = |secs| DateTime::from_timestamp(secs, 0).unwrap();
        let summary = OrderSummary {
            id,
            status: OrderStatus::Shipped,
            created_at: at(100),
            updated_at: at(200),
        };
        let expired = Order::from_history(Some(summary.clone()), vec![]).unwrap();
        assert_eq!(
            (expired.status, expired.created_at, expired.updated_at),
            (OrderStatus::Shipped, at(100), at(200))
        );
        assert!(expired.expired && expired.events.is_empty());
        // An idle order compacted at Shipped, then out for delivery.
        let later = OrderEvent {
            id: EventId(9),
            update: OrderStatusUpdate::new(id, OrderStatus::OutForDelivery, at(300)),
        };
        let resumed = Order::from_history(Some(summary), vec![later.clone()]).unwrap();
        assert_eq!(
            (resumed.status, resumed.created_at, resumed.updated_at),
            (OrderStatus::OutForDelivery, at(100), at(300))
        );
        assert!(resumed.expired);
        assert_eq!(resumed.events, [later]);
        // Never compacted: its events alone, not expired; nothing at all: no order.
        assert!(!Order::from_events(resumed.events).unwrap().expired);
        assert_eq!(Order::from_history(None, vec![]), None);
    }
}
