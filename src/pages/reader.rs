//! The browser reading an order's state again (after the stream's `reset`, and for each order
//! of `/my-orders`): a plain `fetch` of the public `GET /api/orders/{id}` (spec §5), the
//! same document any client reads.
//!
//! Not a server function: their client (request encoding, error decoding, an HTTP crate)
//! cost the bundle about 25 KB (issue 22), and the JSON API already says everything needed.
use uuid::Uuid;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{RequestCache, RequestInit, Response};

use crate::domain::Order;
use crate::pages::json;

/// What the server said of an order.
pub enum Read {
    /// Its state: its events, or, once `expired`, its summary.
    Order(Order),
    /// `404`: a valid id of an order not placed yet.
    NotPlaced,
}

/// Reads `GET /api/orders/{id}` past the browser's cache; `None` when the request failed
/// (offline, a `5xx`, a body that is not an order): the caller keeps what it shows.
pub async fn read_order(id: Uuid) -> Option<Read> {
    let init = RequestInit::new();
    init.set_cache(RequestCache::NoStore);
    let window = web_sys::window()?;
    let promise = window.fetch_with_str_and_init(&format!("/api/orders/{id}"), &init);
    let response: Response = JsFuture::from(promise).await.ok()?.dyn_into().ok()?;
    if response.status() == 404 {
        return Some(Read::NotPlaced);
    }
    if !response.ok() {
        return None;
    }
    let text = JsFuture::from(response.text().ok()?)
        .await
        .ok()?
        .as_string()?;
    json::read(&text, json::order).map(Read::Order)
}
