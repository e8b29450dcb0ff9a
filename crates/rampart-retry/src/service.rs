//! The [`Retry`] service.

use crate::RetryStats;
use crate::future::ResponseFuture;
use crate::policy::Policy;
use crate::replay::{CloneRequest, Replay};
use rampart_core::classify::{Classify, ErrorClassify};
use rampart_core::{BoxError, Error};
use std::fmt;
use std::task::{Context, Poll};
use tower_service::Service;

/// A service that retries its inner service's retryable failures; made by
/// [`RetryLayer`](crate::RetryLayer).
#[derive(Clone)]
pub struct Retry<S, C = ErrorClassify, R = CloneRequest> {
    inner: S,
    classify: C,
    replay: R,
    policy: Policy,
}

impl<S, C, R> Retry<S, C, R> {
    pub(crate) fn new(inner: S, classify: C, replay: R, policy: Policy) -> Self {
        Retry {
            inner,
            classify,
            replay,
            policy,
        }
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

    /// The counters shared with the layer and its other services, when
    /// enabled with [`RetryBuilder::stats`](crate::RetryBuilder::stats).
    pub fn stats(&self) -> Option<RetryStats> {
        self.policy.counters.as_ref().map(|c| c.snapshot())
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for Retry<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S, C, R, Req> Service<Req> for Retry<S, C, R>
where
    R: Replay<Req> + Clone,
    S: Service<R::Request> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S, Req, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.policy.on_call();
        let classifier = self.classify.classify_request(&req);
        let keep = self.policy.max_attempts > 1;
        let req = self.replay.prepare(req, keep);
        let kept = if keep { self.replay.keep(&req) } else { None };
        let give_up_at = self.policy.give_up_at();
        // Call the service that was driven to readiness; keep a fresh clone.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let fut = service.call(req);
        ResponseFuture::new(
            fut,
            service,
            self.replay.clone(),
            self.policy.clone(),
            classifier,
            kept,
            give_up_at,
        )
    }
}
