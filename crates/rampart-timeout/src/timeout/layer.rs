//! [`TimeoutLayer`]: the configuration of a per-attempt timeout.

use super::Timeout;
use crate::error::nonzero;
use rampart_core::ConfigError;
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
/// let layer = TimeoutLayer::new(Duration::from_secs(2));
/// assert_eq!(layer.timeout(), Duration::from_secs(2));
/// // From a runtime value, refusing zero:
/// let err = TimeoutLayer::try_new(Duration::ZERO).unwrap_err();
/// assert_eq!(err.field(), "timeout");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// A layer whose calls fail after `timeout`. Never fails, never panics:
    /// a zero duration means "already expired" (as in tower: a call whose
    /// response is not ready on its first poll fails at once), and a
    /// duration too large for the clock saturates at about 31 years.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }

    /// Like [`new`](Self::new), for a value read at run time: a zero
    /// duration, usually a missing setting, is refused with a
    /// [`ConfigError`] naming the field `timeout`.
    pub fn try_new(timeout: Duration) -> Result<Self, ConfigError> {
        Ok(TimeoutLayer {
            timeout: nonzero("timeout", timeout)?,
        })
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl From<Duration> for TimeoutLayer {
    fn from(timeout: Duration) -> Self {
        TimeoutLayer::new(timeout)
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::from_parts(inner, self.timeout)
    }
}
