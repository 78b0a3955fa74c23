//! Live order tracking over Server-Sent Events.
//!
//! - [`domain`]: orders, statuses and events, shared by the server and the browser.
//! - [`app`] and [`pages`]: the Leptos UI, rendered on the server; in the browser only its
//!   islands (`#[island]`, the parts that change after load) are hydrated.
//! - [`server`] (feature `ssr`): the event store, the fan-out hub, the SSE stream, the
//!   simulator and the JSON API.
pub mod app;
pub mod domain;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod server;

/// Run by the islands script once the bundle is loaded, just before it hydrates the page's
/// islands.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
    // Marks the document once its islands run (tests wait for it): the script hydrates them
    // right after this returns, each synchronously, before the next task.
    leptos::prelude::set_timeout(
        || {
            if let Some(body) = leptos::prelude::document().body() {
                let _ = body.set_attribute("data-hydrated", "true");
            }
        },
        std::time::Duration::ZERO,
    );
}
