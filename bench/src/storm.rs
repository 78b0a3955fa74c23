//! `sse-bench --storm` (issue 20): the reconnect storm. Three instances on Postgres and
//! Redis hold 30,000 streams, a third each; the first is killed (`kill -9`) and its clients
//! come back on the other two, as through a proxy that skips a dead upstream. It reports how
//! long until every one is live again, and the peak connect rate, for clients that all wait
//! the same 3,000 ms (the fixed `retry` before spec §13) and for clients that honour each
//! stream's drawn `retry` (3,000 to 6,000 ms).
//!
//! One process may hold 20,000 descriptors here, so the clients run in worker processes
//! (this binary again, `--storm-worker`), each from its own loopback address.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::servers::Server;
use crate::wire::Conn;

/// Client worker processes (15,000 streams each for 30,000).
const WORKERS: usize = 2;
/// Orders the streams are spread over (none of them moves: only connections are measured).
const ORDERS: usize = 300;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// What one storm measured.
pub struct Storm {
    pub label: &'static str,
    pub streams: usize,
    pub cut_off: usize,
    pub back: usize,
    /// From the kill to the last of them live again, in seconds.
    pub all_back_s: f64,
    /// The most reconnections in any 100 ms, as a rate per second.
    pub peak_per_s: f64,
    /// The most in any one second.
    pub peak_second: usize,
}

/// Both storms, before and after the jitter.
pub async fn run(binary: &Path, site_root: &Path, streams: usize) -> Vec<Storm> {
    let mut out = Vec::new();
    for (label, fixed) in [
        ("before: every client waits 3,000 ms", true),
        ("after: each stream's retry, 3,000-6,000 ms", false),
    ] {
        out.push(storm(binary, site_root, streams, fixed, label).await);
    }
    out
}

async fn storm(
    binary: &Path,
    site_root: &Path,
    streams: usize,
    fixed: bool,
    label: &'static str,
) -> Storm {
    let mut server = Server::start_ours_postgres_with(binary, site_root, 3, &[]).await;
    let mut conn = Conn::new(server.addr);
    let mut orders = Vec::new();
    for _ in 0..ORDERS {
        orders.push(server.new_channel(&mut conn).await);
    }
    let addrs: Vec<String> = server.instances().iter().map(|a| a.to_string()).collect();
    let exe = std::env::current_exe().expect("this binary");
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let mut command = tokio::process::Command::new(&exe);
        command
            .arg("--storm-worker")
            .args(["--storm-addrs", &addrs.join(",")])
            .args(["--storm-orders", &orders.join(",")])
            .args(["--storm-streams", &(streams / WORKERS).to_string()])
            .args(["--storm-source", &format!("127.0.2.{}", 10 + w)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if fixed {
            command.arg("--storm-fixed-retry");
        }
        workers.push(command.spawn().expect("a storm worker"));
    }
    // Each worker says `ready <streams on the first instance>` once all its streams are open,
    // then `back <unix ms>` for each of them live again after the kill.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for worker in &mut workers {
        let stdout = worker.stdout.take().expect("piped");
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    let mut ready = 0;
    let mut cut_off = 0;
    while ready < WORKERS {
        let line = tokio::time::timeout(Duration::from_secs(180), rx.recv())
            .await
            .expect("the workers connect within 3 minutes")
            .expect("a worker's line");
        if let Some(n) = line.strip_prefix("ready ") {
            ready += 1;
            cut_off += n.parse::<usize>().unwrap_or(0);
        }
    }
    eprintln!("[storm] {streams} streams open ({cut_off} on the first instance); kill -9 of it");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = unix_ms();
    server.kill_first();
    let mut back = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while back.len() < cut_off {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => {
                if let Some(ms) = line
                    .strip_prefix("back ")
                    .and_then(|ms| ms.parse::<u64>().ok())
                {
                    back.push(ms.saturating_sub(killed_at));
                }
            }
            _ => break,
        }
    }
    for worker in &mut workers {
        let _ = worker.kill().await;
    }
    back.sort_unstable();
    let peak = |width: u64| {
        let mut most = 0;
        let mut start = 0;
        for end in 0..back.len() {
            while back[end] - back[start] >= width {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    };
    let storm = Storm {
        label,
        streams,
        cut_off,
        back: back.len(),
        all_back_s: back.last().copied().unwrap_or(0) as f64 / 1000.0,
        peak_per_s: peak(100) as f64 * 10.0,
        peak_second: peak(1000),
    };
    eprintln!(
        "[storm] {label}: {} of {} back, the last after {:.2} s; peak {:.0}/s over 100 ms, {} in one second",
        storm.back, storm.cut_off, storm.all_back_s, storm.peak_per_s, storm.peak_second
    );
    storm
}

pub fn table(storms: &[Storm]) -> String {
    let mut out = String::from(
        "| clients | streams | cut off | back | all live again after | peak connects (100 ms window) | most in one second |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for s in storms {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} s | {:.0}/s | {} |\n",
            s.label, s.streams, s.cut_off, s.back, s.all_back_s, s.peak_per_s, s.peak_second
        ));
    }
    out
}

/// The worker's side: `streams` streams over `addrs`, round robin, from `source`. When one
/// ends it waits its retry (the stream's own, or 3,000 ms with `fixed`), then connects to
/// the next instance that answers, as a proxy would.
pub async fn worker(
    addrs: Vec<SocketAddr>,
    orders: Vec<String>,
    streams: usize,
    source: Ipv4Addr,
    fixed: bool,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let mut on_first = 0;
    for n in 0..streams {
        let first = n % addrs.len();
        on_first += usize::from(first == 0);
        let (addrs, path, tx) = (
            addrs.clone(),
            format!("/orders/{}/stream", orders[n % orders.len()]),
            tx.clone(),
        );
        tokio::spawn(async move {
            let mut at = first;
            let mut connected_once = false;
            loop {
                match open(addrs[at], &path, source).await {
                    Ok((mut stream, retry)) => {
                        let _ = tx.send(connected_once.then(unix_ms));
                        connected_once = true;
                        let mut buf = [0u8; 256];
                        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                        let wait = if fixed { 3000 } else { retry };
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    // Refused: the proxy tries the next upstream at once.
                    Err(_) => at = (at + 1) % addrs.len(),
                }
            }
        });
        if n % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(tx);
    let mut open_count = 0;
    let mut stdout = std::io::stdout();
    while let Some(event) = rx.recv().await {
        let line = match event {
            None => {
                open_count += 1;
                if open_count < streams {
                    continue;
                }
                format!("ready {on_first}\n")
            }
            Some(ms) => format!("back {ms}\n"),
        };
        let _ = std::io::Write::write_all(&mut stdout, line.as_bytes());
        let _ = std::io::Write::flush(&mut stdout);
    }
}

/// Opens one stream; its `retry` once the head and first frame are read.
async fn open(addr: SocketAddr, path: &str, source: Ipv4Addr) -> std::io::Result<(TcpStream, u64)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let mut stream = socket.connect(addr).await?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: storm\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if !text.starts_with("HTTP/1.1 200") && text.len() >= 12 {
            return Err(std::io::ErrorKind::Other.into());
        }
        if let Some(at) = text.find("retry: ") {
            if let Some(ms) = text[at + 7..]
                .split('\n')
                .next()
                .filter(|_| text[at..].contains('\n'))
            {
                return Ok((stream, ms.trim().parse().unwrap_or(3000)));
            }
        }
    }
}
