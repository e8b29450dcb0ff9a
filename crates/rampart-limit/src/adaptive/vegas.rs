//! Vegas: TCP Vegas' queue estimate applied to a concurrency limit.

use super::{LimitAlgorithm, Sample, log10_root};
use crate::error::{LimitConfigError, check_bounds, check_factor};
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// The parameters of [`Vegas`]; the defaults are Netflix's `VegasLimit`.
///
/// The queue in use is estimated as `limit × (1 − rtt_noload / rtt)`. With
/// `l = log10(limit)` (at least 1): a queue of at most `l` grows the limit
/// by β, one below α grows it by `l`, one above β shrinks it by `l`, and a
/// drop shrinks it by `l`. The no-load RTT is the smallest RTT seen, reset
/// to the current sample every `probe_multiplier × limit × U(0.5, 1)`
/// samples so that it can follow a slower service.
///
/// ```
/// use rampart_limit::VegasConfig;
/// let vegas = VegasConfig { max_limit: 64, ..VegasConfig::default() }.build()?;
/// # Ok::<(), rampart_limit::LimitConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct VegasConfig {
    /// The limit to start from (default 20).
    pub initial_limit: usize,
    /// The limit never goes below this (default 1).
    pub min_limit: usize,
    /// The limit never goes above this (default 1000).
    pub max_limit: usize,
    /// Weight of a new estimate, in `(0, 1]` (default 1.0: no smoothing).
    pub smoothing: f64,
    /// Probe for a new no-load RTT every `probe_multiplier × limit`
    /// samples, jittered (default 30).
    pub probe_multiplier: usize,
    /// A fixed α instead of `3 × log10(limit)`.
    pub alpha: Option<usize>,
    /// A fixed β instead of `6 × log10(limit)`.
    pub beta: Option<usize>,
    /// Seed of the probe jitter (default: random per instance).
    pub seed: Option<u64>,
}

impl Default for VegasConfig {
    fn default() -> Self {
        VegasConfig {
            initial_limit: 20,
            min_limit: 1,
            max_limit: 1000,
            smoothing: 1.0,
            probe_multiplier: 30,
            alpha: None,
            beta: None,
            seed: None,
        }
    }
}

impl VegasConfig {
    /// Validates the parameters.
    pub fn build(&self) -> Result<Vegas, LimitConfigError> {
        check_bounds(self.initial_limit, self.min_limit, self.max_limit)?;
        check_factor("smoothing", self.smoothing, "(0, 1]", |s| {
            s > 0.0 && s <= 1.0
        })?;
        if self.probe_multiplier == 0 {
            return Err(LimitConfigError::Zero {
                field: "probe_multiplier",
            });
        }
        if let (Some(a), Some(b)) = (self.alpha, self.beta)
            && a > b
        {
            return Err(LimitConfigError::InvalidFactor {
                field: "alpha",
                value: a as f64,
                expected: "alpha <= beta",
            });
        }
        let seed = self
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));
        let mut v = Vegas {
            cfg: self.clone(),
            estimate: self.initial_limit as f64,
            rtt_noload: Duration::ZERO,
            probe_count: 0,
            probe_jitter: 0.0,
            rng: seed,
        };
        v.reset_probe_jitter();
        Ok(v)
    }
}

/// Delay-based limit after TCP Vegas; see [`VegasConfig`].
#[derive(Clone, Debug)]
pub struct Vegas {
    cfg: VegasConfig,
    estimate: f64,
    rtt_noload: Duration,
    probe_count: u64,
    probe_jitter: f64,
    rng: u64,
}

impl Vegas {
    /// The no-load RTT in use (zero before the first sample).
    pub fn rtt_noload(&self) -> Duration {
        self.rtt_noload
    }

    fn reset_probe_jitter(&mut self) {
        // splitmix64 → U(0.5, 1)
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        self.probe_jitter = 0.5 + unit / 2.0;
    }

    fn should_probe(&self) -> bool {
        self.probe_jitter * self.cfg.probe_multiplier as f64 * self.estimate
            <= self.probe_count as f64
    }

    fn smooth_to(&mut self, target: f64) -> usize {
        let target = target.clamp(self.cfg.min_limit as f64, self.cfg.max_limit as f64);
        self.estimate = (1.0 - self.cfg.smoothing) * self.estimate + self.cfg.smoothing * target;
        self.current()
    }

    fn current(&self) -> usize {
        self.estimate as usize
    }
}

impl LimitAlgorithm for Vegas {
    fn name(&self) -> &'static str {
        "vegas"
    }

    fn min_limit(&self) -> usize {
        self.cfg.min_limit
    }

    fn limit(&self) -> usize {
        self.current()
    }

    fn update(&mut self, s: Sample) -> usize {
        if s.rtt.is_zero() {
            // A refusal that took no time: still a drop, but no RTT to learn.
            if s.dropped {
                let est = self.estimate;
                return self.smooth_to(est - log10_root(est));
            }
            return self.current();
        }
        self.probe_count += 1;
        if self.should_probe() {
            self.reset_probe_jitter();
            self.probe_count = 0;
            self.rtt_noload = s.rtt;
            return self.current();
        }
        if self.rtt_noload.is_zero() || s.rtt < self.rtt_noload {
            self.rtt_noload = s.rtt;
            return self.current();
        }
        let est = self.estimate;
        let l = log10_root(est);
        let queue = (est * (1.0 - self.rtt_noload.as_secs_f64() / s.rtt.as_secs_f64())).ceil();
        let target = if s.dropped {
            est - l
        } else if s.in_flight as f64 * 2.0 < est {
            // Not close to the limit: no evidence either way.
            return self.current();
        } else {
            let alpha = self.cfg.alpha.map_or(3.0 * l, |a| a as f64);
            let beta = self.cfg.beta.map_or(6.0 * l, |b| b as f64);
            if queue <= l {
                est + beta
            } else if queue < alpha {
                est + l
            } else if queue > beta {
                est - l
            } else {
                return self.current();
            }
        };
        self.smooth_to(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn vegas(initial: usize) -> Vegas {
        VegasConfig {
            initial_limit: initial,
            max_limit: 100,
            seed: Some(1),
            ..VegasConfig::default()
        }
        .build()
        .unwrap()
    }

    #[test]
    fn grows_fast_without_queueing_and_shrinks_with_it() {
        let mut v = vegas(10);
        assert_eq!(
            v.update(Sample::new(ms(10), 10, false)),
            10,
            "first: no-load RTT"
        );
        assert_eq!(v.rtt_noload(), ms(10));
        // No queueing: + beta (6 * log10(10) = 6).
        assert_eq!(v.update(Sample::new(ms(10), 10, false)), 16);
        // RTT doubled: queue = 16 * 0.5 = 8 > beta = 6 → -1.
        assert_eq!(v.update(Sample::new(ms(20), 16, false)), 15);
        // A drop shrinks by log10.
        assert_eq!(v.update(Sample::new(ms(10), 15, true)), 14);
        // App-limited: unchanged.
        assert_eq!(v.update(Sample::new(ms(10), 2, false)), 14);
    }

    #[test]
    fn stays_within_bounds() {
        let mut v = vegas(95);
        v.update(Sample::new(ms(10), 95, false));
        for _ in 0..10 {
            v.update(Sample::new(ms(10), 100, false));
        }
        assert_eq!(v.limit(), 100);
        let mut v = VegasConfig {
            initial_limit: 3,
            min_limit: 2,
            seed: Some(1),
            ..VegasConfig::default()
        }
        .build()
        .unwrap();
        for _ in 0..10 {
            v.update(Sample::new(ms(10), 3, true));
        }
        assert_eq!(v.limit(), 2);
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let d = VegasConfig::default;
        for s in [0.0, 1.5, f64::NAN] {
            assert!(matches!(
                VegasConfig {
                    smoothing: s,
                    ..d()
                }
                .build(),
                Err(LimitConfigError::InvalidFactor {
                    field: "smoothing",
                    ..
                })
            ));
        }
        assert_eq!(
            VegasConfig {
                probe_multiplier: 0,
                ..d()
            }
            .build()
            .unwrap_err(),
            LimitConfigError::Zero {
                field: "probe_multiplier"
            }
        );
        assert!(
            VegasConfig {
                alpha: Some(5),
                beta: Some(4),
                ..d()
            }
            .build()
            .is_err()
        );
        assert_eq!(
            VegasConfig {
                max_limit: 0,
                ..d()
            }
            .build()
            .unwrap_err(),
            LimitConfigError::ZeroLimit { field: "max_limit" }
        );
    }
}
