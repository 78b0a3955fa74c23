//! Live order tracking over Server-Sent Events.
//!
//! - [`domain`]: orders, statuses and events, shared by the server and the browser.
//! - [`app`] and [`pages`]: the Leptos UI, rendered on the server and hydrated in the browser.
//! - [`server`] (feature `ssr`): the event store, the fan-out hub, the SSE stream, the
//!   simulator and the JSON API.
pub mod app;
pub mod domain;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod server;

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
