//! AIMD: additive increase, multiplicative decrease, driven by drops.

use super::{LimitAlgorithm, Sample};
use crate::error::{LimitConfigError, check_bounds, check_factor};
use std::time::Duration;

/// The parameters of [`Aimd`]; the defaults are Netflix's `AIMDLimit`.
///
/// ```
/// use rampart_limit::AimdConfig;
/// let aimd = AimdConfig { min_limit: 1, initial_limit: 4, ..AimdConfig::default() }.build()?;
/// # Ok::<(), rampart_limit::LimitConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct AimdConfig {
    /// The limit to start from (default 20).
    pub initial_limit: usize,
    /// The limit never goes below this (default 20).
    pub min_limit: usize,
    /// The limit never goes above this (default 200).
    pub max_limit: usize,
    /// On a drop the limit is multiplied by this; in `[0.5, 1.0)` (default
    /// 0.9).
    pub backoff_ratio: f64,
    /// A call slower than this counts as a drop (default 5 s).
    pub timeout: Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig {
            initial_limit: 20,
            min_limit: 20,
            max_limit: 200,
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
        }
    }
}

impl AimdConfig {
    /// Validates the parameters.
    pub fn build(&self) -> Result<Aimd, LimitConfigError> {
        check_bounds(self.initial_limit, self.min_limit, self.max_limit)?;
        check_factor("backoff_ratio", self.backoff_ratio, "[0.5, 1.0)", |r| {
            (0.5..1.0).contains(&r)
        })?;
        if self.timeout.is_zero() {
            return Err(LimitConfigError::Zero { field: "timeout" });
        }
        Ok(Aimd {
            cfg: self.clone(),
            limit: self.initial_limit,
        })
    }
}

/// Loss-based limit: +1 after a success while at least half the limit is in
/// use, × `backoff_ratio` after a drop or a call slower than `timeout`.
#[derive(Clone, Debug)]
pub struct Aimd {
    cfg: AimdConfig,
    limit: usize,
}

impl LimitAlgorithm for Aimd {
    fn name(&self) -> &'static str {
        "aimd"
    }

    fn min_limit(&self) -> usize {
        self.cfg.min_limit
    }

    fn limit(&self) -> usize {
        self.limit
    }

    fn update(&mut self, s: Sample) -> usize {
        let limit = if s.dropped || s.rtt > self.cfg.timeout {
            (self.limit as f64 * self.cfg.backoff_ratio) as usize
        } else if s.in_flight.saturating_mul(2) >= self.limit {
            self.limit.saturating_add(1)
        } else {
            self.limit
        };
        self.limit = limit.clamp(self.cfg.min_limit, self.cfg.max_limit);
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn aimd(initial: usize, min: usize, max: usize) -> Aimd {
        AimdConfig {
            initial_limit: initial,
            min_limit: min,
            max_limit: max,
            ..AimdConfig::default()
        }
        .build()
        .unwrap()
    }

    #[test]
    fn grows_by_one_only_when_busy() {
        let mut a = aimd(10, 1, 12);
        assert_eq!(a.update(Sample::new(MS, 4, false)), 10, "app-limited");
        assert_eq!(a.update(Sample::new(MS, 5, false)), 11);
        assert_eq!(a.update(Sample::new(MS, 11, false)), 12);
        assert_eq!(a.update(Sample::new(MS, 12, false)), 12, "max");
    }

    #[test]
    fn backs_off_on_drop_or_slow_call_down_to_min() {
        let mut a = aimd(100, 50, 200);
        assert_eq!(a.update(Sample::new(MS, 100, true)), 90);
        assert_eq!(a.update(Sample::new(Duration::from_secs(6), 1, false)), 81);
        for _ in 0..20 {
            a.update(Sample::new(MS, 1, true));
        }
        assert_eq!(a.limit(), 50);
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let bad = |c: AimdConfig| c.build().unwrap_err();
        let d = AimdConfig::default;
        assert_eq!(
            bad(AimdConfig {
                min_limit: 0,
                ..d()
            }),
            LimitConfigError::ZeroLimit { field: "min_limit" }
        );
        assert_eq!(
            bad(AimdConfig {
                min_limit: 30,
                max_limit: 10,
                ..d()
            }),
            LimitConfigError::MinAboveMax { min: 30, max: 10 }
        );
        assert!(matches!(
            bad(AimdConfig {
                initial_limit: 5,
                ..d()
            }),
            LimitConfigError::InitialOutOfBounds { .. }
        ));
        for r in [1.0, 0.49, f64::NAN, -1.0] {
            assert!(matches!(
                bad(AimdConfig {
                    backoff_ratio: r,
                    ..d()
                }),
                LimitConfigError::InvalidFactor {
                    field: "backoff_ratio",
                    ..
                }
            ));
        }
        assert_eq!(
            bad(AimdConfig {
                timeout: Duration::ZERO,
                ..d()
            }),
            LimitConfigError::Zero { field: "timeout" }
        );
    }
}
