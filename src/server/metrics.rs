//! Counters the process keeps about itself, shown by `GET /metrics` in Prometheus text.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct Metrics {
    pub open_streams: AtomicU64,
    pub events_published: AtomicU64,
    pub events_delivered: AtomicU64,
    pub slow_subscribers_dropped: AtomicU64,
    started: SystemTime,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            open_streams: AtomicU64::default(),
            events_published: AtomicU64::default(),
            events_delivered: AtomicU64::default(),
            slow_subscribers_dropped: AtomicU64::default(),
            started: SystemTime::now(),
        }
    }
}

/// Counts one open stream for as long as it lives.
pub struct OpenStream(Arc<Metrics>);

impl Metrics {
    /// Counts a new stream unless `max` are already open.
    pub fn open_stream(self: &Arc<Self>, max: u64) -> Option<OpenStream> {
        self.open_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| OpenStream(self.clone()))
    }

    pub fn render(&self) -> String {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut figures = vec![
            (
                "order_tracking_open_streams",
                "gauge",
                "SSE streams open now.",
                count(&self.open_streams),
            ),
            (
                "order_tracking_events_published_total",
                "counter",
                "Events stored and fanned out.",
                count(&self.events_published),
            ),
            (
                "order_tracking_events_delivered_total",
                "counter",
                "Events written to SSE streams (replayed or live).",
                count(&self.events_delivered),
            ),
            (
                "order_tracking_slow_subscribers_dropped_total",
                "counter",
                "Streams ended because their reader fell behind.",
                count(&self.slow_subscribers_dropped),
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch.",
                started,
            ),
        ];
        figures.extend(process_figures());
        let mut out = String::new();
        for (name, kind, help, value) in figures {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

/// CPU time, memory and file descriptors of this process, read from `/proc` (Linux); none
/// elsewhere.
fn process_figures() -> Vec<(&'static str, &'static str, &'static str, f64)> {
    let mut figures = Vec::new();
    // SAFETY: sysconf and getrlimit only read process-wide settings into plain values.
    let (ticks, page, max_fds) = unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let max_fds = (libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0)
            .then_some(limit.rlim_cur as f64);
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
            max_fds,
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let cpu = |index: usize| fields.get(index).and_then(|v| v.parse::<f64>().ok());
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
        if let (Some(user), Some(system)) = (cpu(11), cpu(12)) {
            figures.push((
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent, in seconds.",
                (user + system) / ticks,
            ));
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let pages: Vec<f64> = statm
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if let [virtual_pages, resident_pages, ..] = pages[..] {
            figures.push((
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                virtual_pages * page,
            ));
            figures.push((
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                resident_pages * page,
            ));
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        figures.push((
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            fds.count() as f64,
        ));
    }
    if let Some(max) = max_fds {
        figures.push((
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        ));
    }
    figures
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_streams_are_capped_and_released() {
        let metrics = Arc::new(Metrics::default());
        let a = metrics.open_stream(2).unwrap();
        let _b = metrics.open_stream(2).unwrap();
        assert!(metrics.open_stream(2).is_none());
        drop(a);
        assert!(metrics.open_stream(2).is_some());
        assert!(metrics.render().contains("order_tracking_open_streams 1\n"));
    }
}
