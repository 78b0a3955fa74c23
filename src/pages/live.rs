//! The browser's side of the streams: **one connection per browser** for every order shown in
//! any of its tabs (spec §11).
//!
//! Each page registers what it shows with [`LiveFeed::start`]: an order and the signals of
//! its timeline and badge. The tabs elect one *holder* with the Web Locks API (the lock is
//! held until the tab goes away, closed or crashed, and then passes to a waiting tab). The
//! holder opens one `/stream?order=…` for every order any tab wants, resuming with one id,
//! and relays each event and the connection's state to the other tabs over a
//! `BroadcastChannel`. Where either API is missing, a tab is its own holder with no channel:
//! one stream per tab, as before.
//!
//! Nothing is shown twice or missed: a timeline only takes an order's *next* status, and each
//! tab tells the holder the last event it has of each order. The holder keeps every event it
//! relayed (an order has at most six), so a tab that joins late is sent what it lacks; an
//! order the stream does not cover from that point yet makes the holder reopen the stream
//! from there (other tabs drop what they already have).
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::time::Duration;

use leptos::prelude::*;
use uuid::Uuid;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BroadcastChannel, Event, MessageEvent};

use crate::domain::{EventId, OrderEvent, OrderStatusUpdate};
use crate::pages::channel::{Message, CHANNEL, LOCK};
use crate::pages::connection::Connection;
use crate::pages::head_start::{self, stream_url, Started};
use crate::pages::json;
use crate::pages::source::{reopen_delay, restored_from_cache, Listener, Source};
use crate::pages::time::local_label;

/// Changes of the wanted orders within this delay make one reopening, not several. It is
/// also the gap between closing the old stream and opening the new one: the server must
/// read the close before it lets the old stream go, and on a busy 2-core machine that took
/// more than 30 ms (a fresh-clone CI run counted two streams for a moment).
const SETTLE: Duration = Duration::from_millis(150);
/// The most orders one stream follows (the server's limit).
const MAX_ORDERS: usize = 100;

/// One timeline fed by the stream.
struct Watcher {
    key: u32,
    order_id: Uuid,
    events: RwSignal<Vec<OrderEvent>>,
    connection: RwSignal<Connection>,
    announcement: Option<RwSignal<String>>,
    /// Reloads the order's state from the server, on `reset`.
    reload: Rc<dyn Fn()>,
}

impl Watcher {
    fn is_open(&self) -> bool {
        self.connection.get_untracked() != Connection::Completed
    }

    fn last(&self) -> Option<EventId> {
        self.events
            .with_untracked(|events| events.last().map(|e| e.id))
    }
}

/// The stream this tab holds for the browser.
#[derive(Default)]
struct Holder {
    /// What the other tabs want.
    remote: HashMap<u32, Vec<(Uuid, Option<EventId>)>>,
    source: Option<Source>,
    /// The orders of the open source, each with the id it is covered after.
    covered: HashMap<Uuid, Option<EventId>>,
    /// The last id the source delivered (or the one it resumed after).
    cursor: Option<EventId>,
    /// Every event relayed, by order.
    relayed: HashMap<Uuid, Vec<(EventId, String)>>,
    delivered: HashSet<Uuid>,
    /// A reopening is due, resuming no later than this.
    reopen_from: Option<Option<EventId>>,
    reopen_scheduled: bool,
    /// When the orders' state was last read again after a give-up (ms since the epoch).
    reloaded_at: Option<f64>,
}

impl Holder {
    /// The orders some tab (this one with `own`, or another) still wants and that are not
    /// delivered yet, each once, this tab's first.
    fn wanted(&self, own: &[(Uuid, Option<EventId>)]) -> Vec<Uuid> {
        let mut orders: Vec<Uuid> = Vec::new();
        for (order, _) in own.iter().chain(self.remote.values().flatten()) {
            if !self.delivered.contains(order) && !orders.contains(order) {
                orders.push(*order);
            }
        }
        orders
    }
}

struct Tab {
    id: u32,
    watchers: Vec<Watcher>,
    next_key: u32,
    channel: Option<BroadcastChannel>,
    holder: Option<Holder>,
    /// The browser's stream as last heard of.
    connection: Connection,
    /// The channel's and the lock's callbacks, alive as long as the tab.
    _callbacks: Vec<JsValue>,
}

type Shared = Rc<RefCell<Tab>>;

thread_local! {
    static TAB: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// A timeline kept live; [`LiveFeed::stop`] stops it.
pub struct LiveFeed(u32);

impl LiveFeed {
    /// Keeps `events` live; `reload` is called when the stream says events are gone
    /// (`reset`), to read the order's state from the server again.
    pub fn start(
        order_id: Uuid,
        events: RwSignal<Vec<OrderEvent>>,
        connection: RwSignal<Connection>,
        announcement: Option<RwSignal<String>>,
        reload: impl Fn() + 'static,
    ) -> Self {
        let tab = tab();
        let key = {
            let mut state = tab.borrow_mut();
            let key = state.next_key;
            state.next_key += 1;
            if state.connection != Connection::Connecting {
                connection.set(state.connection);
            }
            state.watchers.push(Watcher {
                key,
                order_id,
                events,
                connection,
                announcement,
                reload: Rc::new(reload),
            });
            key
        };
        wants_changed(&tab);
        LiveFeed(key)
    }

    pub fn stop(self) {
        let tab = tab();
        tab.borrow_mut().watchers.retain(|w| w.key != self.0);
        wants_changed(&tab);
    }
}

/// This tab's state, set up on first use.
fn tab() -> Shared {
    if let Some(tab) = TAB.with(|tab| tab.borrow().clone()) {
        return tab;
    }
    let tab: Shared = Rc::new(RefCell::new(Tab {
        id: (js_sys::Math::random() * f64::from(u32::MAX)) as u32,
        watchers: Vec::new(),
        next_key: 0,
        channel: None,
        holder: None,
        connection: Connection::Connecting,
        _callbacks: Vec::new(),
    }));
    TAB.with(|slot| *slot.borrow_mut() = Some(tab.clone()));
    let locks = web_sys::window()
        .and_then(|w| js_sys::Reflect::get(&w.navigator(), &"locks".into()).ok())
        .filter(|locks| !locks.is_undefined() && !locks.is_null());
    let channel = BroadcastChannel::new(CHANNEL).ok();
    match (locks, channel) {
        (Some(locks), Some(channel)) => share(&tab, &locks, channel),
        // One stream per tab.
        _ => become_holder(&tab),
    }
    set_role(&tab);
    tab
}

/// Joins the other tabs: listens on the channel, and waits for the lock to hold the stream.
fn share(tab: &Shared, locks: &JsValue, channel: BroadcastChannel) {
    let weak = Rc::downgrade(tab);
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let (Some(tab), Some(text)) = (weak.upgrade(), event.data().as_string()) else {
            return;
        };
        if let Some(message) = Message::decode(&text) {
            hear(&tab, message);
        }
    });
    channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));

    let weak = Rc::downgrade(tab);
    let on_pagehide = Closure::<dyn FnMut(Event)>::new(move |_| {
        if let Some(tab) = weak.upgrade() {
            let id = tab.borrow().id;
            post(&tab, &Message::Bye { tab: id });
        }
    });
    // A tab back from being offline, frozen or cached may have missed what the holder
    // relayed meanwhile: it tells the holder again what it has, and is sent what it lacks.
    // (The holder's own source sees to the stream, see `source`.)
    let weak = Rc::downgrade(tab);
    let on_back = Closure::<dyn FnMut(Event)>::new(move |event: Event| {
        let Some(tab) = weak.upgrade() else {
            return;
        };
        let back = match event.type_().as_str() {
            "pageshow" => restored_from_cache(&event),
            "visibilitychange" => !document().hidden(),
            _ => true,
        };
        if back && tab.borrow().holder.is_none() {
            wants_changed(&tab);
        }
    });
    if let Some(window) = web_sys::window() {
        let _ = window
            .add_event_listener_with_callback("pagehide", on_pagehide.as_ref().unchecked_ref());
        for name in ["online", "pageshow"] {
            let _ = window.add_event_listener_with_callback(name, on_back.as_ref().unchecked_ref());
        }
        let _ = document()
            .add_event_listener_with_callback("visibilitychange", on_back.as_ref().unchecked_ref());
    }

    // Granted when no other tab holds it: from then on this tab holds the stream until it
    // goes away (the promise returned never settles).
    let weak = Rc::downgrade(tab);
    let on_granted = Closure::<dyn FnMut(JsValue) -> js_sys::Promise>::new(move |_| {
        if let Some(tab) = weak.upgrade() {
            become_holder(&tab);
        }
        js_sys::Promise::new(&mut |_, _| {})
    });
    let on_granted = on_granted.into_js_value();
    // The page may have started the stream itself, holding the lock (`head_start`): this
    // tab then adopts it; otherwise (another tab holds the lock) it asks for the lock.
    let requested = match head_start::pending() {
        Some(pending) => {
            let (weak, locks, on_granted) = (Rc::downgrade(tab), locks.clone(), on_granted.clone());
            leptos::task::spawn_local(async move {
                let started = head_start::adopt(pending).await;
                let Some(tab) = weak.upgrade() else {
                    return;
                };
                match started {
                    Some(started) => adopt(&tab, started),
                    None if request_lock(&locks, &on_granted) => {}
                    None => hold_alone(&tab),
                }
            });
            true
        }
        None => request_lock(locks, &on_granted),
    };

    let mut state = tab.borrow_mut();
    state.channel = Some(channel);
    state._callbacks = vec![
        on_message.into_js_value(),
        on_pagehide.into_js_value(),
        on_back.into_js_value(),
        on_granted,
    ];
    drop(state);
    if !requested {
        hold_alone(tab);
    }
}

/// The lock cannot be asked for: this tab holds its own stream, with no channel.
fn hold_alone(tab: &Shared) {
    tab.borrow_mut().channel = None;
    become_holder(tab);
}

/// Asks for the lock, `on_granted` to be called once this tab holds it; `false` if it could
/// not be asked for.
fn request_lock(locks: &JsValue, on_granted: &JsValue) -> bool {
    js_sys::Reflect::get(locks, &"request".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .is_some_and(|request| request.call2(locks, &LOCK.into(), on_granted).is_ok())
}

/// This tab holds the stream the page started ([`head_start`]): it becomes the browser's
/// holder with that stream, and hears what the stream delivered before.
fn adopt(tab: &Shared, started: Started) {
    let Started {
        source,
        order,
        after,
        frames,
    } = started;
    let holder = Holder {
        source: Some(Source::adopt(source.clone(), Stream(Rc::downgrade(tab)))),
        covered: HashMap::from([(order, after)]),
        cursor: after,
        ..Holder::default()
    };
    if !hold(tab, holder) {
        return;
    }
    // Each frame dispatched anew (its first dispatch is over), in order, outside the borrow:
    // the holder's handlers hear it as they would have, and relay it.
    for frame in &frames {
        let _ = source.dispatch_event(frame);
    }
}

/// Marks the document with this tab's part, for tests and for the curious.
fn set_role(tab: &Shared) {
    let state = tab.borrow();
    let role = match (&state.holder, &state.channel) {
        (Some(_), Some(_)) => "holder",
        (Some(_), None) => "own",
        (None, _) => "follower",
    };
    if let Some(body) = document().body() {
        let _ = body.set_attribute("data-stream-role", role);
    }
}

fn post(tab: &Shared, message: &Message) {
    if let Some(channel) = &tab.borrow().channel {
        let _ = channel.post_message(&message.encode().into());
    }
}

/// The orders this tab still follows, with the last event it has of each.
fn own_wants(tab: &Tab) -> Vec<(Uuid, Option<EventId>)> {
    tab.watchers
        .iter()
        .filter(|w| w.is_open())
        .map(|w| (w.order_id, w.last()))
        .collect()
}

/// Tells the holder (this tab or another) what this tab now wants.
fn wants_changed(tab: &Shared) {
    let (id, wants, holding) = {
        let state = tab.borrow();
        (state.id, own_wants(&state), state.holder.is_some())
    };
    if holding {
        want(tab, &wants);
    } else {
        post(
            tab,
            &Message::Want {
                tab: id,
                orders: wants,
            },
        );
    }
}

/// This tab holds the browser's stream from now on, and opens it.
fn become_holder(tab: &Shared) {
    if hold(tab, Holder::default()) {
        // Nothing wanted yet: still, the state is known.
        schedule_reopen(tab, None);
    }
}

/// Makes `holder` this tab's, unless it holds already (`false`; `holder` is dropped, with any
/// source it has), asks every tab what it wants, and takes this tab's own wants.
fn hold(tab: &Shared, holder: Holder) -> bool {
    let wants = {
        let mut state = tab.borrow_mut();
        if state.holder.is_some() {
            return false;
        }
        state.holder = Some(holder);
        own_wants(&state)
    };
    post(tab, &Message::Who);
    set_connection(tab, Connection::Connecting);
    set_role(tab);
    want(tab, &wants);
    true
}

fn hear(tab: &Shared, message: Message) {
    let holding = tab.borrow().holder.is_some();
    match message {
        Message::Want { tab: from, orders } if holding => {
            if let Some(holder) = tab.borrow_mut().holder.as_mut() {
                holder.remote.insert(from, orders.clone());
            }
            want(tab, &orders);
            let connection = tab.borrow().connection;
            post(tab, &Message::State { connection });
        }
        Message::Bye { tab: from } if holding => {
            if let Some(holder) = tab.borrow_mut().holder.as_mut() {
                holder.remote.remove(&from);
            }
        }
        Message::Who => wants_changed(tab),
        Message::Event { id, data } => {
            if let Some(update) = json::read(&data, json::update) {
                apply(tab, id, &update);
            }
        }
        Message::Reset => reload_all(tab),
        Message::State { connection } if !holding => set_connection(tab, connection),
        _ => {}
    }
}

/// The holder takes a tab's wants: what it has relayed since is sent again; an order the
/// stream does not cover from the tab's last event makes it reopen from there.
fn want(tab: &Shared, orders: &[(Uuid, Option<EventId>)]) {
    let mut resend = Vec::new();
    let mut reopen_from: Option<Option<EventId>> = None;
    {
        let mut state = tab.borrow_mut();
        let Some(holder) = state.holder.as_mut() else {
            return;
        };
        for &(order, last) in orders {
            let covered = holder.delivered.contains(&order)
                || holder.covered.get(&order).is_some_and(|from| *from <= last);
            if covered {
                let relayed = holder.relayed.get(&order).into_iter().flatten();
                resend.extend(relayed.filter(|(id, _)| Some(*id) > last).cloned());
            } else {
                reopen_from = Some(reopen_from.map_or(last, |from| from.min(last)));
            }
        }
    }
    for (id, data) in resend {
        if let Some(update) = json::read(&data, json::update) {
            share_event(tab, id, data, &update);
        }
    }
    if let Some(from) = reopen_from {
        schedule_reopen(tab, Some(from));
    }
}

/// Reopens the stream soon, resuming no later than `from` (when given). Nothing is lost
/// meanwhile: the new stream resumes from the cursor.
fn schedule_reopen(tab: &Shared, from: Option<Option<EventId>>) {
    let mut state = tab.borrow_mut();
    let Some(holder) = state.holder.as_mut() else {
        return;
    };
    if let Some(from) = from {
        holder.reopen_from = Some(holder.reopen_from.map_or(from, |f| f.min(from)));
    }
    if holder.reopen_scheduled {
        return;
    }
    holder.reopen_scheduled = true;
    // Close now and open after the settling delay: the server has then let the old stream
    // go before the new one arrives, so the browser never holds two, even for a moment.
    // With no open stream to close (the page's first, or one the browser gave up on), the
    // next task is enough to gather this task's wants: a page just loaded must not wait.
    let closing = holder
        .source
        .as_ref()
        .is_some_and(|source| !source.is_closed());
    holder.source = None;
    let weak = Rc::downgrade(tab);
    set_timeout(
        move || {
            if let Some(tab) = weak.upgrade() {
                reopen(&tab);
            }
        },
        if closing { SETTLE } else { Duration::ZERO },
    );
}

/// Opens the one stream for every order wanted, closing the one before.
fn reopen(tab: &Shared) {
    let mut state = tab.borrow_mut();
    let own = own_wants(&state);
    let Some(holder) = state.holder.as_mut() else {
        return;
    };
    holder.reopen_scheduled = false;
    let mut orders = holder.wanted(&own);
    orders.truncate(MAX_ORDERS);
    let requested = holder.reopen_from.take();
    let had_stream = !holder.covered.is_empty();
    let unchanged = orders.iter().all(|o| holder.covered.contains_key(o))
        && orders.len() == holder.covered.len();
    let healthy = holder.source.as_ref().is_some_and(|s| !s.is_closed());
    if requested.is_none() && unchanged && healthy {
        return;
    }
    holder.source = None;
    if orders.is_empty() {
        holder.covered.clear();
        return;
    }
    let from = match (requested, had_stream) {
        (Some(requested), true) => requested.min(holder.cursor),
        (Some(requested), false) => requested,
        (None, _) => holder.cursor,
    };
    holder.covered.retain(|order, _| orders.contains(order));
    for order in &orders {
        let covered = holder.covered.entry(*order).or_insert(from);
        *covered = (*covered).min(from);
    }
    holder.cursor = from;
    let source = Source::open(&stream_url(&orders, from), Stream(Rc::downgrade(tab)));
    let opened = source.is_some();
    holder.source = source;
    drop(state);
    if !opened {
        set_connection(tab, Connection::Offline);
    }
}

/// What the holder's source tells it.
struct Stream(Weak<RefCell<Tab>>);

impl Listener for Stream {
    fn opened(&self) {
        if let Some(tab) = self.0.upgrade() {
            set_connection(&tab, Connection::Live);
        }
    }

    fn event(&self, id: EventId, data: String) {
        if let Some(tab) = self.0.upgrade() {
            relay(&tab, id, data);
        }
    }

    fn reset(&self) {
        if let Some(tab) = self.0.upgrade() {
            post(&tab, &Message::Reset);
            reload_all(&tab);
        }
    }

    fn failed(&self, gave_up: bool) {
        if let Some(tab) = self.0.upgrade() {
            lost(&tab, gave_up);
        }
    }

    fn stale(&self) {
        if let Some(tab) = self.0.upgrade() {
            revive(&tab);
        }
    }
}

/// The holder's stream cannot be trusted (it went quiet, or the page came back from being
/// offline, frozen or cached): reopen it now, from the cursor. Now, not after a timer: a
/// page just restored must not wait, and the old connection is dead or about to be.
fn revive(tab: &Shared) {
    if let Some(holder) = tab.borrow_mut().holder.as_mut() {
        holder.source = None;
    }
    set_connection(tab, Connection::Reconnecting);
    reopen(tab);
}

/// The holder's source delivered an event: keep it, show it here, pass it on.
fn relay(tab: &Shared, id: EventId, data: String) {
    let Some(update) = json::read(&data, json::update) else {
        return;
    };
    let nothing_left = {
        let mut state = tab.borrow_mut();
        let own = own_wants(&state);
        let Some(holder) = state.holder.as_mut() else {
            return;
        };
        holder.cursor = holder.cursor.max(Some(id));
        let relayed = holder.relayed.entry(update.order_id).or_default();
        if !relayed.iter().any(|(known, _)| *known == id) {
            relayed.push((id, data.clone()));
        }
        if update.status.is_final() {
            holder.delivered.insert(update.order_id);
        }
        holder.wanted(&own).is_empty()
    };
    share_event(tab, id, data, &update);
    if nothing_left {
        // Every order wanted is delivered: the server ends the stream; do not reconnect.
        reopen(tab);
    }
}

/// Passes an event to the other tabs and shows it in this one (`update`: its data, read).
fn share_event(tab: &Shared, id: EventId, data: String, update: &OrderStatusUpdate) {
    apply(tab, id, update);
    post(tab, &Message::Event { id, data });
}

/// The holder's source failed: the browser retries by itself after a network error, not
/// after an HTTP error (a 503 while the server restarts), so then it is reopened.
fn lost(tab: &Shared, gave_up: bool) {
    let online = web_sys::window().is_none_or(|w| w.navigator().on_line());
    set_connection(
        tab,
        if online {
            Connection::Reconnecting
        } else {
            Connection::Offline
        },
    );
    if gave_up {
        // The server may have answered 204: every order of the stream is delivered and
        // compacted (spec §12), which a page that had not seen `Delivered` cannot tell from
        // an error. So the orders' state is read again (at most once a reload interval).
        reload_after_giving_up(tab);
        let weak = Rc::downgrade(tab);
        set_timeout(
            move || {
                if let Some(tab) = weak.upgrade() {
                    reopen(&tab);
                }
            },
            reopen_delay(),
        );
    }
}

/// The shortest time between two reloads after the browser gave up on the stream.
const RELOAD_EVERY_MS: f64 = 10_000.0;

/// After a give-up: tells every tab to read its orders' state again, unless this holder did
/// so less than [`RELOAD_EVERY_MS`] ago (a server restarting answers `503` every retry).
fn reload_after_giving_up(tab: &Shared) {
    let now = js_sys::Date::now();
    {
        let mut state = tab.borrow_mut();
        let Some(holder) = state.holder.as_mut() else {
            return;
        };
        if holder
            .reloaded_at
            .is_some_and(|at| now - at < RELOAD_EVERY_MS)
        {
            return;
        }
        holder.reloaded_at = Some(now);
    }
    post(tab, &Message::Reset);
    reload_all(tab);
}

/// Every timeline of this tab reads its order's state from the server again (after a
/// `reset`: what it shows may miss events that are no longer stored).
fn reload_all(tab: &Shared) {
    let reloads: Vec<Rc<dyn Fn()>> = tab
        .borrow()
        .watchers
        .iter()
        .map(|w| w.reload.clone())
        .collect();
    // Called outside the borrow: a reload may start or stop feeds.
    for reload in reloads {
        reload();
    }
}

/// The state of the browser's stream, shown by every open timeline of every tab.
fn set_connection(tab: &Shared, connection: Connection) {
    let holding = {
        let mut state = tab.borrow_mut();
        state.connection = connection;
        for watcher in state.watchers.iter().filter(|w| w.is_open()) {
            watcher.connection.set(connection);
        }
        state.holder.is_some()
    };
    if holding {
        post(tab, &Message::State { connection });
    }
}

/// Adds an event to the timelines of its order that need it next. A timeline that finds
/// it lacks an earlier one asks the holder again (or, in the holder, reopens from it).
fn apply(tab: &Shared, id: EventId, update: &OrderStatusUpdate) {
    let status = update.status;
    let mut gap_after: Option<Option<EventId>> = None;
    let mut completed = false;
    let holding = {
        let state = tab.borrow();
        for watcher in state
            .watchers
            .iter()
            .filter(|w| w.order_id == update.order_id)
        {
            let next = watcher.events.with_untracked(Vec::len);
            if status.index() > next {
                gap_after = Some(watcher.last());
                continue;
            }
            if status.index() < next {
                continue;
            }
            watcher.events.update(|events| {
                events.push(OrderEvent {
                    id,
                    update: update.clone(),
                })
            });
            if let Some(announcement) = watcher.announcement {
                announcement.set(format!(
                    "{} at {}",
                    status.label(),
                    local_label(update.timestamp)
                ));
            }
            if status.is_final() {
                watcher.connection.set(Connection::Completed);
                completed = true;
            }
        }
        state.holder.is_some()
    };
    match gap_after {
        Some(last) if holding => schedule_reopen(tab, Some(last)),
        Some(_) => wants_changed(tab),
        None if completed => wants_changed(tab),
        None => {}
    }
}
