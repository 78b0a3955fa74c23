//! The browser's side of the stream: an EventSource on `/orders/{id}/stream` that resumes
//! after the last event the page shows, feeds new events into the timeline, keeps the
//! connection badge honest, and is closed after `Delivered` and when the page goes away.
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::*;
use uuid::Uuid;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{Event, EventSource, MessageEvent};

use crate::domain::{EventId, OrderEvent, OrderStatusUpdate, RETRY_MS};
use crate::pages::connection::Connection;
use crate::pages::time::local_label;

/// Delay before reopening a source the browser gave up on: the server's `retry`.
const REOPEN_AFTER: Duration = Duration::from_millis(RETRY_MS);

struct Feed {
    order_id: Uuid,
    events: RwSignal<Vec<OrderEvent>>,
    connection: RwSignal<Connection>,
    announcement: RwSignal<String>,
    source: Option<EventSource>,
    /// The handlers of `source`; kept alive as long as it is, dropped only outside them.
    handlers: Vec<Closure<dyn FnMut(Event)>>,
    stopped: bool,
}

/// A running feed; [`LiveFeed::stop`] closes it.
pub struct LiveFeed(Rc<RefCell<Feed>>);

impl LiveFeed {
    pub fn start(
        order_id: Uuid,
        events: RwSignal<Vec<OrderEvent>>,
        connection: RwSignal<Connection>,
        announcement: RwSignal<String>,
    ) -> Self {
        let feed = Rc::new(RefCell::new(Feed {
            order_id,
            events,
            connection,
            announcement,
            source: None,
            handlers: Vec::new(),
            stopped: false,
        }));
        open(&feed);
        LiveFeed(feed)
    }

    pub fn stop(self) {
        let mut feed = self.0.borrow_mut();
        feed.stopped = true;
        if let Some(source) = feed.source.take() {
            source.close();
        }
        // Break the cycles between the handlers and the feed.
        feed.handlers.clear();
    }
}

/// Opens a new source, resuming after the last event shown.
fn open(feed: &Rc<RefCell<Feed>>) {
    let mut state = feed.borrow_mut();
    if state.stopped {
        return;
    }
    if let Some(old) = state.source.take() {
        old.close();
    }
    state.handlers.clear();
    let last = state
        .events
        .with_untracked(|events| events.last().map(|e| e.id));
    let url = match last {
        Some(id) => format!("/orders/{}/stream?last_event_id={id}", state.order_id),
        None => format!("/orders/{}/stream", state.order_id),
    };
    let Ok(source) = EventSource::new(&url) else {
        state.connection.set(Connection::Offline);
        return;
    };

    let connection = state.connection;
    let on_open = Closure::<dyn FnMut(Event)>::new(move |_| connection.set(Connection::Live));
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));

    let weak = Rc::downgrade(feed);
    let on_update = Closure::<dyn FnMut(Event)>::new(move |event: Event| {
        if let (Some(feed), Ok(message)) = (weak.upgrade(), event.dyn_into::<MessageEvent>()) {
            receive(&feed, &message);
        }
    });
    let _ =
        source.add_event_listener_with_callback("order-update", on_update.as_ref().unchecked_ref());

    let weak = Rc::downgrade(feed);
    let on_error = Closure::<dyn FnMut(Event)>::new(move |_| {
        let Some(feed) = weak.upgrade() else { return };
        let state = feed.borrow();
        if state.stopped || state.connection.get_untracked() == Connection::Completed {
            return;
        }
        let online = web_sys::window().is_none_or(|w| w.navigator().on_line());
        state.connection.set(if online {
            Connection::Reconnecting
        } else {
            Connection::Offline
        });
        let gave_up = state
            .source
            .as_ref()
            .is_some_and(|source| source.ready_state() == EventSource::CLOSED);
        drop(state);
        if gave_up {
            // The browser reconnects by itself after network errors; after an HTTP error
            // (a 503 while the server restarts, say) it stops, so we open a new source.
            let weak = Rc::downgrade(&feed);
            set_timeout(
                move || {
                    if let Some(feed) = weak.upgrade() {
                        open(&feed);
                    }
                },
                REOPEN_AFTER,
            );
        }
    });
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));

    state.handlers = vec![on_open, on_update, on_error];
    state.source = Some(source);
}

/// Adds an event to the timeline unless it is already there; closes after `Delivered`.
fn receive(feed: &Rc<RefCell<Feed>>, message: &MessageEvent) {
    let Some(data) = message.data().as_string() else {
        return;
    };
    let Ok(update) = serde_json::from_str::<OrderStatusUpdate>(&data) else {
        return;
    };
    let Ok(id) = message.last_event_id().parse::<EventId>() else {
        return;
    };
    let state = feed.borrow();
    let status = update.status;
    let added = state.events.try_update(|events| {
        let next = events.len();
        (status.index() == next).then(|| {
            events.push(OrderEvent {
                id,
                update: update.clone(),
            })
        })
    });
    if added.flatten().is_some() {
        state.announcement.set(format!(
            "{} at {}",
            status.label(),
            local_label(update.timestamp)
        ));
    }
    state.connection.set(Connection::Live);
    if status.is_final() {
        state.connection.set(Connection::Completed);
        if let Some(source) = &state.source {
            source.close();
        }
    }
}
