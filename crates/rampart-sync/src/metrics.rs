//! The metric handles of a keyed lock and of a coalescer, registered once,
//! when the layer makes its first service, under the layer's name then. Without the `metrics`
//! feature every handle is a zero-sized no-op.

use rampart_core::telemetry::{Counter, Gauge, Histogram, LayerName};

/// Why a caller stopped waiting: the `reason` label of the `gave_up`
/// counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The request's cancellation token fired.
    Cancelled,
    /// The request's deadline passed.
    Deadline,
    /// The caller dropped its response future (a timeout above, a client
    /// gone).
    Dropped,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Cancelled => "cancelled",
            Reason::Deadline => "deadline",
            Reason::Dropped => "dropped",
        }
    }
}

/// One counter per reason.
#[derive(Debug)]
pub(crate) struct GaveUp {
    cancelled: Counter,
    deadline: Counter,
    /// Not registered (a no-op) where drops are not counted.
    dropped: Counter,
}

impl GaveUp {
    fn new(metric: &'static str, name: &LayerName, dropped: bool) -> GaveUp {
        let c = |r: Reason| Counter::with_labels(metric, name, &[("reason", r.as_str())]);
        GaveUp {
            cancelled: c(Reason::Cancelled),
            deadline: c(Reason::Deadline),
            dropped: if dropped {
                c(Reason::Dropped)
            } else {
                Counter::default()
            },
        }
    }

    pub(crate) fn count(&self, reason: Reason) {
        match reason {
            Reason::Cancelled => &self.cancelled,
            Reason::Deadline => &self.deadline,
            Reason::Dropped => &self.dropped,
        }
        .increment(1);
    }
}

/// Keys held now, one call holding each (gauge).
pub(crate) const LOCK_HELD: &str = "rampart.lock.held";
/// Calls waiting for a key another call holds (gauge).
pub(crate) const LOCK_WAITING: &str = "rampart.lock.waiting";
/// Calls that had to wait (counter).
pub(crate) const LOCK_WAITED: &str = "rampart.lock.waited";
/// Waiting calls that gave up, by `reason` (counter).
pub(crate) const LOCK_GAVE_UP: &str = "rampart.lock.gave_up";
/// Time spent waiting for a key, in seconds (histogram).
pub(crate) const LOCK_WAIT_DURATION: &str = "rampart.lock.wait.duration";

/// The handles of a [`KeyedLockLayer`](crate::KeyedLockLayer).
#[derive(Debug)]
pub(crate) struct LockMetrics {
    pub(crate) held: Gauge,
    pub(crate) waiting: Gauge,
    pub(crate) waited: Counter,
    pub(crate) gave_up: GaveUp,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) wait: Histogram,
}

impl LockMetrics {
    pub(crate) fn new(name: &LayerName) -> LockMetrics {
        LockMetrics {
            held: Gauge::new(LOCK_HELD, name),
            waiting: Gauge::new(LOCK_WAITING, name),
            waited: Counter::new(LOCK_WAITED, name),
            gave_up: GaveUp::new(LOCK_GAVE_UP, name, true),
            wait: Histogram::new(LOCK_WAIT_DURATION, name),
        }
    }
}

/// Calls made to the inner service, each the leader of a shared call
/// (counter).
pub(crate) const COALESCE_LEADERS: &str = "rampart.coalesce.leaders";
/// Requests that joined a call already in flight (counter).
pub(crate) const COALESCE_COALESCED: &str = "rampart.coalesce.coalesced";
/// Requests answered from a kept result (counter).
pub(crate) const COALESCE_CACHED: &str = "rampart.coalesce.cached";
/// Shared calls dropped because every caller had gone (counter).
pub(crate) const COALESCE_ABANDONED: &str = "rampart.coalesce.abandoned";
/// Callers that gave up waiting for a shared call, by `reason`
/// (`cancelled` | `deadline`; a caller that drops its future is not
/// counted) (counter).
pub(crate) const COALESCE_GAVE_UP: &str = "rampart.coalesce.gave_up";
/// Shared calls running now (gauge).
pub(crate) const COALESCE_IN_FLIGHT: &str = "rampart.coalesce.in_flight";
/// Callers waiting for a shared call, leaders included (gauge).
pub(crate) const COALESCE_WAITING: &str = "rampart.coalesce.waiting";

/// The handles of a [`CoalesceLayer`](crate::CoalesceLayer).
#[derive(Debug)]
pub(crate) struct CoalesceMetrics {
    pub(crate) leaders: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) cached: Counter,
    pub(crate) abandoned: Counter,
    pub(crate) gave_up: GaveUp,
    pub(crate) in_flight: Gauge,
    pub(crate) waiting: Gauge,
}

impl CoalesceMetrics {
    pub(crate) fn new(name: &LayerName) -> CoalesceMetrics {
        CoalesceMetrics {
            leaders: Counter::new(COALESCE_LEADERS, name),
            coalesced: Counter::new(COALESCE_COALESCED, name),
            cached: Counter::new(COALESCE_CACHED, name),
            abandoned: Counter::new(COALESCE_ABANDONED, name),
            gave_up: GaveUp::new(COALESCE_GAVE_UP, name, false),
            in_flight: Gauge::new(COALESCE_IN_FLIGHT, name),
            waiting: Gauge::new(COALESCE_WAITING, name),
        }
    }
}
