//! Sample windows: many calls, one decision (Netflix's `WindowedLimit`).

use super::Sample;
use crate::error::LimitConfigError;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How calls are batched before the algorithm sees them; the defaults are
/// those of Netflix's `WindowedLimit`.
///
/// A window closes with the first call that ends after it (each window
/// lasts twice its average RTT, within `min_time..=max_time`). If it holds
/// at least `min_samples` calls, the algorithm gets one [`Sample`]: the
/// average RTT, the most permits in use, and whether any call was a drop.
/// Calls faster than `min_rtt` are not counted (drops always are).
///
/// Deciding once per window rather than once per call keeps a handful of
/// slow or refused calls from swinging the limit; without a window (see
/// [`LimitBuilder::sample_window`](crate::LimitBuilder::sample_window)) every
/// call is a sample, as with Netflix's bare limits.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct SampleWindow {
    /// The shortest window (default 1 s).
    pub min_time: Duration,
    /// The longest window (default 1 s).
    pub max_time: Duration,
    /// Windows with fewer calls are discarded (default 10).
    pub min_samples: usize,
    /// Calls faster than this are not counted (default 100 µs).
    pub min_rtt: Duration,
}

impl Default for SampleWindow {
    fn default() -> Self {
        SampleWindow {
            min_time: Duration::from_secs(1),
            max_time: Duration::from_secs(1),
            min_samples: 10,
            min_rtt: Duration::from_micros(100),
        }
    }
}

impl SampleWindow {
    pub(crate) fn check(&self) -> Result<(), LimitConfigError> {
        if self.min_time.is_zero() {
            return Err(LimitConfigError::Zero { field: "min_time" });
        }
        if self.min_samples == 0 {
            return Err(LimitConfigError::Zero {
                field: "min_samples",
            });
        }
        if self.max_time > rampart_core::codec::MAX_DURATION {
            return Err(LimitConfigError::InvalidFactor {
                field: "max_time",
                value: self.max_time.as_secs_f64(),
                expected: "max_time <= rampart_core::codec::MAX_DURATION (about 31 years)",
            });
        }
        if self.min_time > self.max_time {
            return Err(LimitConfigError::InvalidFactor {
                field: "min_time",
                value: self.min_time.as_secs_f64(),
                expected: "min_time <= max_time",
            });
        }
        Ok(())
    }
}

/// The window being filled, shared by every call without a lock.
///
/// A call inside the window only adds to atomic counters. The first call
/// that ends after the window's deadline wins the right to close it (a
/// compare-and-swap on the deadline), takes the counters and opens the next
/// window; only then does the caller lock the algorithm. A call that ends
/// while another closes the window is counted in the next one, and a call
/// racing the close may have its RTT land in one window and its count in
/// the other: an approximation of at most a call or two per window.
#[derive(Debug)]
pub(crate) struct Window {
    cfg: SampleWindow,
    /// Where the deadlines are measured from.
    base: Instant,
    /// The window's deadline in nanoseconds after `base`, plus one; `OPEN`
    /// before the first call (the first call closes the empty window at
    /// once), `CLOSING` while a caller closes it.
    closes_at: AtomicU64,
    /// Sum of the counted RTTs in nanoseconds.
    rtt_sum: AtomicU64,
    /// The sum of `rtt_sum` wrapped around (hundreds of years of RTT).
    rtt_overflow: AtomicBool,
    /// Counted calls.
    timed: AtomicU64,
    /// Drops.
    drops: AtomicU64,
    max_in_flight: AtomicUsize,
}

/// `closes_at` before the first call: due at once.
const OPEN: u64 = 0;
/// `closes_at` while a caller closes the window: later calls join the next
/// window.
const CLOSING: u64 = u64::MAX;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Window {
    pub(crate) fn new(cfg: SampleWindow) -> Window {
        Window {
            cfg,
            base: Instant::now(),
            closes_at: AtomicU64::new(OPEN),
            rtt_sum: AtomicU64::new(0),
            rtt_overflow: AtomicBool::new(false),
            timed: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// `end` as stored in `closes_at` (never `OPEN` nor `CLOSING`).
    fn stamp(&self, end: Instant) -> u64 {
        nanos(end.saturating_duration_since(self.base)).clamp(1, CLOSING - 1)
    }

    /// Adds a call that ended at `end`; returns the window's sample when
    /// this call closed a full window. Lock-free; two atomic additions (three for a drop) for
    /// a call inside the window.
    pub(crate) fn add(&self, end: Instant, s: Sample) -> Option<Sample> {
        let timed = s.rtt >= self.cfg.min_rtt;
        if !timed && !s.dropped {
            return None;
        }
        let at = self.closes_at.load(Ordering::Acquire);
        let stamp = self.stamp(end);
        let closing = (at == OPEN || stamp > at)
            && self
                .closes_at
                .compare_exchange(at, CLOSING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        if !closing {
            self.count(s, timed);
            return None;
        }
        // This call closes the window: take what the others added, then
        // add itself.
        let timed_n = self.timed.swap(0, Ordering::AcqRel);
        let drops = self.drops.swap(0, Ordering::AcqRel);
        let sum = self.rtt_sum.swap(0, Ordering::AcqRel);
        let overflow = self.rtt_overflow.swap(false, Ordering::AcqRel);
        let max_in_flight = self.max_in_flight.swap(0, Ordering::AcqRel);
        let mut timed_n = usize::try_from(timed_n).unwrap_or(usize::MAX);
        let mut drops = usize::try_from(drops).unwrap_or(usize::MAX);
        let mut rtt_sum = if overflow {
            Duration::MAX
        } else {
            Duration::from_nanos(sum)
        };
        if timed {
            rtt_sum = rtt_sum.saturating_add(s.rtt);
            timed_n = timed_n.saturating_add(1);
        }
        if s.dropped {
            drops = drops.saturating_add(1);
        }
        let max_in_flight = max_in_flight.max(s.in_flight);
        let avg = if timed_n == 0 {
            Duration::ZERO
        } else {
            // `Duration` divides by a `u32`; past that many calls the
            // divisor saturates.
            rtt_sum / u32::try_from(timed_n).unwrap_or(u32::MAX)
        };
        let span = avg
            .saturating_mul(2)
            .clamp(self.cfg.min_time, self.cfg.max_time);
        let next = rampart_core::codec::deadline_after(end, span);
        self.closes_at.store(self.stamp(next), Ordering::Release);
        let full = timed_n.saturating_add(drops) >= self.cfg.min_samples;
        full.then_some(Sample::new(avg, max_in_flight, drops > 0))
    }

    /// Counts a call inside the window.
    fn count(&self, s: Sample, timed: bool) {
        if timed {
            self.timed.fetch_add(1, Ordering::Relaxed);
            let n = nanos(s.rtt);
            let before = self.rtt_sum.fetch_add(n, Ordering::Relaxed);
            if before.checked_add(n).is_none() {
                self.rtt_overflow.store(true, Ordering::Relaxed);
            }
        }
        if s.dropped {
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
        if s.in_flight > self.max_in_flight.load(Ordering::Relaxed) {
            self.max_in_flight.fetch_max(s.in_flight, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_sample_per_full_window_with_average_rtt_max_in_flight_and_any_drop() {
        let cfg = SampleWindow {
            min_time: 100 * MS,
            max_time: 100 * MS,
            min_samples: 3,
            min_rtt: MS,
        };
        let w = Window::new(cfg);
        let t0 = Instant::now();
        // The first call opens the first window (nothing to report yet).
        assert_eq!(w.add(t0, Sample::new(10 * MS, 1, false)), None);
        assert_eq!(w.add(t0 + 10 * MS, Sample::new(10 * MS, 4, false)), None);
        assert_eq!(w.add(t0 + 20 * MS, Sample::new(30 * MS, 2, false)), None);
        assert_eq!(
            w.add(t0 + 30 * MS, Sample::new(MS / 2, 9, false)),
            None,
            "too fast: not counted"
        );
        assert_eq!(
            w.add(t0 + 40 * MS, Sample::new(MS / 2, 3, true)),
            None,
            "drops always count"
        );
        assert_eq!(
            w.add(t0 + 101 * MS, Sample::new(20 * MS, 1, false)),
            Some(Sample::new(20 * MS, 4, true))
        );
        // A window with too few calls is discarded.
        assert_eq!(w.add(t0 + 250 * MS, Sample::new(20 * MS, 1, false)), None);
    }

    #[test]
    fn calls_added_from_many_threads_all_reach_the_window_sample() {
        let cfg = SampleWindow {
            min_time: 100 * MS,
            max_time: 100 * MS,
            min_samples: 4001,
            min_rtt: MS,
        };
        let w = Window::new(cfg);
        let t0 = Instant::now();
        assert_eq!(w.add(t0, Sample::new(10 * MS, 1, false)), None);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let w = &w;
                s.spawn(move || {
                    for i in 0..1000usize {
                        let drop = t == 3 && i == 500;
                        let s = Sample::new(10 * MS, t * 1000 + i, drop);
                        assert_eq!(w.add(t0 + 50 * MS, s), None, "inside the window");
                    }
                });
            }
        });
        assert_eq!(
            w.add(t0 + 101 * MS, Sample::new(10 * MS, 1, false)),
            Some(Sample::new(10 * MS, 3999, true)),
            "4001 calls, one drop"
        );
    }

    #[test]
    fn bad_windows_are_typed_errors() {
        let d = SampleWindow::default;
        assert!(
            SampleWindow {
                min_time: Duration::MAX,
                max_time: Duration::MAX,
                ..d()
            }
            .check()
            .is_err(),
            "a window past MAX_DURATION would overflow Instant"
        );
        assert!(
            SampleWindow {
                min_time: Duration::ZERO,
                ..d()
            }
            .check()
            .is_err()
        );
        assert!(
            SampleWindow {
                min_samples: 0,
                ..d()
            }
            .check()
            .is_err()
        );
        assert!(
            SampleWindow {
                min_time: 2 * d().max_time,
                ..d()
            }
            .check()
            .is_err()
        );
        assert!(d().check().is_ok());
    }
}
