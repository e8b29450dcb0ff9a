//! [`PropagateFuture`]: the response future of
//! [`PropagateDeadline`](super::PropagateDeadline).

use pin_project_lite::pin_project;
use rampart_core::{BoxError, Error};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

pin_project! {
    /// The response future of [`PropagateDeadline`](super::PropagateDeadline):
    /// the inner response, the inner error (as [`Error::from_inner`]), or
    /// [`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded)
    /// when no time was left to send the request.
    #[must_use = "futures do nothing unless polled"]
    pub struct PropagateFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F },
        Failed { error: Option<Error> },
    }
}

impl<F> PropagateFuture<F> {
    pub(crate) fn called(fut: F) -> Self {
        PropagateFuture {
            state: State::Called { fut },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        PropagateFuture {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for PropagateFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut } => {
                Poll::Ready(ready!(fut.poll(cx)).map_err(Error::from_inner))
            }
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("propagate future polled after it completed"))),
        }
    }
}

impl<F> fmt::Debug for PropagateFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("PropagateFuture")
            .field("state", &state)
            .finish()
    }
}
