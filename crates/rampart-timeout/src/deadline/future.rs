//! [`DeadlineFuture`]: the response future of [`Deadline`](super::Deadline).

use crate::bounded::Bounded;
use pin_project_lite::pin_project;
use rampart_core::{BoxError, Error, Scoped};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_service::Service;

pin_project! {
    /// The response future of [`Deadline`](super::Deadline).
    ///
    /// Runs the inner call inside the request's
    /// [`Context`](rampart_core::Context) and resolves to its response, its
    /// error (as [`Error::from_inner`]), or
    /// [`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded);
    /// the inner call is dropped the moment the deadline passes.
    #[must_use = "futures do nothing unless polled"]
    pub struct DeadlineFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Running { #[pin] fut: Scoped<Bounded<S::Future>> },
        // Answered without calling the inner service.
        Done { result: Option<Result<S::Response, Error>> },
    }
}

impl<S, Req> DeadlineFuture<S, Req>
where
    S: Service<Req>,
{
    pub(crate) fn running(fut: Scoped<Bounded<S::Future>>) -> Self {
        DeadlineFuture {
            state: State::Running { fut },
        }
    }

    pub(crate) fn done(result: Result<S::Response, Error>) -> Self {
        DeadlineFuture {
            state: State::Done {
                result: Some(result),
            },
        }
    }
}

impl<S, Req> Future for DeadlineFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { fut } => fut.poll(cx),
            StateProj::Done { result } => Poll::Ready(
                result
                    .take()
                    .expect("deadline future polled after it completed"),
            ),
        }
    }
}

impl<S, Req> fmt::Debug for DeadlineFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Running { .. } => "running",
            State::Done { .. } => "done",
        };
        f.debug_struct("DeadlineFuture")
            .field("state", &state)
            .finish()
    }
}
