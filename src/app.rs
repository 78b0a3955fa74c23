//! The HTML shell and the application's routes.
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Link, Meta, Title};
#[cfg(feature = "ssr")]
use leptos_meta::{HashedStylesheet, MetaTags};
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::{path, SsrMode};

use crate::pages::{HomePage, MyOrdersPage, NotFound, OrderPage};

#[cfg(feature = "ssr")]
mod scripts;

/// The document around the app, rendered on the server only.
#[cfg(feature = "ssr")]
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    crate::pages::ssr::secure_document(&options);
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <AutoReload options=options.clone() />
                // What the pages add to the head, before the stylesheet: a script there runs
                // at once, one after it waits for the stylesheet (the order page's stream,
                // `pages/head_start.rs`).
                <MetaTags />
                // The stylesheet's name carries its hash, read from hash.txt like the bundle's.
                <HashedStylesheet options=options.clone() id="leptos" />
                // Islands: the browser hydrates only the `#[island]`s, not the whole page
                // (their bundle preloaded; see `scripts`).
                <scripts::IslandScripts options />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();

    view! {
        <Link rel="icon" type_="image/svg+xml" href="/favicon.svg" />
        <Meta name="description" content="Follow your order live, from payment to your door." />
        <Title formatter=|title| format!("{title} · Parcelle") />
        <Router>
            <header class="site-header">
                <A href="/" attr:class="brand">
                    <span class="brand-mark" aria-hidden="true"></span>
                    "Parcelle"
                </A>
                <span class="tagline">"Order tracking"</span>
                <nav class="site-nav" aria-label="Site">
                    <A href="/my-orders">"Your orders"</A>
                </nav>
            </header>
            <main class="page">
                // Async: the whole page is rendered before it is sent, so it reads right
                // without JavaScript.
                <Routes fallback=NotFound>
                    <Route path=path!("/") view=HomePage ssr=SsrMode::Async />
                    <Route path=path!("/orders/:id") view=OrderPage ssr=SsrMode::Async />
                    <Route path=path!("/my-orders") view=MyOrdersPage ssr=SsrMode::Async />
                </Routes>
            </main>
            <footer class="site-footer">"Live updates over Server-Sent Events."</footer>
        </Router>
    }
}
