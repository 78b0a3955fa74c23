//! The browser reading the server's JSON (the stream's events, `GET /api/orders/{id}`, the
//! islands' data) with its own `JSON.parse`, field by field.
//!
//! Not serde: its readers are monomorphised for every type and bring the error machinery
//! with them (float formatting alone is 14 KB), so serde and serde_json were 60 KB of the
//! 366 KB bundle for documents of four to six fields (issue 22). The server still writes
//! every document with serde, the one definition of the wire format (spec §3, §5); what is
//! read here is held to it by every Playwright spec, since nothing would show otherwise.
use chrono::{DateTime, Utc};
use js_sys::{Array, Reflect, JSON};
use uuid::Uuid;
use wasm_bindgen::JsValue;

use crate::domain::{
    parse_time, EventId, Order, OrderEvent, OrderStatus, OrderStatusUpdate, OrderSummary,
};

/// `text` parsed and read with `read` (one of the readers below); `None` when it is not
/// JSON or not what `read` expects.
pub fn read<T>(text: &str, read: fn(&JsValue) -> Option<T>) -> Option<T> {
    read(&JSON::parse(text).ok()?)
}

/// A field of an object (`undefined` when it has none).
pub fn field(value: &JsValue, name: &str) -> JsValue {
    Reflect::get(value, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

fn string(value: &JsValue, name: &str) -> Option<String> {
    field(value, name).as_string()
}

pub fn uuid(value: &JsValue, name: &str) -> Option<Uuid> {
    string(value, name)?.parse().ok()
}

pub fn status(value: &JsValue, name: &str) -> Option<OrderStatus> {
    string(value, name)?.parse().ok()
}

pub fn time(value: &JsValue, name: &str) -> Option<DateTime<Utc>> {
    parse_time(&string(value, name)?)
}

/// `null` or absent is `None`; anything else must be an id.
pub fn event_id(value: &JsValue) -> Option<Option<EventId>> {
    if value.is_null() || value.is_undefined() {
        return Some(None);
    }
    value.as_string()?.parse().ok().map(Some)
}

/// Each element of an array read with `read`; `None` if it is not an array or one fails.
pub fn list<T>(value: &JsValue, read: fn(&JsValue) -> Option<T>) -> Option<Vec<T>> {
    if !Array::is_array(value) {
        return None;
    }
    Array::from(value).iter().map(|item| read(&item)).collect()
}

/// `{"orderId", "status", "timestamp"}`: an event's `data` line.
pub fn update(value: &JsValue) -> Option<OrderStatusUpdate> {
    Some(OrderStatusUpdate {
        order_id: uuid(value, "orderId")?,
        status: status(value, "status")?,
        timestamp: time(value, "timestamp")?,
    })
}

/// An update with its `"id"`.
pub fn event(value: &JsValue) -> Option<OrderEvent> {
    Some(OrderEvent {
        id: event_id(&field(value, "id"))??,
        update: update(value)?,
    })
}

pub fn summary(value: &JsValue) -> Option<OrderSummary> {
    Some(OrderSummary {
        id: uuid(value, "id")?,
        status: status(value, "status")?,
        created_at: time(value, "createdAt")?,
        updated_at: time(value, "updatedAt")?,
    })
}

/// `GET /api/orders/{id}`.
pub fn order(value: &JsValue) -> Option<Order> {
    let summary = summary(value)?;
    Some(Order {
        id: summary.id,
        status: summary.status,
        created_at: summary.created_at,
        updated_at: summary.updated_at,
        events: list(&field(value, "events"), event)?,
        expired: field(value, "expired").as_bool().unwrap_or(false),
    })
}
