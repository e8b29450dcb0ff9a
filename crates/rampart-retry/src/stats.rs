//! Counters of a retry layer.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a retry layer's counters (shared by every service the layer
/// made; see [`RetryLayer::stats`](crate::RetryLayer::stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryStats {
    /// Requests (first attempts).
    pub calls: u64,
    /// Retries started (attempts after the first).
    pub retries: u64,
    /// Retryable failures returned because the budget had no token.
    pub budget_rejections: u64,
    /// Retryable failures returned for any other reason: attempts used up,
    /// deadline or `max_elapsed` too close, request not replayable,
    /// cancelled.
    pub exhausted: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) budget_rejections: AtomicU64,
    pub(crate) exhausted: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> RetryStats {
        RetryStats {
            calls: self.calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            budget_rejections: self.budget_rejections.load(Ordering::Relaxed),
            exhausted: self.exhausted.load(Ordering::Relaxed),
        }
    }
}
