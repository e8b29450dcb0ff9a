//! [`Timeout`]: the service of [`TimeoutLayer`](super::TimeoutLayer).

use super::TimeoutFuture;
use crate::metrics::{Kind, Limit, Metrics};
use crate::ready::{ReadyGate, Start};
use crate::timer::{Timer, deadline_from};
use rampart_core::telemetry::LayerName;
use rampart_core::{BoxError, Error, ErrorKind};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

/// Fails a call that takes longer than a fixed duration with
/// [`ErrorKind::Timeout`](rampart_core::ErrorKind::Timeout), dropping the
/// inner call.
///
/// - **Clock**: the deadline is fixed in `call` (or, if the current
///   [`Context`](rampart_core::Context) carries an earlier deadline, that
///   one, failing with
///   [`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded)).
///   No timer is registered when the inner response is ready on its first
///   poll; the timer is armed at the first `Pending` with that deadline.
/// - **Readiness**: unlike tower's `Timeout`, the wait for the inner
///   service's readiness is bounded too. A service that is ready at once
///   (most services, a connection with room) takes no extra step. One that
///   is not (tower's `ConcurrencyLimit`, `Buffer`, a busy hyper
///   `SendRequest`) makes `poll_ready` start a timer and stay `Pending`
///   until it is ready or the timeout passes; then the call keeps the
///   deadline of that wait, or fails at once without calling the inner
///   service. Any service, `Clone` or not (a `BoxService`, a hyper
///   `SendRequest`).
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: ReadyGate<S>,
    // The timeout in nanoseconds (saturating at ~584 years), not a
    // `Duration`, and the metric handles: one word with the `metrics`
    // feature or without (see `Limit`). It keeps the service at two words
    // besides the inner one, which keeps `Oneshot<Timeout<S>, Req>` within
    // what the compiler copies inline (measured: one `memcpy` call less per
    // request).
    limit: Limit,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with a timeout (see
    /// [`TimeoutLayer::new`](crate::TimeoutLayer::new): zero means
    /// "already expired").
    ///
    /// Its metrics (with the `metrics` feature) are those of an unnamed
    /// layer, `layer = "default"`; name it through
    /// [`TimeoutLayer::name`](crate::TimeoutLayer::name).
    pub fn new(inner: S, timeout: Duration) -> Self {
        let limit_ns = nanos(timeout);
        let metrics = Metrics::new(&LayerName::default(), Kind::Timeout { limit_ns });
        Timeout::from_parts(inner, Limit::new(&metrics, limit_ns))
    }

    pub(crate) fn from_parts(inner: S, limit: Limit) -> Self {
        Timeout {
            inner: ReadyGate::new(inner),
            limit,
        }
    }

    /// The configured timeout (saturated at about 584 years).
    pub fn timeout(&self) -> Duration {
        Duration::from_nanos(self.limit.ns())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = TimeoutFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(
                cx,
                Duration::from_nanos(self.limit.ns()),
                ErrorKind::Timeout,
                self.limit.metrics(),
            )
            .map_err(Error::from_inner)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let (at, kind) = match self.inner.start() {
            Start::Fresh => deadline_from(
                Instant::now(),
                Duration::from_nanos(self.limit.ns()),
                ErrorKind::Timeout,
            ),
            Start::Waited { at, kind } => (at, kind),
            Start::Expired { kind } => {
                // Traced when the wait's timer fired (`ReadyGate`).
                self.limit.metrics().expired(kind);
                return TimeoutFuture::expired(kind);
            }
        };
        let fire = self.limit.metrics().fire();
        TimeoutFuture::new(self.inner.call(req), Timer::at(at), kind, fire)
    }
}

/// A timeout in nanoseconds, saturating at about 584 years.
pub(crate) fn nanos(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX)
}
