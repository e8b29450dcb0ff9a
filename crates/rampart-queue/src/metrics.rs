//! The metric handles of a queue, registered once when the queue is built
//! (with the `metrics` recorder installed then), under the layer's name,
//! and shared by its handles and workers through [`Inner`](crate::worker::Inner).
//!
//! Without the `metrics` feature every handle and [`Stamp`] is a
//! zero-sized no-op: a request pays nothing. With it, the clock is read
//! for the wait histogram only when that histogram reaches a recorder
//! ([`Histogram::is_recording`](rampart_core::telemetry::Histogram::is_recording),
//! asked once when the queue is built).

use rampart_core::telemetry::{Counter, Gauge, Histogram, LayerName};

/// Requests waiting in the queue for a worker (gauge).
pub(crate) const DEPTH: &str = "rampart.queue.depth";
/// Calls a worker is running now (gauge).
pub(crate) const RUNNING: &str = "rampart.queue.running";
/// Live workers (gauge).
pub(crate) const WORKERS: &str = "rampart.queue.workers";
/// Calls a worker ran to an outcome, success or error (counter).
pub(crate) const COMPLETED: &str = "rampart.queue.completed";
/// Requests refused because the queue was full (counter).
pub(crate) const SHED: &str = "rampart.queue.shed";
/// Queued requests never run (counter).
pub(crate) const SKIPPED: &str = "rampart.queue.skipped";
/// Calls whose inner service panicked (counter).
pub(crate) const PANICKED: &str = "rampart.queue.panicked";
/// Time from enqueue until a worker took the request, in seconds
/// (histogram).
pub(crate) const WAIT_DURATION: &str = "rampart.queue.wait.duration";

/// The handles of one queue. The gauges move by deltas (never `set`), so
/// that queues sharing a name add up in one series.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) depth: Gauge,
    pub(crate) running: Gauge,
    pub(crate) workers: Gauge,
    pub(crate) completed: Counter,
    pub(crate) shed: Counter,
    pub(crate) skipped: Counter,
    pub(crate) panicked: Counter,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    wait: Histogram,
    /// Whether `wait` reaches a recorder: the clock is read for it only
    /// then (see [`now`](Self::now)).
    #[cfg(feature = "metrics")]
    timed: bool,
}

impl Metrics {
    /// Registers the handles under `name`.
    pub(crate) fn new(name: &LayerName) -> Metrics {
        let wait = Histogram::new(WAIT_DURATION, name);
        Metrics {
            depth: Gauge::new(DEPTH, name),
            running: Gauge::new(RUNNING, name),
            workers: Gauge::new(WORKERS, name),
            completed: Counter::new(COMPLETED, name),
            shed: Counter::new(SHED, name),
            skipped: Counter::new(SKIPPED, name),
            panicked: Counter::new(PANICKED, name),
            #[cfg(feature = "metrics")]
            timed: wait.is_recording(),
            wait,
        }
    }

    /// Now, for the wait histogram: a clock reading when the histogram
    /// reaches a recorder, else none (no recorder was installed when the
    /// queue was built, so no sample would be kept: the two readings and
    /// their difference per request are not paid for nothing). What a
    /// recorder receives is the same either way.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    pub(crate) fn now(&self) -> Stamp {
        #[cfg(feature = "metrics")]
        return Stamp(self.timed.then(tokio::time::Instant::now));
        #[cfg(not(feature = "metrics"))]
        Stamp()
    }

    /// A worker took a job queued at `stamp` off the queue at `now`: its
    /// wait, if both are clock readings.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables, clippy::unused_self))]
    pub(crate) fn waited(&self, stamp: Stamp, now: Stamp) {
        #[cfg(feature = "metrics")]
        if let (Some(at), Some(now)) = (stamp.0, now.0) {
            self.wait.record_duration(now.saturating_duration_since(at));
        }
    }
}

/// When a job was queued: a clock reading (one per request) only with the
/// `metrics` feature and a recorder behind `rampart.queue.wait.duration`
/// ([`Metrics::now`]); zero-sized without the feature.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stamp(#[cfg(feature = "metrics")] Option<tokio::time::Instant>);

impl Stamp {
    /// A clock reading, whatever the recorder (loom tests).
    #[cfg(all(test, rampart_loom, feature = "metrics"))]
    pub(crate) fn reading() -> Stamp {
        Stamp(Some(tokio::time::Instant::now()))
    }

    /// The clock reading behind the stamp, if one was taken (with the
    /// `metrics` feature and a recorder behind the wait histogram): a
    /// deadline check at the same moment reuses it
    /// rather than reading the clock again.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    pub(crate) fn instant(self) -> Option<tokio::time::Instant> {
        #[cfg(feature = "metrics")]
        return self.0;
        #[cfg(not(feature = "metrics"))]
        None
    }
}

/// Whether `ctx` is past its deadline at the moment `at` was stamped (the
/// clock is read only if the stamp has no reading and there is a
/// deadline).
#[inline]
pub(crate) fn expired_at(ctx: &rampart_core::Context, at: Stamp) -> bool {
    ctx.deadline()
        .is_some_and(|d| d <= at.instant().unwrap_or_else(tokio::time::Instant::now))
}

#[cfg(all(test, feature = "metrics", not(rampart_loom)))]
mod tests {
    use super::*;
    use rampart_testkit::MetricsCapture;

    #[test]
    fn without_a_recorder_the_wait_is_not_timed_and_no_clock_is_read() {
        let m = Metrics::new(&LayerName::default());
        assert!(m.now().instant().is_none());
    }

    #[test]
    fn with_a_recorder_each_stamp_is_a_clock_reading() {
        let cap = MetricsCapture::new();
        let m = cap.install(|| Metrics::new(&LayerName::from("timed")));
        assert!(m.now().instant().is_some());
    }
}
