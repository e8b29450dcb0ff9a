//! [`ConcurrencyLimit`]: the service of [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer).

use crate::future::{LimitFuture, ResponseFuture, admit};
use crate::shared::Shared;
use crate::stats::Stats;
use rampart_core::classify::{Classify, ErrorClassify};
use rampart_core::{BoxError, Error};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Limits how many calls to `S` run at once; made by
/// [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer), whose limit it
/// shares with every clone.
///
/// `poll_ready` is the inner service's readiness: the limit never makes it
/// pending. The permit is taken in the response future. When a permit is
/// free the call goes straight to the service `poll_ready` readied;
/// otherwise that ready service moves into the future to be called once a
/// permit comes (which is why `S: Clone`: a clone stays behind).
pub struct ConcurrencyLimit<S, C = ErrorClassify> {
    inner: S,
    shared: Arc<Shared>,
    classify: C,
}

impl<S, C> ConcurrencyLimit<S, C> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, classify: C) -> Self {
        ConcurrencyLimit {
            inner,
            shared,
            classify,
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

    /// In flight, waiting, the current limit, and what was refused so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
}

impl<S: Clone, C: Clone> Clone for ConcurrencyLimit<S, C> {
    fn clone(&self) -> Self {
        ConcurrencyLimit {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for ConcurrencyLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("stats", &self.shared.stats())
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for ConcurrencyLimit<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S, Req, C::Classifier>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let judge = self
            .shared
            .adaptive
            .is_some()
            .then(|| self.classify.classify_request(&req));
        let inner: LimitFuture<_, _, _, _> =
            admit(Arc::clone(&self.shared), &mut self.inner, req, judge);
        ResponseFuture { inner }
    }
}
