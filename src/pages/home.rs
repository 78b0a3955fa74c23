//! `/`: find an order by its number or link; in demo mode also place a demo order and see the
//! recent orders with their current status, kept live by the every-order stream.
//!
//! An order id is the capability to watch that order (spec §6), so with `ADMIN_TOKEN` set the
//! page lists nothing: the server function below returns no orders, not merely a page that
//! hides them.
use leptos::either::Either;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Redirect;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};

use crate::domain::{parse_order_reference, rfc3339_millis, EventId, OrderSummary};
use crate::pages::island::{self, give, IslandData};
use crate::pages::time::utc_label;

/// What the home page shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HomeData {
    /// Demo mode (no `ADMIN_TOKEN`): the demo button is offered.
    pub demo_mode: bool,
    /// The most recent orders, in demo mode only.
    pub recent: Option<Vec<OrderSummary>>,
    /// The last event id when they were read: the live list resumes after it.
    pub last_event_id: Option<EventId>,
}

#[server(prefix = "/_server")]
pub async fn load_home() -> Result<HomeData, ServerFnError> {
    use crate::pages::ssr::{backend, failed};
    /// How many recent orders the home page lists.
    const RECENT_ON_HOME: u32 = 10;
    let backend = backend()?;
    if !backend.demo_mode() {
        return Ok(HomeData {
            demo_mode: false,
            recent: None,
            last_event_id: None,
        });
    }
    let failed_listing = |err| {
        failed(
            "listing recent orders",
            err,
            "The recent orders cannot be listed right now.",
        )
    };
    // Read before the list, so that no event is missed between the two (one counted in both
    // only sets a status again).
    let last_event_id = backend.last_id().await.map_err(failed_listing)?;
    let recent = backend
        .recent(RECENT_ON_HOME)
        .await
        .map_err(failed_listing)?;
    Ok(HomeData {
        demo_mode: true,
        recent: Some(recent),
        last_event_id,
    })
}

/// Creates an order, starts its simulation, and sends the browser to its page.
#[server(prefix = "/_server")]
pub async fn place_demo_order() -> Result<(), ServerFnError> {
    use crate::pages::ssr::{backend, failed, set_status};
    let backend = backend()?;
    if !backend.demo_mode() {
        // A client's mistake, not ours: 403, not the 500 a server function error defaults to.
        set_status(axum::http::StatusCode::FORBIDDEN);
        return Err(ServerFnError::new(
            "Demo orders are turned off on this server.",
        ));
    }
    let order_id = backend.place_demo_order().await.map_err(|err| {
        failed(
            "placing a demo order",
            err,
            "The demo order could not be placed.",
        )
    })?;
    leptos_axum::redirect(&format!("/orders/{order_id}"));
    Ok(())
}

#[component]
pub fn HomePage() -> impl IntoView {
    let data = Resource::new(|| (), |_| load_home());
    let place = ServerAction::<PlaceDemoOrder>::new();

    view! {
        <Title text="Track your order" />
        <section class="hero card">
            <h1>"Where is my order?"</h1>
            <p class="lead">
                "Every order has its own page that updates by itself, from payment to your door. "
                "No need to refresh."
            </p>
            <TrackOrder />
            <Suspense>
                {move || Suspend::new(async move {
                    let demo = data.await.map(|d| d.demo_mode).unwrap_or(false);
                    demo.then(|| view! {
                        <ActionForm action=place attr:class="demo-form">
                            <button type="submit" class="button primary" disabled=move || place.pending().get()>
                                "Place a demo order"
                            </button>
                            <span class="hint">"Watch it go from Created to Delivered in about ten seconds."</span>
                        </ActionForm>
                    })
                })}
            </Suspense>
            {move || place.value().get().and_then(Result::err).map(|err| view! {
                <p class="error" role="alert">{err.to_string()}</p>
            })}
        </section>
        <Suspense>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(HomeData { recent: Some(recent), last_event_id, .. }) => {
                        Some(view! {
                            {give(RecentData { recent, last_event_id })}
                            <RecentOrders />
                        }.into_any())
                    }
                    Ok(HomeData { recent: None, .. }) => None,
                    Err(err) => Some(view! {
                        <section class="card"><p class="error">{err.to_string()}</p></section>
                    }.into_any()),
                }
            })}
        </Suspense>
    }
}

/// "Track an order": a plain GET form to `/?order=…`, so it works before hydration and
/// without JavaScript. A number or link that names an order redirects to its page (302 from
/// the server); anything else is shown again with what is wrong.
#[component]
fn TrackOrder() -> impl IntoView {
    let query = use_query_map();
    let pasted = move || query.read().get("order");
    let found = move || pasted().map(|raw| parse_order_reference(&raw));
    view! {
        <form method="get" action="/" class="track-form" role="search" data-testid="track-form">
            <label for="track-order">"Track an order"</label>
            <div class="track-row">
                <input id="track-order" name="order" type="text" required autocomplete="off"
                    spellcheck="false" placeholder="Order number or link"
                    aria-describedby="track-help" value=move || pasted().unwrap_or_default() />
                <button type="submit" class="button">"Track"</button>
            </div>
            <p id="track-help" class="hint">
                "Paste the order number or the link from your confirmation e-mail."
            </p>
            {move || match found() {
                Some(Ok(id)) => view! { <Redirect path=format!("/orders/{id}") /> }.into_any(),
                Some(Err(_)) => view! {
                    <p class="error" role="alert" data-testid="track-error">
                        "That is not an order number or a link to an order. "
                        "An order number looks like 67e55044-10b1-426f-9247-bb680e5fe0c8."
                    </p>
                }.into_any(),
                None => ().into_any(),
            }}
        </form>
    }
}

/// How many recent orders the list keeps as new ones arrive.
const RECENT_KEPT: usize = 10;

/// What the home page's island starts from: the recent orders, and the last event id when
/// they were read.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct RecentData {
    recent: Vec<OrderSummary>,
    last_event_id: Option<EventId>,
}

impl IslandData for RecentData {
    const ID: &'static str = "recent-data";

    #[cfg(feature = "hydrate")]
    fn read(value: &wasm_bindgen::JsValue) -> Option<Self> {
        use crate::pages::json::{event_id, field, list, summary};
        Some(Self {
            recent: list(&field(value, "recent"), summary)?,
            last_event_id: event_id(&field(value, "lastEventId"))?,
        })
    }
}

/// The live list: an island, the home page's only code in the browser (the track form and the
/// demo button are plain forms).
#[island]
fn RecentOrders() -> impl IntoView {
    island::take::<RecentData>().map(
        |RecentData {
             recent,
             last_event_id,
         }| recent_orders(recent, last_event_id),
    )
}

fn recent_orders(recent: Vec<OrderSummary>, last_event_id: Option<EventId>) -> impl IntoView {
    let rows = RwSignal::new(recent);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let feed = crate::pages::recent::RecentFeed::start(rows, last_event_id, RECENT_KEPT);
        let feed = send_wrapper::SendWrapper::new(feed);
        on_cleanup(move || feed.take().stop());
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = (last_event_id, RECENT_KEPT);
    view! {
        <section class="card">
            <h2>"Recent orders"</h2>
            // `Either`, not `into_any()`: the type-erased view costs the bundle more.
            {move || if rows.with(Vec::is_empty) {
                Either::Left(view! { <p class="muted" data-testid="no-orders">"No orders yet."</p> })
            } else {
                Either::Right(view! {
                    <ul class="order-list" data-testid="recent-orders">
                        {rows.get().into_iter().map(|order| view! { <OrderRow order /> }).collect_view()}
                    </ul>
                })
            }}
        </section>
    }
}

#[component]
fn OrderRow(order: OrderSummary) -> impl IntoView {
    let id = order.id.to_string();
    let short = id[..8].to_owned();
    let status = order.status;
    view! {
        <li data-testid="recent-order" data-order=id.clone() data-status=status.wire_name()>
            <a href=format!("/orders/{id}") class="order-link">
                <span class="order-number">"Order " <code>{short}</code></span>
                <span class=format!("pill status-{}", status.wire_name())>{status.label()}</span>
                <time class="muted" datetime=rfc3339_millis(order.updated_at)>{utc_label(order.updated_at)}</time>
            </a>
        </li>
    }
}
