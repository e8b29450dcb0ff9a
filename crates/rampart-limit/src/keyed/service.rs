//! [`KeyedConcurrencyLimit`]: the service of
//! [`KeyedConcurrencyLimitLayer`](crate::KeyedConcurrencyLimitLayer).

use super::KeyExtractor;
use super::KeyedShared;
use super::map::KeyEntry;
use crate::future::{LimitFuture, admit};
use crate::stats::KeyedStats;
use pin_project_lite::pin_project;
use rampart_core::classify::ErrorClassify;
use rampart_core::{BoxError, Error};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tower_service::Service;

/// The service of [`KeyedConcurrencyLimitLayer`](crate::KeyedConcurrencyLimitLayer).
pub struct KeyedConcurrencyLimit<S, E> {
    inner: S,
    shared: Arc<KeyedShared>,
    extractor: E,
}

impl<S, E> KeyedConcurrencyLimit<S, E> {
    pub(crate) fn from_parts(inner: S, shared: Arc<KeyedShared>, extractor: E) -> Self {
        KeyedConcurrencyLimit {
            inner,
            shared,
            extractor,
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

    /// Keys, in flight, waiting, refusals.
    pub fn stats(&self) -> KeyedStats {
        self.shared.stats()
    }
}

impl<S: Clone, E: Clone> Clone for KeyedConcurrencyLimit<S, E> {
    fn clone(&self) -> Self {
        KeyedConcurrencyLimit {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            extractor: self.extractor.clone(),
        }
    }
}

impl<S: fmt::Debug, E> fmt::Debug for KeyedConcurrencyLimit<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedConcurrencyLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, E, Req> Service<Req> for KeyedConcurrencyLimit<S, E>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    E: KeyExtractor<Req>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = KeyedResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        let key = shared.keys.hash(&self.extractor.extract(&req));
        let inner = if let Some(entry) = shared.keys.entry(key) {
            admit(entry, &mut self.inner, req, None)
        } else {
            shared.map_full.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = shared.keys.metrics() {
                m.keys_rejected.increment(1);
            }
            tracing::debug!(
                layer = %shared.keys.counters.name,
                "keyed concurrency limit: key map full of busy keys, request shed"
            );
            LimitFuture::rejected(Error::overloaded(shared.keys.policy().retry_after))
        };
        KeyedResponseFuture { inner }
    }
}

pin_project! {
    /// The response future of [`KeyedConcurrencyLimit`].
    pub struct KeyedResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: LimitFuture<S, Req, ErrorClassify, KeyEntry>,
    }
}

impl<S, Req> fmt::Debug for KeyedResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedResponseFuture")
            .finish_non_exhaustive()
    }
}

impl<S, Req> Future for KeyedResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
