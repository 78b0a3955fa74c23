//! How a moment is shown: in UTC as rendered by the server, in the reader's own time zone
//! once the page runs in their browser.
use chrono::{DateTime, Datelike, Timelike, Utc};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `23 Nov, 23:10:00 UTC`. Written from the date's parts rather than with chrono's
/// `strftime`, which would add 12 KB to the browser's bundle (issue 22): the islands render
/// it too, to hydrate what the server wrote.
pub fn utc_label(at: DateTime<Utc>) -> String {
    format!(
        "{} {}, {:02}:{:02}:{:02} UTC",
        at.day(),
        MONTHS[at.month0() as usize],
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The reader's local time in the browser (their `Intl` settings); UTC elsewhere.
pub fn local_label(at: DateTime<Utc>) -> String {
    #[cfg(feature = "hydrate")]
    {
        // One formatter for the page, rather than one per call as `toLocaleString` makes. (The
        // first format still costs a slow phone 170-230 ms, loading the locale's data: the
        // order page does it once its stream is open.)
        thread_local! {
            static FORMAT: js_sys::Function = {
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
                js_sys::Intl::DateTimeFormat::new(&js_sys::Array::new(), &options).format()
            };
        }
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(
            at.timestamp_millis() as f64
        ));
        let label = FORMAT.with(|format| format.call1(&wasm_bindgen::JsValue::NULL, &date));
        if let Some(label) = label.ok().and_then(|label| label.as_string()) {
            return label;
        }
    }
    utc_label(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    #[test]
    fn the_utc_label_is_what_strftime_writes() {
        let mut at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        for step in 0..3_000 {
            at += TimeDelta::hours(7) + TimeDelta::seconds(61 + step % 59);
            assert_eq!(utc_label(at), at.format("%-d %b, %H:%M:%S UTC").to_string());
        }
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 23, 10, 5).unwrap();
        assert_eq!(utc_label(at), "23 Nov, 23:10:05 UTC");
    }
}
