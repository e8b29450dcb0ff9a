//! [`TimeoutFuture`]: the response future of [`Timeout`](super::Timeout).

use crate::bounded::Bounded;
use crate::call::Call;
use crate::timer::Timer;
use pin_project_lite::pin_project;
use rampart_core::{BoxError, Error, ErrorKind};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_service::Service;

pin_project! {
    /// The response future of [`Timeout`](super::Timeout).
    ///
    /// Resolves to the inner response, the inner error (as
    /// [`Error::from_inner`]), or [`ErrorKind::Timeout`]; the inner call is
    /// dropped the moment the timeout fires.
    #[must_use = "futures do nothing unless polled"]
    pub struct TimeoutFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: Bounded<Call<S, Req>>,
    }
}

impl<S, Req> TimeoutFuture<S, Req>
where
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn new(call: Call<S, Req>, timer: Timer, kind: ErrorKind) -> Self {
        TimeoutFuture {
            inner: Bounded::new(call, timer, kind),
        }
    }
}

impl<S, Req> Future for TimeoutFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<S, Req> fmt::Debug for TimeoutFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutFuture")
            .field("inner", &self.inner)
            .finish()
    }
}
