//! The edges (spec §13) against real bound servers, over raw sockets: the connection policy
//! on both paths (the direct stream path and hyper), the fair shares per client, and the
//! meaning of odd bytes. Bounds are asserted with generous margins; nothing here is timed.
#![cfg(feature = "ssr")]
mod common;

use std::time::Duration;

use common::raw::*;
use common::*;
use serde_json::Value;

/// One second each, so that the bounds show in a test's time; the margins are several.
async fn strict_server(
    adjust: impl FnOnce(&mut order_tracking::server::config::Config),
) -> TestServer {
    TestServer::start_with(|config| {
        config.policy.head_timeout_secs = 1;
        config.policy.idle_timeout_secs = 1;
        config.policy.write_timeout_secs = 1;
        adjust(config);
    })
    .await
}

fn addr(server: &TestServer) -> &str {
    server.base.strip_prefix("http://").unwrap()
}

/// A figure of `/metrics` with labels, e.g. `order_tracking_timeouts_total{bound="head"}`;
/// 0 while it has not been counted yet.
async fn labelled(server: &TestServer, name: &str) -> f64 {
    metric_if_counted(&server.base, name).await.unwrap_or(0.0)
}

/// Waits until `metric` reaches `value`.
async fn metric_reaches(server: &TestServer, name: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while labelled(server, name).await < value {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed below {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a bound of one second may take to show: several times over.
const WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn silent_trickled_and_half_sent_heads_are_closed_within_the_head_bound_on_either_path() {
    let server = strict_server(|_| {}).await;
    let id = uuid::Uuid::new_v4();
    // Nothing at all; half a stream request (direct path); half of another request (hyper).
    let mut silent = Connection::open(&server).await;
    let mut half_stream = Connection::open(&server).await;
    half_stream
        .send(format!("GET /orders/{id}/stream HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .await;
    let mut half_other = Connection::open(&server).await;
    half_other
        .send(b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: applic")
        .await;
    for (name, connection) in [
        ("silent", &mut silent),
        ("half a stream request", &mut half_stream),
        ("half a POST", &mut half_other),
    ] {
        assert!(connection.closes_within(WITHIN).await, "{name} stayed open");
        assert!(connection.read.is_empty(), "{name}: {:?}", connection.read);
    }

    // A head trickled a byte every 100 ms, on both paths: the bound is for the whole head,
    // not for each byte.
    for head in [
        get(&format!("/orders/{id}/stream"), "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"),
        b"POST /api/orders HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"
            .to_vec(),
    ] {
        let mut trickled = Connection::open(&server).await;
        trickled.socket.set_nodelay(true).unwrap();
        let started = tokio::time::Instant::now();
        let mut closed = false;
        for byte in head {
            if trickled.socket.try_write(&[byte]).is_err() {
                closed = true;
                break;
            }
            if trickled.closes_within(Duration::from_millis(100)).await {
                closed = true;
                break;
            }
        }
        assert!(closed, "a trickled head was served");
        assert!(started.elapsed() < WITHIN);
        assert!(trickled.read.is_empty(), "{:?}", trickled.read);
    }
    metric_reaches(
        &server,
        "order_tracking_timeouts_total{bound=\"head\"}",
        5.0,
    )
    .await;
}

#[tokio::test]
async fn an_idle_keep_alive_is_closed_after_the_idle_bound_on_either_path() {
    let server = strict_server(|_| {}).await;
    let id = create_order(&server.base).await;
    deliver(&server.base, &id).await;
    let last = event_ids(&server.base, &id).await[5];
    // After a 204 of the direct path, and after a page of hyper's.
    let mut after_204 = Connection::open(&server).await;
    after_204
        .send(&get(
            &format!("/orders/{id}/stream"),
            &format!("Last-Event-ID: {last}\r\n"),
        ))
        .await;
    assert_eq!(after_204.response().await.status, 204);
    // Kept alive a moment...
    assert!(!after_204.closes_within(Duration::from_millis(200)).await);
    let mut after_page = Connection::open(&server).await;
    after_page.send(&get("/healthz", "")).await;
    assert_eq!(after_page.response().await.status, 200);
    assert!(!after_page.closes_within(Duration::from_millis(200)).await);
    for connection in [&mut after_204, &mut after_page] {
        // ...and closed once idle for the bound.
        assert!(
            connection.closes_within(WITHIN).await,
            "an idle connection stayed open"
        );
    }
    metric_reaches(
        &server,
        "order_tracking_timeouts_total{bound=\"idle\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_head_over_the_limit_gets_431_and_a_close_on_either_path() {
    let server = TestServer::start().await;
    let pad = format!("X-Pad: {}\r\n", "a".repeat(20_000));
    for head in [
        get("/stream", &pad),
        format!("POST /api/orders HTTP/1.1\r\nHost: x\r\n{pad}\r\n").into_bytes(),
        // Never finished: still refused once over the limit.
        format!("GET /stream HTTP/1.1\r\nHost: x\r\n{pad}").into_bytes(),
    ] {
        let mut connection = Connection::open(&server).await;
        connection.send(&head).await;
        let response = connection.response().await;
        assert_eq!(response.status, 431);
        assert!(connection.closes_within(WITHIN).await);
    }
    // Just under the limit is still a stream.
    let mut connection = Connection::open(&server).await;
    let pad = format!("X-Pad: {}\r\n", "a".repeat(15_000));
    connection
        .send(&get(
            &format!("/orders/{}/stream", uuid::Uuid::new_v4()),
            &pad,
        ))
        .await;
    assert_eq!(connection.response_head().await.status, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_while_a_reading_one_gets_every_event() {
    let server = strict_server(|_| {}).await;
    // A stream of every order, with the smallest receive buffer, never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stuck = socket
        .connect(addr(&server).parse().unwrap())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stuck, &get("/stream", ""))
        .await
        .unwrap();
    let mut reader = SseReader::open(&server.url("/stream"), None).await;
    assert_eq!(reader.response_status, 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&server.base, "order_tracking_open_streams").await < 2.0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Publish until the stuck stream is gone (its socket fills, its write stalls past the
    // bound); at most 20,000 orders.
    let mut created = Vec::new();
    while metric(&server.base, "order_tracking_open_streams").await > 1.0 {
        assert!(created.len() < 20_000, "the stuck stream was never dropped");
        let batch = futures::future::join_all((0..50).map(|_| create_order(&server.base))).await;
        created.extend(batch);
    }
    assert!(
        labelled(&server, "order_tracking_timeouts_total{bound=\"write\"}").await
            + metric(
                &server.base,
                "order_tracking_slow_subscribers_dropped_total"
            )
            .await
            >= 1.0
    );
    // The reading subscriber got every event, in id order, none twice.
    let mut seen = Vec::new();
    while seen.len() < created.len() {
        let event = reader.next_event().await.unwrap();
        seen.push(event.id().unwrap().parse::<i64>().unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    drop(stuck);
}

#[tokio::test]
async fn one_address_at_its_share_gets_429_while_another_is_still_served() {
    let server = TestServer::start_with(|config| {
        config.limits.max_streams_per_client = Some(2);
    })
    .await;
    let id = uuid::Uuid::new_v4();
    let stream = format!("/orders/{id}/stream");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut connection = Connection::from("127.0.0.1", addr(&server)).await;
        connection.send(&get(&stream, "")).await;
        assert_eq!(connection.response_head().await.status, 200);
        held.push(connection);
    }
    // The third, on either path (HTTP/1.0 goes through hyper).
    for head in [
        get(&stream, ""),
        format!("GET {stream} HTTP/1.0\r\n\r\n").into_bytes(),
    ] {
        let mut third = Connection::from("127.0.0.1", addr(&server)).await;
        third.send(&head).await;
        let refused = third.response().await;
        assert_eq!(refused.status, 429);
        assert_eq!(refused.header("retry-after"), Some("5"));
        let body: Value = serde_json::from_slice(&refused.body).unwrap();
        assert_eq!(body["error"], "too_many_client_streams");
    }
    // Another address is served.
    let mut other = Connection::from("127.0.0.2", addr(&server)).await;
    other.send(&get(&stream, "")).await;
    assert_eq!(other.response_head().await.status, 200);
    // A stream given back is a slot free again.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = Connection::from("127.0.0.1", addr(&server)).await;
        again.send(&get(&stream, "")).await;
        if again.response_head().await.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        labelled(
            &server,
            "order_tracking_refused_total{reason=\"client_streams\"}"
        )
        .await
            >= 2.0
    );
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_from_a_trusted_proxy() {
    let server = TestServer::start_with(|config| {
        config.limits.max_streams_per_client = Some(1);
        config.limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let stream = format!("/orders/{}/stream", uuid::Uuid::new_v4());
    let open = |local: &'static str, forwarded: &'static str| {
        let stream = stream.clone();
        let addr = addr(&server).to_owned();
        async move {
            let mut connection = Connection::from(local, &addr).await;
            connection
                .send(&get(&stream, &format!("X-Forwarded-For: {forwarded}\r\n")))
                .await;
            let status = connection.response_head().await.status;
            (status, connection)
        }
    };
    // Through the trusted proxy, each forwarded client has its own share.
    let (a, _a) = open("127.0.0.1", "203.0.113.1").await;
    let (b, _b) = open("127.0.0.1", "203.0.113.2").await;
    let (a_again, _) = open("127.0.0.1", "198.51.100.9, 203.0.113.1").await;
    assert_eq!((a, b, a_again), (200, 200, 429));
    // From anyone else the header is not believed: the peer is the client.
    let (c, _c) = open("127.0.0.3", "203.0.113.7").await;
    let (c_again, _) = open("127.0.0.3", "203.0.113.8").await;
    assert_eq!((c, c_again), (200, 429));
}

#[tokio::test]
async fn every_close_in_any_connection_line_closes_and_host_must_be_exactly_one() {
    let server = TestServer::start().await;
    let id = create_order(&server.base).await;
    deliver(&server.base, &id).await;
    let last = event_ids(&server.base, &id).await[5];
    let resumed = format!("Last-Event-ID: {last}\r\n");
    let stream = format!("/orders/{id}/stream");

    let mut connection = Connection::open(&server).await;
    connection
        .send(&get(
            &stream,
            &format!("{resumed}Connection: keep-alive\r\nConnection: close\r\n"),
        ))
        .await;
    assert_eq!(connection.response().await.status, 204);
    assert!(connection.closes_within(WITHIN).await);

    for head in [
        format!("GET {stream} HTTP/1.1\r\n{resumed}\r\n"),
        format!("GET {stream} HTTP/1.1\r\nHost: a\r\nHost: b\r\n{resumed}\r\n"),
        "POST /api/orders HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_owned(),
    ] {
        let mut connection = Connection::open(&server).await;
        connection.send(head.as_bytes()).await;
        let response = connection.response().await;
        assert_eq!(response.status, 400, "{head}");
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["error"], "bad_request", "{head}");
    }
    // HTTP/1.0 may leave it out.
    let mut old = Connection::open(&server).await;
    old.send(format!("GET {stream} HTTP/1.0\r\n{resumed}\r\n").as_bytes())
        .await;
    assert_eq!(old.response_head().await.status, 204);
}

#[tokio::test]
async fn a_token_is_never_taken_from_the_query_and_its_scheme_is_any_case() {
    let server = TestServer::start_with(|config| config.admin_token = Some("s3cret".into())).await;
    for (path, authorization, status) in [
        ("/stream?access_token=s3cret", "", 401),
        ("/stream?token=s3cret", "", 401),
        ("/stream", "Authorization: bearer s3cret\r\n", 200),
        ("/stream", "Authorization: BEARER s3cret\r\n", 200),
        ("/stream", "Authorization: Bearer s3cre\r\n", 401),
        ("/stream", "Authorization: Bearer s3crets3cret\r\n", 401),
    ] {
        // Both paths: direct, then through hyper (absolute-form).
        for target in [path.to_owned(), format!("http://x{path}")] {
            let mut connection = Connection::open(&server).await;
            connection
                .send(format!("GET {target} HTTP/1.1\r\nHost: x\r\n{authorization}\r\n").as_bytes())
                .await;
            assert_eq!(
                connection.response_head().await.status,
                status,
                "{target} {authorization}"
            );
        }
    }
    let listed = client()
        .get(server.url("/api/orders"))
        .header("authorization", "bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
}

/// The real binary's exit and what it wrote, started with `env` (and a fresh database).
fn refused_start(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_order-tracking"));
    command
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/o.db", dir.path().display()),
        )
        .env("LEPTOS_SITE_ADDR", free_addr().to_string())
        .stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "started with {env:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn an_empty_or_blank_token_or_setting_refuses_to_start_with_a_sentence_naming_it() {
    for blank in ["", "  ", "\t"] {
        let said = refused_start(&[("ADMIN_TOKEN", blank)]);
        assert!(said.contains("ADMIN_TOKEN is set but empty"), "{said}");
    }
    let said = refused_start(&[("MAX_STREAMS", "")]);
    assert!(said.contains("MAX_STREAMS"), "{said}");
    let said = refused_start(&[("ADMIN_TOKEN_FILE", "/no/such/tokens")]);
    assert!(
        said.contains("cannot read ADMIN_TOKEN_FILE (/no/such/tokens)"),
        "{said}"
    );
    let said = refused_start(&[("TRUSTED_PROXIES", "10.0.0.0/8,nginx")]);
    assert!(said.contains("`nginx` is not an address"), "{said}");
    let said = refused_start(&[("MAX_CONNECTIONS", "100000000")]);
    assert!(
        said.contains("MAX_CONNECTIONS=100000000 is more than"),
        "{said}"
    );
}

async fn status_with(base: &str, token: &str) -> u16 {
    client()
        .post(format!("{base}/api/orders"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_token_file_is_rotated_by_sighup_while_a_stream_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "first-token\nsecond-token\n").unwrap();
    let url = format!("sqlite://{}/o.db", dir.path().display());
    let server = Process::spawn(
        &url,
        free_addr(),
        &[("ADMIN_TOKEN_FILE", tokens.to_str().unwrap())],
    )
    .await;
    assert_eq!(status_with(&server.base, "first-token").await, 201);
    assert_eq!(status_with(&server.base, "second-token").await, 201);
    assert_eq!(status_with(&server.base, "third-token").await, 401);

    // Every order's stream needs a token: opened with the first.
    let mut request = client().get(format!("{}/stream", server.base));
    request = request.bearer_auth("first-token");
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();

    // Rotated: written anew (as a secrets mount replaces it), then SIGHUP.
    let replacement = dir.path().join("tokens.new");
    std::fs::write(&replacement, "third-token\n").unwrap();
    std::fs::rename(&replacement, &tokens).unwrap();
    server.signal("HUP");
    let deadline = tokio::time::Instant::now() + WAIT;
    while status_with(&server.base, "third-token").await != 201 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new token was not taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_with(&server.base, "first-token").await, 401);
    assert_eq!(status_with(&server.base, "second-token").await, 401);

    // The stream opened with the old token is still open and still delivers: the three
    // orders created, the last with the new token.
    use futures::StreamExt;
    let mut seen = String::new();
    while seen.matches("\"status\":\"Created\"").count() < 3 {
        let chunk = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the open stream went quiet")
            .expect("the open stream ended")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_flood_of_silent_connections_from_one_address_leaves_others_served() {
    // The binary with a low descriptor limit, as a small container would give it.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/o.db", dir.path().display());
    let addr = free_addr();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_order-tracking"));
    command
        .env("DATABASE_URL", &url)
        .env("LEPTOS_SITE_ADDR", addr.to_string())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches only the child's limit.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().unwrap();
    let base = format!("http://{addr}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 400 silent connections from 127.0.0.1: more than the process has descriptors.
    let mut flood = Vec::new();
    for _ in 0..400 {
        flood.push(Connection::from("127.0.0.1", &addr.to_string()).await);
    }
    // Another address is served at once, pages and streams alike.
    let mut other = Connection::from("127.0.0.2", &addr.to_string()).await;
    other.send(&get("/healthz", "")).await;
    assert_eq!(other.response().await.status, 200);
    let mut stream = Connection::from("127.0.0.2", &addr.to_string()).await;
    stream
        .send(&get(
            &format!("/orders/{}/stream", uuid::Uuid::new_v4()),
            "",
        ))
        .await;
    assert_eq!(stream.response_head().await.status, 200);
    // The flood's share was held; the rest were closed at once.
    let mut closed = 0;
    for connection in &mut flood {
        if connection.closes_within(Duration::from_millis(5)).await {
            closed += 1;
        }
    }
    assert!(closed >= 300, "only {closed} of the flood were closed");
    let mut metrics = Connection::from("127.0.0.3", &addr.to_string()).await;
    metrics.send(&get("/metrics", "")).await;
    let text = String::from_utf8(metrics.response().await.body).unwrap();
    assert!(
        text.contains("order_tracking_refused_total{reason=\"client_connections\"}"),
        "{text}"
    );
    drop(flood);
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!log.contains("cannot accept"), "{log}");
}

/// What a connection answered to one head: its statuses, the event ids in its bodies, and
/// whether it was still open afterwards.
#[derive(Debug, PartialEq)]
struct Answered {
    statuses: Vec<u16>,
    ids: Vec<Vec<String>>,
    says_close: Vec<bool>,
    kept_open: bool,
}

/// Sends `head` on a fresh connection, reads `responses` answers, then asks for `/healthz`
/// (in `form`) to see whether the connection is still open.
async fn answered(server: &TestServer, head: &[u8], responses: usize, healthz: &str) -> Answered {
    let mut connection = Connection::open(server).await;
    connection.send(head).await;
    let mut answered = Answered {
        statuses: Vec::new(),
        ids: Vec::new(),
        says_close: Vec::new(),
        kept_open: false,
    };
    for _ in 0..responses {
        let response = connection.response().await;
        answered.statuses.push(response.status);
        answered
            .says_close
            .push(response.header("connection") == Some("close"));
        answered.ids.push(
            String::from_utf8_lossy(&response.body)
                .lines()
                .filter_map(|line| line.strip_prefix("id: "))
                .map(str::to_owned)
                .collect(),
        );
    }
    let _ = connection.socket.try_write(healthz.as_bytes());
    loop {
        if let Some(end) = connection.read.windows(4).position(|w| w == b"\r\n\r\n") {
            answered.kept_open = connection.read[..end].starts_with(b"HTTP/1.1 200");
            break;
        }
        if !connection.fill().await {
            break;
        }
    }
    answered
}

#[tokio::test]
async fn the_direct_path_and_hyper_answer_every_head_of_the_corpus_alike() {
    let server = TestServer::start().await;
    let id = create_order(&server.base).await;
    deliver(&server.base, &id).await;
    let ids = event_ids(&server.base, &id).await;
    let (second, last) = (ids[1], ids[5]);
    let uuid: uuid::Uuid = id.parse().unwrap();
    let simple = uuid.simple().to_string();
    let encoded = id.replacen('-', "%2D", 1);
    // (target, headers and body, responses expected). Every head is sent twice: in
    // origin-form (`GET /…`: the direct path when it is a stream request) and in absolute
    // form (`GET http://x/…`: always hyper).
    let corpus: Vec<(String, String, usize)> = vec![
        (format!("/orders/{id}/stream"), String::new(), 1),
        (
            format!("/orders/{}/stream", id.to_uppercase()),
            String::new(),
            1,
        ),
        (format!("/orders/{simple}/stream"), String::new(), 1),
        (format!("/orders/%7B{id}%7D/stream"), String::new(), 1),
        (format!("/orders/urn:uuid:{id}/stream"), String::new(), 1),
        (format!("/orders/{encoded}/stream"), String::new(), 1),
        (
            format!("/orders/{id}/stream?last_event_id={second}#x"),
            String::new(),
            1,
        ),
        (
            format!("/orders/{id}/stream#last_event_id={second}"),
            String::new(),
            1,
        ),
        (format!("/stream?order={id}#x"), String::new(), 1),
        (format!("/stream?order={id}&x=<"), String::new(), 1),
        (
            format!("/stream?order={id}&last_event_id={second}"),
            String::new(),
            1,
        ),
        ("/orders/nope/stream".into(), String::new(), 1),
        ("/orders/%FF/stream".into(), String::new(), 1),
        (format!("/orders/{id}/stream/"), String::new(), 1),
        (
            format!("/orders/{id}/stream"),
            format!("Last-Event-ID: {last}\r\n"),
            1,
        ),
        (
            format!("/orders/{id}/stream"),
            format!("Last-Event-ID: {last}\r\nConnection: keep-alive\r\nConnection: close\r\n"),
            1,
        ),
        (
            format!("/orders/{id}/stream"),
            format!("Last-Event-ID: {last}\r\nConnection: Keep-Alive, CLOSE\r\n"),
            1,
        ),
        (
            format!("/orders/{id}/stream"),
            "Last-Event-ID: nope\r\n".into(),
            1,
        ),
        (format!("/orders/{id}/stream"), "Host: other\r\n".into(), 1),
        (
            format!("/orders/{id}/stream"),
            "Content-Length: 0\r\n".into(),
            1,
        ),
        (
            format!("/orders/{id}/stream"),
            "Transfer-Encoding: chunked\r\n\r\n0\r\n".into(),
            1,
        ),
        (
            format!("/orders/{id}/stream"),
            "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".into(),
            1,
        ),
        (
            format!("/orders/{id}/stream"),
            "Content-Length: 0\r\nContent-Length: 0\r\n".into(),
            1,
        ),
        (
            format!("/orders/{id}/stream"),
            "X-Odd : value\r\n".into(),
            1,
        ),
        (
            format!("/orders/{id}/stream"),
            "X-Folded: a\r\n b\r\n".into(),
            1,
        ),
        (
            format!("/stream?order={id}"),
            "Authorization: bearer anything\r\n".into(),
            1,
        ),
    ];
    for (target, extra, responses) in corpus {
        let mut results = Vec::new();
        for form in ["", "http://x"] {
            let head = format!("GET {form}{target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
            let healthz = format!("GET {form}/healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            results.push(answered(&server, head.as_bytes(), responses, &healthz).await);
        }
        assert_eq!(results[0], results[1], "{target} {extra:?}");
    }

    // Heads that differ in their first line or in Host, and pipelined requests.
    let resume = format!("Last-Event-ID: {last}\r\n");
    for (origin, absolute, responses) in [
        (
            format!("GET /orders/{id}/stream HTTP/1.1\r\n{resume}\r\n"),
            format!("GET http://x/orders/{id}/stream HTTP/1.1\r\n{resume}\r\n"),
            1,
        ),
        (
            format!("GET /orders/{id}/stream HTTP/1.1\r\nHost: a\r\nHost: b\r\n{resume}\r\n"),
            format!(
                "GET http://x/orders/{id}/stream HTTP/1.1\r\nHost: a\r\nHost: b\r\n{resume}\r\n"
            ),
            1,
        ),
        (
            format!("GET /orders/{id}/stream HTTP/1.0\r\n{resume}\r\n"),
            format!("GET http://x/orders/{id}/stream HTTP/1.0\r\n{resume}\r\n"),
            1,
        ),
        (
            format!(
                "GET /orders/{id}/stream HTTP/1.1\r\nHost: x\r\n{resume}\r\n\
                 GET /orders/nope/stream HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET /orders/{id}/stream HTTP/1.1\r\nHost: x\r\n\r\n"
            ),
            format!(
                "GET http://x/orders/{id}/stream HTTP/1.1\r\nHost: x\r\n{resume}\r\n\
                 GET http://x/orders/nope/stream HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET http://x/orders/{id}/stream HTTP/1.1\r\nHost: x\r\n\r\n"
            ),
            3,
        ),
    ] {
        let direct = answered(
            &server,
            origin.as_bytes(),
            responses,
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        let hyper = answered(
            &server,
            absolute.as_bytes(),
            responses,
            "GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        assert_eq!(direct, hyper, "{origin:?}");
    }
}
