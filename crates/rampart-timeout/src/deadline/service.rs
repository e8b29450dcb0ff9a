//! [`Deadline`]: the service of [`DeadlineLayer`](super::DeadlineLayer).

use super::DeadlineFuture;
use super::headers::{self, FromHeaders, NoHeaders, OnMalformed};
use crate::bounded::Bounded;
use crate::metrics::{Metrics, event};
use crate::ready::{ReadyGate, Start};
use crate::timer::Timer;
use rampart_core::codec::{MalformedDeadline, deadline_after};
use rampart_core::grpc::is_grpc_request;
use rampart_core::{BoxError, Context, Error, ErrorFormat, ErrorKind};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

/// Bounds the whole call by the request's deadline and runs it inside a
/// [`Context`] that carries that deadline (see
/// [`DeadlineLayer`](super::DeadlineLayer)).
///
/// `H` is [`NoHeaders`] (any request type) or [`FromHeaders`] (a server
/// reading `http::Request` headers). Like [`Timeout`](crate::Timeout), it
/// wraps any service, `Clone` or not: a service that is not ready makes
/// `poll_ready` wait at most the budget (or the current context's
/// deadline, if earlier); the call that follows keeps that wait's deadline
/// if it is the earliest, or fails with `DeadlineExceeded` without calling
/// the inner service when the wait used it all up.
#[derive(Clone, Debug)]
pub struct Deadline<S, H = NoHeaders> {
    inner: ReadyGate<S>,
    budget: Duration,
    source: H,
    // Zero-sized without the `metrics` feature, one pointer with it.
    metrics: Metrics,
}

impl<S, H> Deadline<S, H> {
    pub(crate) fn from_parts(inner: S, budget: Duration, source: H, metrics: Metrics) -> Self {
        Deadline {
            inner: ReadyGate::new(inner),
            budget,
            source,
            metrics,
        }
    }

    /// The budget of a request.
    pub fn budget(&self) -> Duration {
        self.budget
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

    /// Calls the inner service inside `base` with the deadline `at` (the
    /// earliest of the two wins), or fails at once if it already passed.
    fn start<Req>(
        &mut self,
        base: Context,
        now: Instant,
        at: Instant,
        req: Req,
    ) -> DeadlineFuture<S, Req>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        let at = base.deadline().map_or(at, |d| d.min(at));
        let at = match self.inner.start() {
            Start::Fresh => at,
            Start::Waited { at: waited, .. } => waited.min(at),
            Start::Expired { kind } => {
                self.metrics.expired(kind);
                event!(
                    debug,
                    self.metrics,
                    "deadline passed while waiting for readiness, inner service not called"
                );
                return DeadlineFuture::done(Err(Error::deadline_exceeded()));
            }
        };
        if at <= now {
            self.metrics.expired_on_arrival();
            event!(
                debug,
                self.metrics,
                late_by = ?now.saturating_duration_since(at),
                "deadline already passed on arrival, inner service not called"
            );
            return DeadlineFuture::done(Err(Error::deadline_exceeded()));
        }
        // The inner call and its future both run in the context (one context,
        // no clone).
        DeadlineFuture::running(base.with_deadline(at).scope_call(|| {
            let call = self.inner.call(req);
            let fire = self.metrics.fire();
            Bounded::new(call, Timer::at(at), ErrorKind::DeadlineExceeded, fire)
        }))
    }
}

impl<S, Req> Service<Req> for Deadline<S, NoHeaders>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = DeadlineFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx, self.budget, ErrorKind::DeadlineExceeded, &self.metrics)
            .map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let now = Instant::now();
        let at = deadline_after(now, self.budget);
        self.start(Context::current().unwrap_or_default(), now, at, req)
    }
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for Deadline<S, FromHeaders>
where
    S: Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Default,
{
    type Response = http::Response<ResB>;
    type Error = Error;
    type Future = DeadlineFuture<S, http::Request<ReqB>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx, self.budget, ErrorKind::DeadlineExceeded, &self.metrics)
            .map_err(Error::from_inner)
    }

    fn call(&mut self, mut req: http::Request<ReqB>) -> Self::Future {
        let now = Instant::now();
        let grpc = is_grpc_request(&req);
        let timeout = match self.source.headers.read(req.headers(), grpc) {
            Ok(Some(caller)) if caller > self.budget => {
                event!(
                    debug,
                    self.metrics,
                    ?caller,
                    budget = ?self.budget,
                    "caller's deadline capped by the budget"
                );
                self.budget
            }
            Ok(Some(caller)) => caller,
            Ok(None) => self.budget,
            Err(MalformedDeadline) => match self.source.on_malformed {
                OnMalformed::Ignore => {
                    self.metrics.header_malformed();
                    event!(
                        debug,
                        self.metrics,
                        grpc,
                        "malformed deadline header ignored"
                    );
                    self.budget
                }
                OnMalformed::Reject => {
                    self.metrics.header_malformed();
                    event!(
                        debug,
                        self.metrics,
                        grpc,
                        "malformed deadline header rejected"
                    );
                    return DeadlineFuture::done(Ok(headers::reject(&ErrorFormat::of(&req))));
                }
            },
        };
        let base = Context::current()
            .or_else(|| Context::from_request(&req).cloned())
            .unwrap_or_default();
        let own = deadline_after(now, timeout);
        let at = base.deadline().map_or(own, |d| d.min(own));
        // Keep a context an outer layer stored in the request up to date.
        if let Some(stored) = req.extensions_mut().get_mut::<Context>() {
            *stored = std::mem::take(stored).with_deadline(at);
        }
        self.start(base, now, at, req)
    }
}
