//! Sample windows: many calls, one decision (Netflix's `WindowedLimit`).

use super::Sample;
use crate::error::ConfigError;
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
    pub min_samples: u32,
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
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.min_time.is_zero() {
            return Err(ConfigError::Zero { field: "min_time" });
        }
        if self.min_samples == 0 {
            return Err(ConfigError::Zero {
                field: "min_samples",
            });
        }
        if self.max_time > rampart_core::codec::MAX_DURATION {
            return Err(ConfigError::InvalidFactor {
                field: "max_time",
                value: self.max_time.as_secs_f64(),
                expected: "max_time <= rampart_core::codec::MAX_DURATION (about 31 years)",
            });
        }
        if self.min_time > self.max_time {
            return Err(ConfigError::InvalidFactor {
                field: "min_time",
                value: self.min_time.as_secs_f64(),
                expected: "min_time <= max_time",
            });
        }
        Ok(())
    }
}

/// The window being filled.
#[derive(Debug)]
pub(crate) struct Window {
    cfg: SampleWindow,
    closes_at: Option<Instant>,
    rtt_sum: Duration,
    timed: u32,
    drops: u32,
    max_in_flight: u32,
}

impl Window {
    pub(crate) fn new(cfg: SampleWindow) -> Window {
        Window {
            cfg,
            closes_at: None,
            rtt_sum: Duration::ZERO,
            timed: 0,
            drops: 0,
            max_in_flight: 0,
        }
    }

    /// Adds a call that ended at `end`; returns the window's sample when
    /// this call closed a full window.
    pub(crate) fn add(&mut self, end: Instant, s: Sample) -> Option<Sample> {
        if s.rtt >= self.cfg.min_rtt {
            self.rtt_sum = self.rtt_sum.saturating_add(s.rtt);
            self.timed += 1;
        } else if !s.dropped {
            return None;
        }
        if s.dropped {
            self.drops += 1;
        }
        self.max_in_flight = self.max_in_flight.max(s.in_flight);
        if self.closes_at.is_some_and(|at| end <= at) {
            return None;
        }
        let avg = if self.timed == 0 {
            Duration::ZERO
        } else {
            self.rtt_sum / self.timed
        };
        let span = avg
            .saturating_mul(2)
            .clamp(self.cfg.min_time, self.cfg.max_time);
        self.closes_at = Some(rampart_core::codec::deadline_after(end, span));
        let full = self.timed.saturating_add(self.drops) >= self.cfg.min_samples;
        let sample = Sample::new(avg, self.max_in_flight, self.drops > 0);
        self.rtt_sum = Duration::ZERO;
        self.timed = 0;
        self.drops = 0;
        self.max_in_flight = 0;
        full.then_some(sample)
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
        let mut w = Window::new(cfg);
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
