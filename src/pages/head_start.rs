//! The order page's stream, opened by the page itself while the bundle is still on its way
//! (issue 22).
//!
//! On a slow phone the bundle arrives about a second after the page, and the islands have
//! run some 400 ms later; a stream opened only then reads "Live" one round trip after that,
//! at about 1.5 s. So the server-rendered order page carries a few lines of script that, if
//! no other tab of the browser holds the stream (the same Web Lock as [`super::live`], asked
//! for only if it is free), take the lock and open the order's stream at once, keeping
//! every frame it delivers. When the bundle runs, the tab's holder *adopts* that stream
//! instead of opening one: it replays the kept frames to its own handlers (the `open`, the
//! events, the keep-alives), so nothing is missed and the badge reads "Live" as soon as the
//! island does.
//!
//! Still one connection per browser (spec §11): the page opens a stream only with the lock,
//! which it then never gives up but to its own bundle. A bundle that never comes (it failed
//! to load) must not leave the browser's other tabs without a holder: after
//! [`ABANDON_MS`] a stream not adopted is closed and the lock let go, and a bundle that comes
//! later still opens its own in the usual way.
use leptos::prelude::*;
use uuid::Uuid;

use crate::domain::EventId;
use crate::pages::channel::LOCK;

/// The global through which the page's script hands its stream to the bundle: a promise of
/// the stream started, or of `null` when the lock was taken.
const GLOBAL: &str = "__streamHeadStart";
/// How long the page holds a stream for a bundle that does not come.
const ABANDON_MS: u32 = 15_000;

/// The URL of the browser's stream for `orders`, resuming after `from`: the one URL both the
/// page's script and the holder open.
pub fn stream_url(orders: &[Uuid], from: Option<EventId>) -> String {
    let mut url = String::from("/stream?");
    for order in orders {
        url.push_str("order=");
        url.push_str(&order.to_string());
        url.push('&');
    }
    match from {
        Some(id) => url.push_str(&format!("last_event_id={id}")),
        None => {
            url.pop();
        }
    }
    url
}

/// `url` asking for `heartbeat` keep-alives (see [`super::source`]).
pub fn with_heartbeat(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat")
}

/// In the order page: the script that starts the order's stream, with the page's nonce.
#[component]
pub fn HeadStart(order: Uuid, after: Option<EventId>) -> impl IntoView {
    let url = literal(&with_heartbeat(&stream_url(&[order], after)));
    let lock = literal(&LOCK);
    let order = literal(&order.to_string());
    let after = literal(&after.map(|id| id.to_string()));
    // The frames are kept by one listener per type the holder's source handles, removed
    // when the bundle adopts the stream (`adopt` gives the frames, or `null` once abandoned).
    let script = format!(
        "(() => {{\
           const locks = navigator.locks;\
           if (!locks || !window.BroadcastChannel) return;\
           window.{GLOBAL} = new Promise((started) => {{\
             locks.request({lock}, {{ ifAvailable: true }}, (lock) => {{\
               if (!lock) return started(null);\
               const source = new EventSource({url});\
               const frames = [];\
               const keep = (frame) => frames.push(frame);\
               const types = ['open', 'error', 'order-update', 'reset', 'keep-alive'];\
               for (const type of types) source.addEventListener(type, keep);\
               return new Promise((release) => {{\
                 let abandoned = false;\
                 const timer = setTimeout(() => {{\
                   abandoned = true; source.close(); release();\
                 }}, {ABANDON_MS});\
                 started({{ source, order: {order}, after: {after}, adopt() {{\
                   if (abandoned) return null;\
                   clearTimeout(timer);\
                   for (const type of types) source.removeEventListener(type, keep);\
                   return frames;\
                 }} }});\
               }});\
             }}).catch(() => started(null));\
           }});\
         }})();"
    );
    // In `<head>` (leptos_meta), before the stylesheet: a script after it would wait for
    // the stylesheet to load (600–800 ms on a slow phone) before it runs.
    view! { <leptos_meta::Script>{script}</leptos_meta::Script> }
}

/// `value` written as JSON, so a valid JavaScript literal.
fn literal(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// The stream the page started, adopted by the tab's holder.
#[cfg(feature = "hydrate")]
pub struct Started {
    pub source: web_sys::EventSource,
    /// The order it follows, and the id it resumed after.
    pub order: Uuid,
    pub after: Option<EventId>,
    /// Every frame it delivered so far, in order, to be replayed.
    pub frames: Vec<web_sys::Event>,
}

/// The page's promise of a started stream, if the page has a script that starts one.
#[cfg(feature = "hydrate")]
pub fn pending() -> Option<js_sys::Promise> {
    use wasm_bindgen::JsCast;
    let window = web_sys::window()?;
    let promise = js_sys::Reflect::get(&window, &GLOBAL.into()).ok()?;
    let _ = js_sys::Reflect::delete_property(&window, &GLOBAL.into());
    promise.dyn_into().ok()
}

/// The stream the page started, taken over: `None` if the page could not take the lock, or
/// gave the stream up.
#[cfg(feature = "hydrate")]
pub async fn adopt(pending: js_sys::Promise) -> Option<Started> {
    use crate::pages::json::{event_id, field, uuid};
    use wasm_bindgen::JsCast;
    let started = wasm_bindgen_futures::JsFuture::from(pending).await.ok()?;
    if started.is_null() || started.is_undefined() {
        return None;
    }
    let source = field(&started, "source").dyn_into().ok()?;
    let order = uuid(&started, "order")?;
    let after = event_id(&field(&started, "after"))?;
    let adopt: js_sys::Function = field(&started, "adopt").dyn_into().ok()?;
    let frames = adopt.call0(&started).ok()?;
    if !js_sys::Array::is_array(&frames) {
        return None;
    }
    let frames = js_sys::Array::from(&frames)
        .iter()
        .filter_map(|frame| frame.dyn_into().ok())
        .collect();
    Some(Started {
        source,
        order,
        after,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_every_order_and_resumes_after_the_id_given() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(stream_url(&[a], None), format!("/stream?order={a}"));
        assert_eq!(
            stream_url(&[a, b], Some(EventId(42))),
            format!("/stream?order={a}&order={b}&last_event_id=42")
        );
        assert_eq!(
            with_heartbeat(&stream_url(&[a], None)),
            format!("/stream?order={a}&heartbeat")
        );
        assert_eq!(with_heartbeat("/stream/recent"), "/stream/recent?heartbeat");
    }
}
