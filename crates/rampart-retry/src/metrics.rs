//! The retry layer's metric handles (`rampart_core::telemetry`), registered
//! once, when the layer makes its first service, and kept in its shared
//! policy; zero-sized no-ops without the `metrics` feature.

use crate::policy::GiveUp;
use rampart_core::telemetry::{Counter, Histogram, LayerName};
use std::time::Duration;

/// `rampart.retry.attempts`: calls made to the inner service, first
/// attempts and retries.
pub(crate) const ATTEMPTS: &str = "rampart.retry.attempts";
/// `rampart.retry.retries`: retries decided (a backoff delay chosen).
pub(crate) const RETRIES: &str = "rampart.retry.retries";
/// `rampart.retry.exhausted{reason}`: retryable failures returned without
/// another attempt, for any reason but the budget.
pub(crate) const EXHAUSTED: &str = "rampart.retry.exhausted";
/// `rampart.retry.budget.rejected`: retryable failures returned because the
/// retry budget had no token.
pub(crate) const BUDGET_REJECTED: &str = "rampart.retry.budget.rejected";
/// `rampart.retry.backoff.duration`: the delay before each retry, seconds.
pub(crate) const BACKOFF: &str = "rampart.retry.backoff.duration";

/// The handles a retry layer records through.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics {
    attempts: Counter,
    retries: Counter,
    budget_rejected: Counter,
    // `rampart.retry.exhausted` by `reason`.
    max_attempts: Counter,
    not_replayable: Counter,
    cancelled: Counter,
    deadline: Counter,
    max_elapsed: Counter,
    backoff: Histogram,
}

impl Metrics {
    /// Registers the handles of a layer named `name` with the recorder
    /// installed now.
    pub(crate) fn new(name: &LayerName) -> Metrics {
        let exhausted =
            |why: GiveUp| Counter::with_labels(EXHAUSTED, name, &[("reason", why.label())]);
        Metrics {
            attempts: Counter::new(ATTEMPTS, name),
            retries: Counter::new(RETRIES, name),
            budget_rejected: Counter::new(BUDGET_REJECTED, name),
            max_attempts: exhausted(GiveUp::Attempts),
            not_replayable: exhausted(GiveUp::NotReplayable),
            cancelled: exhausted(GiveUp::Cancelled),
            deadline: exhausted(GiveUp::Deadline),
            max_elapsed: exhausted(GiveUp::Elapsed),
            backoff: Histogram::new(BACKOFF, name),
        }
    }

    /// A call made to the inner service.
    #[inline]
    pub(crate) fn attempt(&self) {
        self.attempts.increment(1);
    }

    /// A retry decided, after `delay`.
    pub(crate) fn retry(&self, delay: Duration) {
        self.retries.increment(1);
        self.backoff.record_duration(delay);
    }

    /// A retryable failure returned, for `why`.
    pub(crate) fn give_up(&self, why: GiveUp) {
        match why {
            GiveUp::Budget => self.budget_rejected.increment(1),
            GiveUp::Attempts => self.max_attempts.increment(1),
            GiveUp::NotReplayable => self.not_replayable.increment(1),
            GiveUp::Cancelled => self.cancelled.increment(1),
            GiveUp::Deadline => self.deadline.increment(1),
            GiveUp::Elapsed => self.max_elapsed.increment(1),
        }
    }
}
