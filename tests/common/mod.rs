//! Test harness: the real server (its accept loop and router) on a bound socket, or the real
//! binary as a process, with a throw-away database; a small SSE reader over a streaming response.
#![allow(dead_code)]

pub mod raw;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use leptos::prelude::LeptosOptions;
use order_tracking::server::config::Config;
use order_tracking::server::serve::serve;
use order_tracking::server::AppState;
use serde_json::Value;
use tempfile::TempDir;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn config(database_url: String) -> Config {
    Config {
        site_addr: None,
        log_filter: "warn".into(),
        database_url,
        admin_token: None,
        admin_token_file: None,
        redis_url: None,
        max_streams: 10_000,
        keepalive_secs: 15,
        policy: Default::default(),
        limits: Default::default(),
        retention: Default::default(),
    }
}

/// The app's state on a fresh database (kept as long as the returned directory).
pub async fn test_state(adjust: impl FnOnce(&mut Config)) -> (TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(format!("sqlite://{}/orders.db", dir.path().display()));
    adjust(&mut config);
    let options = LeptosOptions::builder()
        .output_name("order-tracking")
        .build();
    let state = AppState::open(options, config).await.unwrap();
    (dir, state)
}

/// The app served in-process on 127.0.0.1 with a fresh database.
pub struct TestServer {
    pub base: String,
    pub state: AppState,
    _dir: TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let (dir, state) = test_state(adjust).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, state.clone()));
        Self {
            base: format!("http://{addr}"),
            state,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Creates an order through the API and returns its id.
pub async fn create_order(base: &str) -> String {
    let response = client()
        .post(format!("{base}/api/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    order["id"].as_str().unwrap().to_owned()
}

/// `POST /orders/{id}/simulate?{query}`: the answer's status code.
async fn simulate(base: &str, id: &str, query: &str) -> u16 {
    client()
        .post(format!("{base}/orders/{id}/simulate?{query}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Starts a simulation of the order, `interval_ms` between statuses; it answers `202` at once.
pub async fn start_simulation(base: &str, id: &str, interval_ms: u64) {
    let query = format!("interval_ms={interval_ms}");
    assert_eq!(simulate(base, id, &query).await, 202);
}

/// Runs a whole simulation with no pause and waits for it.
pub async fn deliver(base: &str, id: &str) {
    assert_eq!(simulate(base, id, "interval_ms=0&wait=true").await, 200);
}

/// A figure of `/metrics`.
pub async fn metric(base: &str, name: &str) -> f64 {
    metric_if_counted(base, name)
        .await
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// A figure of `/metrics` (a labelled one included, as `name{label="value"}`), if it has
/// been counted yet.
pub async fn metric_if_counted(base: &str, name: &str) -> Option<f64> {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .map(|value| value.parse().unwrap())
}

/// Publishes `status` for the order through the API; whether the server stored it.
pub async fn publish(base: &str, id: &str, status: &str) -> bool {
    post_status(base, id, status).await.0 == 200
}

/// `POST /api/orders/{id}/status` with `status`: the answer's status code and JSON body.
pub async fn post_status(base: &str, id: &str, status: &str) -> (u16, Value) {
    let response = client()
        .post(format!("{base}/api/orders/{id}/status"))
        .json(&serde_json::json!({ "status": status }))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or(Value::Null))
}

/// The ids of an order's events, oldest first, through the API.
pub async fn event_ids(base: &str, id: &str) -> Vec<i64> {
    order_json(base, id).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

pub async fn order_json(base: &str, id: &str) -> Value {
    client()
        .get(format!("{base}/api/orders/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One SSE frame as read off the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Retry(String),
    KeepAlive,
    /// `event: reset`, with its data (spec §12).
    Reset(Value),
    Event {
        id: String,
        event: String,
        data: Value,
    },
}

impl Frame {
    pub fn status(&self) -> Option<String> {
        match self {
            Frame::Event { data, .. } => data["status"].as_str().map(str::to_owned),
            _ => None,
        }
    }
    pub fn id(&self) -> Option<String> {
        match self {
            Frame::Event { id, .. } => Some(id.clone()),
            _ => None,
        }
    }
}

/// Reads a `text/event-stream` body frame by frame, keeping the raw bytes too.
pub struct SseReader {
    pub response_status: u16,
    pub headers: reqwest::header::HeaderMap,
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: BytesMut,
    pub raw: Vec<u8>,
    pub ended: bool,
    /// Ended by a broken connection rather than the end of the response.
    pub broken: bool,
}

impl SseReader {
    pub async fn open(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = client().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        Self {
            response_status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: Box::pin(response.bytes_stream()),
            buffer: BytesMut::new(),
            raw: Vec::new(),
            ended: false,
            broken: false,
        }
    }

    /// The next whole frame; `None` once the response has ended.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame = self.buffer.split_to(end + 2);
                return Some(parse_frame(std::str::from_utf8(&frame[..end]).unwrap()));
            }
            if self.ended {
                assert!(
                    self.broken || self.buffer.is_empty(),
                    "trailing bytes: {:?}",
                    self.buffer
                );
                return None;
            }
            match tokio::time::timeout(WAIT, self.body.next()).await {
                Err(_) => panic!(
                    "no frame within {WAIT:?}; so far: {}",
                    String::from_utf8_lossy(&self.raw)
                ),
                Ok(Some(Ok(chunk))) => {
                    self.raw.extend_from_slice(&chunk);
                    self.buffer.extend_from_slice(&chunk);
                }
                // The connection broke (the server was killed): a half frame is not an event.
                Ok(Some(Err(_))) => {
                    self.ended = true;
                    self.broken = true;
                }
                Ok(None) => self.ended = true,
            }
        }
    }

    /// The next frame that is an event (keep-alives skipped).
    pub async fn next_event(&mut self) -> Option<Frame> {
        loop {
            match self.next_frame().await? {
                Frame::KeepAlive | Frame::Retry(_) => continue,
                event => return Some(event),
            }
        }
    }

    /// Every event until the response ends.
    pub async fn events_to_end(&mut self) -> Vec<Frame> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event().await {
            events.push(event);
        }
        events
    }
}

fn parse_frame(text: &str) -> Frame {
    if text == ": keep-alive" {
        return Frame::KeepAlive;
    }
    if let Some(retry) = text.strip_prefix("retry: ") {
        return Frame::Retry(retry.to_owned());
    }
    if let Some(data) = text.strip_prefix("event: reset\ndata: ") {
        return Frame::Reset(serde_json::from_str(data).unwrap());
    }
    let mut lines = text.split('\n');
    let id = lines
        .next()
        .unwrap()
        .strip_prefix("id: ")
        .unwrap()
        .to_owned();
    let event = lines
        .next()
        .unwrap()
        .strip_prefix("event: ")
        .unwrap()
        .to_owned();
    let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
    assert!(lines.next().is_none(), "unexpected lines in {text:?}");
    Frame::Event {
        id,
        event,
        data: serde_json::from_str(data).unwrap(),
    }
}

pub fn statuses(frames: &[Frame]) -> Vec<String> {
    frames.iter().filter_map(Frame::status).collect()
}

/// The frames are the six statuses, each once, with increasing ids; returns the ids.
pub fn assert_every_status_once_in_id_order(frames: &[Frame]) -> Vec<i64> {
    assert_eq!(statuses(frames), ALL);
    let ids: Vec<i64> = frames
        .iter()
        .map(|f| f.id().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    ids
}

pub const ALL: [&str; 6] = [
    "Created",
    "PaymentConfirmed",
    "Packed",
    "Shipped",
    "OutForDelivery",
    "Delivered",
];

/// The real server binary on a free port, with its own database file.
pub struct Process {
    pub child: Child,
    pub base: String,
    pub addr: SocketAddr,
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Process {
    pub async fn spawn(database_url: &str, addr: SocketAddr, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_order-tracking"));
        command
            .env("DATABASE_URL", database_url)
            .env("LEPTOS_SITE_ADDR", addr.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        let process = Self {
            child,
            base: format!("http://{addr}"),
            addr,
        };
        process.wait_ready().await;
        process
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(response) = client().get(format!("{}/healthz", self.base)).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns how long it took.
    pub async fn wait_exit(&mut self, limit: Duration) -> Duration {
        let started = std::time::Instant::now();
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "server still running after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database of its own on the Postgres server the `PG*` variables name (as `pg_virtualenv`
/// sets them; `make test` runs the tests inside one). Returns its URL.
pub async fn postgres_database() -> String {
    order_tracking::server::store::scratch::postgres_database()
        .await
        .unwrap()
}

/// Debian's `redis-server` on a free loopback port, with no persistence; stopped when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_addr().port(),
            child: None,
        };
        redis.resume().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (as a crash would: SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and waits until it accepts connections.
    pub async fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; make test installs it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay in front of a server that a test can cut, as if the server were stopped:
/// while cut it refuses new connections and has dropped every open one.
pub struct Relay {
    pub port: u16,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Relay {
    /// A relay on `port` to `target`.
    pub async fn start_on(target: SocketAddr, port: u16) -> Self {
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut = std::sync::Arc::new(cut);
        let relay = Self {
            port,
            cut: cut.clone(),
        };
        tokio::spawn(async move {
            let mut open = cut.subscribe();
            loop {
                // Listening only while not cut, so connections are refused meanwhile.
                while *open.borrow() {
                    open.changed().await.unwrap();
                }
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap();
                loop {
                    tokio::select! {
                        _ = open.changed() => if *open.borrow() { break },
                        accepted = listener.accept() => {
                            let Ok((mut client, _)) = accepted else { continue };
                            let mut cut = cut.subscribe();
                            tokio::spawn(async move {
                                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                                    return;
                                };
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                    _ = cut.wait_for(|cut| *cut) => {}
                                }
                            });
                        }
                    }
                }
            }
        });
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relay did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        relay
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Where a `postgres://` URL points, and the same URL through `relay_port` instead.
pub fn postgres_via(url: &str, relay_port: u16) -> (SocketAddr, String) {
    let (head, rest) = url.rsplit_once('@').unwrap();
    let (host_port, database) = rest.split_once('/').unwrap();
    let (host, port) = host_port.rsplit_once(':').unwrap();
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let target: SocketAddr = format!("{host}:{port}").parse().unwrap();
    (target, format!("{head}@127.0.0.1:{relay_port}/{database}"))
}

/// The frame is the stream's first, `retry:` with a delay drawn between 3000 and 6000 ms
/// (spec §13).
pub fn assert_retry(frame: Option<Frame>) {
    match frame {
        Some(Frame::Retry(ms)) => {
            let ms: u64 = ms.parse().unwrap_or_else(|_| panic!("retry: {ms}"));
            assert!((3000..=6000).contains(&ms), "retry: {ms}");
        }
        other => panic!("expected the retry frame, got {other:?}"),
    }
}

/// A stream's body with its `retry` delay blanked: each stream draws its own (spec §13), and
/// the rest must be byte for byte the same.
pub fn same_but_retry(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body).into_owned();
    match text.find("retry: ") {
        Some(at) => {
            let digits = text[at + 7..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            format!("{}retry: ____{}", &text[..at], &text[at + 7 + digits..])
        }
        None => text,
    }
}
