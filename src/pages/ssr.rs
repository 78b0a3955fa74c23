//! The server side of pages: what their server functions and the HTML shell share. Every
//! error a page shows is logged here, once, with its cause; the reader gets a sentence.
//!
//! The pages know the server only through [`Backend`], which the server provides as context
//! (`server::pages`): the app depends on this trait, the server on the app, never the
//! reverse.
use std::fmt::Display;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{header, HeaderValue, StatusCode};
use leptos::prelude::*;
use leptos_axum::ResponseOptions;
use uuid::Uuid;

use crate::domain::{EventId, Order, OrderSummary};

/// Why the server could not answer a page: logged with [`failed`], never shown.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// What the pages' server functions ask of the server.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Demo mode (no admin token set): the home page lists orders and offers a demo order.
    fn demo_mode(&self) -> bool;
    /// An order with its stored events, or `None` for one never placed.
    async fn order(&self, id: Uuid) -> Result<Option<Order>, BackendError>;
    /// The largest event id stored.
    async fn last_id(&self) -> Result<Option<EventId>, BackendError>;
    /// The most recent orders, newest first.
    async fn recent(&self, limit: u32) -> Result<Vec<OrderSummary>, BackendError>;
    /// Places a demo order and starts its simulation; its id.
    async fn place_demo_order(&self) -> Result<Uuid, BackendError>;
}

/// The server, as it provides itself to every page and server function.
pub fn backend() -> Result<Arc<dyn Backend>, ServerFnError> {
    use_context::<Arc<dyn Backend>>().ok_or_else(|| {
        tracing::error!("a server function ran without the backend in its context");
        ServerFnError::new("The server is not ready; try again in a moment.")
    })
}

/// Sets the status code of the response being rendered.
pub fn set_status(status: StatusCode) {
    if let Some(response) = use_context::<ResponseOptions>() {
        response.set_status(status);
    }
}

/// Logs `cause` (what failed while `doing` something) and gives the reader `sentence`.
pub fn failed(doing: &str, cause: impl Display, sentence: &str) -> ServerFnError {
    tracing::error!(error = %cause, "{doing}");
    ServerFnError::new(sentence)
}

/// The headers that keep an HTML document and its capability URL to itself:
/// - `Referrer-Policy: no-referrer`: a page that links to another site does not hand it the
///   order's URL, which is the capability to watch the order.
/// - `X-Content-Type-Options: nosniff`: the browser never runs a response as another type.
/// - `Content-Security-Policy`: scripts only from this site, the inline hydration script only
///   with this response's nonce (Leptos adds it), WebAssembly allowed to compile, styles and
///   images and connections only to this site, no plugins, no `<base>` rewriting, forms
///   posting only here, and `frame-ancestors 'none'`: no other site may frame the page (and
///   click through it).
///
/// Set here, for documents only, rather than by a router-wide layer: such layers cost about
/// 5 KiB per open stream (measured with the bench's `--only-idle-memory`).
pub fn secure_document(options: &LeptosOptions) {
    let (Some(nonce), Some(response)) = (use_nonce(), use_context::<ResponseOptions>()) else {
        return;
    };
    response.insert_header(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response.insert_header(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `cargo leptos watch` injects a live-reload script that talks to its own port.
    let reload = if std::env::var_os("LEPTOS_WATCH").is_some() {
        format!(" ws://*:{}", options.reload_port)
    } else {
        String::new()
    };
    let policy = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; img-src 'self' data:; connect-src 'self'{reload}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}
