//! `/`: place a demo order; the recent orders with their current status.
use leptos::prelude::*;
use leptos_meta::Title;
use serde::{Deserialize, Serialize};

use crate::domain::OrderSummary;
use crate::pages::time::utc_label;

/// What the home page shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HomeData {
    /// Demo mode (no `ADMIN_TOKEN`): the demo button is offered.
    pub demo_mode: bool,
    pub recent: Vec<OrderSummary>,
}

#[server(prefix = "/_server")]
pub async fn load_home() -> Result<HomeData, ServerFnError> {
    /// How many recent orders the home page lists.
    const RECENT_ON_HOME: u32 = 10;
    let state = expect_context::<crate::server::AppState>();
    let recent = state.log.recent(RECENT_ON_HOME).await.map_err(|err| {
        tracing::error!(error = %err, "listing recent orders");
        ServerFnError::new("The recent orders cannot be listed right now.")
    })?;
    Ok(HomeData {
        demo_mode: state.config.demo_mode(),
        recent,
    })
}

/// Creates an order, starts its simulation, and sends the browser to its page.
#[server(prefix = "/_server")]
pub async fn place_demo_order() -> Result<(), ServerFnError> {
    use crate::server::simulate::DEFAULT_INTERVAL_MS;
    let state = expect_context::<crate::server::AppState>();
    if !state.config.demo_mode() {
        // A client's mistake, not ours: 403, not the 500 a server function error defaults to.
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(axum::http::StatusCode::FORBIDDEN);
        }
        return Err(ServerFnError::new(
            "Demo orders are turned off on this server.",
        ));
    }
    let order_id = uuid::Uuid::new_v4();
    state
        .simulations
        .start(
            &state.log,
            order_id,
            std::time::Duration::from_millis(DEFAULT_INTERVAL_MS),
        )
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "placing a demo order");
            ServerFnError::new("The demo order could not be placed.")
        })?;
    leptos_axum::redirect(&format!("/orders/{order_id}"));
    Ok(())
}

#[component]
pub fn HomePage() -> impl IntoView {
    let data = Resource::new(|| (), |_| load_home());
    let place = ServerAction::<PlaceDemoOrder>::new();

    view! {
        <Title text="Your orders" />
        <section class="hero card">
            <h1>"Where is my order?"</h1>
            <p class="lead">
                "Every order has its own page that updates by itself, from payment to your door. "
                "No need to refresh."
            </p>
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
        <section class="card">
            <h2>"Recent orders"</h2>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match data.await {
                        Ok(HomeData { recent, .. }) if recent.is_empty() => view! {
                            <p class="muted">"No orders yet."</p>
                        }.into_any(),
                        Ok(HomeData { recent, .. }) => view! {
                            <ul class="order-list" data-testid="recent-orders">
                                {recent.into_iter().map(|order| view! { <OrderRow order /> }).collect_view()}
                            </ul>
                        }.into_any(),
                        Err(err) => view! { <p class="error">{err.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
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
