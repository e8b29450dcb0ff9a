//! [`TimeoutLayer`]: the configuration of a per-attempt timeout.

use super::Timeout;
use super::service::nanos;
use crate::error::nonzero;
use crate::metrics::{Kind, Limit, Metrics};
use rampart_core::ConfigError;
use rampart_core::telemetry::LayerName;
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
///
/// [`name`](Self::name) labels its metrics (`rampart.timeout.fired`, and
/// `rampart.deadline.exceeded` when the request's deadline came first; with
/// the `metrics` feature) and the `layer` field of its tracing events.
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    timeout: Duration,
    name: LayerName,
    /// The series its services record (registered by `Layer::layer`).
    kind: Kind,
}

impl PartialEq for TimeoutLayer {
    /// Same timeout and same name.
    fn eq(&self, other: &Self) -> bool {
        self.timeout == other.timeout && self.name == other.name
    }
}

impl Eq for TimeoutLayer {}

impl TimeoutLayer {
    /// A layer whose calls fail after `timeout`. Never fails, never panics:
    /// a zero duration means "already expired" (as in tower: a call whose
    /// response is not ready on its first poll fails at once), and a
    /// duration too large for the clock saturates at about 31 years.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer {
            timeout,
            name: LayerName::default(),
            kind: Kind::Timeout {
                limit_ns: nanos(timeout),
            },
        }
    }

    /// Like [`new`](Self::new), for a value read at run time: a zero
    /// duration, usually a missing setting, is refused with a
    /// [`ConfigError`] naming the field `timeout`.
    pub fn try_new(timeout: Duration) -> Result<Self, ConfigError> {
        Ok(TimeoutLayer::new(nonzero("timeout", timeout)?))
    }

    /// Names the layer (default `"default"`): the `layer` label of its
    /// metrics with the `metrics` feature (registered when the layer wraps
    /// a service, under the name it has then), and the `layer` field of its tracing events
    /// (with the feature: without it the services keep no name, so that
    /// they stay the size they are). A name tells layers apart (one per
    /// upstream), never request data.
    ///
    /// ```
    /// use rampart_timeout::TimeoutLayer;
    /// use std::time::Duration;
    ///
    /// let layer = TimeoutLayer::new(Duration::from_secs(2)).name("inventory");
    /// assert_eq!(layer.layer_name().as_str(), "inventory");
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// The layer's name (`"default"` unless set with [`name`](Self::name)).
    pub fn layer_name(&self) -> &LayerName {
        &self.name
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
        // The handles are registered here, under the name the layer ends
        // up with (naming it registers nothing).
        let metrics = Metrics::new(&self.name, self.kind);
        let limit = Limit::new(&metrics, nanos(self.timeout));
        Timeout::from_parts(inner, limit)
    }
}
