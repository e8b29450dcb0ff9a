//! [`ResponseFuture`]: a caller's wait for its outcome (and, while it
//! waits for space in a full queue, its `max_wait`).

use crate::queue::Leave;
use crate::slot::Answer;
use pin_project_lite::pin_project;
use rampart_core::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// A caller whose job waits for space behind the queue: what it needs to
/// take the job back if it gives up before a worker gives it a place.
pub(crate) struct WaitingForSpace {
    queue: Arc<dyn Leave>,
    ticket: u64,
}

impl WaitingForSpace {
    pub(crate) fn new(queue: Arc<dyn Leave>, ticket: u64) -> Self {
        WaitingForSpace { queue, ticket }
    }

    /// True if the job still waited for space and was taken back.
    fn leave(self) -> bool {
        self.queue.leave(self.ticket)
    }
}

pub(crate) enum State<Req, Res> {
    /// Waiting for space, queued or running: waiting for the worker's
    /// answer.
    Waiting { answer: Answer<Req, Res> },
    /// Refused at call time.
    Failed { err: Option<Error> },
}

pin_project! {
    /// What ends a wait early: the request's deadline and its cancellation
    /// token, and the queue's `max_wait` while it waits for space (boxed,
    /// and only for requests that have one, so the common future stays
    /// small).
    pub(crate) struct Bounds {
        deadline: Option<Instant>,
        #[pin]
        timer: Option<Sleep>,
        #[pin]
        cancel: Option<WaitForCancellationFutureOwned>,
        #[pin]
        give_up: Option<Sleep>,
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
                give_up: None,
            })
        })
    }

    /// `bounds` (made if `None`) with the wait for space ending at `at`.
    pub(crate) fn with_give_up(bounds: Option<Pin<Box<Bounds>>>, at: Instant) -> Pin<Box<Bounds>> {
        let mut b = bounds.unwrap_or_else(|| {
            Box::pin(Bounds {
                deadline: None,
                timer: None,
                cancel: None,
                give_up: None,
            })
        });
        b.as_mut().project().give_up.set(Some(sleep_until(at)));
        b
    }

    /// `Ready` once `max_wait` passed (never without one).
    fn poll_give_up(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        match self.project().give_up.as_pin_mut() {
            Some(t) => t.poll(cx),
            None => Poll::Pending,
        }
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
    pub struct ResponseFuture<Req, Res> {
        state: State<Req, Res>,
        bounds: Option<Pin<Box<Bounds>>>,
        // Set while the job may still wait for space.
        waiting: Option<WaitingForSpace>,
    }

    impl<Req, Res> PinnedDrop for ResponseFuture<Req, Res> {
        /// A caller that leaves while its job waits for space takes it back
        /// (never queued); the answer half goes first, so the job's slot
        /// returns to the pool.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(w) = this.waiting.take() {
                *this.state = State::Failed { err: None };
                w.leave();
            }
        }
    }
}

impl<Req, Res> fmt::Debug for ResponseFuture<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } if self.waiting.is_some() => {
                "waiting for space, queued or running"
            }
            State::Waiting { .. } => "queued or running",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("deadline", &self.bounds.as_ref().and_then(|b| b.deadline))
            .finish_non_exhaustive()
    }
}

impl<Req, Res> ResponseFuture<Req, Res> {
    pub(crate) fn new(
        state: State<Req, Res>,
        bounds: Option<Pin<Box<Bounds>>>,
        waiting: Option<WaitingForSpace>,
    ) -> Self {
        ResponseFuture {
            state,
            bounds,
            waiting,
        }
    }

    pub(crate) fn failed(err: Error) -> Self {
        ResponseFuture::new(State::Failed { err: Some(err) }, None, None)
    }
}

impl<Req, Res> Future for ResponseFuture<Req, Res> {
    type Output = Result<Res, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state {
            State::Waiting { answer } => {
                // A reply dropped unanswered (a drain deadline) answers
                // `Closed`.
                if let Poll::Ready(r) = answer.poll(cx) {
                    *this.waiting = None;
                    return Poll::Ready(r);
                }
            }
            State::Failed { err } => {
                return Poll::Ready(Err(err
                    .take()
                    .expect("ResponseFuture polled after completion")));
            }
        }
        // Pending on the queue: the request's cancellation and deadline end
        // the wait at once; `max_wait` ends the wait for space.
        if let Some(b) = this.bounds {
            if let Poll::Ready(e) = b.as_mut().poll_end(cx) {
                if let Some(w) = this.waiting.take() {
                    *this.state = State::Failed { err: None };
                    w.leave();
                }
                return Poll::Ready(Err(e));
            }
            if this.waiting.is_some() && b.as_mut().poll_give_up(cx).is_ready() {
                let w = this.waiting.take().expect("checked above");
                let queue = Arc::clone(&w.queue);
                if w.leave() {
                    *this.state = State::Failed { err: None };
                    return Poll::Ready(Err(queue.shed_max_wait()));
                }
                // A worker gave it a place already: `max_wait` is over.
            }
        }
        Poll::Pending
    }
}
