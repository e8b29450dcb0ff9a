//! [`ResponseFuture`]: a caller's wait for space (when the queue is full)
//! and then for its outcome.

use crate::slot::Answer;
use pin_project_lite::pin_project;
use rampart_core::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// The wait for space of a caller that found the queue full, `max_wait`
/// included (boxed: only this slow path allocates).
/// Resolves to the caller's half of its answer slot once queued.
pub(crate) type SendFuture<Res> =
    Pin<Box<dyn Future<Output = Result<Option<Answer<Res>>, Error>> + Send>>;

pub(crate) enum State<Res> {
    /// Waiting for space in the queue.
    Sending { send: SendFuture<Res> },
    /// Queued or running: waiting for the worker's answer.
    Waiting { answer: Answer<Res> },
    /// Refused at call time.
    Failed { err: Option<Error> },
}

pin_project! {
    /// What ends a wait early: the request's deadline and its cancellation
    /// token (boxed, and only for requests whose context has either, so the
    /// common future stays small).
    pub(crate) struct Bounds {
        deadline: Option<Instant>,
        #[pin]
        timer: Option<Sleep>,
        #[pin]
        cancel: Option<WaitForCancellationFutureOwned>,
    }
}

impl Bounds {
    pub(crate) fn new(
        deadline: Option<Instant>,
        cancel: Option<WaitForCancellationFutureOwned>,
    ) -> Option<Pin<Box<Bounds>>> {
        (deadline.is_some() || cancel.is_some()).then(|| {
            Box::pin(Bounds {
                deadline,
                timer: None,
                cancel,
            })
        })
    }

    /// `Ready(err)` once the token fires or the deadline passes.
    fn poll_end(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        let mut this = self.project();
        if let Some(c) = this.cancel.as_pin_mut()
            && c.poll(cx).is_ready()
        {
            return Poll::Ready(Error::cancelled());
        }
        if this.timer.is_none()
            && let Some(at) = *this.deadline
        {
            this.timer.set(Some(sleep_until(at)));
        }
        if let Some(t) = this.timer.as_mut().as_pin_mut()
            && t.poll(cx).is_ready()
        {
            return Poll::Ready(Error::deadline_exceeded());
        }
        Poll::Pending
    }
}

pin_project! {
    /// The response future of [`Queue`](crate::Queue).
    ///
    /// Resolves to the inner service's response, or to an [`Error`]:
    /// `Overloaded` (shed: the queue was full, or `max_wait` passed),
    /// `Closed` (the queue was closed, or a drain deadline dropped the
    /// request), `Cancelled` (the request's cancellation token fired),
    /// `DeadlineExceeded` (the request's deadline passed), or the inner
    /// service's error (`Inner`, with [`Panicked`](crate::Panicked) as the
    /// source when it panicked). Dropping it withdraws the request: it is
    /// skipped if not started, and dropped if running (unless the queue is
    /// detached).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<Res> {
        state: State<Res>,
        bounds: Option<Pin<Box<Bounds>>>,
    }
}

impl<Res> fmt::Debug for ResponseFuture<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Sending { .. } => "waiting for space",
            State::Waiting { .. } => "queued or running",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("deadline", &self.bounds.as_ref().and_then(|b| b.deadline))
            .finish_non_exhaustive()
    }
}

impl<Res> ResponseFuture<Res> {
    pub(crate) fn new(state: State<Res>, bounds: Option<Pin<Box<Bounds>>>) -> Self {
        ResponseFuture { state, bounds }
    }

    pub(crate) fn failed(err: Error) -> Self {
        ResponseFuture::new(State::Failed { err: Some(err) }, None)
    }
}

impl<Res> Future for ResponseFuture<Res> {
    type Output = Result<Res, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        loop {
            match this.state {
                State::Waiting { answer } => {
                    // A reply dropped unanswered (a drain deadline) answers
                    // `Closed`.
                    if let Poll::Ready(r) = answer.poll(cx) {
                        return Poll::Ready(r);
                    }
                }
                State::Sending { send } => match send.as_mut().poll(cx) {
                    Poll::Ready(Ok(Some(answer))) => {
                        *this.state = State::Waiting { answer };
                        continue;
                    }
                    Poll::Ready(Ok(None)) => unreachable!("a call's job has an answer slot"),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                },
                State::Failed { err } => {
                    return Poll::Ready(Err(err
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
            }
            break;
        }
        // Pending on the queue: the request's cancellation and deadline end
        // the wait at once.
        if let Some(b) = this.bounds
            && let Poll::Ready(e) = b.as_mut().poll_end(cx)
        {
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    }
}
