//! `/orders/{id}`: the order's timeline, rendered with the events known at load and kept
//! live in the browser by an EventSource that resumes after the last rendered event.
use chrono::{DateTime, Utc};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{rfc3339_millis, OrderEvent, OrderStatus};
use crate::pages::connection::Connection;
use crate::pages::head_start::HeadStart;
use crate::pages::island::{self, give, IslandData};
use crate::pages::time::{local_label, utc_label};

/// What the server knows of an order id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum OrderLookup {
    /// A valid id: its events so far (none for an order not placed yet).
    Known { id: Uuid, events: Vec<OrderEvent> },
    /// A compacted order (spec §12): its step-by-step history is no longer kept; its
    /// status and when it got there remain.
    Expired {
        id: Uuid,
        status: OrderStatus,
        updated_at: DateTime<Utc>,
    },
    /// Not an order id at all.
    Invalid,
}

#[server(prefix = "/_server")]
pub async fn lookup_order(raw_id: String) -> Result<OrderLookup, ServerFnError> {
    use crate::pages::ssr::{backend, failed, set_status};
    use axum::http::StatusCode;
    let Ok(id) = crate::domain::parse_order_id(&raw_id) else {
        set_status(StatusCode::NOT_FOUND);
        return Ok(OrderLookup::Invalid);
    };
    let order = backend()?.order(id).await.map_err(|err| {
        failed(
            "reading an order",
            err,
            "This order cannot be read right now.",
        )
    })?;
    Ok(match order {
        Some(order) if order.expired => OrderLookup::Expired {
            id,
            status: order.status,
            updated_at: order.updated_at,
        },
        Some(order) => OrderLookup::Known {
            id,
            events: order.events,
        },
        None => {
            set_status(StatusCode::NOT_FOUND);
            OrderLookup::Known { id, events: vec![] }
        }
    })
}

/// A step's place relative to the order's latest status (`None`: not placed yet).
pub fn step_state(step: OrderStatus, latest: Option<OrderStatus>) -> &'static str {
    match latest {
        Some(latest) if latest.is_final() || step < latest => "done",
        Some(latest) if step == latest => "current",
        _ => "pending",
    }
}

#[component]
pub fn OrderPage() -> impl IntoView {
    let params = use_params_map();
    let lookup = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        lookup_order,
    );
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading your order…"</p> }>
            {move || Suspend::new(async move {
                match lookup.await {
                    Ok(OrderLookup::Known { id, events }) => {
                        // The stream started by the page itself, unless the order is
                        // delivered (then there is none to open).
                        let last = events.last();
                        let after = last.map(|event| event.id);
                        let live = !last.is_some_and(|event| event.status().is_final());
                        view! {
                            <OrderTitle id />
                            {give(TrackerData { id, events })}
                            <Tracker />
                            {live.then(|| view! { <HeadStart order=id after /> })}
                        }.into_any()
                    }
                    Ok(OrderLookup::Expired { id, status, updated_at }) => view! {
                        <OrderTitle id />
                        {give(ExpiredData { id, status, updated_at })}
                        <Expired />
                    }.into_any(),
                    Ok(OrderLookup::Invalid) => view! {
                        <Title text="Unknown order" />
                        <section class="card notice">
                            <h1>"That is not an order number"</h1>
                            <p>"Check the link in your confirmation e-mail. " <a href="/">"Track an order"</a></p>
                        </section>
                    }.into_any(),
                    Err(err) => view! {
                        <section class="card notice"><p class="error">{err.to_string()}</p></section>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// The document's title for an order: its number's first eight characters.
#[component]
fn OrderTitle(id: Uuid) -> impl IntoView {
    view! { <Title text=format!("Order {}", &id.to_string()[..8]) /> }
}

/// What the order page's island of a compacted order starts from.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExpiredData {
    id: Uuid,
    status: OrderStatus,
    #[serde(with = "crate::domain::millis")]
    updated_at: DateTime<Utc>,
}

impl IslandData for ExpiredData {
    const ID: &'static str = "expired-data";

    #[cfg(feature = "hydrate")]
    fn read(value: &wasm_bindgen::JsValue) -> Option<Self> {
        use crate::pages::json::{status, time, uuid};
        Some(Self {
            id: uuid(value, "id")?,
            status: status(value, "status")?,
            updated_at: time(value, "updatedAt")?,
        })
    }
}

/// A compacted order: where it got to and when, without the steps. An island: in the browser
/// it remembers the order (`/my-orders`) and gives the time in local time.
#[island]
fn Expired() -> impl IntoView {
    island::take::<ExpiredData>().map(
        |ExpiredData {
             id,
             status,
             updated_at,
         }| expired(id, status, updated_at),
    )
}

fn expired(id: Uuid, status: OrderStatus, updated_at: DateTime<Utc>) -> impl IntoView {
    let in_browser = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        in_browser.set(true);
        crate::pages::remembered::remember(id);
    });
    let id_text = id.to_string();
    let when = move || {
        if in_browser.get() {
            local_label(updated_at)
        } else {
            utc_label(updated_at)
        }
    };
    view! {
        <section class="card tracker" data-testid="expired">
            <div class="tracker-head">
                <div>
                    <p class="eyebrow">"Order"</p>
                    <h1 class="order-id"><code data-testid="order-id">{id_text.clone()}</code></h1>
                </div>
            </div>
            <p class="expired-status" data-testid="final-status" data-status=status.wire_name()>
                {status.label()} " on "
                <time datetime=rfc3339_millis(updated_at)>{when}</time>
            </p>
            <p class="muted" data-testid="history-gone">
                "The step-by-step history of this order is no longer kept."
            </p>
        </section>
    }
}

/// What the order page's island starts from: the order's events so far.
#[derive(Clone, Serialize)]
struct TrackerData {
    id: Uuid,
    events: Vec<OrderEvent>,
}

impl IslandData for TrackerData {
    const ID: &'static str = "tracker-data";

    #[cfg(feature = "hydrate")]
    fn read(value: &wasm_bindgen::JsValue) -> Option<Self> {
        use crate::pages::json::{event, field, list, uuid};
        Some(Self {
            id: uuid(value, "id")?,
            events: list(&field(value, "events"), event)?,
        })
    }
}

/// The live timeline of one order, with its badge: an island, the order page's only code in
/// the browser.
#[island]
fn Tracker() -> impl IntoView {
    island::take::<TrackerData>().map(|TrackerData { id, events }| tracker(id, events))
}

fn tracker(id: Uuid, events: Vec<OrderEvent>) -> impl IntoView {
    let events = RwSignal::new(events);
    let latest = Memo::new(move |_| events.with(|events| events.last().map(OrderEvent::status)));
    let initial = if latest.get_untracked().is_some_and(OrderStatus::is_final) {
        Connection::Completed
    } else {
        Connection::Connecting
    };
    let connection = RwSignal::new(initial);
    let announcement = RwSignal::new(String::new());
    // Times read in UTC as rendered by the server, in local time once hydrated.
    let in_browser = RwSignal::new(false);

    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        // The stream in a task of its own, after the island's hydration: no one task blocks
        // a slow phone for long.
        crate::pages::remembered::remember(id);
        // The feed once started; `Err` once the island is gone (then it never starts).
        let feed = std::rc::Rc::new(std::cell::RefCell::new(Ok(None)));
        let stop = send_wrapper::SendWrapper::new(feed.clone());
        on_cleanup(move || {
            if let Ok(Some(feed)) = stop.take().replace(Err(())) {
                crate::pages::live::LiveFeed::stop(feed);
            }
        });
        if connection.get_untracked() != Connection::Completed {
            // On `reset`, the order's state again from the server: its events, or, once it
            // is compacted, the page for that.
            let reload = move || {
                leptos::task::spawn_local(async move {
                    use crate::pages::reader::{read_order, Read};
                    match read_order(id).await {
                        Some(Read::Order(order)) if order.expired => {
                            let _ = window().location().reload();
                        }
                        Some(Read::Order(order)) => events.set(order.events),
                        Some(Read::NotPlaced) => events.set(Vec::new()),
                        None => {}
                    }
                })
            };
            let start = move || {
                let mut feed = feed.borrow_mut();
                let Ok(slot) = &mut *feed else {
                    return;
                };
                *slot = Some(crate::pages::live::LiveFeed::start(
                    id,
                    events,
                    connection,
                    Some(announcement),
                    reload,
                ));
            };
            set_timeout(start, std::time::Duration::ZERO);
        }
    });
    // The local times once the badge has left "Connecting…" (at once for a delivered order),
    // or after 3 s whatever the stream does: the first `Intl` format is a slow phone's
    // longest task after hydration (170–230 ms at 4x), and before that it delayed the
    // stream's opening and then its `open` event, so the badge read "Live" later.
    #[cfg(feature = "hydrate")]
    {
        let local = move || in_browser.set(true);
        set_timeout(local, std::time::Duration::from_secs(3));
        Effect::new(move |_| {
            if connection.get() != Connection::Connecting {
                set_timeout(local, std::time::Duration::ZERO);
            }
        });
    }

    // How many statuses are reached (0 to 6): the bar's width comes from the stylesheet.
    let reached = move || latest.get().map_or(0, |status| status.index() + 1);
    let progress = move || reached().saturating_sub(1) * 100 / (OrderStatus::ALL.len() - 1);
    let id_text = id.to_string();

    view! {
        <section class="card tracker">
            <div class="tracker-head">
                <div>
                    <p class="eyebrow">"Order"</p>
                    <h1 class="order-id"><code data-testid="order-id">{id_text.clone()}</code></h1>
                </div>
                <span data-testid="connection" class=move || connection.get().class() role="status">
                    {move || connection.get().label()}
                </span>
            </div>
            <Show when=move || latest.get().is_none()>
                <p class="notice-inline" data-testid="not-found">
                    "We can't find an order with this number yet. If you have just placed it, "
                    "keep this page open: it appears here as soon as we receive it."
                </p>
            </Show>
            <div class="progress" role="progressbar" aria-label="Delivery progress"
                aria-valuemin="0" aria-valuemax="100" aria-valuenow=move || progress().to_string()>
                <div class="progress-bar" data-reached=move || reached().to_string()></div>
            </div>
            <ol class="timeline">
                {OrderStatus::ALL.into_iter().map(|status| {
                    let state = move || step_state(status, latest.get());
                    let at = move || events.with(|events| events.get(status.index()).map(|e| e.update.timestamp));
                    view! {
                        <li data-testid="step" data-status=status.wire_name() data-state=state
                            class=move || format!("step {}", state())
                            aria-current=move || (state() == "current").then_some("step")>
                            <span class="step-dot" aria-hidden="true"></span>
                            <span class="step-label">{status.label()}</span>
                            {move || at().map(|at| view! {
                                <time class="step-time" datetime=rfc3339_millis(at)>
                                    {move || if in_browser.get() { local_label(at) } else { utc_label(at) }}
                                </time>
                            })}
                        </li>
                    }
                }).collect_view()}
            </ol>
            <p class="sr-only" aria-live="polite" data-testid="announcer">{move || announcement.get()}</p>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_before_the_latest_are_done_after_it_pending() {
        let states: Vec<_> = OrderStatus::ALL
            .into_iter()
            .map(|step| step_state(step, Some(OrderStatus::Packed)))
            .collect();
        assert_eq!(
            states,
            ["done", "done", "current", "pending", "pending", "pending"]
        );
    }

    #[test]
    fn once_delivered_every_step_is_done_and_before_creation_none_is() {
        for step in OrderStatus::ALL {
            assert_eq!(step_state(step, Some(OrderStatus::Delivered)), "done");
            assert_eq!(step_state(step, None), "pending");
        }
    }
}
