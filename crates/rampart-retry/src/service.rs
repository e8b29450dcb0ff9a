//! The [`Retry`] service.

use crate::RetryStats;
use crate::future::ResponseFuture;
use crate::policy::Policy;
use crate::replay::{CloneRequest, Replay};
use rampart_core::classify::{Classify, ErrorClassify};
use rampart_core::{BoxError, Error};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// What a layer, its services and their calls share behind one `Arc`: the
/// classifier, the replay strategy and the validated policy. A clone of a
/// [`Retry`] is a clone of its inner service and one reference count.
#[derive(Clone, Debug)]
pub(crate) struct Shared<C, R> {
    pub(crate) classify: C,
    pub(crate) replay: R,
    pub(crate) policy: Policy,
}

/// A service that retries its inner service's retryable failures; made by
/// [`RetryLayer`](crate::RetryLayer).
///
/// Its configuration sits behind one shared pointer: cloning it (as axum
/// does for every request) clones the inner service and a reference count,
/// nothing else.
pub struct Retry<S, C = ErrorClassify, R = CloneRequest> {
    inner: S,
    shared: Arc<Shared<C, R>>,
}

impl<S: Clone, C, R> Clone for Retry<S, C, R> {
    #[inline]
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, C, R> Retry<S, C, R> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C, R>>) -> Self {
        Retry { inner, shared }
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
        self.shared.policy.counters.as_ref().map(|c| c.snapshot())
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for Retry<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl<S, C, R, Req> Service<Req> for Retry<S, C, R>
where
    R: Replay<Req>,
    S: Service<R::Request> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S, Req, C, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        shared.policy.on_call();
        let classifier = shared.classify.classify_request(&req);
        let keep = shared.policy.max_attempts > 1;
        let req = shared.replay.prepare(req, keep);
        let kept = if keep { shared.replay.keep(&req) } else { None };
        // Call the service that was driven to readiness; keep a fresh clone.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let fut = service.call(shared.replay.send(req));
        ResponseFuture::new(
            fut,
            service,
            Arc::clone(&self.shared),
            classifier,
            kept,
            shared.policy.give_up_at(),
        )
    }
}
