//! Through a real nginx (Debian's), started on a free loopback port with the repository's
//! `deploy/nginx.conf` and a short `proxy_read_timeout`: events arrive one by one as they are
//! published, and keep-alives hold an idle stream open past the proxy's read timeout.
#![cfg(feature = "ssr")]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Nginx {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx in front of `upstream`, with the repo's site config, its stream read timeout
    /// cut to `read_timeout`.
    async fn start(upstream: &str, read_timeout: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_addr().port();
        let site = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .unwrap()
        .replace("server 127.0.0.1:3000 ", &format!("server {upstream} "))
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "proxy_read_timeout 1h;",
            &format!("proxy_read_timeout {read_timeout};"),
        );
        assert!(site.contains(&format!("proxy_read_timeout {read_timeout};")));
        let root = dir.path().display();
        std::fs::write(dir.path().join("site.conf"), site).unwrap();
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\n\
                 error_log {root}/error.log warn;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n\
                 fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
                 include {root}/site.conf;\n}}\n"
            ),
        )
        .unwrap();
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|path| {
                Command::new(path)
                    .arg("-v")
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .expect("nginx is installed (make test installs Debian's nginx)");
        let child = Command::new(nginx)
            .args([
                "-p",
                &root.to_string(),
                "-e",
                &format!("{root}/error.log"),
                "-c",
                &format!("{root}/nginx.conf"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        while client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .map(|r| r.status())
            .ok()
            != Some(reqwest::StatusCode::OK)
        {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            base,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn through_nginx_events_arrive_one_by_one_and_idle_streams_stay_open() {
    let app = TestServer::start_with(|config| config.keepalive_secs = 1).await;
    let nginx = Nginx::start(app.base.trim_start_matches("http://"), "2s").await;

    let id = create_order(&nginx.base).await;
    let mut reader = SseReader::open(&format!("{}/orders/{id}/stream", nginx.base), None).await;
    assert_eq!(reader.response_status, 200);
    assert_eq!(reader.headers["content-type"], "text/event-stream");
    assert_eq!(reader.next_frame().await, Some(Frame::Retry("3000".into())));
    assert_eq!(
        reader.next_event().await.unwrap().status().unwrap(),
        "Created"
    );

    // Idle for twice the proxy's read timeout: only keep-alives, and the stream holds.
    let idle_until = Instant::now() + Duration::from_secs(5);
    let mut keepalives = 0;
    while Instant::now() < idle_until {
        assert_eq!(reader.next_frame().await, Some(Frame::KeepAlive));
        keepalives += 1;
    }
    assert!(keepalives >= 3, "{keepalives}");

    // Each published event comes through before the next is published.
    for status in &ALL[1..] {
        let published = Instant::now();
        let response = client()
            .post(format!("{}/api/orders/{id}/status", nginx.base))
            .json(&serde_json::json!({ "status": status }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let event = reader.next_event().await.unwrap();
        assert_eq!(event.status().as_deref(), Some(*status));
        // A buffering proxy would hold it back until a 4-8 KiB buffer filled (minutes here).
        assert!(
            published.elapsed() < Duration::from_secs(5),
            "{:?}",
            published.elapsed()
        );
    }
    assert_eq!(
        reader.next_event().await,
        None,
        "the stream ends after Delivered"
    );
    assert!(!reader.broken);
}
