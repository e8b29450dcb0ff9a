//! [`Timeout`]: the service of [`TimeoutLayer`](super::TimeoutLayer).

use super::TimeoutFuture;
use crate::call::ReadyGate;
use crate::error::{ConfigError, nonzero};
use crate::timer::{Timer, deadline_from};
use rampart_core::{BoxError, Error, ErrorKind};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

/// Fails a call that takes longer than a fixed duration with
/// [`ErrorKind::Timeout`](rampart_core::ErrorKind::Timeout), dropping the
/// inner call.
///
/// Unlike tower's `Timeout`, the time spent waiting for the inner service
/// to become ready counts too: [`poll_ready`](Service::poll_ready) never
/// waits (it reports `Ready` unless the inner service failed) and the
/// returned future drives the inner readiness under the timer. That needs
/// `S: Clone`: when the inner service is not ready at call time it moves
/// into the future and a clone takes its place.
///
/// The clock starts when the inner future (or the wait for readiness) first
/// returns `Pending`, so the work done inside that first poll is not
/// counted; no timer is registered at all when the inner response is ready
/// on the first poll.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: ReadyGate<S>,
    timeout: Duration,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with a timeout; a zero duration is refused.
    pub fn new(inner: S, timeout: Duration) -> Result<Self, ConfigError> {
        Ok(Timeout::from_parts(inner, nonzero(timeout)?))
    }

    pub(crate) fn from_parts(inner: S, timeout: Duration) -> Self {
        Timeout {
            inner: ReadyGate::new(inner),
            timeout,
        }
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
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
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = TimeoutFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let (at, kind) = deadline_from(Instant::now(), self.timeout, ErrorKind::Timeout);
        TimeoutFuture::new(self.inner.call(req), Timer::at(at), kind)
    }
}
