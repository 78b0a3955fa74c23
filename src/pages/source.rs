//! An `EventSource` with its three handlers, for the browser's streams ([`super::live`],
//! [`super::recent`]). Dropping it closes the connection and frees the handlers (wasm-bindgen
//! defers freeing one that is running, so a handler may drop its own source).
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{Event, EventSource, MessageEvent};

use crate::domain::{retry_ms, EventId};

/// How long to wait before reopening a source the browser gave up on: drawn each time
/// between 3 and 6 s, as the server draws each stream's `retry` (spec §13), so that the
/// pages an outage cut off do not all come back in the same second.
pub fn reopen_delay() -> std::time::Duration {
    std::time::Duration::from_millis(retry_ms(js_sys::Math::random()))
}

pub struct Source {
    source: EventSource,
    _handlers: [Closure<dyn FnMut(Event)>; 4],
}

impl Source {
    /// Opens `url`. `on_event` gets each `order-update` event's id and data; `on_reset` is
    /// called on `reset` (events the page would have had are no longer stored: it should
    /// reload its orders' state, spec §12); `on_error` is told whether the browser gave up
    /// (after an HTTP error it does not retry by itself).
    pub fn open(
        url: &str,
        mut on_open: impl FnMut() + 'static,
        mut on_event: impl FnMut(EventId, String) + 'static,
        mut on_reset: impl FnMut() + 'static,
        mut on_error: impl FnMut(bool) + 'static,
    ) -> Option<Self> {
        let source = EventSource::new(url).ok()?;
        let on_open = Closure::<dyn FnMut(Event)>::new(move |_| on_open());
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        let on_update = Closure::<dyn FnMut(Event)>::new(move |event: Event| {
            let Ok(message) = event.dyn_into::<MessageEvent>() else {
                return;
            };
            if let (Some(data), Ok(id)) = (
                message.data().as_string(),
                message.last_event_id().parse::<EventId>(),
            ) {
                on_event(id, data);
            }
        });
        let _ = source
            .add_event_listener_with_callback("order-update", on_update.as_ref().unchecked_ref());
        let on_reset = Closure::<dyn FnMut(Event)>::new(move |_| on_reset());
        let _ = source.add_event_listener_with_callback("reset", on_reset.as_ref().unchecked_ref());
        let watched = source.clone();
        let on_failure = Closure::<dyn FnMut(Event)>::new(move |_| {
            on_error(watched.ready_state() == EventSource::CLOSED)
        });
        source.set_onerror(Some(on_failure.as_ref().unchecked_ref()));
        Some(Self {
            source,
            _handlers: [on_open, on_update, on_reset, on_failure],
        })
    }

    /// Whether the browser gave up on it.
    pub fn is_closed(&self) -> bool {
        self.source.ready_state() == EventSource::CLOSED
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.source.close();
        self.source.set_onopen(None);
        self.source.set_onerror(None);
    }
}
