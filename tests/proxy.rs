//! Through a real nginx (Debian's), started on free loopback ports with the repository's
//! `deploy/nginx.conf`, a certificate made here and a short `proxy_read_timeout`: events arrive
//! one by one as they are published, keep-alives hold an idle stream open past the proxy's
//! read timeout, and over HTTPS the many-order stream arrives over HTTP/2 (checked with curl).
#![cfg(feature = "ssr")]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Nginx {
    child: Child,
    base: String,
    /// The HTTPS (HTTP/2) side, with a self-signed certificate.
    tls_base: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx in front of `upstream`, with the repo's site config, its stream read timeout
    /// cut to `read_timeout`.
    async fn start(upstream: &str, read_timeout: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_addr().port();
        let tls_port = free_addr().port();
        let (cert, key) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .args([&key, Path::new("-out"), &cert])
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed (make test installs it)");
        assert!(made.success());
        let site = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .unwrap()
        .replace("server 127.0.0.1:3000 ", &format!("server {upstream} "))
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{tls_port} ssl http2;"),
        )
        .replace(
            "/etc/ssl/certs/ssl-cert-snakeoil.pem",
            &cert.display().to_string(),
        )
        .replace(
            "/etc/ssl/private/ssl-cert-snakeoil.key",
            &key.display().to_string(),
        )
        .replace(
            "proxy_read_timeout 1h;",
            &format!("proxy_read_timeout {read_timeout};"),
        );
        assert!(site.contains(&format!("proxy_read_timeout {read_timeout};")));
        assert!(
            site.contains(&format!("127.0.0.1:{tls_port} ssl http2;"))
                && !site.contains("snakeoil")
        );
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
            tls_base: format!("https://127.0.0.1:{tls_port}"),
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
    assert_retry(reader.next_frame().await);
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
        assert!(publish(&nginx.base, &id, status).await);
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

/// Reads a child's output line by line, as it comes.
fn lines_of(child: &mut Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(5), lines.recv())
        .await
        .expect("a line within 5 s")
}

#[tokio::test]
async fn over_https_the_stream_of_many_orders_arrives_over_http2_event_by_event() {
    let app = TestServer::start().await;
    let nginx = Nginx::start(app.base.trim_start_matches("http://"), "1h").await;
    let (a, b) = (
        create_order(&nginx.base).await,
        create_order(&nginx.base).await,
    );
    let url = format!("{}/stream?order={a}&order={b}", nginx.tls_base);
    // -N: print as it arrives; -k: the certificate is self-signed; -D -: the response head.
    let mut curl = Command::new("curl")
        .args(["-sS", "-N", "-k", "--http2", "-D", "-", &url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl is installed (make test installs it)");
    let mut lines = lines_of(&mut curl);
    assert_eq!(
        next_line(&mut lines).await.unwrap().trim_end(),
        "HTTP/2 200"
    );
    let mut head = Vec::new();
    loop {
        let line = next_line(&mut lines).await.unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        head.push(line.trim_end().to_ascii_lowercase());
    }
    assert!(
        head.contains(&"content-type: text/event-stream".to_owned()),
        "{head:?}"
    );
    assert!(
        !head.iter().any(|h| h.starts_with("content-encoding")),
        "{head:?}"
    );
    let retry = next_line(&mut lines).await.unwrap();
    let ms: u64 = retry.strip_prefix("retry: ").unwrap().parse().unwrap();
    assert!((3000..=6000).contains(&ms), "{retry}");
    assert_eq!(next_line(&mut lines).await.unwrap(), "");

    /// The next event's `data` line.
    async fn next_data(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
        assert!(next_line(lines).await.unwrap().starts_with("id: "));
        assert_eq!(next_line(lines).await.unwrap(), "event: order-update");
        let data = next_line(lines).await.unwrap();
        assert_eq!(next_line(lines).await.unwrap(), "");
        data
    }
    // The two Created events, then each published status before the next is published.
    for id in [&a, &b] {
        assert!(next_data(&mut lines)
            .await
            .contains(&format!("\"orderId\":\"{id}\"")));
    }
    for status in &ALL[1..] {
        for id in [&a, &b] {
            assert!(publish(&nginx.base, id, status).await);
            let data = next_data(&mut lines).await;
            assert!(data.contains(&format!("\"orderId\":\"{id}\"")), "{data}");
            assert!(data.contains(&format!("\"status\":\"{status}\"")), "{data}");
        }
    }
    // Both delivered: the stream ends and curl exits cleanly.
    let exit = tokio::task::spawn_blocking(move || curl.wait().unwrap());
    let exit = tokio::time::timeout(Duration::from_secs(5), exit).await;
    assert!(exit.expect("curl exits").unwrap().success());
}

#[tokio::test]
async fn behind_nginx_each_forwarded_client_has_its_own_share() {
    // As deploy/nginx.conf says to run it: the app believes nginx's X-Forwarded-For.
    let app = TestServer::start_with(|config| {
        config.limits.max_streams_per_client = Some(1);
        config.limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let nginx = Nginx::start(app.base.trim_start_matches("http://"), "2s").await;
    let front = nginx.base.trim_start_matches("http://").to_owned();
    let stream = common::raw::get(&format!("/orders/{}/stream", uuid::Uuid::new_v4()), "");
    let open = |local: &'static str| {
        let (front, stream) = (front.clone(), stream.clone());
        async move {
            let mut connection = common::raw::Connection::from(local, &front).await;
            connection.send(&stream).await;
            (connection.response_head().await.status, connection)
        }
    };
    // Two customers, each one stream: both served, though nginx is one peer.
    let (a, _a) = open("127.0.0.2").await;
    let (b, _b) = open("127.0.0.3").await;
    // The first customer's second stream is over its share.
    let (a_again, _) = open("127.0.0.2").await;
    assert_eq!((a, b, a_again), (200, 200, 429));
}
