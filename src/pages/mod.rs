//! The pages a customer sees, with the server functions that feed them. Rendered on the
//! server, hydrated in the browser; [`live`] is the browser's side of the stream, [`ssr`] the
//! server's side of the pages.
mod channel;
mod connection;
mod head_start;
pub mod home;
mod island;
#[cfg(feature = "hydrate")]
mod json;
#[cfg(feature = "hydrate")]
mod live;
pub mod my_orders;
pub mod order;
#[cfg(feature = "hydrate")]
mod reader;
mod recent;
mod remembered;
#[cfg(feature = "hydrate")]
mod source;
#[cfg(feature = "ssr")]
pub mod ssr;
mod time;

pub use home::HomePage;
pub use my_orders::MyOrdersPage;
pub use order::OrderPage;

use leptos::prelude::*;

/// Shown for any path the app does not know.
#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    ssr::set_status(axum::http::StatusCode::NOT_FOUND);
    view! {
        <section class="card notice">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <a href="/">"Back to the home page"</a></p>
        </section>
    }
}
