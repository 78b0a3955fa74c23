//! `make chaos` (issue 20): random faults over a three-instance cluster, a few hundred
//! customers and publishers that retry, then a checker that compares every customer's
//! history with the store's truth.
//!
//! 1. `scripts/cluster.sh` starts Postgres (pg_virtualenv), Redis, three instances and nginx.
//! 2. Orders are created; each gets its five other statuses at random times over the run,
//!    published through nginx by a publisher that retries until it has an answer (spec §14
//!    makes a retry safe).
//! 3. Customers arrive over the first half of the run, each an EventSource ([`eventsource`])
//!    from its own loopback address through nginx: on one order's stream, on a stream of
//!    several orders, or (a few) on the back office's stream of every order.
//! 4. Faults ([`faults`]) are done and undone on a schedule drawn from the seed.
//! 5. After the faults and a settling time, [`checker::check`] judges.
mod checker;
mod eventsource;
mod faults;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::servers::{free_addr, spawn_nginx, temp_dir, Server};
use crate::wire::{Conn, STATUSES};
use checker::{Ack, Fault, History, Stored, Watch};
use eventsource::EventSource;

/// What runs under the faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Ours: three instances on Postgres and Redis behind nginx (scripts/cluster.sh).
    Ours,
    /// Two nginx + Nchan instances in Redis mode, customers and publishers on both, under
    /// the same seed's Redis faults.
    Nchan,
}

/// What a run is given.
pub struct Settings {
    pub peer: Peer,
    pub nchan_conf: PathBuf,
    pub duration: f64,
    pub seed: u64,
    pub customers: usize,
    pub server: PathBuf,
    pub chart: PathBuf,
}

/// How long after the last fault customers have to catch up before the check.
const SETTLE: Duration = Duration::from_secs(15);
/// How long one publish attempt may take before the publisher tries again.
const ATTEMPT: Duration = Duration::from_secs(2);

/// The cluster of `scripts/cluster.sh`, stopped when dropped.
struct Running {
    child: Child,
    cluster: faults::Cluster,
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.cluster.dir.join("cluster.pid")).unwrap_or_default();
        let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.cluster.dir);
    }
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

async fn start_cluster(server: &Path) -> Running {
    let base = loop {
        let base = fastrand::u16(20_000..40_000);
        if [0, 1, 11, 12, 13, 14].iter().all(|d| port_free(base + d)) {
            break base;
        }
    };
    let dir = std::env::temp_dir().join(format!(
        "order-tracking-chaos-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("scripts/cluster.sh")
        .env("CLUSTER_INSTANCES", "3")
        .env("CLUSTER_PORT", base.to_string())
        .env("CLUSTER_DIR", &dir)
        .env(
            "SERVER_BINARY",
            std::fs::canonicalize(server).expect("the server binary"),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("scripts/cluster.sh (run from the repository's root)");
    let running = Running {
        child,
        cluster: faults::Cluster {
            dir: dir.clone(),
            instances: vec!["a".into(), "b".into(), "c".into()],
        },
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !dir.join("nginx.port").exists() {
        assert!(
            Instant::now() < deadline,
            "the cluster did not start (see {})",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running
}

/// A request outside the faults (creating the orders, reading the truth), on a kept-alive
/// connection that is opened again when the other side closed it (nginx closes one after
/// 1,000 requests).
async fn setup_request(
    conn: &mut Conn,
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (u16, Vec<u8>) {
    for _ in 0..3 {
        match conn.request(method, path, None).await {
            Ok(answer) => return answer,
            Err(_) => *conn = Conn::new(addr),
        }
    }
    panic!("{method} {path}: no answer in three tries");
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

fn event_id(event: &serde_json::Value) -> Option<i64> {
    match &event["id"] {
        serde_json::Value::String(s) => s.parse().ok(),
        other => other.as_i64(),
    }
}

fn status_index(name: &str) -> Option<usize> {
    STATUSES.iter().position(|s| *s == name)
}

/// What the publishers saw.
#[derive(Default)]
struct Published {
    acks: Vec<Ack>,
    refused: Vec<String>,
    attempts: usize,
}

/// The system under the faults, as the customers, the publishers and the checker see it.
struct Target {
    peer: Peer,
    /// Where publishers and customers connect: nginx for ours; both Nchan instances (a
    /// client tries the other when one refuses).
    upstreams: Vec<SocketAddr>,
    cluster: faults::Cluster,
    /// What stops it all when dropped.
    _running: Box<dyn std::any::Any + Send + Sync>,
}

/// Nchan's channels are named by us (`o00042`), so that an event is named by its data:
/// `order index × 10 + status`.
fn nchan_channel(n: usize) -> String {
    format!("o{n:05}")
}

fn nchan_key(order: &str, status: usize) -> Option<i64> {
    let n: i64 = order.strip_prefix('o')?.parse().ok()?;
    Some(n * 10 + status as i64)
}

/// Ours: the event's `id:`.
fn our_key(id: Option<&str>, _data: &str) -> Option<i64> {
    id?.parse().ok()
}

/// Nchan: what its data says (its own ids are `time:tag`).
fn nchan_data_key(_id: Option<&str>, data: &str) -> Option<i64> {
    let data: serde_json::Value = serde_json::from_str(data).ok()?;
    nchan_key(
        data["orderId"].as_str()?,
        status_index(data["status"].as_str()?)?,
    )
}

impl Target {
    fn publish_request(&self, order: &str, status: usize) -> (String, String) {
        match self.peer {
            Peer::Ours => (
                format!("/api/orders/{order}/status"),
                format!(r#"{{"status":"{}"}}"#, STATUSES[status]),
            ),
            Peer::Nchan => (
                format!("/pub/{order}"),
                format!(r#"{{"orderId":"{order}","status":"{}"}}"#, STATUSES[status]),
            ),
        }
    }

    /// The event id an answer acknowledges, or `None` when it is no acknowledgement.
    fn acknowledged(&self, order: &str, status: usize, code: u16, reply: &[u8]) -> Option<i64> {
        match (self.peer, code) {
            (Peer::Ours, 200) => event_id(&json(reply)),
            (Peer::Nchan, 201 | 202) => nchan_key(order, status),
            _ => None,
        }
    }

    fn stream_path(&self, watch: &Watch) -> String {
        match (self.peer, watch) {
            (Peer::Ours, Watch::All) => "/stream".to_owned(),
            (Peer::Ours, Watch::Orders(orders)) if orders.len() == 1 => {
                format!("/orders/{}/stream", orders[0])
            }
            (Peer::Ours, Watch::Orders(orders)) => {
                let query: Vec<String> = orders.iter().map(|o| format!("order={o}")).collect();
                format!("/stream?{}", query.join("&"))
            }
            (Peer::Nchan, Watch::Orders(orders)) => format!("/sub/{}", orders.join(",")),
            (Peer::Nchan, Watch::All) => unreachable!("Nchan has no stream of every channel"),
        }
    }

    fn key(&self) -> eventsource::Key {
        match self.peer {
            Peer::Ours => our_key,
            Peer::Nchan => nchan_data_key,
        }
    }
}

/// Publishes one order's statuses at their times, each until it is acknowledged (or the run
/// is long over), trying the next upstream after a failure.
#[allow(clippy::too_many_arguments)]
async fn publish_order(
    target: Arc<Target>,
    first: usize,
    order: String,
    times: Vec<(f64, usize)>,
    epoch: Instant,
    give_up: Instant,
    published: Arc<Mutex<Published>>,
) {
    let mut upstream = first % target.upstreams.len();
    let mut conn = Conn::new(target.upstreams[upstream]);
    for (at, status) in times {
        tokio::time::sleep_until(epoch + Duration::from_secs_f64(at)).await;
        let (path, body) = target.publish_request(&order, status);
        loop {
            published.lock().unwrap().attempts += 1;
            let answer =
                tokio::time::timeout(ATTEMPT, conn.request("POST", &path, Some(&body))).await;
            let acknowledged = match &answer {
                Ok(Ok((code, reply))) => target.acknowledged(&order, status, *code, reply),
                _ => None,
            };
            match answer {
                Ok(Ok(_)) if acknowledged.is_some() => {
                    let id = acknowledged.unwrap_or(-1);
                    published.lock().unwrap().acks.push(Ack {
                        order: order.clone(),
                        status,
                        id,
                        acked_at: epoch.elapsed().as_secs_f64(),
                    });
                    break;
                }
                Ok(Ok((code @ 400..=499, reply))) => {
                    published.lock().unwrap().refused.push(format!(
                        "{order} {}: {code} {}",
                        STATUSES[status],
                        String::from_utf8_lossy(&reply)
                    ));
                    return;
                }
                // 5xx, a broken or hung connection: a fresh connection, and again.
                _ => {
                    upstream = (upstream + 1) % target.upstreams.len();
                    conn = Conn::new(target.upstreams[upstream]);
                    if Instant::now() > give_up {
                        published
                            .lock()
                            .unwrap()
                            .refused
                            .push(format!("{order} {}: never acknowledged", STATUSES[status]));
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Two nginx + Nchan instances sharing one Redis, stopped when dropped.
struct NchanRunning {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for NchanRunning {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("redis.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Redis (with a start script and pid file as `scripts/cluster.sh` leaves them, so that the
/// same faults apply) and two nginx + Nchan in Redis mode. Redis is Nchan's only store, so it
/// gets what a store needs: an append-only file synced at every write (ours keeps its
/// events in Postgres; its Redis is a doorbell).
async fn start_nchan(template: &Path) -> Target {
    let dir = temp_dir("chaos-nchan");
    let redis_port = free_addr().port();
    let start = format!(
        "#!/usr/bin/env bash\nredis-server --port {redis_port} --bind 127.0.0.1 --dir {dir} --save '' --appendonly yes --appendfsync always >>{dir}/redis.log 2>&1 </dev/null &\necho $! >{dir}/redis.pid\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("redis.start"), start).unwrap();
    std::fs::write(dir.join("redis.port"), redis_port.to_string()).unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(dir.join("redis.start"))
        .status()
        .unwrap();
    Command::new(dir.join("redis.start"))
        .status()
        .expect("redis-server");
    assert!(
        faults::Cluster::wait_port(redis_port, None).await,
        "redis-server did not start"
    );
    let template = std::fs::read_to_string(template).expect("the Nchan template");
    let mut children = Vec::new();
    let mut upstreams = Vec::new();
    for name in ["n1", "n2"] {
        let prefix = dir.join(name);
        std::fs::create_dir_all(&prefix).unwrap();
        let addr = free_addr();
        let conf = template
            .replace("@PREFIX@", &prefix.display().to_string())
            .replace("@PORT@", &addr.port().to_string())
            .replace("@REDIS@", &redis_port.to_string());
        children.push(spawn_nginx(&prefix, &conf));
        Server::wait_ready_at(addr, "/pub/ready", "nginx + Nchan").await;
        upstreams.push(addr);
    }
    Target {
        peer: Peer::Nchan,
        upstreams,
        cluster: faults::Cluster {
            dir: dir.clone(),
            instances: Vec::new(),
        },
        _running: Box::new(NchanRunning { children, dir }),
    }
}

/// The customers' loopback addresses: 127.0.1.1, 127.0.1.2, … (one per customer).
fn source_address(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        1 + (n / 250) as u8,
        1 + (n % 250) as u8,
    ))
}

/// A chaos run; returns whether the checker passed.
pub async fn run(settings: &Settings) -> bool {
    println!(
        "chaos: seed {} ({} s, {} customers, {:?}); the same seed gives the same faults and workload again",
        settings.seed, settings.duration, settings.customers, settings.peer
    );
    let mut schedule = faults::plan(settings.seed, settings.duration, 3);
    let target = Arc::new(match settings.peer {
        Peer::Ours => {
            let running = start_cluster(&settings.server).await;
            let cluster = running.cluster.clone();
            Target {
                peer: Peer::Ours,
                upstreams: vec![SocketAddr::from(([127, 0, 0, 1], cluster.port("nginx")))],
                cluster,
                _running: Box::new(running),
            }
        }
        Peer::Nchan => {
            // The same seed's Redis faults, at the same times; nothing else applies.
            for group in &mut schedule {
                group.faults.retain(|f| f.kind.on_redis());
            }
            schedule.retain(|g| !g.faults.is_empty());
            start_nchan(&settings.nchan_conf).await
        }
    });
    let cluster = target.cluster.clone();
    let mut rng = fastrand::Rng::with_seed(settings.seed ^ 0x5eed);

    // The orders, two for every second of the run, created before the faults; each then
    // gets its five other statuses at random times over the run.
    let order_count = ((settings.duration * 2.0) as usize).max(40);
    let mut conn = Conn::new(target.upstreams[0]);
    let mut orders = Vec::new();
    let mut acks = Vec::new();
    let epoch = Instant::now();
    let mut schedules = Vec::new();
    for n in 0..order_count {
        let mut times: Vec<(f64, usize)> = (1..6)
            .map(|status| (1.0 + rng.f64() * (settings.duration - 2.0), status))
            .collect();
        times.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (k, time) in times.iter_mut().enumerate() {
            time.1 = k + 1;
        }
        match target.peer {
            Peer::Ours => {
                let (code, body) =
                    setup_request(&mut conn, target.upstreams[0], "POST", "/api/orders").await;
                assert_eq!(
                    code,
                    201,
                    "creating an order: {}",
                    String::from_utf8_lossy(&body)
                );
                let order = json(&body);
                let id = order["id"].as_str().expect("an order id").to_owned();
                acks.push(Ack {
                    order: id.clone(),
                    status: 0,
                    id: event_id(&order["events"][0]).expect("its Created event"),
                    acked_at: epoch.elapsed().as_secs_f64(),
                });
                orders.push(id);
            }
            // A channel is created by its first message: Created, published at once.
            Peer::Nchan => {
                orders.push(nchan_channel(n));
                times.insert(0, (0.0, 0));
            }
        }
        schedules.push(times);
    }

    let published = Arc::new(Mutex::new(Published::default()));
    let give_up = epoch + Duration::from_secs_f64(settings.duration) + Duration::from_secs(60);
    let mut publishers = Vec::new();
    for (n, (order, times)) in orders.iter().zip(schedules).enumerate() {
        publishers.push(tokio::spawn(publish_order(
            target.clone(),
            n,
            order.clone(),
            times,
            epoch,
            give_up,
            published.clone(),
        )));
    }

    // The customers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut customers = Vec::new();
    for n in 0..settings.customers {
        let roll = rng.u32(0..100);
        let watch = if n < 3 && target.peer == Peer::Ours {
            Watch::All
        } else if roll < 60 {
            Watch::Orders(vec![orders[rng.usize(0..orders.len())].clone()])
        } else {
            let mut mine = Vec::new();
            let wanted = 2 + rng.usize(0..4);
            while mine.len() < wanted {
                let order = orders[rng.usize(0..orders.len())].clone();
                if !mine.contains(&order) {
                    mine.push(order);
                }
            }
            Watch::Orders(mine)
        };
        let path = target.stream_path(&watch);
        let start_at = rng.f64() * settings.duration / 2.0;
        let stop = stop_rx.clone();
        let mut upstreams = target.upstreams.clone();
        let turn = n % upstreams.len();
        upstreams.rotate_left(turn);
        let key = target.key();
        customers.push(tokio::spawn(async move {
            tokio::time::sleep_until(epoch + Duration::from_secs_f64(start_at)).await;
            let mut source = EventSource::new(path, source_address(n), upstreams, key, epoch);
            let started_at = epoch.elapsed().as_secs_f64();
            source
                .run(stop, || {
                    Duration::from_millis(3000 + fastrand::u64(0..=3000))
                })
                .await;
            for odd in &source.unreadable {
                eprintln!("[chaos] customer {n} could not read an event: {odd}");
            }
            (
                History {
                    name: format!("customer {n} ({})", source.path),
                    watch,
                    first_resume: None,
                    started_at,
                    received: source.received,
                },
                source.connections,
            )
        }));
    }

    // The faults, one group after the other.
    let mut done_faults: Vec<Fault> = Vec::new();
    for group in &schedule {
        tokio::time::sleep_until(epoch + Duration::from_secs_f64(group.at)).await;
        let names: Vec<String> = group
            .faults
            .iter()
            .map(|f| match f.kind {
                faults::Kind::Kill | faults::Kind::Stop => format!(
                    "{} {} for {:.1} s",
                    f.kind.name(),
                    cluster.instances[f.instance],
                    f.hold
                ),
                _ if f.hold > 0.0 => format!("{} for {:.1} s", f.kind.name(), f.hold),
                _ => f.kind.name().to_owned(),
            })
            .collect();
        eprintln!(
            "[chaos {:>5.1} s] {}",
            epoch.elapsed().as_secs_f64(),
            names.join(" + ")
        );
        let windows =
            futures::future::join_all(group.faults.iter().map(|f| cluster.inflict(f, epoch))).await;
        done_faults.extend(windows);
    }
    tokio::time::sleep_until(epoch + Duration::from_secs_f64(settings.duration)).await;
    eprintln!(
        "[chaos {:>5.1} s] faults over; publishers finishing",
        epoch.elapsed().as_secs_f64()
    );
    for publisher in publishers {
        let _ = publisher.await;
    }
    let settled = Instant::now() + SETTLE;
    eprintln!(
        "[chaos {:>5.1} s] settling for {} s",
        epoch.elapsed().as_secs_f64(),
        SETTLE.as_secs()
    );
    // Ours: customers of orders all delivered end by themselves (204); the rest are stopped.
    // (Nchan's streams do not end: they are all stopped.)
    let ending = if target.peer == Peer::Ours {
        3
    } else {
        settings.customers
    };
    while Instant::now() < settled && customers.iter().skip(ending).any(|c| !c.is_finished()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let grace = match target.peer {
        Peer::Ours => Instant::now() + Duration::from_secs(2),
        Peer::Nchan => settled,
    };
    tokio::time::sleep_until(settled.min(grace)).await;
    let _ = stop_tx.send(true);
    eprintln!(
        "[chaos {:>5.1} s] {} of {} customers ended by themselves; stopping the rest",
        epoch.elapsed().as_secs_f64(),
        customers.iter().filter(|c| c.is_finished()).count(),
        customers.len()
    );
    let mut histories = Vec::new();
    let mut connections = 0;
    for customer in customers {
        let (history, opened) = customer.await.expect("a customer");
        connections += opened;
        histories.push(history);
    }

    let published = std::mem::take(&mut *published.lock().unwrap());
    acks.extend(published.acks);
    // The truth: ours, the store; Nchan keeps no store, so what it acknowledged.
    let mut stored = Vec::new();
    match target.peer {
        Peer::Ours => {
            let mut conn = Conn::new(target.upstreams[0]);
            for order in &orders {
                let path = format!("/api/orders/{order}");
                let (code, body) =
                    setup_request(&mut conn, target.upstreams[0], "GET", &path).await;
                assert_eq!(code, 200);
                for event in json(&body)["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    stored.push(Stored {
                        id: event_id(&event).unwrap_or(-1),
                        order: order.clone(),
                        status: event["status"]
                            .as_str()
                            .and_then(status_index)
                            .unwrap_or(99),
                    });
                }
            }
        }
        Peer::Nchan => {
            let mut seen = std::collections::HashSet::new();
            for ack in &acks {
                if seen.insert(ack.id) {
                    stored.push(Stored {
                        id: ack.id,
                        order: ack.order.clone(),
                        status: ack.status,
                    });
                }
            }
        }
    }
    drop(target);

    let ordering = match settings.peer {
        Peer::Ours => checker::Ordering::Global,
        Peer::Nchan => checker::Ordering::PerOrder,
    };
    let report = checker::check(&acks, &stored, &histories, &done_faults, ordering);
    println!(
        "\n{} orders, {} customers ({} connections in all), {} publishes acknowledged in {} attempts\n",
        orders.len(),
        histories.len(),
        connections,
        acks.len(),
        published.attempts + if settings.peer == Peer::Ours { orders.len() } else { 0 }
    );
    println!("{}", report.table());
    for fault in &done_faults {
        println!(
            "fault {:>6.1} to {:>6.1} s: {} {}",
            fault.start, fault.end, fault.kind, fault.what
        );
    }
    for refused in &published.refused {
        println!("publisher: {refused}");
    }
    for finding in &report.findings {
        println!("finding: {finding}");
    }
    if let Err(err) = chart(&report, &done_faults, settings) {
        eprintln!("cannot draw {}: {err}", settings.chart.display());
    }
    println!("{}", report.line());
    report.passed() && published.refused.is_empty()
}

/// The timeline: the faults as bands, each delivery's delay as a point at the time it could
/// first have been delivered.
fn chart(
    report: &checker::Report,
    faults: &[Fault],
    settings: &Settings,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    if let Some(folder) = settings.chart.parent() {
        std::fs::create_dir_all(folder)?;
    }
    let root = SVGBackend::new(&settings.chart, (1100, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let end = settings.duration + SETTLE.as_secs_f64();
    let top = report.delays.iter().map(|(_, d)| *d).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Chaos run, seed {}: {}", settings.seed, report.line()),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..end, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("delivery delay (s)")
        .draw()?;
    let kinds = [
        "kill -9 instance",
        "SIGSTOP instance",
        "Redis restarted",
        "CLIENT KILL pubsub",
        "Postgres crash",
        "nginx reload",
    ];
    for (n, kind) in kinds.iter().enumerate() {
        let color = Palette99::pick(n).mix(0.25);
        let bands: Vec<_> = faults
            .iter()
            .filter(|f| f.kind == *kind)
            .map(|f| {
                Rectangle::new(
                    [(f.start, 0.0), ((f.end).max(f.start + 0.2), top)],
                    color.filled(),
                )
            })
            .collect();
        chart
            .draw_series(bands)?
            .label(*kind)
            .legend(move |(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 12, y + 5)],
                    Palette99::pick(n).mix(0.5).filled(),
                )
            });
    }
    // One point per spot of the chart (thousands of deliveries share each): the same
    // picture, a hundredth of the file.
    let mut spots = std::collections::HashSet::new();
    let points: Vec<_> = report
        .delays
        .iter()
        .filter(|(at, delay)| {
            spots.insert((
                (at * 2.0).round() as i64,
                (delay / top * 340.0).round() as i64,
            ))
        })
        .map(|(at, delay)| Circle::new((*at, *delay), 2, BLACK.filled()))
        .collect();
    chart.draw_series(points)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
