//! What an island starts from, without serde in the browser (issue 22).
//!
//! Leptos hands an island's props to the browser as JSON read with serde_json, whose readers
//! and error machinery were 60 KB of the bundle; ours take no props. The page around an
//! island (server-rendered, never hydrated) calls [`give`]: on the server the island gets
//! the data through context, and the same data is written beside it as a JSON data block
//! (`<script type="application/json">`), which the island reads in the browser with
//! `JSON.parse` ([`super::json`]). A page has at most one island of each kind, so a block's
//! id names its kind.
use leptos::prelude::*;
use serde::Serialize;

pub trait IslandData: Clone + Send + Sync + 'static {
    /// The id of the data block.
    const ID: &'static str;

    /// The data, from what `JSON.parse` made of the block.
    #[cfg(feature = "hydrate")]
    fn read(value: &wasm_bindgen::JsValue) -> Option<Self>;
}

/// In the page, where the island is: the data block, and the data for the island on the
/// server.
pub fn give<T: IslandData + Serialize>(data: T) -> impl IntoView {
    // `<` escaped, so that nothing in the data could end the element early.
    let json = serde_json::to_string(&data)
        .unwrap_or_default()
        .replace('<', "\\u003c");
    provide_context(data);
    // A data block runs nothing, but it carries the page's nonce like every script element,
    // so that "no script without the nonce" stays a rule without exceptions.
    view! {
        <script type="application/json" id=T::ID nonce=leptos::nonce::use_nonce() inner_html=json></script>
    }
}

/// In the island: its data (`None` only if the page gave none, a bug).
pub fn take<T: IslandData>() -> Option<T> {
    #[cfg(feature = "hydrate")]
    {
        let text = document().get_element_by_id(T::ID)?.text_content()?;
        super::json::read(&text, T::read)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        use_context::<T>()
    }
}
