//! The orders this browser has opened, most recent first: kept in the browser
//! (`localStorage`), never on the server, since an order id is a capability. The order page
//! adds to it; `/my-orders` shows it.
#[cfg(feature = "hydrate")]
use leptos::prelude::window;
use uuid::Uuid;

/// The `localStorage` key of the list: a JSON array of order ids, most recent first.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const STORAGE_KEY: &str = "order-tracking:my-orders";
/// How many orders the browser remembers (the shared stream follows at most 100).
pub const REMEMBERED: usize = 50;

/// Puts `order_id` first in `list`, once, keeping at most [`REMEMBERED`].
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub fn remember_in(list: &mut Vec<Uuid>, order_id: Uuid) {
    list.retain(|id| *id != order_id);
    list.insert(0, order_id);
    list.truncate(REMEMBERED);
}

/// The orders this browser has opened; empty where storage is unavailable.
#[cfg(feature = "hydrate")]
pub fn remembered() -> Vec<Uuid> {
    let stored = window()
        .local_storage()
        .ok()
        .flatten()
        .and_then(|storage| storage.get_item(STORAGE_KEY).ok().flatten());
    // The browser's own JSON, both ways: the bundle then carries no JSON writer (issue 22).
    let Some(array) = stored
        .and_then(|json| js_sys::JSON::parse(&json).ok())
        .filter(js_sys::Array::is_array)
    else {
        return Vec::new();
    };
    js_sys::Array::from(&array)
        .iter()
        .filter_map(|id| id.as_string()?.parse().ok())
        .collect()
}

/// Adds an order to the browser's list (the order page calls it).
#[cfg(feature = "hydrate")]
pub fn remember(order_id: Uuid) {
    let mut list = remembered();
    remember_in(&mut list, order_id);
    let array: js_sys::Array = list
        .iter()
        .map(|id| wasm_bindgen::JsValue::from_str(&id.to_string()))
        .collect();
    let json = js_sys::JSON::stringify(&array)
        .ok()
        .and_then(|json| json.as_string());
    if let (Ok(Some(storage)), Some(json)) = (window().local_storage(), json) {
        let _ = storage.set_item(STORAGE_KEY, &json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_order_goes_first_once_and_the_list_is_bounded() {
        let ids: Vec<Uuid> = (0..REMEMBERED + 5).map(|_| Uuid::new_v4()).collect();
        let mut list = Vec::new();
        for id in &ids {
            remember_in(&mut list, *id);
        }
        assert_eq!(list.len(), REMEMBERED);
        assert_eq!(list[0], ids[ids.len() - 1]);
        remember_in(&mut list, ids[10]);
        assert_eq!(list[0], ids[10]);
        assert_eq!(list.iter().filter(|id| **id == ids[10]).count(), 1);
        assert_eq!(list.len(), REMEMBERED);
    }
}
