//! The browser's side of the home page's "Recent orders" (demo mode): the every-order stream
//! from the last event the server rendered, so a new order appears at the top and a status
//! changes in place. Its own connection, not the tabs' shared one: it follows every order.
//! How an event changes the list ([`place_update`]) is plain Rust, tested on the server.
#[cfg(feature = "hydrate")]
pub use feed::RecentFeed;

use crate::domain::{OrderStatus, OrderStatusUpdate, OrderSummary};

/// Applies an event to the recent orders: a status changes in place (never backwards); a new
/// order goes on top, and the list keeps `keep` rows.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub fn place_update(rows: &mut Vec<OrderSummary>, update: &OrderStatusUpdate, keep: usize) {
    if let Some(row) = rows.iter_mut().find(|row| row.id == update.order_id) {
        if update.status > row.status {
            row.status = update.status;
            row.updated_at = update.timestamp;
        }
    } else if update.status == OrderStatus::Created {
        rows.insert(
            0,
            OrderSummary {
                id: update.order_id,
                status: update.status,
                created_at: update.timestamp,
                updated_at: update.timestamp,
            },
        );
        rows.truncate(keep);
    }
}

#[cfg(feature = "hydrate")]
mod feed {
    use std::cell::RefCell;
    use std::rc::{Rc, Weak};

    use leptos::prelude::*;

    use super::place_update;
    use crate::domain::{EventId, OrderSummary};
    use crate::pages::json;
    use crate::pages::source::{reopen_delay, Listener, Source};

    struct Feed {
        rows: RwSignal<Vec<OrderSummary>>,
        keep: usize,
        last: Option<EventId>,
        source: Option<Source>,
        stopped: bool,
    }

    /// A running list; [`RecentFeed::stop`] closes it.
    pub struct RecentFeed(Rc<RefCell<Feed>>);

    impl RecentFeed {
        pub fn start(
            rows: RwSignal<Vec<OrderSummary>>,
            last: Option<EventId>,
            keep: usize,
        ) -> Self {
            let feed = Rc::new(RefCell::new(Feed {
                rows,
                keep,
                last,
                source: None,
                stopped: false,
            }));
            open(&feed);
            RecentFeed(feed)
        }

        pub fn stop(self) {
            let mut feed = self.0.borrow_mut();
            feed.stopped = true;
            feed.source = None;
        }
    }

    fn open(feed: &Rc<RefCell<Feed>>) {
        if feed.borrow().stopped {
            return;
        }
        let url = match feed.borrow().last {
            Some(id) => format!("/stream?last_event_id={id}"),
            None => "/stream".to_owned(),
        };
        let source = Source::open(&url, Listening(Rc::downgrade(feed)));
        feed.borrow_mut().source = source;
    }

    /// What the list's source tells it. A `reset` (the list resumed before events now
    /// compacted) changes nothing shown: the rows hold each order's last status, which
    /// compaction keeps.
    struct Listening(Weak<RefCell<Feed>>);

    impl Listener for Listening {
        fn event(&self, id: EventId, data: String) {
            if let Some(feed) = self.0.upgrade() {
                receive(&feed, id, &data);
            }
        }

        /// After an HTTP error the browser stops retrying: try again after a `retry`'s delay.
        fn failed(&self, gave_up: bool) {
            if !gave_up {
                return;
            }
            let weak = self.0.clone();
            set_timeout(
                move || {
                    if let Some(feed) = weak.upgrade() {
                        open(&feed);
                    }
                },
                reopen_delay(),
            );
        }

        /// Reopened at once, from the last id.
        fn stale(&self) {
            if let Some(feed) = self.0.upgrade() {
                feed.borrow_mut().source = None;
                open(&feed);
            }
        }
    }

    fn receive(feed: &Rc<RefCell<Feed>>, id: EventId, data: &str) {
        let Some(update) = json::read(data, json::update) else {
            return;
        };
        let mut state = feed.borrow_mut();
        state.last = state.last.max(Some(id));
        let keep = state.keep;
        state.rows.update(|rows| place_update(rows, &update, keep));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    fn update(order_id: Uuid, status: OrderStatus, second: u32) -> OrderStatusUpdate {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, second).unwrap();
        OrderStatusUpdate::new(order_id, status, at)
    }

    #[test]
    fn a_new_order_goes_on_top_and_a_status_changes_in_place() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut rows = Vec::new();
        place_update(&mut rows, &update(a, OrderStatus::Created, 1), 2);
        place_update(&mut rows, &update(b, OrderStatus::Created, 2), 2);
        place_update(&mut rows, &update(a, OrderStatus::PaymentConfirmed, 3), 2);
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [b, a]);
        assert_eq!(rows[1].status, OrderStatus::PaymentConfirmed);
        assert_eq!(
            rows[1].updated_at,
            update(a, OrderStatus::Created, 3).timestamp
        );
        // Replayed or late: never backwards.
        place_update(&mut rows, &update(a, OrderStatus::Created, 4), 2);
        assert_eq!(rows[1].status, OrderStatus::PaymentConfirmed);
        // A later status of an order not listed is not a new order; a new one pushes the
        // oldest out.
        place_update(&mut rows, &update(c, OrderStatus::Packed, 5), 2);
        assert_eq!(rows.len(), 2);
        place_update(&mut rows, &update(c, OrderStatus::Created, 6), 2);
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [c, b]);
    }
}
