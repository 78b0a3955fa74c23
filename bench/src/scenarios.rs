//! The scenarios, each run the same way against either server.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use crate::servers::{Kind, Server};
use crate::wire::{open_stream, Conn, Scanner, STATUSES};

/// Publisher connections working in parallel.
const PUBLISHERS: usize = 8;
/// Subscribers connecting at the same moment.
const CONNECTING: usize = 256;
const ROUND_TIMEOUT: Duration = Duration::from_secs(20);
const MISSING: u32 = u32::MAX;

/// What all subscribers of a run share: when each event was published, how many got it.
struct Shared {
    base: Instant,
    /// Nanoseconds after `base` (+1, 0 = not yet) at which (channel, status) was published.
    published: Vec<AtomicU64>,
    received: [AtomicUsize; 6],
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// How long each publish request took to be answered (µs): ours answers after the
    /// commit, Nchan after handing the message to its subscribers.
    acks_us: std::sync::Mutex<Vec<u32>>,
}

impl Shared {
    fn new(channels: usize) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            published: (0..channels * 6).map(|_| AtomicU64::new(0)).collect(),
            received: Default::default(),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            acks_us: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Notes a publish request answered `started` ago.
    fn acknowledged(&self, started: Instant) {
        let us = started.elapsed().as_micros().min(u128::from(MISSING - 1)) as u32;
        self.acks_us.lock().unwrap().push(us);
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }
}

/// One subscriber's view: latency in µs of each status (MISSING if never seen).
struct Seen {
    latency_us: [u32; 6],
    /// From starting to connect until the last awaited event (µs).
    done_us: u32,
    duplicates: u32,
}

impl Seen {
    /// A subscriber that never got anywhere (it failed, or did not finish in time).
    fn missing() -> Self {
        Seen {
            latency_us: [MISSING; 6],
            done_us: MISSING,
            duplicates: 0,
        }
    }
}

/// Starts `count` subscribers; `target(n)` gives subscriber `n` its channel and path.
fn spawn_subscribers(
    server: &Server,
    count: usize,
    connecting: usize,
    shared: &Arc<Shared>,
    target: impl Fn(usize) -> (usize, String),
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let gate = Arc::new(Semaphore::new(connecting));
    (0..count)
        .map(|n| {
            let (channel, path) = target(n);
            tokio::spawn(subscriber(
                server.subscribe_addr(n),
                path,
                channel,
                5,
                shared.clone(),
                Some(gate.clone()),
            ))
        })
        .collect()
}

/// What a subscriber task saw, or [`Seen::missing`] if it did not finish within `limit`.
async fn outcome(task: tokio::task::JoinHandle<Seen>, limit: Duration) -> Seen {
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(seen)) => seen,
        _ => Seen::missing(),
    }
}

async fn subscriber(
    server_addr: std::net::SocketAddr,
    path: String,
    channel: usize,
    last: usize,
    shared: Arc<Shared>,
    gate: Option<Arc<Semaphore>>,
) -> Seen {
    let mut seen = Seen::missing();
    let permit = match &gate {
        Some(gate) => Some(gate.clone().acquire_owned().await.unwrap()),
        None => None,
    };
    // From the moment this subscriber starts to connect (not while it queues to).
    let started = Instant::now();
    let (mut stream, status, rest) = match open_stream(server_addr, &path).await {
        Ok(opened) => opened,
        Err(_) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            return seen;
        }
    };
    drop(permit);
    if status != 200 {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        return seen;
    }
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut scanner = Scanner::default();
    let mut buf = [0u8; 2048];
    let mut data = rest;
    let mut finished = false;
    loop {
        scanner.feed(&data, |index| {
            let now = shared.now();
            if seen.latency_us[index] != MISSING {
                seen.duplicates += 1;
                return;
            }
            let published = shared.published[channel * 6 + index].load(Ordering::Acquire);
            seen.latency_us[index] = if published == 0 {
                0
            } else {
                ((now.saturating_sub(published)) / 1000) as u32
            };
            shared.received[index].fetch_add(1, Ordering::Release);
            if index == last {
                seen.done_us = started.elapsed().as_micros() as u32;
                finished = true;
            }
        });
        data.clear();
        if finished {
            return seen;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

async fn wait_for(counter: &AtomicUsize, target: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while counter.load(Ordering::Acquire) < target {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    true
}

async fn channels(server: &Server, count: usize) -> Vec<String> {
    let mut conn = Conn::new(server.addr);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(server.new_channel(&mut conn).await);
    }
    out
}

/// Publishes status `index` to every channel, spread over parallel connections.
async fn publish_all(
    server: &Server,
    conns: &mut [Conn],
    names: &[String],
    index: usize,
    shared: &Arc<Shared>,
) -> usize {
    let per = names.len().div_ceil(conns.len());
    let mut failures = 0;
    let tasks = conns
        .iter_mut()
        .zip(names.chunks(per).enumerate())
        .map(|(conn, (part, chunk))| {
            let shared = shared.clone();
            async move {
                let mut failed = 0;
                for (offset, name) in chunk.iter().enumerate() {
                    let channel = part * per + offset;
                    shared.published[channel * 6 + index].store(shared.now(), Ordering::Release);
                    let started = Instant::now();
                    let status = server.publish(conn, name, index).await;
                    shared.acknowledged(started);
                    if !(200..300).contains(&status) {
                        failed += 1;
                    }
                }
                failed
            }
        });
    for failed in futures::future::join_all(tasks).await {
        failures += failed;
    }
    failures
}

/// Publishes status `index` to every channel, each publisher connection sending its share as
/// one batch; every event of a batch counts as published when the batch is sent.
async fn publish_batches(
    server: &Server,
    conns: &mut [Conn],
    names: &[String],
    index: usize,
    shared: &Arc<Shared>,
) -> usize {
    let per = names.len().div_ceil(conns.len());
    let tasks = conns
        .iter_mut()
        .zip(names.chunks(per).enumerate())
        .map(|(conn, (part, chunk))| {
            let shared = shared.clone();
            async move {
                let now = shared.now();
                for offset in 0..chunk.len() {
                    shared.published[(part * per + offset) * 6 + index]
                        .store(now, Ordering::Release);
                }
                let started = Instant::now();
                let stored = server.publish_batch(conn, chunk, index).await;
                shared.acknowledged(started);
                chunk.len() - stored
            }
        });
    futures::future::join_all(tasks).await.into_iter().sum()
}

#[derive(Default, Debug, Clone)]
pub struct Fanout {
    pub latencies_us: Vec<u32>,
    /// Each publish request's time to its answer (a batch's for (2b)), sorted.
    pub acks_us: Vec<u32>,
    pub round_ms: Vec<f64>,
    pub deliveries_per_s: f64,
    pub losses: usize,
    pub failed_publishes: usize,
    pub failed_subscribers: usize,
    pub duplicates: usize,
    pub cpu_s: f64,
    /// The part of `cpu_s` spent in the rounds, after every subscriber connected.
    pub rounds_cpu_s: f64,
    /// The server's resident memory once every subscriber is connected.
    pub rss_connected_kib: u64,
}

impl Fanout {
    /// Several runs of one scenario as one: every latency and answer together, every round;
    /// rates, CPU and memory as the mean of a run; losses and failures added up.
    pub fn pooled(runs: Vec<Fanout>) -> Fanout {
        let count = runs.len().max(1);
        let mut all = Fanout::default();
        for run in &runs {
            all.latencies_us.extend(&run.latencies_us);
            all.acks_us.extend(&run.acks_us);
            all.round_ms.extend(&run.round_ms);
            all.deliveries_per_s += run.deliveries_per_s / count as f64;
            all.losses += run.losses;
            all.failed_publishes += run.failed_publishes;
            all.failed_subscribers += run.failed_subscribers;
            all.duplicates += run.duplicates;
            all.cpu_s += run.cpu_s / count as f64;
            all.rounds_cpu_s += run.rounds_cpu_s / count as f64;
            all.rss_connected_kib += run.rss_connected_kib / count as u64;
        }
        all.latencies_us.sort_unstable();
        all.acks_us.sort_unstable();
        all
    }
}

/// How a round of (2) is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publishing {
    /// One request per event (2).
    Single,
    /// (2b): each publisher connection sends its share of the round as one batch
    /// (`POST /api/events`); Nchan, which has no batch, publishes one message per request.
    Batches,
}

/// `subscribers` spread over `orders` channels; statuses 1..=5 published to every channel,
/// one round at a time.
pub async fn fanout(server: &Server, subscribers: usize, orders: usize) -> Fanout {
    fanout_publishing(server, subscribers, orders, Publishing::Single).await
}

/// [`fanout`], publishing each round as `publishing` says.
pub async fn fanout_publishing(
    server: &Server,
    subscribers: usize,
    orders: usize,
    publishing: Publishing,
) -> Fanout {
    let names = channels(server, orders).await;
    let shared = Shared::new(orders);
    let cpu_before = server.cpu_seconds();
    let tasks = spawn_subscribers(server, subscribers, CONNECTING, &shared, |n| {
        let channel = n % orders;
        (channel, server.subscribe_path(&names[channel], false))
    });
    let all_in = async {
        loop {
            let done =
                shared.connected.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire);
            if done >= subscribers {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(120), all_in).await;
    // Let every subscriber settle (ours replays Created first).
    if server.kind == Kind::Ours {
        wait_for(
            &shared.received[0],
            shared.connected.load(Ordering::Acquire),
            ROUND_TIMEOUT,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_connected_kib = server.rss_kib();

    let mut conns: Vec<Conn> = (0..PUBLISHERS.min(orders))
        .map(|_| Conn::new(server.addr))
        .collect();
    let mut result = Fanout {
        rss_connected_kib,
        ..Fanout::default()
    };
    let connected = shared.connected.load(Ordering::Acquire);
    let rounds_cpu_before = server.cpu_seconds();
    let mut fanout_total = Duration::ZERO;
    for index in 1..=5 {
        let started = Instant::now();
        result.failed_publishes += match publishing {
            Publishing::Batches if server.kind == Kind::Ours => {
                publish_batches(server, &mut conns, &names, index, &shared).await
            }
            _ => publish_all(server, &mut conns, &names, index, &shared).await,
        };
        wait_for(&shared.received[index], connected, ROUND_TIMEOUT).await;
        let took = started.elapsed();
        fanout_total += took;
        result.round_ms.push(took.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    result.cpu_s = server.cpu_seconds() - cpu_before;
    result.rounds_cpu_s = server.cpu_seconds() - rounds_cpu_before;
    eprintln!("    rounds (ms): {:.1?}", result.round_ms);
    result.deliveries_per_s = (connected * 5) as f64 / fanout_total.as_secs_f64();
    // Each round's latencies apart, for the log: where in the run the tail is.
    let mut by_round: [Vec<u32>; 6] = Default::default();
    for task in tasks {
        let seen = outcome(task, Duration::from_secs(5)).await;
        result.duplicates += seen.duplicates as usize;
        for (round, &latency) in seen.latency_us.iter().enumerate().skip(1) {
            if latency == MISSING {
                result.losses += 1;
            } else {
                result.latencies_us.push(latency);
                by_round[round].push(latency);
            }
        }
    }
    result.failed_subscribers = shared.failed.load(Ordering::Relaxed);
    let round_p99_ms: Vec<f64> = by_round[1..]
        .iter_mut()
        .map(|latencies| {
            latencies.sort_unstable();
            percentile(latencies, 99.0) / 1000.0
        })
        .collect();
    eprintln!("    latency p99 per round (ms): {round_p99_ms:.2?}");
    result.latencies_us.sort_unstable();
    result.acks_us = std::mem::take(&mut *shared.acks_us.lock().unwrap());
    result.acks_us.sort_unstable();
    result
}

#[derive(Default, Debug, Clone)]
pub struct Replay {
    pub replay_us: Vec<u32>,
    pub losses: usize,
    pub failed_subscribers: usize,
    pub cpu_s: f64,
    pub duplicates: usize,
}

/// `subscribers` new subscribers at once, each replaying a delivered order's six events.
pub async fn replay_storm(server: &Server, subscribers: usize) -> Replay {
    let name = channels(server, 1).await.remove(0);
    let mut conn = Conn::new(server.addr);
    for index in server.initial_events()..STATUSES.len() {
        let status = server.publish(&mut conn, &name, index).await;
        assert!(
            (200..300).contains(&status),
            "publishing for the replay: {status}"
        );
    }
    let shared = Shared::new(1);
    let cpu_before = server.cpu_seconds();
    let path = server.subscribe_path(&name, true);
    let tasks = spawn_subscribers(server, subscribers, CONNECTING * 4, &shared, |_| {
        (0, path.clone())
    });
    let mut result = Replay::default();
    for task in tasks {
        let seen = outcome(task, Duration::from_secs(60)).await;
        result.losses += seen.latency_us.iter().filter(|&&l| l == MISSING).count();
        result.duplicates += seen.duplicates as usize;
        if seen.done_us != MISSING {
            result.replay_us.push(seen.done_us);
        }
    }
    result.cpu_s = server.cpu_seconds() - cpu_before;
    result.failed_subscribers = shared.failed.load(Ordering::Relaxed);
    result.replay_us.sort_unstable();
    result
}

/// Resident memory per open, idle subscriber, on a fresh server process.
pub async fn idle_memory(server: &Server, subscribers: usize) -> (f64, usize) {
    let name = channels(server, 1).await.remove(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib();
    let shared = Shared::new(1);
    let path = server.subscribe_path(&name, false);
    let tasks = spawn_subscribers(server, subscribers, CONNECTING, &shared, |_| {
        (0, path.clone())
    });
    let all_in = async {
        while shared.connected.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire)
            < subscribers
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(120), all_in).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib();
    let connected = shared.connected.load(Ordering::Acquire);
    for task in tasks {
        task.abort();
    }
    let per = (after.saturating_sub(before)) as f64 / connected.max(1) as f64;
    (per, connected)
}

pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    if sorted.is_empty() {
        f64::NAN
    } else {
        sorted[sorted.len() / 2]
    }
}
