//! Counters the process keeps about itself, shown by `GET /metrics` in Prometheus text.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default, Debug)]
pub struct Metrics {
    pub open_streams: AtomicU64,
    pub events_published: AtomicU64,
    pub events_delivered: AtomicU64,
    pub slow_subscribers_dropped: AtomicU64,
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
        let mut out = String::new();
        let figures = [
            (
                "order_tracking_open_streams",
                "gauge",
                "SSE streams open now.",
                &self.open_streams,
            ),
            (
                "order_tracking_events_published_total",
                "counter",
                "Events stored and fanned out.",
                &self.events_published,
            ),
            (
                "order_tracking_events_delivered_total",
                "counter",
                "Events written to SSE streams (replayed or live).",
                &self.events_delivered,
            ),
            (
                "order_tracking_slow_subscribers_dropped_total",
                "counter",
                "Streams ended because their reader fell behind.",
                &self.slow_subscribers_dropped,
            ),
        ];
        for (name, kind, help, value) in figures {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
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
