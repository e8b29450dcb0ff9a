//! Gradient2: the ratio of a long-term average RTT to the current RTT.

use super::{LimitAlgorithm, Sample};
use crate::error::{LimitConfigError, check_bounds, check_factor};

/// Samples averaged plainly before the long RTT turns exponential.
const WARMUP: usize = 10;

/// The parameters of [`Gradient2`]; the defaults are Netflix's
/// `Gradient2Limit`.
///
/// Per sample: `gradient = clamp(rtt_tolerance × long_rtt / rtt, 0.5, 1)`,
/// `new = limit × gradient + queue_size`, smoothed:
/// `limit = limit × (1 − smoothing) + new × smoothing`, within
/// `min_limit..=max_limit`. `long_rtt` is an exponential average over
/// `long_window` samples (a plain average over the first 10), pulled down
/// by 5 % whenever it is more than twice the current RTT. While fewer than
/// half the permits are in use the limit is left alone.
///
/// One addition to Netflix's algorithm, which ignores drops: a drop counts
/// as the steepest gradient (0.5) with no queue allowance, so an overload
/// signal always shrinks the limit (by `smoothing / 2`, 10 % by default).
///
/// ```
/// use rampart_limit::Gradient2Config;
/// let g = Gradient2Config { min_limit: 4, initial_limit: 8, ..Gradient2Config::default() }.build()?;
/// # Ok::<(), rampart_limit::LimitConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Gradient2Config {
    /// The limit to start from (default 20).
    pub initial_limit: usize,
    /// The limit never goes below this (default 20).
    pub min_limit: usize,
    /// The limit never goes above this (default 200).
    pub max_limit: usize,
    /// Weight of a new estimate, in `(0, 1]` (default 0.2).
    pub smoothing: f64,
    /// How much the limit may grow per update while latency is low
    /// (default 4).
    pub queue_size: usize,
    /// Samples in the long-term RTT average (default 600).
    pub long_window: usize,
    /// How much slower than the long-term RTT a call may be before the
    /// limit shrinks, at least 1.0 (default 1.5).
    pub rtt_tolerance: f64,
}

impl Default for Gradient2Config {
    fn default() -> Self {
        Gradient2Config {
            initial_limit: 20,
            min_limit: 20,
            max_limit: 200,
            smoothing: 0.2,
            queue_size: 4,
            long_window: 600,
            rtt_tolerance: 1.5,
        }
    }
}

impl Gradient2Config {
    /// Validates the parameters.
    pub fn build(&self) -> Result<Gradient2, LimitConfigError> {
        check_bounds(self.initial_limit, self.min_limit, self.max_limit)?;
        check_factor("smoothing", self.smoothing, "(0, 1]", |s| {
            s > 0.0 && s <= 1.0
        })?;
        check_factor("rtt_tolerance", self.rtt_tolerance, ">= 1.0", |t| t >= 1.0)?;
        if self.long_window == 0 {
            return Err(LimitConfigError::Zero {
                field: "long_window",
            });
        }
        Ok(Gradient2 {
            cfg: self.clone(),
            estimate: self.initial_limit as f64,
            long_rtt: 0.0,
            samples: 0,
        })
    }
}

/// Gradient-based limit; see [`Gradient2Config`].
#[derive(Clone, Debug)]
pub struct Gradient2 {
    cfg: Gradient2Config,
    estimate: f64,
    /// Seconds.
    long_rtt: f64,
    samples: usize,
}

impl Gradient2 {
    /// The long-term RTT average, in seconds.
    pub fn long_rtt_secs(&self) -> f64 {
        self.long_rtt
    }

    fn add_long(&mut self, rtt: f64) -> f64 {
        if self.samples < WARMUP {
            self.samples += 1;
            self.long_rtt += (rtt - self.long_rtt) / self.samples as f64;
        } else {
            let factor = 2.0 / (self.cfg.long_window as f64 + 1.0);
            self.long_rtt = self.long_rtt * (1.0 - factor) + rtt * factor;
        }
        self.long_rtt
    }

    fn smooth_to(&mut self, target: f64) -> usize {
        let s = self.cfg.smoothing;
        let next = self.estimate * (1.0 - s) + target * s;
        self.estimate = next.clamp(self.cfg.min_limit as f64, self.cfg.max_limit as f64);
        self.estimate as usize
    }
}

impl LimitAlgorithm for Gradient2 {
    fn name(&self) -> &'static str {
        "gradient2"
    }

    fn min_limit(&self) -> usize {
        self.cfg.min_limit
    }

    fn limit(&self) -> usize {
        self.estimate as usize
    }

    fn update(&mut self, s: Sample) -> usize {
        let short = s.rtt.as_secs_f64();
        let long = if short > 0.0 {
            let long = self.add_long(short);
            if long / short > 2.0 {
                self.long_rtt *= 0.95;
            }
            long
        } else {
            self.long_rtt
        };
        if s.dropped {
            // Also a refusal that took no time, which has no RTT to learn.
            return self.smooth_to(self.estimate * 0.5);
        }
        if short <= 0.0 || (s.in_flight as f64) < self.estimate / 2.0 {
            return self.limit();
        }
        let gradient = (self.cfg.rtt_tolerance * long / short).clamp(0.5, 1.0);
        self.smooth_to(self.estimate * gradient + self.cfg.queue_size as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn g(initial: usize, min: usize, max: usize) -> Gradient2 {
        Gradient2Config {
            initial_limit: initial,
            min_limit: min,
            max_limit: max,
            ..Gradient2Config::default()
        }
        .build()
        .unwrap()
    }

    #[test]
    fn grows_by_smoothed_queue_while_latency_is_steady() {
        let mut a = g(20, 1, 200);
        // 20 * 0.8 + (20 * 1 + 4) * 0.2 = 20.8
        assert_eq!(a.update(Sample::new(ms(10), 20, false)), 20);
        assert_eq!(a.update(Sample::new(ms(10), 20, false)), 21);
        assert_eq!(a.update(Sample::new(ms(10), 1, false)), 21, "app-limited");
    }

    #[test]
    fn shrinks_when_latency_rises_past_tolerance_and_on_drops() {
        let mut a = g(100, 1, 200);
        for _ in 0..WARMUP {
            a.update(Sample::new(ms(10), 100, false));
        }
        let before = a.limit();
        // 4x the long RTT: gradient clamps to 0.5.
        let after = a.update(Sample::new(ms(40), 100, false));
        assert!(after < before, "{after} < {before}");
        let est = a.estimate;
        a.update(Sample::new(ms(10), 1, true));
        assert!(
            (a.estimate - est * 0.9).abs() < 1e-9,
            "a drop takes 10 % off"
        );
        let mut low = g(20, 20, 200);
        low.update(Sample::new(ms(10), 20, true));
        assert_eq!(low.limit(), 20, "never below min");
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let d = Gradient2Config::default;
        assert!(matches!(
            Gradient2Config {
                rtt_tolerance: 0.9,
                ..d()
            }
            .build(),
            Err(LimitConfigError::InvalidFactor {
                field: "rtt_tolerance",
                ..
            })
        ));
        assert!(matches!(
            Gradient2Config {
                smoothing: f64::INFINITY,
                ..d()
            }
            .build(),
            Err(LimitConfigError::InvalidFactor {
                field: "smoothing",
                ..
            })
        ));
        assert_eq!(
            Gradient2Config {
                long_window: 0,
                ..d()
            }
            .build()
            .unwrap_err(),
            LimitConfigError::Zero {
                field: "long_window"
            }
        );
    }
}
