//! Counters the process keeps about itself, shown by `GET /metrics` in Prometheus text. The
//! `prometheus` crate holds them and adds the usual `process_*` figures (CPU, memory, file
//! descriptors, start time) from its process collector.
use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub open_streams: IntGauge,
    pub events_published: IntCounter,
    pub events_delivered: IntCounter,
    pub slow_subscribers_dropped: IntCounter,
    /// Connections open now, on either path.
    pub connections_open: IntGauge,
    /// Connections and streams refused, by reason (`connections`, `client_connections`,
    /// `streams`, `client_streams`).
    refused: IntCounterVec,
    /// Connections closed by the connection policy, by bound (`head`, `idle`, `write`).
    timeouts: IntCounterVec,
    /// Only with a bus between instances.
    pub bus: Option<BusMetrics>,
    /// What the retention sweep does (spec §12).
    pub retention: RetentionMetrics,
}

/// What the retention sweep did, and what the store holds after it.
#[derive(Debug)]
pub struct RetentionMetrics {
    pub orders_compacted: IntCounter,
    pub orders_forgotten: IntCounter,
    pub events_stored: IntGauge,
    pub oldest_event_age: Gauge,
    pub last_sweep_seconds: Gauge,
}

impl RetentionMetrics {
    fn new() -> Self {
        Self {
            orders_compacted: IntCounter::new(
                "order_tracking_orders_compacted_total",
                "Orders compacted by this instance's sweeps: events deleted, a summary kept.",
            )
            .expect("a valid metric name"),
            orders_forgotten: IntCounter::new(
                "order_tracking_orders_forgotten_total",
                "Compacted orders forgotten by this instance's sweeps (RETAIN_SUMMARY): \
                 summary deleted, the order unknown since.",
            )
            .expect("a valid metric name"),
            events_stored: IntGauge::new(
                "order_tracking_events_stored",
                "Events in the store after the last sweep.",
            )
            .expect("a valid metric name"),
            oldest_event_age: Gauge::new(
                "order_tracking_oldest_event_age_seconds",
                "Age of the oldest event stored, at the last sweep (0 when none is).",
            )
            .expect("a valid metric name"),
            last_sweep_seconds: Gauge::new(
                "order_tracking_last_sweep_seconds",
                "How long the last retention sweep took.",
            )
            .expect("a valid metric name"),
        }
    }
}

/// How the bus between instances is doing.
#[derive(Debug)]
pub struct BusMetrics {
    pub connected: IntGauge,
    pub catch_up_reads: IntCounter,
    pub events_recovered: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Metrics {
    /// The counters of one instance, and of its bus when it has one.
    pub fn new(with_bus: bool) -> Self {
        let registry = Registry::new();
        let open_streams = IntGauge::new("order_tracking_open_streams", "SSE streams open now.")
            .expect("a valid metric name");
        let events_published = IntCounter::new(
            "order_tracking_events_published_total",
            "Events stored and fanned out.",
        )
        .expect("a valid metric name");
        let events_delivered = IntCounter::new(
            "order_tracking_events_delivered_total",
            "Events written to SSE streams (replayed or live).",
        )
        .expect("a valid metric name");
        let slow_subscribers_dropped = IntCounter::new(
            "order_tracking_slow_subscribers_dropped_total",
            "Streams ended because their reader fell behind.",
        )
        .expect("a valid metric name");
        let connections_open = IntGauge::new(
            "order_tracking_connections_open",
            "Client connections open now (streams, pages and API alike).",
        )
        .expect("a valid metric name");
        let refused = IntCounterVec::new(
            Opts::new(
                "order_tracking_refused_total",
                "Connections and streams refused, by reason: connections (MAX_CONNECTIONS), \
                 client_connections (MAX_CONNECTIONS_PER_CLIENT), streams (MAX_STREAMS), \
                 client_streams (MAX_STREAMS_PER_CLIENT).",
            ),
            &["reason"],
        )
        .expect("a valid metric name");
        let timeouts = IntCounterVec::new(
            Opts::new(
                "order_tracking_timeouts_total",
                "Connections closed by the connection policy, by bound: head (the first head \
                 too slow), idle (a kept-alive connection idle too long), write (a write \
                 that made no progress).",
            ),
            &["bound"],
        )
        .expect("a valid metric name");
        let retention = RetentionMetrics::new();
        for collector in [
            Box::new(open_streams.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(retention.orders_compacted.clone()),
            Box::new(retention.orders_forgotten.clone()),
            Box::new(retention.events_stored.clone()),
            Box::new(retention.oldest_event_age.clone()),
            Box::new(retention.last_sweep_seconds.clone()),
            Box::new(connections_open.clone()),
            Box::new(refused.clone()),
            Box::new(timeouts.clone()),
            Box::new(events_published.clone()),
            Box::new(events_delivered.clone()),
            Box::new(slow_subscribers_dropped.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            // Each name is registered once, on a registry of our own.
            registry.register(collector).expect("distinct metric names");
        }
        let bus = with_bus.then(|| {
            let bus = BusMetrics {
                connected: IntGauge::new(
                    "order_tracking_bus_connected",
                    "1 while this instance is connected to the bus between instances, else 0.",
                )
                .expect("a valid metric name"),
                catch_up_reads: IntCounter::new(
                    "order_tracking_bus_catch_up_reads_total",
                    "Reads of the store for events the bus may have missed.",
                )
                .expect("a valid metric name"),
                events_recovered: IntCounter::new(
                    "order_tracking_bus_events_recovered_total",
                    "Events this instance learnt from the store rather than the bus.",
                )
                .expect("a valid metric name"),
            };
            for collector in [
                Box::new(bus.connected.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(bus.catch_up_reads.clone()),
                Box::new(bus.events_recovered.clone()),
            ] {
                registry.register(collector).expect("distinct metric names");
            }
            bus
        });
        Self {
            registry,
            open_streams,
            events_published,
            events_delivered,
            slow_subscribers_dropped,
            connections_open,
            refused,
            timeouts,
            bus,
            retention,
        }
    }

    /// Counts a refusal for `reason`.
    pub fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    /// Counts a connection closed for going past `bound` (`head`, `idle` or `write`).
    pub fn timed_out(&self, bound: &str) {
        self.timeouts.with_label_values(&[bound]).inc();
    }
}

/// Counts one open stream for as long as it lives.
pub struct OpenStream(Arc<Metrics>);

impl Metrics {
    /// Counts a new stream unless `max` are already open. Counting first and checking after
    /// can turn away a stream at the limit when two arrive at once, but never lets more than
    /// `max` stay open.
    pub fn open_stream(self: &Arc<Self>, max: u64) -> Option<OpenStream> {
        self.open_streams.inc();
        let stream = OpenStream(self.clone());
        let opened = u64::try_from(self.open_streams.get())
            .is_ok_and(|open| open <= max)
            .then_some(stream);
        if opened.is_none() {
            self.refused("streams");
        }
        opened
    }

    /// Every figure, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Writing to a Vec fails only for a malformed metric, which the names above are not.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.dec();
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
        assert_eq!(metrics.open_streams.get(), 2);
        drop(a);
        assert!(metrics.open_stream(2).is_some());
        assert!(metrics.render().contains("order_tracking_open_streams 1\n"));
        assert!(metrics
            .render()
            .contains("order_tracking_refused_total{reason=\"streams\"} 1\n"));
    }

    #[test]
    fn process_figures_come_with_the_counters() {
        let metrics = Metrics::default();
        metrics.events_published.inc();
        let text = metrics.render();
        for name in [
            "order_tracking_events_published_total 1",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
