//! `sse-bench --soak`: years of orders in minutes (issue 19). Orders go through all six
//! statuses and are compacted a short retention after `Delivered`, while a thousand customers
//! keep streams open on orders that stay in progress. Every few seconds it samples the
//! server's resident memory, the database's size on disk and the publish latency, and says
//! whether a sweep compacted anything meanwhile. The claim under test: memory and disk stay
//! flat once warm, and a sweep does not slow publishing.
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::scenarios::percentile;
use crate::servers::Server;
use crate::wire::{open_stream, Conn};

/// Publishing connections.
const PUBLISHERS: usize = 16;
/// How often a sample is taken.
const EVERY: Duration = Duration::from_secs(2);
/// The retention the server runs with: short, so that compaction keeps pace.
pub const RETAIN_DELIVERED: &str = "20s";
/// And summaries are forgotten this long after an order's last event (`RETAIN_SUMMARY`),
/// so that the disk holds a bounded number of them.
pub const RETAIN_SUMMARY: &str = "40s";

/// One sample.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at_s: f64,
    pub orders_done: usize,
    pub rss_mib: f64,
    pub disk_mib: f64,
    /// Events in the store (the rest of the disk is compacted orders' summaries).
    pub events_stored: u64,
    /// The 99th percentile of the publishes of this sample's window, in ms.
    pub p99_ms: f64,
    /// Orders the sweeps compacted in this window.
    pub compacted: u64,
}

/// What a soak found.
pub struct Soak {
    pub samples: Vec<Sample>,
    pub subscribers: usize,
    /// Subscribers whose stream was still open at the end.
    pub still_connected: usize,
    pub failed_publishes: usize,
    pub seconds: f64,
}

impl Soak {
    /// The sample at `fraction` of the run.
    fn at(&self, fraction: f64) -> &Sample {
        let index = ((self.samples.len() - 1) as f64 * fraction).round() as usize;
        &self.samples[index]
    }

    /// Last sample against the one at 20 %: resident memory and disk.
    pub fn growth(&self) -> (f64, f64) {
        let (warm, last) = (self.at(0.2), self.at(1.0));
        (last.rss_mib / warm.rss_mib, last.disk_mib / warm.disk_mib)
    }

    /// The median of the windows' p99 with a sweep compacting against without one.
    pub fn p99_during_sweeps(&self) -> (f64, f64) {
        let median = |sweeping: bool| {
            let p99s: Vec<f64> = self
                .samples
                .iter()
                .skip(1)
                .filter(|s| (s.compacted > 0) == sweeping)
                .map(|s| s.p99_ms)
                .collect();
            crate::scenarios::median(&p99s)
        };
        (median(true), median(false))
    }

    pub fn table(&self) -> String {
        let mut out = String::from(
            "| t (s) | orders done | RSS (MiB) | disk (MiB) | events stored | publish p99 (ms) | compacted |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for s in &self.samples {
            let _ = writeln!(
                out,
                "| {:.0} | {} | {:.1} | {:.1} | {} | {:.2} | {} |",
                s.at_s,
                s.orders_done,
                s.rss_mib,
                s.disk_mib,
                s.events_stored,
                s.p99_ms,
                s.compacted
            );
        }
        let (rss, disk) = self.growth();
        let (during, between) = self.p99_during_sweeps();
        let _ = write!(
            out,
            "\nLast sample against the one at 20 %: RSS {rss:.2}x, disk {disk:.2}x. Publish p99 \
             (median of the windows) during sweeps {during:.2} ms, between {between:.2} ms \
             ({:.2}x). {} of {} subscribers still connected; {} publishes failed; {:.0} s.\n",
            during / between,
            self.still_connected,
            self.subscribers,
            self.failed_publishes,
            self.seconds
        );
        out
    }
}

/// The figure of `/metrics` named `name`.
async fn metric(conn: &mut Conn, name: &str) -> f64 {
    let Ok((200, body)) = conn.request("GET", "/metrics", None).await else {
        return 0.0;
    };
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs `orders` orders through `server`, `rate` a second (paced, so that the figures are
/// of a server with room, not of one saturated), with `subscribers` open streams.
pub async fn soak(server: &Server, orders: usize, rate: usize, subscribers: usize) -> Soak {
    let started = Instant::now();
    // The customers: streams on orders that stay at Created throughout.
    let connected = Arc::new(AtomicUsize::new(0));
    let mut conn = Conn::new(server.addr);
    let mut streams = Vec::new();
    for _ in 0..subscribers {
        let order = server.new_channel(&mut conn).await;
        let path = server.subscribe_path(&order, false);
        let connected = connected.clone();
        let addr = server.addr;
        streams.push(tokio::spawn(async move {
            let Ok((mut stream, 200, _)) = open_stream(addr, &path).await else {
                return;
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            connected.fetch_sub(1, Ordering::Relaxed);
        }));
    }

    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let (next, done, failed, latencies) = (
                next.clone(),
                done.clone(),
                failed.clone(),
                latencies.clone(),
            );
            let server = server.handle();
            let paced_from = tokio::time::Instant::now();
            tokio::spawn(async move {
                let mut conn = Conn::new(server.addr);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= orders {
                        break;
                    }
                    let due = Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
                    tokio::time::sleep_until(paced_from + due).await;
                    let order = server.new_channel(&mut conn).await;
                    for status in 1..6 {
                        let sent = Instant::now();
                        if server.publish(&mut conn, &order, status).await != 200 {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        let us = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        latencies.lock().unwrap().push(us);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let mut samples = Vec::new();
    let mut compacted_before = metric(&mut conn, "order_tracking_orders_compacted_total").await;
    loop {
        let finished = publishers.iter().all(|p| p.is_finished());
        let mut window = std::mem::take(&mut *latencies.lock().unwrap());
        window.sort_unstable();
        let compacted_now = metric(&mut conn, "order_tracking_orders_compacted_total").await;
        let sample = Sample {
            at_s: started.elapsed().as_secs_f64(),
            orders_done: done.load(Ordering::Relaxed),
            rss_mib: server.rss_kib() as f64 / 1024.0,
            disk_mib: server.disk_bytes() as f64 / (1024.0 * 1024.0),
            events_stored: metric(&mut conn, "order_tracking_events_stored").await as u64,
            p99_ms: percentile(&window, 99.0) / 1000.0,
            compacted: (compacted_now - compacted_before).max(0.0) as u64,
        };
        compacted_before = compacted_now;
        eprintln!(
            "[soak {}] {:>5.0} s: {:>8} orders, RSS {:>6.1} MiB, disk {:>7.1} MiB, p99 {:>6.2} ms, {} compacted",
            server.name(),
            sample.at_s,
            sample.orders_done,
            sample.rss_mib,
            sample.disk_mib,
            sample.p99_ms,
            sample.compacted
        );
        samples.push(sample);
        if finished {
            break;
        }
        tokio::time::sleep(EVERY).await;
    }
    let still_connected = connected.load(Ordering::Relaxed);
    for stream in streams {
        stream.abort();
    }
    Soak {
        samples,
        subscribers,
        still_connected,
        failed_publishes: failed.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Draws the samples as an SVG chart (RSS and disk against time, and the publish p99) into
/// `path`.
pub fn chart(soak: &Soak, title: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(340);
    let end = soak.samples.last().map_or(1.0, |s| s.at_s).max(1.0);
    let most = soak
        .samples
        .iter()
        .map(|s| s.rss_mib.max(s.disk_mib))
        .fold(1.0, f64::max);
    let mut memory = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..most * 1.1)?;
    memory
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("MiB")
        .draw()?;
    memory
        .draw_series(LineSeries::new(
            soak.samples.iter().map(|s| (s.at_s, s.rss_mib)),
            &BLUE,
        ))?
        .label("server RSS")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    memory
        .draw_series(LineSeries::new(
            soak.samples.iter().map(|s| (s.at_s, s.disk_mib)),
            &RED,
        ))?
        .label("database on disk")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    memory
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    let slowest = soak
        .samples
        .iter()
        .map(|s| s.p99_ms)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let mut latency = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..slowest * 1.1)?;
    latency
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("publish p99 (ms)")
        .draw()?;
    latency.draw_series(
        soak.samples
            .iter()
            .filter(|s| s.p99_ms.is_finite())
            .map(|s| {
                let color = if s.compacted > 0 { RED } else { BLUE };
                Circle::new((s.at_s, s.p99_ms), 3, color.filled())
            }),
    )?;
    root.present()?;
    Ok(())
}
