//! The retry policy: how many attempts, for how long, and the decision to
//! retry one failure.

use crate::backoff::{Backoff, Delays};
use crate::budget::BudgetConfig;
use crate::metrics::Metrics;
use crate::stats::Counters;
use crate::{Budget, ConfigError};
use rampart_core::telemetry::{LayerName, Registered};
use rampart_core::{BoxError, CancellationToken, Context, Error, RequestId};
use std::cell::Cell;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// What a retry layer returns when it gives up on a failure that was an
/// *error* (a failed *response*, e.g. a 503, is always returned as it is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum OnExhausted {
    /// [`ErrorKind::RetriesExhausted`](rampart_core::ErrorKind::RetriesExhausted)
    /// with the attempt count, the last error as its source. Outer retry
    /// layers see it as final and do not retry again. The default.
    #[default]
    RetriesExhausted,
    /// The last error itself (through [`Error::from_inner`]).
    LastError,
}

/// The settings of a retry layer, e.g. from a config file
/// (`serde::Deserialize` with the `serde` feature; every field is optional).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct RetryConfig {
    /// Attempts in all, the first call included (default 3; at least 1).
    pub max_attempts: usize,
    /// No retry is started, nor slept towards, past this time after the first
    /// call (default: none).
    pub max_elapsed: Option<Duration>,
    /// The delays between attempts.
    pub backoff: Backoff,
    /// A retry budget of this layer's own (default: none); see
    /// [`RetryBuilder::budget`](crate::RetryBuilder::budget) to share one.
    pub budget: Option<BudgetConfig>,
    /// What to return when giving up on an error.
    pub on_exhausted: OnExhausted,
    /// Count calls, retries, budget rejections and give-ups (default: off;
    /// see [`RetryLayer::stats`](crate::RetryLayer::stats)).
    pub stats: bool,
    /// Seed of the jitter, for repeatable delays (default: random). With a
    /// seed, the k-th request that starts retrying on a thread (counting
    /// from 0) draws its delays from [`Backoff::delays`]`(seed + k)`.
    pub seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            max_elapsed: None,
            backoff: Backoff::default(),
            budget: None,
            on_exhausted: OnExhausted::default(),
            stats: false,
            seed: None,
        }
    }
}

impl RetryConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                "max_attempts",
                0,
                "at least 1 (it counts the first call)",
            ));
        }
        if self.max_elapsed == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "max_elapsed",
                Duration::ZERO,
                "a duration above zero (use max_attempts(1) to disable retries)",
            ));
        }
        self.backoff.validate()?;
        if let Some(b) = &self.budget {
            b.build()?;
        }
        Ok(())
    }
}

/// Why a retryable failure was not retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GiveUp {
    Attempts,
    NotReplayable,
    Cancelled,
    Deadline,
    Elapsed,
    Budget,
}

impl GiveUp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GiveUp::Attempts => "max attempts reached",
            GiveUp::NotReplayable => "request cannot be replayed",
            GiveUp::Cancelled => "request cancelled",
            GiveUp::Deadline => "next attempt would start after the deadline",
            GiveUp::Elapsed => "next attempt would start after max_elapsed",
            GiveUp::Budget => "retry budget exhausted",
        }
    }

    /// The `reason` label of `rampart.retry.exhausted` (and of the
    /// budget's own counter, `rampart.retry.budget.rejected`).
    pub(crate) fn label(self) -> &'static str {
        match self {
            GiveUp::Attempts => "max_attempts",
            GiveUp::NotReplayable => "not_replayable",
            GiveUp::Cancelled => "cancelled",
            GiveUp::Deadline => "deadline",
            GiveUp::Elapsed => "max_elapsed",
            GiveUp::Budget => "budget",
        }
    }
}

/// Whether the budget refused the last retry this layer asked for: the
/// first refusal after a granted retry is a warning ("the budget ran
/// dry"), the next ones debug events, until the budget grants one again.
/// Only decides the level of an event; a race at worst logs one more
/// warning. A clone starts afresh.
#[derive(Debug, Default)]
struct Dry(AtomicBool);

impl Clone for Dry {
    fn clone(&self) -> Self {
        Dry::default()
    }
}

/// The validated policy, shared (behind one `Arc`, with the classifier and
/// the replay strategy) by a layer, its services and their calls.
#[derive(Clone)]
pub(crate) struct Policy {
    backoff: Backoff,
    // Nanoseconds; `None` when unset (zero is refused by validation).
    max_elapsed: Option<NonZeroU64>,
    // Give-up times are kept as nanoseconds since this instant (8 bytes in
    // every response future instead of 16).
    anchor: Instant,
    seed: u64,
    pub(crate) max_attempts: u32,
    on_exhausted: OnExhausted,
    seeded: bool,
    pub(crate) budget: Option<Budget>,
    pub(crate) counters: Option<Arc<Counters>>,
    /// The `layer` label of the metrics and field of the tracing events.
    pub(crate) name: LayerName,
    /// Registered when the layer makes its first service
    /// ([`register_metrics`](Self::register_metrics)), under `name`.
    metrics: Registered<Metrics>,
    dry: Dry,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("max_attempts", &self.max_attempts)
            .field(
                "max_elapsed",
                &self.max_elapsed.map(|n| Duration::from_nanos(n.get())),
            )
            .field("backoff", &self.backoff)
            .field("on_exhausted", &self.on_exhausted)
            .field("seed", &self.seeded.then_some(self.seed))
            .field("budget", &self.budget)
            .field("stats", &self.counters.is_some())
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Default for Policy {
    /// [`RetryConfig::default`], which is valid: no validation needed.
    fn default() -> Self {
        let c = RetryConfig::default();
        Policy {
            backoff: c.backoff,
            max_elapsed: None,
            anchor: Instant::now(),
            seed: 0,
            max_attempts: u32::try_from(c.max_attempts).unwrap_or(u32::MAX),
            on_exhausted: c.on_exhausted,
            seeded: false,
            budget: None,
            counters: None,
            metrics: Registered::new(),
            name: LayerName::default(),
            dry: Dry::default(),
        }
    }
}

impl Policy {
    pub(crate) fn new(
        config: &RetryConfig,
        budget: Option<Budget>,
        name: LayerName,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let budget = match (budget, &config.budget) {
            (Some(b), _) => Some(b),
            (None, Some(cfg)) => Some(cfg.build()?),
            (None, None) => None,
        };
        let max_elapsed = config
            .max_elapsed
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .and_then(NonZeroU64::new);
        Ok(Policy {
            backoff: config.backoff,
            max_elapsed,
            anchor: Instant::now(),
            seed: config.seed.unwrap_or_default(),
            max_attempts: u32::try_from(config.max_attempts).unwrap_or(u32::MAX),
            on_exhausted: config.on_exhausted,
            seeded: config.seed.is_some(),
            budget,
            counters: config.stats.then(Arc::default),
            metrics: Registered::new(),
            name,
            dry: Dry::default(),
        })
    }

    /// Renames the layer: its metric handles are registered under the new
    /// name when it makes its first service.
    pub(crate) fn rename(&mut self, name: LayerName) {
        self.metrics = Registered::new();
        self.name = name;
    }

    /// Registers the metric handles under the layer's name, with the
    /// recorder installed now, unless done already (`Layer::layer`).
    pub(crate) fn register_metrics(&self) {
        self.metrics.register(|| Metrics::new(&self.name));
    }

    /// When a retry may no longer start, for a call starting now, in
    /// nanoseconds since the policy's anchor (`None`: no `max_elapsed`; the
    /// clock is not read). Never zero: `max_elapsed` is not.
    #[inline]
    pub(crate) fn give_up_at(&self) -> Option<NonZeroU64> {
        let max = self.max_elapsed?;
        let since = Instant::now().saturating_duration_since(self.anchor);
        let since = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        Some(max.saturating_add(since))
    }

    /// Records a first call (stats, metrics, budget deposit).
    #[inline]
    pub(crate) fn on_call(&self) {
        if let Some(c) = &self.counters {
            c.calls.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(m) = self.metrics.get() {
            m.attempt();
        }
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }

    /// Records a retry being decided, to start after `delay`.
    pub(crate) fn on_retry(&self, delay: Duration) {
        if let Some(c) = &self.counters {
            c.retries.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(m) = self.metrics.get() {
            m.retry(delay);
        }
    }

    /// Records a retry attempt being sent to the inner service.
    pub(crate) fn on_attempt(&self) {
        if let Some(m) = self.metrics.get() {
            m.attempt();
        }
    }

    /// Decides whether the failure of attempt `attempt` is retried: the
    /// delay before the next attempt, or why not. `replayable` says whether
    /// the request can be sent again; `after` is the peer's requested delay.
    ///
    /// A delay asked by the peer replaces the backoff delay and restarts the
    /// backoff (gRPC A6): the next backoff delay is the first one again.
    /// Also returns the request's cancellation token, if any, so that the
    /// sleep can wake on it.
    pub(crate) fn decide(
        &self,
        attempt: u32,
        replayable: bool,
        give_up_at: Option<NonZeroU64>,
        delays: &mut Option<Delays>,
        after: Option<Duration>,
    ) -> Result<(Duration, Option<CancellationToken>), GiveUp> {
        if attempt >= self.max_attempts {
            return Err(GiveUp::Attempts);
        }
        if !replayable {
            return Err(GiveUp::NotReplayable);
        }
        let (deadline, cancel) = Context::with_current(|c| {
            c.map_or((None, None), |c| (c.deadline(), c.cancellation().cloned()))
        });
        if cancel.as_ref().is_some_and(CancellationToken::is_cancelled) {
            return Err(GiveUp::Cancelled);
        }
        let delay = match after {
            // The peer's delay replaces the backoff and restarts it.
            Some(after) => {
                if let Some(d) = delays {
                    d.restart();
                }
                after
            }
            None => delays
                .get_or_insert_with(|| self.backoff.delays(self.next_stream()))
                .next()
                .unwrap_or_default(),
        };
        // Beyond the clock's range: no limit in practice.
        let give_up_at =
            give_up_at.and_then(|n| self.anchor.checked_add(Duration::from_nanos(n.get())));
        if deadline.is_some() || give_up_at.is_some() {
            let resume = rampart_core::codec::deadline_after(Instant::now(), delay);
            if deadline.is_some_and(|d| resume >= d) {
                return Err(GiveUp::Deadline);
            }
            if give_up_at.is_some_and(|at| resume > at) {
                return Err(GiveUp::Elapsed);
            }
        }
        if let Some(b) = &self.budget {
            if !b.try_withdraw() {
                return Err(GiveUp::Budget);
            }
            // Granted: a later refusal is the budget running dry again.
            if self.dry.0.load(Ordering::Relaxed) {
                self.dry.0.store(false, Ordering::Relaxed);
            }
        }
        Ok((delay, cancel))
    }

    /// The seed of the next request that starts retrying on this thread.
    fn next_stream(&self) -> u64 {
        thread_local! {
            // (random salt of this thread, requests that retried here)
            static STREAMS: Cell<(u64, u64)> = Cell::new((random_seed(), 0));
        }
        STREAMS.with(|s| {
            let (salt, k) = s.get();
            s.set((salt, k.wrapping_add(1)));
            let base = if self.seeded { self.seed } else { salt };
            base.wrapping_add(k)
        })
    }

    /// Counts a give-up in the metrics, and in the stats if enabled.
    pub(crate) fn count_give_up(&self, why: GiveUp) {
        if let Some(m) = self.metrics.get() {
            m.give_up(why);
        }
        if let Some(c) = &self.counters {
            let counter = if why == GiveUp::Budget {
                &c.budget_rejections
            } else {
                &c.exhausted
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The result returned when giving up on `result` after `attempts`.
    pub(crate) fn give_up<Res>(
        &self,
        result: Result<Res, BoxError>,
        attempts: u32,
        why: GiveUp,
    ) -> Result<Res, Error> {
        self.count_give_up(why);
        let name = &self.name;
        // The first refusal after a granted retry: the budget ran dry.
        if why == GiveUp::Budget
            && !self.dry.0.load(Ordering::Relaxed)
            && !self.dry.0.swap(true, Ordering::Relaxed)
        {
            with_request_id(|request_id| {
                tracing::warn!(
                    layer = %name,
                    attempts,
                    reason = why.as_str(),
                    request_id,
                    "retry: budget ran dry, giving up"
                );
            });
        } else {
            with_request_id(|request_id| {
                tracing::debug!(
                    layer = %name,
                    attempts,
                    reason = why.as_str(),
                    request_id,
                    "retry: giving up"
                );
            });
        }
        match (result, self.on_exhausted) {
            (Ok(res), _) => Ok(res),
            // The caller is gone: say so, whatever the last failure was.
            (Err(_), _) if why == GiveUp::Cancelled => Err(Error::cancelled()),
            (Err(e), OnExhausted::RetriesExhausted) => {
                // Keep a "try again after" hint of the last failure visible.
                let after = e.downcast_ref::<Error>().and_then(Error::retry_after);
                Err(Error::retries_exhausted(attempts, e).with_retry_after(after))
            }
            (Err(e), OnExhausted::LastError) => Err(Error::from_inner(e)),
        }
    }
}

/// Calls `f` with the current request id, for tracing (no copy).
pub(crate) fn with_request_id(f: impl FnOnce(Option<&str>)) {
    Context::with_current(|c| f(c.and_then(Context::request_id).map(RequestId::as_str)));
}

/// A seed that differs per thread and per process, without an OS entropy
/// dependency: std's hasher keys are random per process.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.finish()
}
