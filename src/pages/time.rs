//! How a moment is shown: in UTC as rendered by the server, in the reader's own time zone
//! once the page runs in their browser.
use chrono::{DateTime, Utc};

pub fn utc_label(at: DateTime<Utc>) -> String {
    at.format("%-d %b, %H:%M:%S UTC").to_string()
}

/// The reader's local time in the browser; UTC elsewhere.
pub fn local_label(at: DateTime<Utc>) -> String {
    #[cfg(feature = "hydrate")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(
            at.timestamp_millis() as f64
        ));
        let options = js_sys::Object::new();
        for (key, value) in [
            ("day", "numeric"),
            ("month", "short"),
            ("hour", "2-digit"),
            ("minute", "2-digit"),
            ("second", "2-digit"),
        ] {
            let _ = js_sys::Reflect::set(&options, &key.into(), &value.into());
        }
        if let Some(label) = date.to_locale_string("default", &options).as_string() {
            return label;
        }
    }
    utc_label(at)
}
