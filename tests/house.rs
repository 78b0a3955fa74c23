//! The shape of the house (issue 22): the shared app (the shell, the routes, the pages) and
//! the domain never import the server; the server depends on them. A page reaches the
//! server only through `pages::ssr::Backend`, which the server provides as context.
use std::path::Path;

/// Every Rust file under `dir`, with its text.
fn sources(dir: &Path, found: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            found.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn the_app_and_the_domain_never_import_the_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![(
        "src/app.rs".to_owned(),
        std::fs::read_to_string(root.join("app.rs")).unwrap(),
    )];
    sources(&root.join("pages"), &mut files);
    sources(&root.join("domain"), &mut files);
    assert!(files.len() > 5, "{files:?}");
    for (path, text) in &files {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            assert!(
                !code.contains("crate::server") && !code.contains("order_tracking::server"),
                "{path}:{}: the app imports the server: {line}",
                n + 1
            );
        }
    }
}
