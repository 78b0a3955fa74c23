//! `/`: find an order by its number or link; in demo mode also place a demo order and see the
//! recent orders with their current status.
//!
//! An order id is the capability to watch that order (spec §6), so with `ADMIN_TOKEN` set the
//! page lists nothing: the server function below returns no orders, not merely a page that
//! hides them.
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Redirect;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};

use crate::domain::{parse_order_reference, OrderSummary};
use crate::pages::time::utc_label;

/// What the home page shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HomeData {
    /// Demo mode (no `ADMIN_TOKEN`): the demo button is offered.
    pub demo_mode: bool,
    /// The most recent orders, in demo mode only.
    pub recent: Option<Vec<OrderSummary>>,
}

#[server(prefix = "/_server")]
pub async fn load_home() -> Result<HomeData, ServerFnError> {
    use crate::pages::ssr::{app_state, failed};
    /// How many recent orders the home page lists.
    const RECENT_ON_HOME: u32 = 10;
    let state = app_state()?;
    if !state.config.demo_mode() {
        return Ok(HomeData {
            demo_mode: false,
            recent: None,
        });
    }
    let recent = state
        .event_log
        .recent(RECENT_ON_HOME)
        .await
        .map_err(|err| {
            failed(
                "listing recent orders",
                err,
                "The recent orders cannot be listed right now.",
            )
        })?;
    Ok(HomeData {
        demo_mode: true,
        recent: Some(recent),
    })
}

/// Creates an order, starts its simulation, and sends the browser to its page.
#[server(prefix = "/_server")]
pub async fn place_demo_order() -> Result<(), ServerFnError> {
    use crate::pages::ssr::{app_state, failed, set_status};
    use crate::server::simulate::DEFAULT_INTERVAL_MS;
    let state = app_state()?;
    if !state.config.demo_mode() {
        // A client's mistake, not ours: 403, not the 500 a server function error defaults to.
        set_status(axum::http::StatusCode::FORBIDDEN);
        return Err(ServerFnError::new(
            "Demo orders are turned off on this server.",
        ));
    }
    let order_id = uuid::Uuid::new_v4();
    state
        .simulations
        .start(
            &state.event_log,
            order_id,
            std::time::Duration::from_millis(DEFAULT_INTERVAL_MS),
        )
        .await
        .map_err(|err| {
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
                    Ok(HomeData { recent: Some(recent), .. }) => Some(view! { <RecentOrders recent /> }.into_any()),
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
                    aria-describedby="track-help" prop:value=move || pasted().unwrap_or_default() />
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

#[component]
fn RecentOrders(recent: Vec<OrderSummary>) -> impl IntoView {
    view! {
        <section class="card">
            <h2>"Recent orders"</h2>
            {if recent.is_empty() {
                view! { <p class="muted">"No orders yet."</p> }.into_any()
            } else {
                view! {
                    <ul class="order-list" data-testid="recent-orders">
                        {recent.into_iter().map(|order| view! { <OrderRow order /> }).collect_view()}
                    </ul>
                }.into_any()
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
        <li>
            <a href=format!("/orders/{id}") class="order-link">
                <span class="order-number">"Order " <code>{short}</code></span>
                <span class=format!("pill status-{}", status.wire_name())>{status.label()}</span>
                <time class="muted" datetime=order.updated_at.to_rfc3339()>{utc_label(order.updated_at)}</time>
            </a>
        </li>
    }
}
