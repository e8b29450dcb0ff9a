//! [`Stats`] and [`KeyedStats`]: what a limit is doing right now, and what
//! it refused so far.

use crate::metrics::{Metrics, Reason};
use rampart_core::telemetry::{LayerName, Registered};
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
    /// Registered when the layer makes its first service
    /// ([`register_metrics`](Self::register_metrics)), under `name`.
    metrics: Registered<Metrics>,
}

impl Counters {
    /// Counters for a layer named `name` (its metric handles are
    /// registered when it makes its first service).
    pub(crate) fn new(name: LayerName) -> Counters {
        Counters {
            shed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            metrics: Registered::new(),
            name,
        }
    }

    /// Registers the metric handles under the layer's name with the
    /// recorder installed now, the limit being `limit`, unless done already
    /// (`Layer::layer`: before any service exists nothing records).
    pub(crate) fn register_metrics(&self, limit: impl FnOnce() -> u32) {
        self.metrics.register(|| Metrics::new(&self.name, limit()));
    }

    /// The metric handles, once registered.
    #[inline]
    pub(crate) fn metrics(&self) -> Option<&Metrics> {
        self.metrics.get()
    }

    /// Renames the layer (the counts are kept). Handles registered under
    /// the old name, if a service was made and dropped since, are dropped,
    /// taking this limit's share off the old series (other layers of that
    /// name keep theirs); the next service registers them under the new
    /// name.
    pub(crate) fn rename(&mut self, name: LayerName) {
        self.metrics = Registered::new();
        self.name = name;
    }

    /// Counts a call refused at once.
    pub(crate) fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics() {
            m.shed.increment(1);
        }
    }

    /// Counts a wait that ended without a permit (`Stats::expired` counts
    /// the maximum wait and the deadline, not cancellations).
    pub(crate) fn expired(&self, reason: Reason) {
        if reason != Reason::Cancelled {
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(m) = self.metrics() {
            m.expired(reason);
        }
    }

    pub(crate) fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    pub(crate) fn expired_count(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}
