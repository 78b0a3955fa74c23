//! `/my-orders`: the orders this browser has opened, each with its live status, on the
//! browser's one shared stream. The list is kept in the browser (`localStorage`), never on
//! the server: an order id is a capability, and the server lists none.
use leptos::either::{Either, EitherOf3};
use leptos::prelude::*;
use leptos_meta::Title;
use uuid::Uuid;

use crate::domain::{OrderEvent, OrderStatus};
#[cfg(feature = "hydrate")]
use crate::pages::remembered::remembered;

#[component]
pub fn MyOrdersPage() -> impl IntoView {
    view! {
        <Title text="Your orders" />
        <MyOrders />
    }
}

/// The list, read from the browser's storage and kept live: an island.
#[island]
fn MyOrders() -> impl IntoView {
    // None until the browser has read its list (the server cannot).
    let orders = RwSignal::new(None::<Vec<Uuid>>);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| orders.set(Some(remembered())));
    view! {
        <section class="card">
            <h1>"Your orders"</h1>
            // `EitherOf3`, not `into_any()`: the type-erased view costs the bundle more.
            {move || match orders.get() {
                None => EitherOf3::A(view! {
                    <p class="muted" data-testid="my-orders-waiting">
                        "This browser keeps the list of orders you have opened, so it shows "
                        "once the page has fully loaded. Each order's own page works without it."
                    </p>
                }),
                Some(list) if list.is_empty() => EitherOf3::B(view! {
                    <p class="muted" data-testid="my-orders-empty">
                        "You have not opened any order in this browser yet. "
                        <a href="/">"Track an order"</a>
                    </p>
                }),
                Some(list) => EitherOf3::C(view! {
                    <ul class="order-list" data-testid="my-orders">
                        {list.into_iter().map(|id| view! { <MyOrder id /> }).collect_view()}
                    </ul>
                }),
            }}
        </section>
    }
}

/// One order of the list with its live status.
#[component]
fn MyOrder(id: Uuid) -> impl IntoView {
    let events = RwSignal::new(Vec::<OrderEvent>::new());
    // Set when the order is compacted (spec §12): its last status, without its events.
    let expired = RwSignal::new(None::<OrderStatus>);
    #[cfg(feature = "hydrate")]
    live(id, events, expired);
    let status = move || {
        expired
            .get()
            .or_else(|| events.with(|events| events.last().map(|e| e.update.status)))
    };
    let text = id.to_string();
    let short = text[..8].to_owned();
    view! {
        <li data-testid="my-order" data-order=text.clone()
            data-status=move || status().map(|s| s.wire_name()).unwrap_or("")>
            <a href=format!("/orders/{text}") class="order-link">
                <span class="order-number">"Order " <code>{short}</code></span>
                {move || match status() {
                    Some(status) => Either::Left(view! {
                        <span class=format!("pill status-{}", status.wire_name())>{status.label()}</span>
                    }),
                    None => Either::Right(view! { <span class="pill">"Waiting…"</span> }),
                }}
            </a>
        </li>
    }
}

/// Keeps one listed order current: reads its state from the server, then follows it live
/// from there until it is delivered; reads it again on `reset`. A compacted order shows its
/// last status and is not followed.
#[cfg(feature = "hydrate")]
fn live(id: Uuid, events: RwSignal<Vec<OrderEvent>>, expired: RwSignal<Option<OrderStatus>>) {
    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::pages::connection::Connection;
    use crate::pages::live::LiveFeed;
    use crate::pages::reader::{read_order, Read};

    type Feed = Rc<RefCell<Option<LiveFeed>>>;
    fn load(
        id: Uuid,
        events: RwSignal<Vec<OrderEvent>>,
        expired: RwSignal<Option<OrderStatus>>,
        feed: Feed,
    ) {
        leptos::task::spawn_local(async move {
            let fresh = match read_order(id).await {
                Some(Read::Order(order)) if order.expired => {
                    expired.set(Some(order.status));
                    if let Some(feed) = feed.borrow_mut().take() {
                        feed.stop();
                    }
                    return;
                }
                Some(Read::Order(order)) => order.events,
                Some(Read::NotPlaced) => Vec::new(),
                None => return,
            };
            let delivered = fresh.last().is_some_and(|e| e.update.status.is_final());
            events.set(fresh);
            if !delivered && feed.borrow().is_none() {
                let connection = RwSignal::new(Connection::Connecting);
                let again = feed.clone();
                let reload = move || load(id, events, expired, again.clone());
                let started = LiveFeed::start(id, events, connection, None, reload);
                *feed.borrow_mut() = Some(started);
            }
        });
    }
    let feed: Feed = Rc::default();
    load(id, events, expired, feed.clone());
    let feed = send_wrapper::SendWrapper::new(feed);
    on_cleanup(move || {
        if let Some(feed) = feed.take().borrow_mut().take() {
            feed.stop();
        }
    });
}
