//! An `EventSource` for the browser's streams ([`super::live`], [`super::recent`]), and what a
//! phone does to it. Dropping it closes the connection and frees its handlers (wasm-bindgen
//! defers freeing one that is running, so a handler may drop its own source).
//!
//! A phone's page meets what a desktop's rarely does: it goes offline and back, it is frozen
//! in the background, it is restored from the back/forward cache, and its connection can die
//! without a word (a NAT or the radio dropping it): EventSource then stays "open" and shows
//! nothing, for ever. So each source asks for `heartbeat` keep-alives (events it can see,
//! every `KEEPALIVE_SECS`, the period told first), and its [`Listener`] is told the source is
//! *stale*, to reopen it from the last id, when
//! - it heard nothing for twice the period while open;
//! - the browser is back online, or the page is restored from the back/forward cache;
//! - the page becomes visible again and the source is not open, or went quiet meanwhile (a
//!   frozen page runs no timer, so the silence is only seen then).
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::{document, set_interval_with_handle, IntervalHandle};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{Event, EventSource, MessageEvent};

use crate::domain::{retry_ms, EventId};
use crate::pages::head_start::with_heartbeat;

/// How long to wait before reopening a source the browser gave up on: drawn each time
/// between 3 and 6 s, as the server draws each stream's `retry` (spec §13), so that the
/// pages an outage cut off do not all come back in the same second.
pub fn reopen_delay() -> Duration {
    Duration::from_millis(retry_ms(js_sys::Math::random()))
}

/// What a source tells its owner.
pub trait Listener: 'static {
    /// The connection is open.
    fn opened(&self) {}
    /// An `order-update` event: its id and data.
    fn event(&self, id: EventId, data: String);
    /// `reset`: events the page would have had are no longer stored; it should reload its
    /// orders' state (spec §12).
    fn reset(&self) {}
    /// An error; `gave_up` when the browser will not retry by itself (after an HTTP error).
    fn failed(&self, gave_up: bool);
    /// The source cannot be trusted to deliver (see the module's comment): reopen it now,
    /// from the last id.
    fn stale(&self);
}

/// When the source last heard from the server, and the keep-alive period it was told.
struct Hearing {
    source: EventSource,
    /// `Date.now()` of the last frame the page saw.
    heard_at: Cell<f64>,
    /// The period of `KEEPALIVE_SECS`, in ms, once told.
    period_ms: Cell<Option<f64>>,
}

impl Hearing {
    fn heard(&self) {
        self.heard_at.set(js_sys::Date::now());
    }

    fn is_open(&self) -> bool {
        self.source.ready_state() == EventSource::OPEN
    }

    /// Nothing heard for twice the keep-alive period (known only once told).
    fn silent(&self) -> bool {
        self.period_ms
            .get()
            .is_some_and(|period| js_sys::Date::now() - self.heard_at.get() > 2.0 * period)
    }
}

type Handler = Closure<dyn FnMut(Event)>;

pub struct Source {
    hearing: Rc<Hearing>,
    /// The source's own handlers.
    _handlers: [Handler; 5],
    /// The window's and the document's listeners, removed on drop.
    page: Vec<(web_sys::EventTarget, &'static str, Handler)>,
    watchdog: Rc<Cell<Option<IntervalHandle>>>,
}

impl Source {
    /// Opens `url` (which already has a query string or not), asking for heartbeats.
    pub fn open(url: &str, listener: impl Listener) -> Option<Self> {
        let source = EventSource::new(&with_heartbeat(url)).ok()?;
        Some(Self::adopt(source, listener))
    }

    /// Takes over a source opened elsewhere (by the page, [`super::head_start`], with
    /// heartbeats asked for): from now on `listener` hears it. What it delivered before is
    /// not heard here: the owner dispatches it again.
    pub fn adopt(source: EventSource, listener: impl Listener) -> Self {
        let listener = Rc::new(listener);
        let hearing = Rc::new(Hearing {
            source: source.clone(),
            heard_at: Cell::new(js_sys::Date::now()),
            period_ms: Cell::new(None),
        });
        let watchdog: Rc<Cell<Option<IntervalHandle>>> = Rc::default();

        let on_open = {
            let (listener, hearing) = (listener.clone(), hearing.clone());
            Closure::<dyn FnMut(Event)>::new(move |_| {
                hearing.heard();
                listener.opened();
            })
        };
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        let on_update = {
            let (listener, hearing) = (listener.clone(), hearing.clone());
            Closure::<dyn FnMut(Event)>::new(move |event: Event| {
                hearing.heard();
                let Ok(message) = event.dyn_into::<MessageEvent>() else {
                    return;
                };
                if let (Some(data), Ok(id)) = (
                    message.data().as_string(),
                    message.last_event_id().parse::<EventId>(),
                ) {
                    listener.event(id, data);
                }
            })
        };
        listen(&source, "order-update", &on_update);
        let on_reset = {
            let (listener, hearing) = (listener.clone(), hearing.clone());
            Closure::<dyn FnMut(Event)>::new(move |_| {
                hearing.heard();
                listener.reset();
            })
        };
        listen(&source, "reset", &on_reset);
        // A keep-alive: empty, or the period in seconds (the first one); the watchdog starts
        // once the period is known.
        let on_beat = {
            let (listener, hearing, watchdog) =
                (listener.clone(), hearing.clone(), watchdog.clone());
            Closure::<dyn FnMut(Event)>::new(move |event: Event| {
                hearing.heard();
                let told = event
                    .dyn_ref::<MessageEvent>()
                    .and_then(|message| message.data().as_string())
                    .and_then(|data| data.parse::<u32>().ok())
                    .filter(|secs| *secs > 0);
                let Some(secs) = told else {
                    return;
                };
                let period = Duration::from_secs(secs.into());
                hearing.period_ms.set(Some(period.as_millis() as f64));
                if let Some(old) = watchdog.take() {
                    old.clear();
                }
                let (listener, hearing) = (listener.clone(), hearing.clone());
                let check = move || {
                    if hearing.is_open() && hearing.silent() {
                        // Once: the listener replaces this source.
                        hearing.heard();
                        listener.stale();
                    }
                };
                watchdog.set(set_interval_with_handle(check, period).ok());
            })
        };
        listen(&source, "keep-alive", &on_beat);
        let on_failure = {
            let (listener, watched) = (listener.clone(), source.clone());
            Closure::<dyn FnMut(Event)>::new(move |_| {
                listener.failed(watched.ready_state() == EventSource::CLOSED)
            })
        };
        source.set_onerror(Some(on_failure.as_ref().unchecked_ref()));

        let mut page = Vec::new();
        if let Some(window) = web_sys::window() {
            let back = {
                let listener = listener.clone();
                Closure::<dyn FnMut(Event)>::new(move |_| listener.stale())
            };
            let restored = {
                let listener = listener.clone();
                Closure::<dyn FnMut(Event)>::new(move |event: Event| {
                    if restored_from_cache(&event) {
                        listener.stale();
                    }
                })
            };
            let visible = {
                let (listener, hearing) = (listener.clone(), hearing.clone());
                Closure::<dyn FnMut(Event)>::new(move |_| {
                    if !document().hidden() && (!hearing.is_open() || hearing.silent()) {
                        listener.stale();
                    }
                })
            };
            let window: web_sys::EventTarget = window.into();
            let document: web_sys::EventTarget = document().into();
            for (target, name, handler) in [
                (window.clone(), "online", back),
                (window, "pageshow", restored),
                (document, "visibilitychange", visible),
            ] {
                let _ =
                    target.add_event_listener_with_callback(name, handler.as_ref().unchecked_ref());
                page.push((target, name, handler));
            }
        }
        Self {
            hearing,
            _handlers: [on_open, on_update, on_reset, on_beat, on_failure],
            page,
            watchdog,
        }
    }

    /// Whether the browser gave up on it.
    pub fn is_closed(&self) -> bool {
        self.hearing.source.ready_state() == EventSource::CLOSED
    }
}

/// Whether a `pageshow` is the page coming back from the back/forward cache (`persisted`).
pub fn restored_from_cache(event: &Event) -> bool {
    js_sys::Reflect::get(event, &"persisted".into()).is_ok_and(|persisted| persisted.is_truthy())
}

fn listen(source: &EventSource, name: &str, handler: &Handler) {
    let _ = source.add_event_listener_with_callback(name, handler.as_ref().unchecked_ref());
}

impl Drop for Source {
    fn drop(&mut self) {
        let source = &self.hearing.source;
        source.close();
        source.set_onopen(None);
        source.set_onerror(None);
        for (target, name, handler) in &self.page {
            let _ =
                target.remove_event_listener_with_callback(name, handler.as_ref().unchecked_ref());
        }
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.clear();
        }
    }
}
