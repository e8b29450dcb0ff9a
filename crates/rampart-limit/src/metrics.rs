//! The metric handles of a limit, registered once, when the layer makes its
//! first service, under the layer's name then (kept in the state its clones
//! share). Without the `metrics` feature every handle is a zero-sized no-op.

#[cfg(feature = "metrics")]
// Under `--cfg rampart_loom` the share's atomic is loom's (model below).
#[cfg(all(feature = "metrics", rampart_loom))]
use loom::sync::atomic::{AtomicU32, Ordering};
use rampart_core::telemetry::{Counter, Gauge, Histogram, LayerName};
#[cfg(all(feature = "metrics", not(rampart_loom)))]
use std::sync::atomic::{AtomicU32, Ordering};

/// Calls holding a permit (gauge).
pub(crate) const IN_FLIGHT: &str = "rampart.limit.in_flight";
/// Calls waiting in line for a permit (gauge).
pub(crate) const WAITING: &str = "rampart.limit.waiting";
/// The current limit: the adaptive limit as it moves, or the fixed limit
/// (per key for a keyed limit) (gauge).
pub(crate) const CURRENT: &str = "rampart.limit.current";
/// Calls refused at once (counter).
pub(crate) const SHED: &str = "rampart.limit.shed";
/// Waits that ended without a permit, by `reason` (counter).
pub(crate) const EXPIRED: &str = "rampart.limit.expired";
/// Time spent in line, in seconds, by every call that waited (histogram).
pub(crate) const WAIT_DURATION: &str = "rampart.limit.wait.duration";
/// Keys tracked by a keyed limit (gauge).
pub(crate) const KEYS: &str = "rampart.limit.keys";
/// Calls a keyed limit refused because its key map was full of busy keys
/// (counter).
pub(crate) const KEYS_REJECTED: &str = "rampart.limit.keys.rejected";

/// Why a wait ended without a permit: the `reason` label of
/// `rampart.limit.expired`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The layer's maximum wait passed.
    MaxWait,
    /// The request's deadline passed (or had passed on arrival).
    Deadline,
    /// The request's cancellation token fired.
    Cancelled,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::MaxWait => "max_wait",
            Reason::Deadline => "deadline",
            Reason::Cancelled => "cancelled",
        }
    }
}

/// A limit's share of `rampart.limit.current`: the gauge moves only by
/// this limit's changes (`new - old`), never set, and the share is taken
/// off when the handles are dropped (the layer's state dropped, or the
/// layer renamed), so limits sharing a name add up.
#[derive(Debug)]
pub(crate) struct Current {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    gauge: Gauge,
    /// The value this limit added to the series (only with the feature).
    #[cfg(feature = "metrics")]
    share: AtomicU32,
}

impl Current {
    fn new(name: &LayerName, limit: u32) -> Current {
        let gauge = Gauge::new(CURRENT, name);
        gauge.increment(f64::from(limit));
        Current {
            gauge,
            #[cfg(feature = "metrics")]
            share: AtomicU32::new(limit),
        }
    }

    /// The limit is now `new` (called on a change only, under the
    /// adaptive algorithm's lock: not on the call path).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables, clippy::unused_self))]
    pub(crate) fn set(&self, new: u32) {
        #[cfg(feature = "metrics")]
        self.gauge.increment(self.take_share(new));
    }

    /// Makes `new` this limit's share and returns the change to report:
    /// whatever order concurrent calls run in, the changes add up to the
    /// last share minus the first (checked by the loom model below).
    #[cfg(feature = "metrics")]
    fn take_share(&self, new: u32) -> f64 {
        let old = self.share.swap(new, Ordering::Relaxed);
        f64::from(new) - f64::from(old)
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        self.gauge
            .decrement(f64::from(self.share.load(Ordering::Relaxed)));
    }
}

/// The handles every limit (fixed, adaptive, keyed) records with.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) in_flight: Gauge,
    pub(crate) waiting: Gauge,
    pub(crate) current: Current,
    pub(crate) shed: Counter,
    expired_max_wait: Counter,
    expired_deadline: Counter,
    expired_cancelled: Counter,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) wait: Histogram,
}

impl Metrics {
    /// Registers the handles under `name`; this limit adds `limit` to
    /// `current` (its share, taken off when the handles are dropped).
    pub(crate) fn new(name: &LayerName, limit: u32) -> Metrics {
        let expired = |r: Reason| Counter::with_labels(EXPIRED, name, &[("reason", r.as_str())]);
        Metrics {
            in_flight: Gauge::new(IN_FLIGHT, name),
            waiting: Gauge::new(WAITING, name),
            current: Current::new(name, limit),
            shed: Counter::new(SHED, name),
            expired_max_wait: expired(Reason::MaxWait),
            expired_deadline: expired(Reason::Deadline),
            expired_cancelled: expired(Reason::Cancelled),
            wait: Histogram::new(WAIT_DURATION, name),
        }
    }

    /// Counts a wait that ended without a permit.
    pub(crate) fn expired(&self, reason: Reason) {
        match reason {
            Reason::MaxWait => &self.expired_max_wait,
            Reason::Deadline => &self.expired_deadline,
            Reason::Cancelled => &self.expired_cancelled,
        }
        .increment(1);
    }
}

/// The handles only a keyed limit has. The key map owns its share of
/// `keys` (the keys it holds) and takes it off when dropped or renamed.
#[derive(Debug)]
pub(crate) struct KeyedMetrics {
    pub(crate) keys: Gauge,
    pub(crate) keys_rejected: Counter,
}

impl KeyedMetrics {
    /// Registers the handles under `name`, adding `keys` (the map's share)
    /// to the `keys` series.
    pub(crate) fn new(name: &LayerName, keys: usize) -> KeyedMetrics {
        let m = KeyedMetrics {
            keys: Gauge::new(KEYS, name),
            keys_rejected: Counter::new(KEYS_REJECTED, name),
        };
        m.keys.increment(keys as f64);
        m
    }
}

#[cfg(all(test, rampart_loom, feature = "metrics"))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two updates race (and a third from the model's thread): the changes
    /// they report add up to the final share minus the initial one, so the
    /// series never drifts, and the drop takes off exactly the final share.
    #[test]
    fn loom_racing_changes_telescope_to_the_final_share() {
        loom::model(|| {
            let current = Arc::new(Current::new(&LayerName::default(), 10));
            let spawn = |new| {
                let current = current.clone();
                thread::spawn(move || current.take_share(new))
            };
            let (a, b) = (spawn(20), spawn(5));
            let c = current.take_share(7);
            let sum = a.join().unwrap() + b.join().unwrap() + c;
            let last = current.share.load(Ordering::Relaxed);
            assert!([20, 5, 7].contains(&last));
            assert!((sum - (f64::from(last) - 10.0)).abs() < f64::EPSILON);
        });
    }
}
