//! [`TimeoutLayer`]: the configuration of a per-attempt timeout.

use super::Timeout;
use crate::error::{ConfigError, nonzero};
use std::time::Duration;
use tower_layer::Layer;

/// Bounds each call of the inner service, including its wait for readiness
/// or a permit, by a fixed duration; fails with
/// [`ErrorKind::Timeout`](rampart_core::ErrorKind::Timeout).
///
/// Put it innermost in a client stack (one per attempt, under the retry
/// layer); for the budget of a whole logical request use
/// [`DeadlineLayer`](crate::DeadlineLayer).
///
/// ```
/// use rampart_timeout::TimeoutLayer;
/// use std::time::Duration;
///
/// let layer = TimeoutLayer::new(Duration::from_secs(2))?;
/// assert_eq!(layer.timeout(), Duration::from_secs(2));
/// assert!(TimeoutLayer::new(Duration::ZERO).is_err());
/// # Ok::<(), rampart_timeout::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// A layer whose calls fail after `timeout`.
    ///
    /// A zero duration is refused ([`ConfigError::ZeroDuration`]); a
    /// duration too large for the clock saturates at about 31 years.
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        Ok(TimeoutLayer {
            timeout: nonzero(timeout)?,
        })
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl TryFrom<Duration> for TimeoutLayer {
    type Error = ConfigError;

    fn try_from(timeout: Duration) -> Result<Self, ConfigError> {
        TimeoutLayer::new(timeout)
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::from_parts(inner, self.timeout)
    }
}
