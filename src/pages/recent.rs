//! The browser's side of the home page's "Recent orders" (demo mode): the every-order stream
//! from the last event the server rendered, so a new order appears at the top and a status
//! changes in place. Its own connection, not the tabs' shared one: it follows every order.
use std::cell::RefCell;
use std::rc::Rc;

use leptos::prelude::*;

use crate::domain::{EventId, OrderStatusUpdate, OrderSummary};
use crate::pages::home::place_update;
use crate::pages::source::{reopen_delay, Source};

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
    pub fn start(rows: RwSignal<Vec<OrderSummary>>, last: Option<EventId>, keep: usize) -> Self {
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
    let on_event = {
        let weak = Rc::downgrade(feed);
        move |id, data: String| {
            if let Some(feed) = weak.upgrade() {
                receive(&feed, id, &data);
            }
        }
    };
    // After an HTTP error the browser stops retrying: try again after the server's `retry`.
    let on_error = {
        let weak = Rc::downgrade(feed);
        move |gave_up: bool| {
            if !gave_up {
                return;
            }
            let weak = weak.clone();
            set_timeout(
                move || {
                    if let Some(feed) = weak.upgrade() {
                        open(&feed);
                    }
                },
                reopen_delay(),
            );
        }
    };
    // A `reset` (the list resumed before events now compacted) changes nothing shown: the
    // rows hold each order's last status, which compaction keeps.
    let source = Source::open(&url, || {}, on_event, || {}, on_error);
    feed.borrow_mut().source = source;
}

fn receive(feed: &Rc<RefCell<Feed>>, id: EventId, data: &str) {
    let Ok(update) = serde_json::from_str::<OrderStatusUpdate>(data) else {
        return;
    };
    let mut state = feed.borrow_mut();
    state.last = state.last.max(Some(id));
    let keep = state.keep;
    state.rows.update(|rows| place_update(rows, &update, keep));
}
