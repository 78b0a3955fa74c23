//! The browser's side of the home page's "Recent orders" (demo mode): the every-order stream
//! from the last event the server rendered, so a new order appears at the top and a status
//! changes in place. Its own connection, not the tabs' shared one: it follows every order.
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::*;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{Event, EventSource, MessageEvent};

use crate::domain::{EventId, OrderStatusUpdate, OrderSummary, RETRY_MS};
use crate::pages::home::place_update;

struct Feed {
    rows: RwSignal<Vec<OrderSummary>>,
    keep: usize,
    last: Option<EventId>,
    source: Option<EventSource>,
    handlers: Vec<Closure<dyn FnMut(Event)>>,
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
            handlers: Vec::new(),
            stopped: false,
        }));
        open(&feed);
        RecentFeed(feed)
    }

    pub fn stop(self) {
        let mut feed = self.0.borrow_mut();
        feed.stopped = true;
        if let Some(source) = feed.source.take() {
            source.close();
        }
        feed.handlers.clear();
    }
}

fn open(feed: &Rc<RefCell<Feed>>) {
    let mut state = feed.borrow_mut();
    if state.stopped {
        return;
    }
    let url = match state.last {
        Some(id) => format!("/stream?last_event_id={id}"),
        None => "/stream".to_owned(),
    };
    let Ok(source) = EventSource::new(&url) else {
        return;
    };
    let weak = Rc::downgrade(feed);
    let on_update = Closure::<dyn FnMut(Event)>::new(move |event: Event| {
        if let (Some(feed), Ok(message)) = (weak.upgrade(), event.dyn_into::<MessageEvent>()) {
            receive(&feed, &message);
        }
    });
    let _ =
        source.add_event_listener_with_callback("order-update", on_update.as_ref().unchecked_ref());
    // After an HTTP error the browser stops retrying: try again after the server's `retry`.
    let weak = Rc::downgrade(feed);
    let on_error = Closure::<dyn FnMut(Event)>::new(move |_| {
        let Some(feed) = weak.upgrade() else { return };
        let gave_up = feed
            .borrow()
            .source
            .as_ref()
            .is_some_and(|s| s.ready_state() == EventSource::CLOSED);
        if gave_up {
            let weak = Rc::downgrade(&feed);
            set_timeout(
                move || {
                    if let Some(feed) = weak.upgrade() {
                        open(&feed);
                    }
                },
                Duration::from_millis(RETRY_MS),
            );
        }
    });
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    if let Some(old) = state.source.replace(source) {
        old.close();
    }
    state.handlers = vec![on_update, on_error];
}

fn receive(feed: &Rc<RefCell<Feed>>, message: &MessageEvent) {
    let (Some(data), Ok(id)) = (
        message.data().as_string(),
        message.last_event_id().parse::<EventId>(),
    ) else {
        return;
    };
    let Ok(update) = serde_json::from_str::<OrderStatusUpdate>(&data) else {
        return;
    };
    let mut state = feed.borrow_mut();
    state.last = state.last.max(Some(id));
    let keep = state.keep;
    state.rows.update(|rows| place_update(rows, &update, keep));
}
