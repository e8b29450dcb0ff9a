//! Adaptive limits: the limit follows what the service can take.
//!
//! After every call the layer hands its algorithm a [`Sample`]: how long the
//! call held its permit, how many permits were in use when it took its own,
//! and whether the result was an overload signal (a *drop*: the layer's
//! [`Classify`](rampart_core::Classify) judged it
//! [`Retryable`](rampart_core::Outcome::Retryable) — a 503, a 429, a per-attempt
//! timeout, gRPC `UNAVAILABLE`, a shed further down). Results judged
//! [`Fatal`](rampart_core::Outcome::Fatal) (a 404, a bad request, a deadline
//! that passed) say nothing about capacity and are not sampled, and neither
//! are calls whose caller went away. The algorithm answers with the new
//! limit, which takes effect at once: waiters that now fit are let in,
//! permits above a smaller limit are retired as they come back.
//!
//! The three algorithms, their parameters and their defaults are those of
//! Netflix's [concurrency-limits](https://github.com/Netflix/concurrency-limits):
//!
//! | algorithm | signal | defaults |
//! |---|---|---|
//! | [`Aimd`] | drops (and calls slower than `timeout`) | initial 20, min 20, max 200, backoff ratio 0.9, timeout 5 s |
//! | [`Vegas`] | queueing estimated from RTT vs. the no-load RTT | initial 20, min 1, max 1000, smoothing 1.0, probe multiplier 30, α = 3·log10(limit), β = 6·log10(limit) |
//! | [`Gradient2`] | short RTT vs. a long exponential average | initial 20, min 20, max 200, smoothing 0.2, queue size 4, long window 600, RTT tolerance 1.5 |
//!
//! By default calls are batched into [`SampleWindow`]s (Netflix's
//! `WindowedLimit`: one decision per window of about a second and at least
//! 10 calls, from their average RTT and whether any was a drop), which keeps
//! a few slow or refused calls from swinging the limit;
//! [`LimitBuilder::sample_window`](crate::LimitBuilder::sample_window)
//! shortens the window, or removes it to sample every call.
//!
//! Put per-attempt timeouts *inside* the limit (client stack: … → limit →
//! per-attempt timeout → client) so that a timed-out call is seen as a drop;
//! a caller that gives up outside the limit only cancels its call.

mod aimd;
mod gradient2;
mod vegas;
mod window;

pub use aimd::{Aimd, AimdConfig};
pub use gradient2::{Gradient2, Gradient2Config};
pub use vegas::{Vegas, VegasConfig};
pub use window::SampleWindow;
use window::Window;

use crate::error::count;
use crate::sem::Sem;
use crate::stats::Counters;
use rampart_core::Outcome;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// One finished call, as an adaptive algorithm sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Time from taking the permit to the response.
    pub rtt: Duration,
    /// Permits in use when this call took its permit, counting its own.
    pub in_flight: usize,
    /// The result was an overload signal.
    pub dropped: bool,
}

impl Sample {
    /// A sample.
    pub fn new(rtt: Duration, in_flight: usize, dropped: bool) -> Sample {
        Sample {
            rtt,
            in_flight,
            dropped,
        }
    }
}

/// An adaptive limit algorithm.
///
/// Implemented by [`Aimd`], [`Vegas`] and [`Gradient2`]; implement it to
/// plug in another. The layer calls it under a lock, one sample at a time
/// (once per [`SampleWindow`] when windowed; calls inside a window do not
/// take the lock).
pub trait LimitAlgorithm: Send + fmt::Debug + 'static {
    /// A short name for logs (`"aimd"`).
    fn name(&self) -> &'static str;
    /// The floor the limit never goes below (default 1). When a decrease
    /// or a drop leaves the limit there, the layer logs a `warn` event
    /// (once, until the limit rises again).
    fn min_limit(&self) -> usize {
        1
    }
    /// The current limit (at least 1).
    fn limit(&self) -> usize;
    /// Takes one sample into account and returns the new limit (at least 1;
    /// larger values are clamped to [`MAX_LIMIT`](crate::MAX_LIMIT)).
    fn update(&mut self, sample: Sample) -> usize;
}

/// `max(1, floor(log10(n)))`, Netflix's `Log10RootFunction` (applied here
/// at every size; Netflix switches to a square root from 1000 on).
pub(crate) fn log10_root(n: f64) -> f64 {
    if n >= 10.0 { n.log10().floor() } else { 1.0 }
}

/// An algorithm's limit as the semaphore holds it: within `1..=MAX_LIMIT`.
fn sem_limit(limit: usize) -> u32 {
    u32::try_from(limit.clamp(1, crate::MAX_LIMIT as usize)).unwrap_or(crate::MAX_LIMIT)
}

/// The algorithm of an adaptive layer, shared by its clones.
///
/// With a sample window, a call that does not close the window only touches
/// the window's atomics; the algorithm's lock is taken once per window, by
/// the call that closes it. Without one, every call is a sample and takes
/// the lock.
pub(crate) struct Adaptive {
    algo: Mutex<Algo>,
    window: Option<Window>,
    name: &'static str,
}

/// The algorithm, and whether the floor warning was given since the limit
/// last reached its floor (changed under the lock only).
struct Algo {
    algo: Box<dyn LimitAlgorithm>,
    at_floor: bool,
}

impl fmt::Debug for Adaptive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adaptive")
            .field("algorithm", &self.name)
            .finish_non_exhaustive()
    }
}

impl Adaptive {
    pub(crate) fn new(algo: Box<dyn LimitAlgorithm>, window: Option<SampleWindow>) -> Adaptive {
        Adaptive {
            name: algo.name(),
            algo: Mutex::new(Algo {
                algo,
                at_floor: false,
            }),
            window: window.map(Window::new),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Algo> {
        self.algo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn initial_limit(&self) -> u32 {
        sem_limit(self.lock().algo.limit())
    }

    /// Feeds a call that ended at `end` to the algorithm (through the
    /// window, if any), resizes `sem` and reports the change to `counters`
    /// (the `current` gauge; a `warn` event when the limit is pressed to
    /// its floor).
    pub(crate) fn on_result(
        &self,
        sem: &Sem,
        counters: &Counters,
        end: Instant,
        rtt: Duration,
        in_flight: u32,
        outcome: Outcome,
    ) {
        let dropped = match outcome {
            Outcome::Success => false,
            Outcome::Retryable { .. } => true,
            Outcome::Fatal => return,
        };
        let sample = Sample::new(rtt, count(in_flight), dropped);
        let sample = match &self.window {
            // Lock-free unless this call closes a full window.
            Some(w) => match w.add(end, sample) {
                Some(s) => s,
                None => return,
            },
            None => sample,
        };
        // The limit is set under the algorithm's lock so that concurrent
        // updates reach the semaphore in the order they were computed.
        let mut algo = self.lock();
        let old = sem.limit();
        let new = sem_limit(algo.algo.update(sample));
        let floor = sem_limit(algo.algo.min_limit());
        if new > floor {
            algo.at_floor = false;
        } else if !algo.at_floor && (new < old || sample.dropped) {
            // Pressed down to the floor: warn once, until it rises again.
            algo.at_floor = true;
            tracing::warn!(
                layer = %counters.name,
                algorithm = self.name,
                limit = new,
                rtt_us = sample.rtt.as_micros() as u64,
                dropped = sample.dropped,
                "adaptive concurrency limit at its floor"
            );
        }
        if new != old {
            sem.set_limit(new);
            if let Some(m) = counters.metrics() {
                m.current.set(new);
            }
            tracing::debug!(
                layer = %counters.name,
                algorithm = self.name,
                old,
                new,
                rtt_us = sample.rtt.as_micros() as u64,
                in_flight = sample.in_flight,
                dropped = sample.dropped,
                "concurrency limit changed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log10_root_matches_netflix_below_1000() {
        assert_eq!(log10_root(1.0) as u32, 1);
        assert_eq!(log10_root(9.0) as u32, 1);
        assert_eq!(log10_root(10.0) as u32, 1);
        assert_eq!(log10_root(99.0) as u32, 1);
        assert_eq!(log10_root(100.0) as u32, 2);
        assert_eq!(log10_root(999.0) as u32, 2);
    }

    #[test]
    fn fatal_results_are_not_sampled_and_drops_shrink() {
        let cfg = AimdConfig {
            initial_limit: 10,
            min_limit: 1,
            ..AimdConfig::default()
        };
        let adaptive = Adaptive::new(Box::new(cfg.build().unwrap()), None);
        let sem = Sem::new(adaptive.initial_limit());
        let c = Counters::new(rampart_core::telemetry::LayerName::default());
        let ms = Duration::from_millis(1);
        let now = Instant::now();
        adaptive.on_result(&sem, &c, now, ms, 10, Outcome::Fatal);
        assert_eq!(sem.limit(), 10);
        adaptive.on_result(&sem, &c, now, ms, 10, Outcome::Success);
        assert_eq!(sem.limit(), 11);
        adaptive.on_result(&sem, &c, now, ms, 10, Outcome::Retryable { after: None });
        assert_eq!(sem.limit(), 9);
    }
}
