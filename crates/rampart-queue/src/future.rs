//! [`ResponseFuture`]: a caller's wait for space (when the queue is full)
//! and then for its outcome.

use crate::worker::{Inner, Job};
use async_channel::SendError;
use pin_project_lite::pin_project;
use rampart_core::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context as TaskContext, Poll};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// The wait for space of a caller that found the queue full (boxed: only
/// this slow path allocates).
pub(crate) type SendFuture<Req, Res> =
    Pin<Box<dyn Future<Output = Result<(), SendError<Job<Req, Res>>>> + Send>>;

pub(crate) enum State<Req, Res> {
    /// Waiting for space in the queue.
    Sending {
        send: SendFuture<Req, Res>,
        rx: oneshot::Receiver<Result<Res, Error>>,
        inner: Arc<Inner<Req, Res>>,
        /// `max_wait` from the call, if any.
        give_up_at: Option<Instant>,
    },
    /// Queued or running: waiting for the worker's answer.
    Waiting {
        rx: oneshot::Receiver<Result<Res, Error>>,
    },
    /// Refused at call time.
    Failed { err: Option<Error> },
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
    pub struct ResponseFuture<Req, Res> {
        state: State<Req, Res>,
        deadline: Option<Instant>,
        #[pin]
        timer: Option<Sleep>,
        #[pin]
        cancel: Option<WaitForCancellationFutureOwned>,
    }
}

impl<Req, Res> fmt::Debug for ResponseFuture<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Sending { .. } => "waiting for space",
            State::Waiting { .. } => "queued or running",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<Req, Res> ResponseFuture<Req, Res> {
    pub(crate) fn new(
        state: State<Req, Res>,
        deadline: Option<Instant>,
        cancel: Option<WaitForCancellationFutureOwned>,
    ) -> Self {
        ResponseFuture {
            state,
            deadline,
            timer: None,
            cancel,
        }
    }

    pub(crate) fn failed(err: Error) -> Self {
        ResponseFuture::new(State::Failed { err: Some(err) }, None, None)
    }
}

/// The instant the current wait ends at: the deadline, or `max_wait` while
/// waiting for space, whichever is first.
fn wait_end(deadline: Option<Instant>, give_up_at: Option<Instant>) -> Option<Instant> {
    match (deadline, give_up_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<Req, Res> Future for ResponseFuture<Req, Res> {
    type Output = Result<Res, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state {
                State::Waiting { rx } => {
                    if let Poll::Ready(r) = Pin::new(rx).poll(cx) {
                        // The sender dropped without an answer: a drain
                        // deadline dropped the request.
                        return Poll::Ready(r.unwrap_or_else(|_| Err(Error::closed())));
                    }
                }
                State::Sending {
                    send,
                    inner,
                    give_up_at,
                    ..
                } => match send.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => {
                        let State::Sending { rx, .. } =
                            std::mem::replace(this.state, State::Failed { err: None })
                        else {
                            unreachable!("matched above")
                        };
                        *this.state = State::Waiting { rx };
                        // From now on only the deadline bounds the wait.
                        match *this.deadline {
                            Some(at) => match this.timer.as_mut().as_pin_mut() {
                                Some(t) => t.reset(at),
                                None => this.timer.set(Some(sleep_until(at))),
                            },
                            None => this.timer.set(None),
                        }
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Error::closed())),
                    Poll::Pending => {
                        if this.timer.is_none()
                            && let Some(at) = wait_end(*this.deadline, *give_up_at)
                        {
                            this.timer.set(Some(sleep_until(at)));
                        }
                        if let Some(t) = this.timer.as_mut().as_pin_mut()
                            && t.poll(cx).is_ready()
                        {
                            if this.deadline.is_some_and(|d| d <= Instant::now()) {
                                return Poll::Ready(Err(Error::deadline_exceeded()));
                            }
                            inner.counters.shed.fetch_add(1, Relaxed);
                            tracing::debug!("queue shed a request: max_wait passed while full");
                            return Poll::Ready(Err(Error::overloaded(inner.retry_after)));
                        }
                    }
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
        if let Some(c) = this.cancel.as_mut().as_pin_mut()
            && c.poll(cx).is_ready()
        {
            return Poll::Ready(Err(Error::cancelled()));
        }
        if matches!(this.state, State::Waiting { .. }) {
            if this.timer.is_none()
                && let Some(at) = *this.deadline
            {
                this.timer.set(Some(sleep_until(at)));
            }
            if let Some(t) = this.timer.as_mut().as_pin_mut()
                && t.poll(cx).is_ready()
            {
                return Poll::Ready(Err(Error::deadline_exceeded()));
            }
        }
        Poll::Pending
    }
}
