//! [`PropagateDeadline`]: the service of
//! [`PropagateDeadlineLayer`](super::PropagateDeadlineLayer).

use super::PropagateFuture;
use crate::DeadlineHeaders;
use crate::metrics::{Kind, Metrics, event};
use rampart_core::grpc::is_grpc_request;
use rampart_core::telemetry::LayerName;
use rampart_core::{BoxError, Context, Error};
use std::task::{Context as TaskContext, Poll};
use tokio::time::Instant;
use tower_service::Service;

/// Writes the remaining time before the deadline on outgoing requests (see
/// [`PropagateDeadlineLayer`](super::PropagateDeadlineLayer)).
#[derive(Clone, Debug)]
pub struct PropagateDeadline<S> {
    inner: S,
    headers: DeadlineHeaders,
    // Zero-sized without the `metrics` feature, one pointer with it.
    metrics: Metrics,
}

impl<S> PropagateDeadline<S> {
    pub(crate) fn from_parts(inner: S, headers: DeadlineHeaders, metrics: Metrics) -> Self {
        PropagateDeadline {
            inner,
            headers,
            metrics,
        }
    }

    /// Wraps `inner`, writing the deadline in `headers` (its metrics, with
    /// the `metrics` feature, are those of an unnamed layer).
    pub fn new(inner: S, headers: DeadlineHeaders) -> Self {
        let metrics = Metrics::new(&LayerName::default(), Kind::Propagate);
        PropagateDeadline::from_parts(inner, headers, metrics)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<http::Request<B>> for PropagateDeadline<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = PropagateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let stored = Context::from_request(&req).and_then(Context::deadline);
        let deadline = match (Context::current_deadline(), stored) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(d) => d,
                None => return PropagateFuture::called(self.inner.call(req)),
            },
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let grpc = is_grpc_request(&req);
        // An expired deadline would go out as zero: fail here instead. The
        // inner service was made ready and is not called: a service that
        // reserves capacity in `poll_ready` (tower's `Buffer` or
        // `ConcurrencyLimit`) holds that reservation until this handle is
        // dropped or called again, as tower's contract allows.
        if self.headers.reads_as_expired(grpc, remaining) {
            self.metrics.expired_on_arrival();
            event!(
                debug,
                self.metrics,
                grpc,
                ?remaining,
                "no time left before the deadline, request not sent"
            );
            return PropagateFuture::failed(Error::deadline_exceeded());
        }
        self.headers.write(req.headers_mut(), grpc, remaining);
        PropagateFuture::called(self.inner.call(req))
    }
}
