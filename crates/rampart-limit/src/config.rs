//! Plain-data configuration: what the limit is ([`Limit`]) and what a call
//! does when it is reached ([`WaitPolicy`]). Both deserialize with the
//! `serde` feature.

use crate::adaptive::{AimdConfig, Gradient2Config, LimitAlgorithm, SampleWindow, VegasConfig};
use crate::error::{LimitConfigError, check_limit};
use std::time::Duration;

/// The default hint given to refused callers: try again in 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest `retry_after` hint a limit gives (one day): a longer
/// configured hint (up to `Duration::MAX`) saturates here, so that no
/// reader of the hint (a `Retry-After` header, a retry layer adding it to
/// the clock) can overflow.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// What a call does when the limit is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Mode {
    /// Wait for a permit, first come first served (the default).
    #[default]
    Wait,
    /// Fail at once with [`ErrorKind::Overloaded`](rampart_core::ErrorKind::Overloaded)
    /// (503 + `Retry-After` through rampart's error mapping).
    Shed,
}

/// What a call does when the limit is reached, and what a refused caller
/// is told.
///
/// A waiting call also gives up when its request's deadline
/// ([`Context::current_deadline`](rampart_core::Context::current_deadline))
/// passes, with [`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct WaitPolicy {
    /// Wait or shed (default: wait).
    pub mode: Mode,
    /// The longest a call waits before it fails with `Overloaded`
    /// (default: no bound of its own).
    pub max_wait: Option<Duration>,
    /// The most calls that may wait; more are refused at once with
    /// `Overloaded` (default: no bound — each waiter is a caller's own
    /// future, so the line is as long as the callers are many).
    pub max_waiting: Option<usize>,
    /// The `retry_after` hint of an `Overloaded` error (default 1 s;
    /// longer than [`MAX_RETRY_AFTER`] saturates there).
    pub retry_after: Option<Duration>,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy {
            mode: Mode::Wait,
            max_wait: None,
            max_waiting: None,
            retry_after: Some(DEFAULT_RETRY_AFTER),
        }
    }
}

/// A [`WaitPolicy`] checked and ready to use.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// 0 in shed mode.
    pub(crate) max_waiting: usize,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) retry_after: Option<Duration>,
}

impl WaitPolicy {
    pub(crate) fn check(&self) -> Result<Policy, LimitConfigError> {
        let max_waiting = match self.mode {
            Mode::Shed => 0,
            Mode::Wait => {
                if self.max_wait.is_some_and(|d| d.is_zero()) {
                    return Err(LimitConfigError::Zero { field: "max_wait" });
                }
                match self.max_waiting {
                    Some(0) => {
                        return Err(LimitConfigError::Zero {
                            field: "max_waiting",
                        });
                    }
                    Some(n) => n,
                    None => usize::MAX,
                }
            }
        };
        Ok(Policy {
            max_waiting,
            max_wait: self.max_wait,
            retry_after: self.retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
        })
    }
}

/// The limit itself: fixed, or one of the adaptive algorithms.
///
/// `From` conversions let a builder take `3`, or an `AimdConfig`, directly.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Limit {
    /// At most this many calls at once (1 to [`MAX_LIMIT`](crate::MAX_LIMIT)).
    Fixed(usize),
    /// Adaptive, [`Aimd`](crate::Aimd).
    Aimd(AimdConfig),
    /// Adaptive, [`Vegas`](crate::Vegas).
    Vegas(VegasConfig),
    /// Adaptive, [`Gradient2`](crate::Gradient2).
    Gradient2(Gradient2Config),
}

impl Limit {
    /// The checked fixed limit, or the built algorithm.
    pub(crate) fn check(&self) -> Result<Result<u32, Box<dyn LimitAlgorithm>>, LimitConfigError> {
        Ok(match self {
            Limit::Fixed(n) => Ok(check_limit("limit", *n)?),
            Limit::Aimd(c) => Err(Box::new(c.build()?)),
            Limit::Vegas(c) => Err(Box::new(c.build()?)),
            Limit::Gradient2(c) => Err(Box::new(c.build()?)),
        })
    }
}

impl From<usize> for Limit {
    fn from(n: usize) -> Limit {
        Limit::Fixed(n)
    }
}

impl From<AimdConfig> for Limit {
    fn from(c: AimdConfig) -> Limit {
        Limit::Aimd(c)
    }
}

impl From<VegasConfig> for Limit {
    fn from(c: VegasConfig) -> Limit {
        Limit::Vegas(c)
    }
}

impl From<Gradient2Config> for Limit {
    fn from(c: Gradient2Config) -> Limit {
        Limit::Gradient2(c)
    }
}

/// A whole [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer)
/// configuration, e.g. from a config file:
///
/// ```
/// use rampart_limit::{ConcurrencyLimitLayer, LimitConfig, Mode};
/// let mut cfg = LimitConfig::new(64);
/// cfg.wait.mode = Mode::Shed;
/// let layer = ConcurrencyLimitLayer::from_config(&cfg)?;
/// assert_eq!(layer.stats().limit, 64);
/// # Ok::<(), rampart_limit::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct LimitConfig {
    /// The limit.
    pub limit: Limit,
    /// What happens when it is reached.
    #[cfg_attr(feature = "serde", serde(default))]
    pub wait: WaitPolicy,
    /// How an adaptive limit batches its samples (`None`: every call is a
    /// sample). Default: [`SampleWindow::default`].
    #[cfg_attr(feature = "serde", serde(default = "default_window"))]
    pub sample_window: Option<SampleWindow>,
}

#[cfg(feature = "serde")]
#[allow(clippy::unnecessary_wraps)] // serde's default needs the Option
fn default_window() -> Option<SampleWindow> {
    Some(SampleWindow::default())
}

impl LimitConfig {
    /// `limit` with the default wait policy and sample window.
    pub fn new(limit: impl Into<Limit>) -> LimitConfig {
        LimitConfig {
            limit: limit.into(),
            wait: WaitPolicy::default(),
            sample_window: Some(SampleWindow::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_policy_validation() {
        let p = WaitPolicy::default();
        assert_eq!(p.check().unwrap().max_waiting, usize::MAX);
        let shed = WaitPolicy {
            mode: Mode::Shed,
            max_waiting: Some(0),
            ..WaitPolicy::default()
        };
        assert_eq!(shed.check().unwrap().max_waiting, 0);
        let zero_wait = WaitPolicy {
            max_wait: Some(Duration::ZERO),
            ..WaitPolicy::default()
        };
        assert_eq!(
            zero_wait.check().unwrap_err(),
            LimitConfigError::Zero { field: "max_wait" }
        );
        let zero_line = WaitPolicy {
            max_waiting: Some(0),
            ..WaitPolicy::default()
        };
        assert_eq!(
            zero_line.check().unwrap_err(),
            LimitConfigError::Zero {
                field: "max_waiting"
            }
        );
    }

    #[test]
    fn fixed_limit_validation() {
        assert_eq!(
            Limit::Fixed(0).check().err(),
            Some(LimitConfigError::ZeroLimit { field: "limit" })
        );
        assert!(matches!(
            Limit::Fixed(usize::MAX).check(),
            Err(LimitConfigError::LimitTooLarge { .. })
        ));
        assert!(matches!(Limit::Fixed(3).check(), Ok(Ok(3))));
    }
}
