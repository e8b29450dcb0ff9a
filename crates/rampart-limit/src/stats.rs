//! [`Stats`] and [`KeyedStats`]: what a limit is doing right now, and what
//! it refused so far.

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
/// permit at once).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    shed: AtomicU64,
    expired: AtomicU64,
}

impl Counters {
    pub(crate) fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn expired(&self) {
        self.expired.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    pub(crate) fn expired_count(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}
