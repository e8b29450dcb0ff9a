//! [`TimeoutFuture`]: the response future of [`Timeout`](super::Timeout).

use crate::bounded::Bounded;
use crate::metrics::Fire;
use crate::timer::Timer;
use pin_project_lite::pin_project;
use rampart_core::{BoxError, Error, ErrorKind};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The response future of [`Timeout`](super::Timeout): the inner
    /// response future `F` raced against the deadline fixed in `call`.
    ///
    /// Resolves to the inner response, the inner error (as
    /// [`Error::from_inner`]), [`ErrorKind::Timeout`], or
    /// [`ErrorKind::DeadlineExceeded`] when the request's
    /// [`Context`](rampart_core::Context) deadline came first; the inner
    /// call is dropped the moment the timer fires.
    #[must_use = "futures do nothing unless polled"]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: Bounded<F>,
    }
}

impl<F> TimeoutFuture<F> {
    #[inline]
    pub(crate) fn new(fut: F, timer: Timer, kind: ErrorKind, fire: Fire) -> Self {
        TimeoutFuture {
            inner: Bounded::new(fut, timer, kind, fire),
        }
    }

    #[inline]
    pub(crate) fn expired(kind: ErrorKind) -> Self {
        TimeoutFuture {
            inner: Bounded::expired(kind),
        }
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F> fmt::Debug for TimeoutFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutFuture")
            .field("inner", &self.inner)
            .finish()
    }
}
