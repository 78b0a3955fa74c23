//! Nothing acknowledged is lost: the real binary on a temporary database, stopped cleanly,
//! killed with SIGKILL mid-simulation, and raced by concurrent publishers.
#![cfg(feature = "ssr")]
mod common;

use std::time::Duration;

use common::*;

fn database() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/data/orders.db", dir.path().display());
    (dir, url)
}

async fn replay(base: &str, id: &str) -> Vec<u8> {
    let mut reader = SseReader::open(&format!("{base}/orders/{id}/stream"), None).await;
    reader.events_to_end().await;
    reader.raw
}

#[tokio::test]
async fn a_clean_stop_and_start_replays_identically() {
    let (_dir, url) = database();
    let addr = free_addr();
    let mut server = Process::spawn(&url, addr, &[]).await;
    let id = create_order(&server.base).await;
    deliver(&server.base, &id).await;
    let before = replay(&server.base, &id).await;

    server.signal("TERM");
    server.wait_exit(Duration::from_secs(5)).await;
    let server = Process::spawn(&url, addr, &[]).await;
    let after = replay(&server.base, &id).await;
    assert_eq!(same_but_retry(&after), same_but_retry(&before));
}

#[tokio::test]
async fn after_kill_9_mid_simulation_every_status_arrives_exactly_once() {
    let (_dir, url) = database();
    let addr = free_addr();
    let mut server = Process::spawn(&url, addr, &[]).await;
    let id = uuid::Uuid::new_v4().to_string();
    let stream = format!("{}/orders/{id}/stream", server.base);
    let mut first = SseReader::open(&stream, None).await;
    start_simulation(&server.base, &id, 150).await;

    // Read a few events, then crash the server.
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(first.next_event().await.unwrap());
    }
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(5)).await;
    // Whatever was already on the wire before the crash counts as seen.
    while let Some(frame) = first.next_event().await {
        seen.push(frame);
    }
    assert!(seen.len() < 6, "the simulation finished before the crash");
    let last_id = seen.last().unwrap().id().unwrap();

    let server = Process::spawn(&url, addr, &[]).await;
    let mut second = SseReader::open(&stream, Some(&last_id)).await;
    start_simulation(&server.base, &id, 20).await;
    seen.extend(second.events_to_end().await);

    let ids = assert_every_status_once_in_id_order(&seen);
    // The ids are the stored ones, the same as a fresh replay gives.
    assert_eq!(ids, event_ids(&server.base, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_simulations_and_api_publishers_leave_exactly_six_events() {
    let server = TestServer::start().await;
    for _round in 0..5 {
        let id = create_order(&server.base).await;
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = server.url(&format!("/orders/{id}/simulate?interval_ms=0&wait=true"));
            tasks.push(tokio::spawn(async move {
                client().post(url).send().await.unwrap().status().as_u16()
            }));
        }
        for status in &ALL[1..] {
            for _ in 0..3 {
                let url = server.url(&format!("/api/orders/{id}/status"));
                let body = serde_json::json!({ "status": status });
                tasks.push(tokio::spawn(async move {
                    client()
                        .post(url)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                }));
            }
        }
        for task in tasks {
            let status = task.await.unwrap();
            assert!([200, 202, 409].contains(&status), "{status}");
        }
        // Let a simulation that lost every race notice the order is delivered.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let order = order_json(&server.base, &id).await;
        let events = order["events"].as_array().unwrap();
        let seen: Vec<_> = events
            .iter()
            .map(|e| e["status"].as_str().unwrap())
            .collect();
        assert_eq!(seen, ALL);
    }
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_exits_within_5_seconds() {
    let (_dir, url) = database();
    let mut server = Process::spawn(&url, free_addr(), &[]).await;
    let id = uuid::Uuid::new_v4();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut reader =
            SseReader::open(&format!("{}/orders/{id}/stream", server.base), None).await;
        assert_retry(reader.next_frame().await);
        readers.push(reader);
    }
    server.signal("TERM");
    let took = server.wait_exit(Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    for reader in &mut readers {
        assert_eq!(reader.next_frame().await, None, "the stream ended");
        assert!(
            !reader.broken,
            "the stream ended cleanly, not by a dropped connection"
        );
    }
}

#[tokio::test]
async fn the_binary_caps_open_streams_at_max_streams() {
    let (_dir, url) = database();
    let server = Process::spawn(
        &url,
        free_addr(),
        &[("MAX_STREAMS", "2"), ("MAX_STREAMS_PER_CLIENT", "10")],
    )
    .await;
    let id = uuid::Uuid::new_v4();
    let stream = format!("{}/orders/{id}/stream", server.base);
    let _a = SseReader::open(&stream, None).await;
    let _b = SseReader::open(&stream, None).await;
    let third = client().get(&stream).send().await.unwrap();
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
}

#[test]
fn help_documents_every_setting() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_order-tracking"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for setting in [
        "LEPTOS_SITE_ADDR",
        "DATABASE_URL",
        "ADMIN_TOKEN",
        "MAX_STREAMS",
        "KEEPALIVE_SECS",
        "RUST_LOG",
        "ADMIN_TOKEN_FILE",
        "HEAD_TIMEOUT_SECS",
        "IDLE_TIMEOUT_SECS",
        "WRITE_TIMEOUT_SECS",
        "MAX_HEAD_BYTES",
        "MAX_CONNECTIONS",
        "MAX_CONNECTIONS_PER_CLIENT",
        "MAX_STREAMS_PER_CLIENT",
        "TRUSTED_PROXIES",
        "--database-url",
        "--max-streams",
        "--keepalive-secs",
    ] {
        assert!(
            help.contains(setting),
            "{setting} missing from --help:\n{help}"
        );
    }
}

#[test]
fn a_bad_setting_is_refused_at_start_up() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_order-tracking"))
        .env("KEEPALIVE_SECS", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("KEEPALIVE_SECS")
            || String::from_utf8_lossy(&output.stderr).contains("keepalive")
    );
}

/// Runs the binary with `RUST_LOG` and `args` until it answers, stops it with SIGTERM, and
/// returns everything it logged.
async fn logs_of_a_run(rust_log: &str, args: &[&str]) -> String {
    let (_dir, url) = database();
    let addr = free_addr();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_order-tracking"))
        .args(args)
        .env("DATABASE_URL", &url)
        .env("LEPTOS_SITE_ADDR", addr.to_string())
        .env("RUST_LOG", rust_log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let health = client().get(format!("http://{addr}/healthz")).send().await;
        if health.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_log_flag_sets_the_filter_and_wins_over_rust_log() {
    // `listening on` is logged at info.
    let louder = logs_of_a_run("warn", &["--log", "info"]).await;
    assert!(louder.contains("listening on"), "{louder}");
    let quieter = logs_of_a_run("info", &["--log", "warn"]).await;
    assert!(!quieter.contains("listening on"), "{quieter}");
    // Without the flag, RUST_LOG decides.
    assert!(logs_of_a_run("info", &[]).await.contains("listening on"));
}

#[test]
fn a_malformed_log_filter_is_refused_at_start_up() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_order-tracking"))
        .args(["--log", "order_tracking=loudest"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--log"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
