//! [`Stats`] and [`KeyedStats`]: what a limit is doing right now, and what
//! it refused so far.

use crate::metrics::{Metrics, Reason};
use rampart_core::telemetry::LayerName;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls holding a permit (may exceed `limit` for a moment after an
    /// adaptive limit shrank).
    pub in_flight: usize,
    /// Calls waiting for a permit.
    pub waiting: usize,
    /// The current limit.
    pub limit: usize,
    /// Calls refused at once (shed mode, or the wait queue was full).
    pub shed: u64,
    /// Calls that waited and gave up: the maximum wait or the request's
    /// deadline passed.
    pub expired: u64,
}

/// A snapshot of a [`KeyedConcurrencyLimitLayer`](crate::KeyedConcurrencyLimitLayer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyedStats {
    /// Keys in the map (with calls in flight or waiting, or idle and not
    /// evicted yet).
    pub keys: usize,
    /// Calls holding a permit, all keys together.
    pub in_flight: usize,
    /// Calls waiting, all keys together.
    pub waiting: usize,
    /// The limit of each key.
    pub limit_per_key: usize,
    /// Calls refused at once because their key was at its limit.
    pub shed: u64,
    /// Calls that waited and gave up.
    pub expired: u64,
    /// Calls refused because the map was full of busy keys.
    pub key_map_full: u64,
}

/// Counters on the decision paths (never touched by a call that gets a
/// permit at once), the layer's name (the `layer` field of its events and
/// label of its metrics) and its metric handles.
#[derive(Debug)]
pub(crate) struct Counters {
    shed: AtomicU64,
    expired: AtomicU64,
    pub(crate) name: LayerName,
    pub(crate) metrics: Metrics,
}

impl Counters {
    /// Counters for a layer named `name` whose limit is `limit`.
    pub(crate) fn new(name: LayerName, limit: u32) -> Counters {
        Counters {
            shed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            metrics: Metrics::new(&name, limit),
            name,
        }
    }

    /// Renames the layer: its metrics are registered again under the new
    /// name (with the recorder installed now). The counts are kept.
    pub(crate) fn rename(&mut self, name: LayerName, limit: u32) {
        // Dropping the old handles takes this limit's share off the old
        // series (other layers of that name keep theirs); the new handles
        // add it to the new one.
        self.metrics = Metrics::new(&name, limit);
        self.name = name;
    }

    /// Counts a call refused at once.
    pub(crate) fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
        self.metrics.shed.increment(1);
    }

    /// Counts a wait that ended without a permit (`Stats::expired` counts
    /// the maximum wait and the deadline, not cancellations).
    pub(crate) fn expired(&self, reason: Reason) {
        if reason != Reason::Cancelled {
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.expired(reason);
    }

    pub(crate) fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    pub(crate) fn expired_count(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}
