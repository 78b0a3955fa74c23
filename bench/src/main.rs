//! `make bench`: the order tracking server against Nchan, the same scenarios in one run,
//! printed side by side with the ratio ours/Nchan.
//!
//! (1) N subscribers on one order, 5 status events; (2) N subscribers over M orders, 5 events
//! each, one request per event, run in pairs with Nchan on fresh servers (see
//! `run_many_pairs`); (2b) the same with each round published as batches
//! (`POST /api/events`; Nchan has no batch and publishes one message per request); (3) a connect storm of N subscribers each replaying a delivered order's 6 events;
//! (4) resident memory per idle subscriber on a fresh server process; (6) as many subscribers
//! on one order as one process may hold here (the open-file limit is 20,000), on a fresh
//! process: all must connect and get every event.
//!
//! And ours against ours: (5) scenario (2) on Postgres, one instance against two instances
//! sharing Redis, with the subscribers split over both and every publish through the first.
//! And (7), more subscribers than one process may hold here (100,000): ours on six instances
//! sharing Postgres and Redis, every event published through the first, against Nchan with six
//! workers, the clients in several processes, each from its own loopback address
//! (`wide.rs`).
//!
//! (5) and (7) run when the `PG*` variables name a Postgres server (`make bench` runs inside
//! pg_virtualenv).
mod chaos;
mod scenarios;
mod servers;
mod soak;
mod storm;
mod wide;
mod wire;

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Parser;
use scenarios::{median, percentile, Fanout, Replay};
use servers::{Kind, Server};

#[derive(Parser, Debug)]
#[command(about = "SSE fan-out benchmark: ours against Nchan")]
struct Args {
    /// Our server binary (a release build for real figures).
    #[arg(long, default_value = "target/release/order-tracking")]
    server: PathBuf,
    /// The site root the server serves (cargo-leptos output).
    #[arg(long, default_value = "target/site")]
    site_root: PathBuf,
    /// The Nchan config template.
    #[arg(long, default_value = "bench/nchan.conf")]
    nchan_conf: PathBuf,
    /// Subscribers per scenario.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Orders in scenario (2).
    #[arg(long, default_value_t = 1_000)]
    orders: usize,
    /// Subscribers in scenario (6): as many as one process may hold here (open files 20,000,
    /// Nchan's worker_connections 19,000, less the servers' own descriptors).
    #[arg(long, default_value_t = 18_500)]
    most: usize,
    /// A quick run that only checks that everything works (200 subscribers, 20 orders); it
    /// fails on any loss.
    #[arg(long)]
    smoke: bool,
    /// Append the results, with date, machine and versions, to this Markdown file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Only (4), idle memory per subscriber, on our server: for trying a change quickly.
    #[arg(long)]
    only_idle_memory: bool,
    /// Only one fan-out scenario, on our server, printing its figures: for trying a change
    /// quickly (or profiling it) without the whole run.
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// With `--only`: run it on Nchan instead.
    #[arg(long, requires = "only")]
    on_nchan: bool,
    /// The soak (issue 19), not part of `make bench`: `--soak-orders` orders through all six
    /// statuses and compaction (RETAIN_DELIVERED=20s), with 1,000 streams open throughout,
    /// on SQLite and, when `PG*` name a server, on Postgres. Prints a table per store and
    /// draws `docs/soak-<store>.svg`.
    #[arg(long)]
    soak: bool,
    #[arg(long, default_value_t = 1_000_000)]
    soak_orders: usize,
    /// Orders a second the soak publishes (each is six requests).
    #[arg(long, default_value_t = 1_000)]
    soak_rate: usize,
    /// Which stores the soak runs on.
    #[arg(long, value_enum, default_value = "both")]
    soak_store: SoakStore,
    /// The chaos run (issue 20, `make chaos`): three instances behind nginx on Postgres and
    /// Redis (scripts/cluster.sh), random faults, customers and publishers, then the
    /// checker. Exits non-zero on any loss, duplicate or reordering.
    #[arg(long)]
    chaos: bool,
    /// How long the faults go on, in seconds.
    #[arg(long, default_value_t = 300.0)]
    duration: f64,
    /// The seed of the faults and the workload (a random one when not given; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// What the chaos run puts under the faults.
    #[arg(long, value_enum, default_value = "ours")]
    peer: chaos::Peer,
    /// The Nchan-on-Redis config template of `--peer nchan`.
    #[arg(long, default_value = "bench/nchan-redis.conf")]
    nchan_redis_conf: PathBuf,
    /// Customers in the chaos run.
    #[arg(long, default_value_t = 300)]
    customers: usize,
    /// Where the chaos run draws its timeline.
    #[arg(long, default_value = "docs/chaos-ours.svg")]
    chart: PathBuf,
    /// The reconnect storm (issue 20), not part of `make bench`: three instances on Postgres
    /// and Redis, `--storm-streams` streams, the first instance killed; before and after
    /// the jitter of `retry`. Run it inside pg_virtualenv.
    #[arg(long)]
    storm: bool,
    #[arg(long, default_value_t = 30_000)]
    storm_streams: usize,
    /// A storm's client process (started by `--storm` itself).
    #[arg(long, hide = true)]
    storm_worker: bool,
    #[arg(long, hide = true, value_delimiter = ',')]
    storm_addrs: Vec<std::net::SocketAddr>,
    #[arg(long, hide = true, value_delimiter = ',')]
    storm_orders: Vec<String>,
    #[arg(long, hide = true, default_value = "127.0.2.10")]
    storm_source: std::net::Ipv4Addr,
    #[arg(long, hide = true)]
    storm_fixed_retry: bool,
    /// Subscribers in scenario (7), over `--orders` orders: more than one process may hold,
    /// so on several instances (ours: on Postgres and Redis; Nchan: workers) and from several
    /// client processes.
    #[arg(long, default_value_t = 100_000)]
    wide_subscribers: usize,
    /// Instances of ours, and Nchan's workers, in (7).
    #[arg(long, default_value_t = 6)]
    wide_instances: usize,
    /// A (7) client process (started by the bench itself).
    #[arg(long, hide = true)]
    wide_worker: bool,
    #[arg(long, hide = true, value_delimiter = ',')]
    wide_addrs: Vec<std::net::SocketAddr>,
    #[arg(long, hide = true, value_delimiter = ',')]
    wide_paths: Vec<String>,
    #[arg(long, hide = true, default_value_t = 0)]
    wide_first: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    wide_count: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    wide_initial: usize,
    #[arg(long, hide = true, default_value = "127.0.3.10")]
    wide_source: std::net::Ipv4Addr,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SoakStore {
    Sqlite,
    Postgres,
    Both,
}

/// The scenarios `--only` can run alone.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Only {
    /// (1): every subscriber on one order.
    One,
    /// (2): subscribers over `--orders` orders.
    Many,
    /// (2b): the same, each round published as batches.
    Batches,
    /// (7): `--wide-subscribers` over several instances and client processes (ours on
    /// Postgres: run it inside pg_virtualenv).
    Wide,
}

/// How many pairs (ours, Nchan) of scenario (2) `make bench` runs.
const MANY_PAIRS: usize = 5;

struct Results {
    one: Fanout,
    most: Fanout,
    many: Fanout,
    batches: Fanout,
    replay: Replay,
    idle_kib: f64,
    idle_connected: usize,
}

/// A fresh server of `kind`, one process, as `args` name it.
async fn start(kind: Kind, args: &Args) -> Server {
    match kind {
        Kind::Ours => Server::start_ours(&args.server, &args.site_root).await,
        Kind::Nchan => Server::start_nchan(&args.nchan_conf).await,
    }
}

async fn run(kind: Kind, args: &Args) -> Results {
    let start = || start(kind, args);
    // (4) first, on a fresh process; then the rest on another fresh one.
    let server = start().await;
    eprintln!(
        "[{}] (4) idle memory with {} subscribers",
        server.name(),
        args.subscribers
    );
    let (idle_kib, idle_connected) = scenarios::idle_memory(&server, args.subscribers).await;
    drop(server);

    let server = start().await;
    eprintln!(
        "[{}] (1) {} subscribers on one order",
        server.name(),
        args.subscribers
    );
    let one = scenarios::fanout(&server, args.subscribers, 1).await;
    eprintln!(
        "[{}] (2b) {} subscribers over {} orders, rounds published as batches",
        server.name(),
        args.subscribers,
        args.orders
    );
    let batches = scenarios::fanout_publishing(
        &server,
        args.subscribers,
        args.orders,
        scenarios::Publishing::Batches,
    )
    .await;
    eprintln!(
        "[{}] (3) connect storm of {} replaying subscribers",
        server.name(),
        args.subscribers
    );
    let replay = scenarios::replay_storm(&server, args.subscribers).await;
    drop(server);

    let server = start().await;
    eprintln!(
        "[{}] (6) {} subscribers on one order",
        server.name(),
        args.most
    );
    let most = scenarios::fanout(&server, args.most, 1).await;
    Results {
        one,
        most,
        // (2) runs apart, in pairs with the other side: see [`run_many_pairs`].
        many: Fanout::default(),
        batches,
        replay,
        idle_kib,
        idle_connected,
    }
}

/// (2) in alternating pairs on fresh servers, the order of each pair turned round every time
/// (ours then Nchan, Nchan then ours, …), each run after a `sync` so that neither side meets
/// writeback it did not cause. Run back to back after the other scenarios, (2) measured the
/// machine's state as much as the server (ours always first, straight after the build and
/// on the server (1) had used); pairs put both sides in the same conditions, and the spread
/// between pairs shows how much of a difference is noise. Returns each side's runs pooled and
/// each pair's p99 (ours, Nchan) in ms.
async fn run_many_pairs(args: &Args, pairs: usize) -> (Fanout, Fanout, Vec<(f64, f64)>) {
    let (mut ours, mut nchan) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        let order = if pair % 2 == 0 {
            [Kind::Ours, Kind::Nchan]
        } else {
            [Kind::Nchan, Kind::Ours]
        };
        for kind in order {
            settle().await;
            let server = start(kind, args).await;
            eprintln!(
                "[{}] (2) pair {} of {pairs}: {} subscribers over {} orders",
                server.name(),
                pair + 1,
                args.subscribers,
                args.orders
            );
            let run = scenarios::fanout(&server, args.subscribers, args.orders).await;
            drop(server);
            match kind {
                Kind::Ours => ours.push(run),
                Kind::Nchan => nchan.push(run),
            }
        }
    }
    let p99 = |f: &Fanout| percentile(&f.latencies_us, 99.0) / 1000.0;
    let spread = ours
        .iter()
        .zip(&nchan)
        .map(|(o, n)| (p99(o), p99(n)))
        .collect();
    (Fanout::pooled(ours), Fanout::pooled(nchan), spread)
}

/// Writes the page cache back and lets the disk go quiet before a run that fsyncs.
async fn settle() {
    let _ = tokio::process::Command::new("sync").status().await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

/// One table row: the figure, both values, and `numerator / denominator` ("—" over zero).
fn write_row(
    out: &mut String,
    figure: &str,
    (a, b): (f64, f64),
    unit: &str,
    (numerator, denominator): (f64, f64),
) {
    let ratio = if denominator == 0.0 {
        "—".to_owned()
    } else {
        format!("{:.2}", numerator / denominator)
    };
    let _ = writeln!(
        out,
        "| {figure} | {a:.2} {unit} | {b:.2} {unit} | {ratio} |"
    );
}

fn table(ours: &Results, nchan: &Results, args: &Args) -> String {
    let mut out = String::new();
    let mut row = |figure: &str, a: f64, b: f64, unit: &str| {
        write_row(&mut out, figure, (a, b), unit, (a, b));
    };
    let ms = |us: f64| us / 1000.0;
    for (label, o, n) in [
        ("(1) one order", &ours.one, &nchan.one),
        ("(2) many orders", &ours.many, &nchan.many),
        ("(2b) many orders, batches", &ours.batches, &nchan.batches),
    ] {
        row(
            &format!("{label}: latency p50"),
            ms(percentile(&o.latencies_us, 50.0)),
            ms(percentile(&n.latencies_us, 50.0)),
            "ms",
        );
        row(
            &format!("{label}: latency p99"),
            ms(percentile(&o.latencies_us, 99.0)),
            ms(percentile(&n.latencies_us, 99.0)),
            "ms",
        );
        row(
            &format!("{label}: publish answered p50"),
            ms(percentile(&o.acks_us, 50.0)),
            ms(percentile(&n.acks_us, 50.0)),
            "ms",
        );
        row(
            &format!("{label}: publish answered p99"),
            ms(percentile(&o.acks_us, 99.0)),
            ms(percentile(&n.acks_us, 99.0)),
            "ms",
        );
        row(
            &format!("{label}: latency max"),
            ms(percentile(&o.latencies_us, 100.0)),
            ms(percentile(&n.latencies_us, 100.0)),
            "ms",
        );
        row(
            &format!("{label}: fan-out per round (median)"),
            median(&o.round_ms),
            median(&n.round_ms),
            "ms",
        );
        row(
            &format!("{label}: deliveries per second"),
            o.deliveries_per_s,
            n.deliveries_per_s,
            "/s",
        );
        row(
            &format!("{label}: losses"),
            o.losses as f64,
            n.losses as f64,
            "",
        );
        row(&format!("{label}: server CPU"), o.cpu_s, n.cpu_s, "s");
        row(
            &format!("{label}: server CPU, rounds only"),
            o.rounds_cpu_s,
            n.rounds_cpu_s,
            "s",
        );
    }
    row(
        "(3) replay: connect→6 events p50",
        ms(percentile(&ours.replay.replay_us, 50.0)),
        ms(percentile(&nchan.replay.replay_us, 50.0)),
        "ms",
    );
    row(
        "(3) replay: connect→6 events p99",
        ms(percentile(&ours.replay.replay_us, 99.0)),
        ms(percentile(&nchan.replay.replay_us, 99.0)),
        "ms",
    );
    row(
        "(3) replay: losses",
        ours.replay.losses as f64,
        nchan.replay.losses as f64,
        "",
    );
    row(
        "(3) replay: server CPU",
        ours.replay.cpu_s,
        nchan.replay.cpu_s,
        "s",
    );
    row(
        "(4) idle: RSS per subscriber",
        ours.idle_kib,
        nchan.idle_kib,
        "KiB",
    );
    let label = format!("(6) {} subscribers", args.most);
    let connected = |f: &Fanout| (args.most - f.failed_subscribers) as f64;
    row(
        &format!("{label}: connected"),
        connected(&ours.most),
        connected(&nchan.most),
        "",
    );
    row(
        &format!("{label}: losses"),
        ours.most.losses as f64,
        nchan.most.losses as f64,
        "",
    );
    row(
        &format!("{label}: RSS with all connected"),
        ours.most.rss_connected_kib as f64 / 1024.0,
        nchan.most.rss_connected_kib as f64 / 1024.0,
        "MiB",
    );
    row(
        &format!("{label}: latency p99"),
        ms(percentile(&ours.most.latencies_us, 99.0)),
        ms(percentile(&nchan.most.latencies_us, 99.0)),
        "ms",
    );
    let mut head =
        String::from("| figure | ours | nchan | ours/nchan |\n| --- | ---: | ---: | ---: |\n");
    head.push_str(&out);
    head
}

/// Scenario (5): the same fan-out on one instance and on two.
struct Cluster {
    one: Fanout,
    two: Fanout,
}

async fn run_cluster(args: &Args) -> Cluster {
    let mut results = Vec::new();
    for instances in [1, 2] {
        let server = Server::start_ours_postgres(&args.server, &args.site_root, instances).await;
        eprintln!(
            "[{}] (5) {} subscribers over {} orders, on Postgres",
            server.name(),
            args.subscribers,
            args.orders
        );
        results.push(scenarios::fanout(&server, args.subscribers, args.orders).await);
    }
    let two = results.pop().unwrap_or_default();
    let one = results.pop().unwrap_or_default();
    Cluster { one, two }
}

fn cluster_table(cluster: &Cluster) -> String {
    let (one, two) = (&cluster.one, &cluster.two);
    let mut out = String::from(
        "| figure | one instance | two instances | two/one |\n| --- | ---: | ---: | ---: |\n",
    );
    let ms = |us: f64| us / 1000.0;
    let rows = [
        (
            "(5) latency p50",
            ms(percentile(&one.latencies_us, 50.0)),
            ms(percentile(&two.latencies_us, 50.0)),
            "ms",
        ),
        (
            "(5) latency p99",
            ms(percentile(&one.latencies_us, 99.0)),
            ms(percentile(&two.latencies_us, 99.0)),
            "ms",
        ),
        (
            "(5) latency max",
            ms(percentile(&one.latencies_us, 100.0)),
            ms(percentile(&two.latencies_us, 100.0)),
            "ms",
        ),
        (
            "(5) fan-out per round (median)",
            median(&one.round_ms),
            median(&two.round_ms),
            "ms",
        ),
        (
            "(5) deliveries per second",
            one.deliveries_per_s,
            two.deliveries_per_s,
            "/s",
        ),
        ("(5) losses", one.losses as f64, two.losses as f64, ""),
        ("(5) server CPU (all processes)", one.cpu_s, two.cpu_s, "s"),
    ];
    for (figure, one, two, unit) in rows {
        // Two instances against one: the ratio is two/one.
        write_row(&mut out, figure, (one, two), unit, (two, one));
    }
    out
}

/// Scenario (7) on one side: ours on `--wide-instances` instances sharing Postgres and
/// Redis, or Nchan with as many workers.
async fn run_wide(kind: Kind, args: &Args) -> wide::Wide {
    let server = match kind {
        Kind::Ours => {
            Server::start_ours_postgres(&args.server, &args.site_root, args.wide_instances).await
        }
        Kind::Nchan => Server::start_nchan_workers(&args.nchan_conf, args.wide_instances).await,
    };
    eprintln!(
        "[{}] (7) {} subscribers over {} orders, {} {}",
        if kind == Kind::Ours { "ours" } else { "nchan" },
        args.wide_subscribers,
        args.orders,
        args.wide_instances,
        if kind == Kind::Ours {
            "instances on Postgres and Redis"
        } else {
            "workers"
        }
    );
    wide::run(&server, args.wide_subscribers, args.orders).await
}

fn wide_table(ours: &wide::Wide, nchan: &wide::Wide) -> String {
    let mut out =
        String::from("| figure | ours | nchan | ours/nchan |\n| --- | ---: | ---: | ---: |\n");
    let ms = |w: &wide::Wide, p: f64| percentile(&w.latencies_us, p) / 1000.0;
    let rows = [
        (
            "(7) subscribers connected",
            ours.connected as f64,
            nchan.connected as f64,
            "",
        ),
        (
            "(7) client processes",
            ours.processes as f64,
            nchan.processes as f64,
            "",
        ),
        ("(7) losses", ours.losses as f64, nchan.losses as f64, ""),
        (
            "(7) duplicates",
            ours.duplicates as f64,
            nchan.duplicates as f64,
            "",
        ),
        (
            "(7) server memory per subscriber (PSS, all processes)",
            ours.memory_per_subscriber_kib,
            nchan.memory_per_subscriber_kib,
            "KiB",
        ),
        (
            "(7) fan-out per round (median)",
            median(&ours.round_ms),
            median(&nchan.round_ms),
            "ms",
        ),
        ("(7) latency p50", ms(ours, 50.0), ms(nchan, 50.0), "ms"),
        ("(7) latency p99", ms(ours, 99.0), ms(nchan, 99.0), "ms"),
        (
            "(7) server CPU (all processes)",
            ours.cpu_s,
            nchan.cpu_s,
            "s",
        ),
    ];
    for (figure, a, b, unit) in rows {
        write_row(&mut out, figure, (a, b), unit, (a, b));
    }
    out
}

fn wide_failures(name: &str, wide: &wide::Wide) -> Option<String> {
    (wide.connected < wide.subscribers
        || wide.losses > 0
        || wide.duplicates > 0
        || wide.failed_publishes > 0)
        .then(|| {
            format!(
                "{name} (7): {} of {} connected, {} losses, {} duplicates, {} failed publishes",
                wide.connected,
                wide.subscribers,
                wide.losses,
                wide.duplicates,
                wide.failed_publishes
            )
        })
}

fn fanout_failures(name: &str, label: &str, fanout: &Fanout) -> Option<String> {
    (fanout.losses > 0
        || fanout.duplicates > 0
        || fanout.failed_subscribers > 0
        || fanout.failed_publishes > 0)
        .then(|| {
            format!(
                "{name} {label}: {} losses, {} duplicates, {} failed subscribers, {} failed publishes",
                fanout.losses, fanout.duplicates, fanout.failed_subscribers, fanout.failed_publishes
            )
        })
}

fn failures(name: &str, results: &Results, subscribers: usize) -> Vec<String> {
    let mut problems = Vec::new();
    for (label, fanout) in [
        ("(1)", &results.one),
        ("(2)", &results.many),
        ("(2b)", &results.batches),
        ("(6)", &results.most),
    ] {
        problems.extend(fanout_failures(name, label, fanout));
    }
    let replay = &results.replay;
    if replay.losses > 0 || replay.duplicates > 0 || replay.failed_subscribers > 0 {
        problems.push(format!(
            "{name} (3): {} losses, {} duplicates, {} failed subscribers",
            replay.losses, replay.duplicates, replay.failed_subscribers
        ));
    }
    if results.idle_connected < subscribers {
        problems.push(format!(
            "{name} (4): only {} of {subscribers} subscribers connected",
            results.idle_connected
        ));
    }
    problems
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
            .trim()
            .to_owned()
        })
        .unwrap_or_default()
}

fn raise_fd_limit() {
    // SAFETY: reads and raises this process's own descriptor limit to its hard limit.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The soak on each store asked for; fails when a criterion of issue 19 is not met.
async fn run_soak(args: &Args) -> std::process::ExitCode {
    let env = [
        ("RETAIN_DELIVERED", soak::RETAIN_DELIVERED),
        ("RETAIN_IDLE", "off"),
        ("RETAIN_SUMMARY", soak::RETAIN_SUMMARY),
    ];
    let mut ok = true;
    for store in ["sqlite", "postgres"] {
        let wanted = matches!(
            (store, args.soak_store),
            (_, SoakStore::Both)
                | ("sqlite", SoakStore::Sqlite)
                | ("postgres", SoakStore::Postgres)
        );
        if !wanted {
            continue;
        }
        let server = if store == "sqlite" {
            Server::start_ours_with(&args.server, &args.site_root, &env).await
        } else if std::env::var_os("PGHOST").is_some() {
            // Deleting thousands of rows a second, the table holds a minute of dead rows
            // between two of autovacuum's default once-a-minute looks: its disk is a sawtooth
            // of that height. A store that compacts this fast wants autovacuum to look more
            // often (the README says so); the soak's throw-away cluster is set so.
            for sql in [
                "ALTER SYSTEM SET autovacuum_naptime = '10s'",
                "SELECT pg_reload_conf()",
            ] {
                let _ = std::process::Command::new("psql")
                    .args(["-q", "-c", sql])
                    .status();
            }
            Server::start_ours_postgres_with(&args.server, &args.site_root, 1, &env).await
        } else {
            eprintln!("soak on postgres skipped: no PG* variables (run it inside pg_virtualenv)");
            continue;
        };
        let result = soak::soak(&server, args.soak_orders, args.soak_rate, 1_000).await;
        println!(
            "\nSoak on {store}: {} orders at {} a second, 1,000 streams open, RETAIN_DELIVERED={}, RETAIN_SUMMARY={}\n\n{}",
            args.soak_orders,
            args.soak_rate,
            soak::RETAIN_DELIVERED,
            soak::RETAIN_SUMMARY,
            result.table()
        );
        let chart = PathBuf::from(format!("docs/soak-{store}.svg"));
        let _ = std::fs::create_dir_all("docs");
        let title = format!("Soak on {store}: {} orders", args.soak_orders);
        if let Err(err) = soak::chart(&result, &title, &chart) {
            eprintln!("cannot draw {}: {err}", chart.display());
        }
        let (rss, disk) = result.growth();
        let (during, between) = result.p99_during_sweeps();
        ok &= rss <= 1.1
            && disk <= 1.1
            && during <= 2.0 * between
            && result.still_connected == result.subscribers
            && result.failed_publishes == 0;
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("soak: a criterion was not met (see the tables)");
        std::process::ExitCode::FAILURE
    }
}

fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    if args.smoke {
        args.subscribers = 200;
        args.orders = 20;
        args.most = 300;
        args.wide_subscribers = 600;
    }
    raise_fd_limit();
    // One runtime on one thread: the client gets one core, the server the other.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.storm_worker {
        runtime.block_on(storm::worker(
            args.storm_addrs.clone(),
            args.storm_orders.clone(),
            args.storm_streams,
            args.storm_source,
            args.storm_fixed_retry,
        ));
        return std::process::ExitCode::SUCCESS;
    }
    if args.wide_worker {
        runtime.block_on(wide::worker(
            args.wide_addrs.clone(),
            args.wide_paths.clone(),
            args.wide_first,
            args.wide_count,
            args.wide_initial,
            args.wide_source,
        ));
        return std::process::ExitCode::SUCCESS;
    }
    if args.storm {
        let storms = runtime.block_on(storm::run(
            &args.server,
            &args.site_root,
            args.storm_streams,
        ));
        println!(
            "\nReconnect storm: {} streams on three instances, the first killed\n\n{}",
            args.storm_streams,
            storm::table(&storms)
        );
        return std::process::ExitCode::SUCCESS;
    }
    if args.chaos {
        let settings = chaos::Settings {
            peer: args.peer,
            nchan_conf: args.nchan_redis_conf.clone(),
            duration: args.duration,
            seed: args.seed.unwrap_or_else(|| fastrand::u64(..)),
            customers: args.customers,
            server: args.server.clone(),
            chart: args.chart.clone(),
        };
        return if runtime.block_on(chaos::run(&settings)) {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        };
    }
    if args.soak {
        return runtime.block_on(run_soak(&args));
    }
    if args.only_idle_memory {
        let (kib, connected) = runtime.block_on(async {
            let server = Server::start_ours(&args.server, &args.site_root).await;
            scenarios::idle_memory(&server, args.subscribers).await
        });
        println!("(4) idle: RSS per subscriber {kib:.2} KiB ({connected} connected)");
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(Only::Wide) = args.only {
        let kind = if args.on_nchan {
            Kind::Nchan
        } else {
            Kind::Ours
        };
        let wide = runtime.block_on(run_wide(kind, &args));
        let ms = |p: f64| percentile(&wide.latencies_us, p) / 1000.0;
        println!(
            "Wide: {} of {} connected from {} processes, {} losses, {} duplicates, {:.2} KiB per subscriber, round (median) {:.1} ms, p50 {:.2} ms, p99 {:.2} ms, CPU {:.2} s",
            wide.connected,
            wide.subscribers,
            wide.processes,
            wide.losses,
            wide.duplicates,
            wide.memory_per_subscriber_kib,
            median(&wide.round_ms),
            ms(50.0),
            ms(99.0),
            wide.cpu_s
        );
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(only) = args.only {
        let fanout = runtime.block_on(async {
            let kind = if args.on_nchan {
                Kind::Nchan
            } else {
                Kind::Ours
            };
            let server = start(kind, &args).await;
            let (orders, publishing) = match only {
                Only::One => (1, scenarios::Publishing::Single),
                Only::Many => (args.orders, scenarios::Publishing::Single),
                Only::Batches => (args.orders, scenarios::Publishing::Batches),
                Only::Wide => unreachable!("handled above"),
            };
            scenarios::fanout_publishing(&server, args.subscribers, orders, publishing).await
        });
        let ms = |p: f64| percentile(&fanout.latencies_us, p) / 1000.0;
        println!(
            "{only:?}: p50 {:.2} ms, p99 {:.2} ms, answered p50 {:.2} ms, p99 {:.2} ms, round (median) {:.1} ms, {:.0} deliveries/s, CPU {:.2} s ({:.2} s in the rounds), {} losses",
            ms(50.0),
            ms(99.0),
            percentile(&fanout.acks_us, 50.0) / 1000.0,
            percentile(&fanout.acks_us, 99.0) / 1000.0,
            median(&fanout.round_ms),
            fanout.deliveries_per_s,
            fanout.cpu_s,
            fanout.rounds_cpu_s,
            fanout.losses
        );
        return std::process::ExitCode::SUCCESS;
    }
    let with_postgres = std::env::var_os("PGHOST").is_some();
    let (ours, nchan, pairs, cluster, wide) = runtime.block_on(async {
        let mut ours = run(Kind::Ours, &args).await;
        let mut nchan = run(Kind::Nchan, &args).await;
        let (many_ours, many_nchan, pairs) =
            run_many_pairs(&args, if args.smoke { 1 } else { MANY_PAIRS }).await;
        ours.many = many_ours;
        nchan.many = many_nchan;
        let (cluster, wide) = if with_postgres {
            let cluster = run_cluster(&args).await;
            let wide = (
                run_wide(Kind::Ours, &args).await,
                run_wide(Kind::Nchan, &args).await,
            );
            (Some(cluster), Some(wide))
        } else {
            eprintln!("(5), (7) skipped: no PG* variables (make bench runs inside pg_virtualenv)");
            (None, None)
        };
        (ours, nchan, pairs, cluster, wide)
    });
    let mut table = table(&ours, &nchan, &args);
    table.push_str(&format!(
        "\n(2) ran as {} pair{} on fresh servers, alternating which side goes first, each after a `sync`; its rows pool them. Latency p99 of each pair, ours / Nchan: {}.\n",
        pairs.len(),
        if pairs.len() == 1 { "" } else { "s" },
        pairs
            .iter()
            .map(|(o, n)| format!("{o:.2} / {n:.2} ms ({:.2}x)", o / n))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(cluster) = &cluster {
        table.push_str(&format!(
            "\nSeveral instances, {} subscribers over {} orders on Postgres (ours against ours):\n\n{}",
            args.subscribers,
            args.orders,
            cluster_table(cluster)
        ));
    }
    if let Some((ours, nchan)) = &wide {
        table.push_str(&format!(
            "\n{} subscribers over {} orders: ours on {} instances sharing Postgres and Redis, every event published through the first; Nchan with {} workers; the clients in several processes, each from its own loopback address:\n\n{}",
            args.wide_subscribers,
            args.orders,
            args.wide_instances,
            args.wide_instances,
            wide_table(ours, nchan)
        ));
    }
    println!(
        "\nSSE fan-out: {} subscribers, {} orders in (2)\n",
        args.subscribers, args.orders
    );
    println!("{table}");
    if let Some(path) = &args.markdown {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let memory = command_output("sh", &["-c", "free -h | awk '/Mem:/ {print $2}'"]);
        let section = format!(
            "\n## {date}: {subs} subscribers, {orders} orders\n\nMachine: {cores} cores, {memory} memory; client and servers share it.\n\
             Versions: order-tracking {rev} (release), {nginx}, libnginx-mod-nchan {nchan}, {rustc}.\n\n{table}",
            date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            subs = args.subscribers,
            orders = args.orders,
            rev = command_output("git", &["rev-parse", "--short", "HEAD"]),
            nginx = command_output("/usr/sbin/nginx", &["-v"]),
            nchan = command_output("dpkg-query", &["-W", "-f=${Version}", "libnginx-mod-nchan"]),
            rustc = command_output("rustc", &["--version"]),
        );
        let mut existing = std::fs::read_to_string(path)
            .unwrap_or_else(|_| "# Benchmarks\n\nProduced by `make bench`; see bench/.\n".into());
        existing.push_str(&section);
        std::fs::write(path, existing).unwrap();
    }
    let mut problems = failures("ours", &ours, args.subscribers);
    problems.extend(failures("nchan", &nchan, args.subscribers));
    if let Some(cluster) = &cluster {
        problems.extend(fanout_failures("one instance", "(5)", &cluster.one));
        problems.extend(fanout_failures("two instances", "(5)", &cluster.two));
    }
    if let Some((ours, nchan)) = &wide {
        problems.extend(wide_failures("ours", ours));
        problems.extend(wide_failures("nchan", nchan));
    }
    for problem in &problems {
        eprintln!("problem: {problem}");
    }
    if problems.is_empty() {
        println!("bench: no losses, every subscriber connected");
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
