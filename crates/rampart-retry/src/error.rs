//! The error of an invalid retry configuration.

use std::fmt;
use std::time::Duration;

/// Why a retry configuration was refused by a builder
/// ([`RetryBuilder::build`](crate::RetryBuilder::build),
/// [`Backoff::validate`](crate::Backoff::validate),
/// [`Budget::new`](crate::Budget::new)).
///
/// New variants may be added; match with a wildcard arm.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_attempts` is zero: the first call is an attempt, so at least one
    /// is needed.
    ZeroAttempts,
    /// The backoff cap is below the base delay.
    CapBelowBase {
        /// The base (first) delay.
        base: Duration,
        /// The cap.
        cap: Duration,
    },
    /// The backoff multiplier is below 1 (or not a finite number).
    InvalidMultiplier(f64),
    /// A budget ratio outside `0..=1` (or not a number).
    InvalidRatio(f64),
    /// A budget time-to-live outside `1 ms..=1 h`.
    InvalidTtl(Duration),
    /// `max_elapsed` is zero: no retry could ever happen.
    ZeroMaxElapsed,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroAttempts => {
                f.write_str("max_attempts must be at least 1 (it counts the first call)")
            }
            ConfigError::CapBelowBase { base, cap } => {
                write!(f, "backoff cap {cap:?} is below the base delay {base:?}")
            }
            ConfigError::InvalidMultiplier(m) => {
                write!(
                    f,
                    "backoff multiplier must be a finite number >= 1, got {m}"
                )
            }
            ConfigError::InvalidRatio(r) => {
                write!(f, "retry budget ratio must be within 0..=1, got {r}")
            }
            ConfigError::InvalidTtl(t) => {
                write!(f, "retry budget ttl must be within 1 ms..=1 h, got {t:?}")
            }
            ConfigError::ZeroMaxElapsed => f.write_str(
                "max_elapsed must be greater than zero (use max_attempts(1) to disable retries)",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
