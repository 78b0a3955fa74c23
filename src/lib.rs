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

/// Run by the islands script (`app/scripts.rs`) once the bundle is loaded, just before it
/// hydrates the page's islands.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
}
