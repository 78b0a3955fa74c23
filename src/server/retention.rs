//! Retention (spec §12): how long an order keeps its events, and the sweep that compacts the
//! orders past it, so that a store runs for years on one disk.
//!
//! The sweep asks the store for small batches ([`EventStore::compact`]), each one short
//! transaction that appends wait behind for a moment only, with a pause between batches so
//! publishing never waits for a whole sweep. After a sweep that compacted anything, the
//! store gives the space back ([`EventStore::reclaim`]), and `/metrics` learns what the
//! store now holds.
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::server::metrics::Metrics;
use crate::server::store::{Due, EventStore, StoreError};

/// How long orders keep their events.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// How long a delivered order keeps its events after `Delivered` (e.g. `30d`, `12h`,
    /// `90s`), or `off` to keep them all. Then it is compacted: a summary stays.
    #[arg(long, env = "RETAIN_DELIVERED", default_value = "30d", value_parser = keep)]
    pub retain_delivered: Keep,

    /// How long any order keeps its events after its last one, whatever its status (e.g.
    /// `365d`), or `off`.
    #[arg(long, env = "RETAIN_IDLE", default_value = "365d", value_parser = keep)]
    pub retain_idle: Keep,

    /// How long a compacted order's summary is kept after its last event (e.g. `3y`), or
    /// `off` to keep summaries for ever (spec §12). Then the order is forgotten: it answers
    /// `404` as an order that never was.
    #[arg(long, env = "RETAIN_SUMMARY", default_value = "off", value_parser = keep)]
    pub retain_summary: Keep,
}

impl Default for Retention {
    /// The spec's defaults: 30 days after `Delivered`, a year after the last event.
    fn default() -> Self {
        Self {
            retain_delivered: Keep(Some(Duration::from_secs(30 * 86_400))),
            retain_idle: Keep(Some(Duration::from_secs(365 * 86_400))),
            retain_summary: Keep(None),
        }
    }
}

/// A retention: for this long, or forever (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep(pub Option<Duration>);

impl Keep {
    /// As chrono's duration, for arithmetic on event times (`None`: forever). [`keep`]
    /// refuses what chrono cannot hold.
    pub fn delta(self) -> Option<chrono::TimeDelta> {
        self.0
            .and_then(|keep| chrono::TimeDelta::from_std(keep).ok())
    }
}

/// Reads a retention as `RETAIN_*` give it: a humantime duration, or `off`.
fn keep(raw: &str) -> Result<Keep, String> {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("off") {
        return Ok(Keep(None));
    }
    let example = "write a duration such as 30d, 12h or 90s, or `off` to keep every event";
    let duration = humantime::parse_duration(raw).map_err(|err| format!("{err}; {example}"))?;
    if duration.is_zero() {
        return Err(format!(
            "a retention of zero would delete at once; {example}"
        ));
    }
    // chrono's arithmetic is bounded (about 292,000 years); a longer retention is `off`.
    if chrono::TimeDelta::from_std(duration).is_err() {
        return Err(format!("`{raw}` is longer than a date can be; {example}"));
    }
    Ok(Keep(Some(duration)))
}

/// Orders compacted in one transaction: 300 events deleted, a few milliseconds of the lock
/// (500 held it long enough to multiply the publish p99 by seven in the soak, 100 by 2.7).
const BATCH: u32 = 50;
/// The most batches one sweep runs; what is left waits for the next sweep.
const MAX_BATCHES: usize = 1000;
/// The pause between two batches, in which appends take the lock: at 50 orders a batch, a
/// sweep still compacts a few thousand orders a second.
const BETWEEN_BATCHES: Duration = Duration::from_millis(10);

impl Retention {
    /// Whether any order is ever compacted.
    pub fn is_on(&self) -> bool {
        self.shortest().0.is_some()
    }

    /// The shorter of the two retentions: the soonest any order may be compacted after its
    /// last event.
    pub fn shortest(&self) -> Keep {
        Keep(
            [self.retain_delivered.0, self.retain_idle.0]
                .into_iter()
                .flatten()
                .min(),
        )
    }

    /// How often to sweep: every minute (spec §12), or more often for a retention shorter
    /// than four minutes (summaries' included), so that an order is compacted within a
    /// quarter of its retention past it (a test's `2s` is swept every half second).
    pub fn every(&self) -> Duration {
        let minute = Duration::from_secs(60);
        [self.shortest().0, self.retain_summary.0]
            .into_iter()
            .flatten()
            .min()
            .map_or(minute, |keep| (keep / 4).min(minute))
            .max(Duration::from_millis(250))
    }

    /// What is due now.
    fn due(&self) -> Due {
        let now = Utc::now();
        let before = |keep: Keep| keep.delta().map(|keep| now - keep);
        Due {
            delivered_before: before(self.retain_delivered),
            idle_before: before(self.retain_idle),
            idle_after: None,
        }
    }

    /// Summaries of orders whose last event is older than this are forgotten now.
    fn forget_before(&self) -> Option<chrono::DateTime<Utc>> {
        self.retain_summary.delta().map(|keep| Utc::now() - keep)
    }
}

/// Sweeps `store` every [`Retention::every`] until `shutdown`. With retention off it only
/// keeps the store's figures in `/metrics` current.
pub fn start(
    store: Arc<dyn EventStore>,
    retention: Retention,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut idle_after = None;
        loop {
            match sweep(store.as_ref(), &retention, idle_after, &metrics).await {
                Ok(next) => idle_after = next,
                // Logged here, once; the next sweep tries again.
                Err(err) => tracing::warn!(error = %err, "retention sweep failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(retention.every()) => {}
            }
        }
    });
}

/// One sweep: batches until nothing more is due (or [`MAX_BATCHES`]), then the space back
/// and the figures. Returns where the next sweep's look for idle orders starts.
async fn sweep(
    store: &dyn EventStore,
    retention: &Retention,
    mut idle_after: Option<crate::domain::EventId>,
    metrics: &Metrics,
) -> Result<Option<crate::domain::EventId>, StoreError> {
    let started = std::time::Instant::now();
    let mut freed_any = false;
    if retention.is_on() {
        let due = retention.due();
        for _ in 0..MAX_BATCHES {
            let batch = store.compact(&Due { idle_after, ..due }, BATCH).await?;
            metrics.retention.orders_compacted.inc_by(batch.orders);
            freed_any |= batch.orders > 0;
            let more_idle = batch.idle_after.is_some() && idle_after != batch.idle_after;
            idle_after = batch.idle_after;
            if batch.orders < u64::from(BATCH) && !more_idle {
                break;
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
    }
    if let Some(before) = retention.forget_before() {
        for _ in 0..MAX_BATCHES {
            let forgotten = store.forget(before, BATCH).await?;
            metrics.retention.orders_forgotten.inc_by(forgotten);
            freed_any |= forgotten > 0;
            if forgotten < u64::from(BATCH) {
                break;
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
    }
    if freed_any {
        store.reclaim().await?;
    }
    let extent = store.extent().await?;
    let figures = &metrics.retention;
    figures.events_stored.set(extent.events as i64);
    figures
        .oldest_event_age
        .set(extent.oldest_at.map_or(0.0, |at| {
            (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
        }));
    figures
        .last_sweep_seconds
        .set(started.elapsed().as_secs_f64());
    Ok(idle_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_is_a_duration_or_off() {
        assert_eq!(
            keep("30d"),
            Ok(Keep(Some(Duration::from_secs(30 * 86_400))))
        );
        assert_eq!(keep("2s"), Ok(Keep(Some(Duration::from_secs(2)))));
        assert_eq!(keep("1h 30m"), Ok(Keep(Some(Duration::from_secs(5400)))));
        assert_eq!(keep("off"), Ok(Keep(None)));
        assert_eq!(keep(" OFF "), Ok(Keep(None)));
        for bad in ["30", "thirty days", "-5d", "0s", "30x", "9999999999999y"] {
            let err = keep(bad).unwrap_err();
            assert!(err.contains("30d"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_short_retention_is_swept_more_often_than_once_a_minute() {
        let retention = |delivered, idle| Retention {
            retain_delivered: Keep(delivered),
            retain_idle: Keep(idle),
            retain_summary: Keep(None),
        };
        let days = |n: u64| Some(Duration::from_secs(n * 86_400));
        assert_eq!(
            retention(days(30), days(365)).every(),
            Duration::from_secs(60)
        );
        assert_eq!(retention(None, None).every(), Duration::from_secs(60));
        assert_eq!(
            retention(Some(Duration::from_secs(2)), days(365)).every(),
            Duration::from_millis(500)
        );
        assert_eq!(
            retention(None, Some(Duration::from_millis(100))).every(),
            Duration::from_millis(250)
        );
        assert!(!retention(None, None).is_on());
        let forgetting = Retention {
            retain_summary: Keep(Some(Duration::from_secs(4))),
            ..retention(days(30), days(365))
        };
        assert_eq!(forgetting.every(), Duration::from_secs(1));
    }

    #[test]
    fn the_defaults_are_the_specs_and_the_flags_say_so() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            retention: Retention,
        }
        let parsed = Flags::try_parse_from(["x"]).unwrap().retention;
        assert_eq!(parsed, Retention::default());
        let err = Flags::try_parse_from(["x", "--retain-idle", "a year"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("RETAIN_IDLE") && err.contains("30d"), "{err}");
        let parsed = Flags::try_parse_from(["x", "--retain-summary", "3y"])
            .unwrap()
            .retention;
        assert_eq!(
            parsed.retain_summary.0,
            Some(humantime::parse_duration("3y").unwrap())
        );
    }
}
