//! The metric handles of a limit, registered once when the layer (or its
//! shared state) is built, under the layer's name. Without the `metrics`
//! feature every handle is a zero-sized no-op.

use rampart_core::telemetry::{Counter, Gauge, Histogram, LayerName};

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

/// The handles every limit (fixed, adaptive, keyed) records with.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) in_flight: Gauge,
    pub(crate) waiting: Gauge,
    pub(crate) current: Gauge,
    pub(crate) shed: Counter,
    expired_max_wait: Counter,
    expired_deadline: Counter,
    expired_cancelled: Counter,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) wait: Histogram,
}

impl Metrics {
    /// Registers the handles under `name`; `current` starts at `limit`.
    pub(crate) fn new(name: &LayerName, limit: u32) -> Metrics {
        let expired = |r: Reason| Counter::with_labels(EXPIRED, name, &[("reason", r.as_str())]);
        let m = Metrics {
            in_flight: Gauge::new(IN_FLIGHT, name),
            waiting: Gauge::new(WAITING, name),
            current: Gauge::new(CURRENT, name),
            shed: Counter::new(SHED, name),
            expired_max_wait: expired(Reason::MaxWait),
            expired_deadline: expired(Reason::Deadline),
            expired_cancelled: expired(Reason::Cancelled),
            wait: Histogram::new(WAIT_DURATION, name),
        };
        m.current.set(f64::from(limit));
        m
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

/// The handles only a keyed limit has.
#[derive(Debug)]
pub(crate) struct KeyedMetrics {
    pub(crate) keys: Gauge,
    pub(crate) keys_rejected: Counter,
}

impl KeyedMetrics {
    /// Registers the handles under `name`; `keys` starts at `keys`.
    pub(crate) fn new(name: &LayerName, keys: usize) -> KeyedMetrics {
        let m = KeyedMetrics {
            keys: Gauge::new(KEYS, name),
            keys_rejected: Counter::new(KEYS_REJECTED, name),
        };
        m.keys.set(keys as f64);
        m
    }
}
