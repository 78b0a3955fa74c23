//! The script that brings the islands to life, in place of Leptos's `HydrationScripts`: the
//! bundle's JavaScript and WebAssembly preloaded from `<head>` side by side, then
//! [`crate::hydrate`] and each island, as the islands script of Leptos does for islands
//! without children (ours take none), each in a task of its own so that none blocks a slow
//! phone for long.
//!
//! When to fetch the bundle is a trade between the largest paint and the stream (issue 22).
//! Lighthouse's simulation counts preloads that start before the largest paint: with the
//! 160 KB bundle they put LCP at 1.8 s (0.8–0.9 s when the fetches waited for the first
//! paint), with the 93 KB one at 1.5 s. Waiting for the first paint put "Live" at 2.2 s on a
//! slow phone; preloading, at about 1.5 s. Both are within the targets only with the smaller
//! bundle, so the bundle is preloaded.
use std::sync::OnceLock;

use leptos::nonce::use_nonce;
use leptos::prelude::*;

/// The bundle's URLs: `/<pkg>/<name>[.<hash>].js` and `.wasm`, with the hashes that
/// `cargo leptos` wrote to `hash.txt` beside the server's binary (`hash-files`).
fn bundle(options: &LeptosOptions) -> &'static (String, String) {
    static BUNDLE: OnceLock<(String, String)> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let hashes = options
            .hash_files
            .then(|| std::env::current_exe().ok())
            .flatten()
            .and_then(|exe| std::fs::read_to_string(exe.with_file_name(&*options.hash_file)).ok())
            .unwrap_or_default();
        let hash_of = |kind: &str| {
            hashes
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(file, _)| file.trim() == kind)
                .map(|(_, hash)| format!(".{}", hash.trim()))
                .unwrap_or_default()
        };
        let base = format!("/{}/{}", options.site_pkg_dir, options.output_name);
        (
            format!("{base}{}.js", hash_of("js")),
            format!("{base}{}.wasm", hash_of("wasm")),
        )
    })
}

/// The islands' script; in `<head>`.
#[component]
pub fn IslandScripts(options: LeptosOptions) -> impl IntoView {
    // Islands: the server renders what is outside them as plain HTML, without the markers
    // that hydration needs.
    if let Some(context) = Owner::current_shared_context() {
        context.set_is_hydrating(false);
    }
    let (js_url, wasm_url) = bundle(&options);
    // The strings are JSON, so they are valid JavaScript literals.
    let (js, wasm) = (
        serde_json::to_string(js_url).unwrap_or_default(),
        serde_json::to_string(wasm_url).unwrap_or_default(),
    );
    // Each step in its own task (a zero timeout between them), so that none blocks the
    // page for long on a slow phone: instantiating the bundle, then each island. The body is
    // marked `data-hydrated` once every island runs (tests wait for it).
    let script = format!(
        "const next = () => new Promise((done) => setTimeout(done));\
         (async () => {{\
           const wasm = fetch({wasm});\
           const bundle = await import({js});\
           await bundle.default({{ module_or_path: wasm }});\
           await next();\
           bundle.hydrate();\
           for (const island of document.querySelectorAll('leptos-island')) {{\
             await next();\
             const run = bundle[island.dataset.component];\
             if (run) run(island); else console.warn('no island', island.dataset.component);\
           }}\
           document.body.dataset.hydrated = 'true';\
         }})();"
    );
    view! {
        <link rel="modulepreload" href=js_url.clone() />
        <link rel="preload" href=wasm_url.clone() r#as="fetch" r#type="application/wasm" crossorigin="" />
        <script type="module" nonce=use_nonce()>{script}</script>
    }
}
