//! Scenario (7): 100,000 subscribers, more than one process may hold here (20,000
//! descriptors). Ours runs six instances on Postgres and Redis, Nchan six workers; the
//! subscribers come from several client processes (this binary again, `--wide-worker`), each
//! from its own loopback address, spread over the instances in turn. Every event is
//! published through the first instance and must reach every subscriber, wherever it is.
//!
//! The clients and the parent share the clock (one machine): a worker stamps each event with
//! the wall-clock time it arrived, the parent tells the workers when it published each one,
//! and the workers answer the latencies.
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, Semaphore};

use crate::servers::Server;
use crate::wire::{Conn, Scanner};

/// Subscribers per client process: well under its 20,000 descriptors.
const PER_WORKER: usize = 15_000;
/// Publisher connections working in parallel, as in (2).
const PUBLISHERS: usize = 8;
/// Subscribers of one worker connecting at the same moment.
const CONNECTING: usize = 128;
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// What (7) measured on one side.
#[derive(Default, Debug, Clone)]
pub struct Wide {
    pub subscribers: usize,
    pub connected: usize,
    pub processes: usize,
    pub losses: usize,
    pub duplicates: usize,
    pub failed_publishes: usize,
    /// Every server process's memory (PSS: shared pages once) per connected subscriber,
    /// connected against before the first subscriber.
    pub memory_per_subscriber_kib: f64,
    pub round_ms: Vec<f64>,
    pub latencies_us: Vec<u32>,
    pub cpu_s: f64,
}

/// A client process and what it has said so far.
struct Worker {
    child: Child,
    stdin: ChildStdin,
}

/// Runs (7) on `server` (its instances all started): `subscribers` over `orders` orders.
pub async fn run(server: &Server, subscribers: usize, orders: usize) -> Wide {
    let mut conn = Conn::new(server.addr);
    let mut names = Vec::with_capacity(orders);
    for _ in 0..orders {
        names.push(server.new_channel(&mut conn).await);
    }
    let paths: Vec<String> = names
        .iter()
        .map(|name| server.subscribe_path(name, false))
        .collect();
    let addrs: Vec<String> = server.instances().iter().map(|a| a.to_string()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let memory_before = server.pss_total_kib();
    let cpu_before = server.cpu_seconds();

    let processes = subscribers.div_ceil(PER_WORKER).max(2);
    let exe = std::env::current_exe().expect("this binary");
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<(usize, String)>();
    let mut workers = Vec::new();
    for w in 0..processes {
        let first = w * subscribers / processes;
        let count = (w + 1) * subscribers / processes - first;
        let mut child = tokio::process::Command::new(&exe)
            .arg("--wide-worker")
            .args(["--wide-addrs", &addrs.join(",")])
            .args(["--wide-paths", &paths.join(",")])
            .args(["--wide-first", &first.to_string()])
            .args(["--wide-count", &count.to_string()])
            .args(["--wide-initial", &server.initial_events().to_string()])
            .args(["--wide-source", &format!("127.0.3.{}", 10 + w)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("a client process");
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take().expect("piped");
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = out.next_line().await {
                let _ = tx.send((w, line));
            }
        });
        workers.push(Worker { child, stdin });
    }
    drop(lines_tx);

    // Each worker says `ready <connected>` once every subscriber of it connected or failed
    // (and, on ours, got its order's first event), then `count <status> <n>` as events come.
    let mut result = Wide {
        subscribers,
        processes,
        ..Wide::default()
    };
    let mut ready = 0;
    let mut counts = vec![[0usize; 6]; processes];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while ready < processes {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some((w, line))) => {
                if let Some(n) = line.strip_prefix("ready ") {
                    ready += 1;
                    result.connected += n.parse::<usize>().unwrap_or(0);
                } else {
                    note_count(&mut counts[w], &line);
                }
            }
            _ => break,
        }
    }
    eprintln!(
        "    (7) {} of {subscribers} connected from {processes} client processes",
        result.connected
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory_connected = server.pss_total_kib();
    result.memory_per_subscriber_kib =
        memory_connected.saturating_sub(memory_before) as f64 / result.connected.max(1) as f64;

    let mut conns: Vec<Conn> = (0..PUBLISHERS.min(orders))
        .map(|_| Conn::new(server.addr))
        .collect();
    let published: Arc<Vec<AtomicU64>> =
        Arc::new((0..orders * 6).map(|_| AtomicU64::new(0)).collect());
    for index in 1..=5 {
        let started = Instant::now();
        result.failed_publishes +=
            publish_round(server, &mut conns, &names, index, &published).await;
        let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
        while counts.iter().map(|c| c[index]).sum::<usize>() < result.connected {
            match tokio::time::timeout_at(deadline, lines.recv()).await {
                Ok(Some((w, line))) => note_count(&mut counts[w], &line),
                _ => break,
            }
        }
        result.round_ms.push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    result.cpu_s = server.cpu_seconds() - cpu_before;
    eprintln!("    (7) rounds (ms): {:.1?}", result.round_ms);

    // The publish times, one line per order, then `end`; each worker answers its latencies
    // (`lat …` lines) and `done <losses> <duplicates>`.
    let mut times = String::new();
    for channel in 0..orders {
        times.push_str(&format!("c {channel}"));
        for index in 1..=5 {
            let at = published[channel * 6 + index].load(Ordering::Relaxed);
            times.push_str(&format!(" {at}"));
        }
        times.push('\n');
    }
    times.push_str("end\n");
    for worker in &mut workers {
        let _ = worker.stdin.write_all(times.as_bytes()).await;
        let _ = worker.stdin.flush().await;
    }
    let mut done = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done < processes {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some((_, line))) => {
                if let Some(list) = line.strip_prefix("lat ") {
                    result
                        .latencies_us
                        .extend(list.split(' ').filter_map(|v| v.parse::<u32>().ok()));
                } else if let Some(rest) = line.strip_prefix("done ") {
                    let mut figures = rest.split(' ').map(|v| v.parse::<usize>().unwrap_or(0));
                    result.losses += figures.next().unwrap_or(0);
                    result.duplicates += figures.next().unwrap_or(0);
                    done += 1;
                }
            }
            _ => break,
        }
    }
    // A worker that never answered lost all it should have had.
    if done < processes {
        result.losses += result.connected * 5 - result.latencies_us.len();
    }
    for worker in &mut workers {
        let _ = worker.child.kill().await;
    }
    result.latencies_us.sort_unstable();
    result
}

fn note_count(counts: &mut [usize; 6], line: &str) {
    let mut parts = line
        .strip_prefix("count ")
        .into_iter()
        .flat_map(|l| l.split(' '));
    if let (Some(Ok(index)), Some(Ok(n))) = (
        parts.next().map(str::parse::<usize>),
        parts.next().map(str::parse::<usize>),
    ) {
        if index < 6 {
            counts[index] = n;
        }
    }
}

/// Publishes status `index` of every order through the first instance, spread over the
/// publisher connections; returns how many failed.
async fn publish_round(
    server: &Server,
    conns: &mut [Conn],
    names: &[String],
    index: usize,
    published: &Arc<Vec<AtomicU64>>,
) -> usize {
    let per = names.len().div_ceil(conns.len());
    let tasks = conns.iter_mut().zip(names.chunks(per).enumerate()).map(
        |(conn, (part, chunk))| async move {
            let mut failed = 0;
            for (offset, name) in chunk.iter().enumerate() {
                published[(part * per + offset) * 6 + index].store(unix_ns(), Ordering::Relaxed);
                if !(200..300).contains(&server.publish(conn, name, index).await) {
                    failed += 1;
                }
            }
            failed
        },
    );
    futures::future::join_all(tasks).await.into_iter().sum()
}

/// What a worker's subscribers share.
struct Seen {
    /// Wall-clock ns (0: not yet) at which subscriber `n` got status `i`, at `n * 6 + i`.
    at: Vec<AtomicU64>,
    /// Whether subscriber `n` connected.
    live: Vec<AtomicBool>,
    received: [AtomicUsize; 6],
    connected: AtomicUsize,
    finished: AtomicUsize,
    duplicates: AtomicUsize,
}

/// The client process: `count` subscribers, the `first`-th of the run onwards, each on
/// order `n % paths` at instance `n % addrs`, from `source`.
pub async fn worker(
    addrs: Vec<SocketAddr>,
    paths: Vec<String>,
    first: usize,
    count: usize,
    initial: usize,
    source: Ipv4Addr,
) {
    let seen = Arc::new(Seen {
        at: (0..count * 6).map(|_| AtomicU64::new(0)).collect(),
        live: (0..count).map(|_| AtomicBool::new(false)).collect(),
        received: Default::default(),
        connected: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        duplicates: AtomicUsize::new(0),
    });
    let gate = Arc::new(Semaphore::new(CONNECTING));
    for local in 0..count {
        let n = first + local;
        let (addr, path) = (addrs[n % addrs.len()], paths[n % paths.len()].clone());
        let (seen, gate) = (seen.clone(), gate.clone());
        tokio::spawn(async move {
            subscriber(addr, &path, source, local, &seen, &gate).await;
            seen.finished.fetch_add(1, Ordering::Release);
        });
    }
    // The reporter: `ready` once, then each status's count when it changes.
    let reporter = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut out = std::io::stdout();
            let mut said_ready = false;
            let mut said = [0usize; 6];
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let connected = seen.connected.load(Ordering::Acquire);
                let settled = seen.finished.load(Ordering::Acquire) + connected >= count
                    && (initial == 0 || seen.received[0].load(Ordering::Acquire) >= connected);
                let mut text = String::new();
                if !said_ready && settled {
                    said_ready = true;
                    text.push_str(&format!("ready {connected}\n"));
                }
                for (index, said) in said.iter_mut().enumerate() {
                    let now = seen.received[index].load(Ordering::Acquire);
                    if now != *said {
                        *said = now;
                        text.push_str(&format!("count {index} {now}\n"));
                    }
                }
                if !text.is_empty() {
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                }
            }
        })
    };
    // The publish times, then the answer.
    let mut published: Vec<[u64; 6]> = vec![[0; 6]; paths.len()];
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = input.next_line().await {
        if line == "end" {
            break;
        }
        let mut parts = line
            .split(' ')
            .skip(1)
            .map(|v| v.parse::<u64>().unwrap_or(0));
        if let Some(channel) = parts.next() {
            if let Some(times) = published.get_mut(channel as usize) {
                for (index, at) in parts.enumerate().take(5) {
                    times[index + 1] = at;
                }
            }
        }
    }
    reporter.abort();
    let mut out = std::io::stdout().lock();
    let mut losses = 0;
    let mut line = String::from("lat");
    for local in 0..count {
        let channel = (first + local) % paths.len();
        if !seen.live[local].load(Ordering::Acquire) {
            continue;
        }
        let stamps = &seen.at[local * 6..local * 6 + 6];
        for (got, sent) in stamps.iter().zip(published[channel]).skip(1) {
            let got = got.load(Ordering::Acquire);
            if got == 0 {
                losses += 1;
                continue;
            }
            let latency = got.saturating_sub(sent) / 1000;
            line.push_str(&format!(" {}", latency.min(u32::MAX as u64)));
        }
        if line.len() > 60_000 {
            let _ = writeln!(out, "{line}");
            line = String::from("lat");
        }
    }
    let _ = writeln!(out, "{line}");
    let _ = writeln!(
        out,
        "done {losses} {}",
        seen.duplicates.load(Ordering::Acquire)
    );
    let _ = out.flush();
}

/// One subscriber: connects (at most [`CONNECTING`] at once), then stamps each status.
async fn subscriber(
    addr: SocketAddr,
    path: &str,
    source: Ipv4Addr,
    local: usize,
    seen: &Seen,
    gate: &Semaphore,
) {
    let permit = gate.acquire().await;
    let Ok(mut stream) = connect(addr, path, source).await else {
        return;
    };
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 2048];
    let body_start = loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
            break end + 4;
        }
    };
    drop(permit);
    if !head.starts_with(b"HTTP/1.1 200") {
        return;
    }
    seen.live[local].store(true, Ordering::Release);
    seen.connected.fetch_add(1, Ordering::AcqRel);
    let mut scanner = Scanner::default();
    let mut done = false;
    let mut on = |data: &[u8], done: &mut bool| {
        scanner.feed(data, |index| {
            let slot = &seen.at[local * 6 + index];
            if slot.load(Ordering::Relaxed) != 0 {
                seen.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            slot.store(unix_ns(), Ordering::Release);
            seen.received[index].fetch_add(1, Ordering::AcqRel);
            *done |= index == 5;
        });
    };
    on(&head[body_start..], &mut done);
    while !done {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => on(&buf[..n], &mut done),
        }
    }
}

async fn connect(
    addr: SocketAddr,
    path: &str,
    source: Ipv4Addr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let mut stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}
