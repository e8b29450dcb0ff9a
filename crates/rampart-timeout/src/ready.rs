//! The wait for the inner service's readiness, bounded by a timer started
//! in `poll_ready` (tower#648), for any service, `Clone` or not.
//!
//! tower's `Timeout` starts its timer in `call`, after the caller already
//! waited in `poll_ready` for as long as the inner service wanted. Here,
//! when the inner service is not ready, [`ReadyGate::poll_ready`] fixes a
//! deadline (`timeout` from that moment, or the current
//! [`Context`](rampart_core::Context)'s deadline if earlier) and starts a
//! timer; `poll_ready` stays `Pending` (backpressure passes up, as tower
//! users expect) until the inner service is ready or the timer fires.
//!
//! - Ready in time: the call that follows keeps that deadline, so the wait
//!   and the call together never exceed the timeout.
//! - Timer fired: `poll_ready` answers `Ready(Ok(()))` and the next `call`
//!   fails at once with the layer's error, without calling the inner
//!   service (which is not ready); tower's `LoadShed` answers the same way.
//!   The service itself stays usable: the next `poll_ready` starts afresh.
//!
//! The common path (the inner service is ready on the first `poll_ready`)
//! reads no clock and touches no timer here. The timer is boxed and kept
//! for the next wait: only a service that was once not ready pays for it.

use crate::timer::deadline_from;
use rampart_core::ErrorKind;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// Where the current caller's wait for readiness stands.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// No wait since the last call.
    Idle,
    /// Waiting (or ready after waiting): the call keeps the timer's
    /// deadline.
    Waiting { kind: ErrorKind },
    /// The timer fired: the next call fails with `kind`.
    Expired { kind: ErrorKind },
}

/// How a call starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start {
    /// The inner service was ready at once: the clock starts now.
    Fresh,
    /// The inner service was waited for: the deadline is the wait's.
    Waited { at: Instant, kind: ErrorKind },
    /// The wait timed out: fail without calling the inner service.
    Expired { kind: ErrorKind },
}

/// The inner service plus the state of the wait for its readiness.
#[derive(Debug)]
pub(crate) struct ReadyGate<S> {
    inner: S,
    wait: Wait,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S: Clone> Clone for ReadyGate<S> {
    fn clone(&self) -> Self {
        // A clone has not waited: a wait belongs to one handle.
        ReadyGate::new(self.inner.clone())
    }
}

impl<S> ReadyGate<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadyGate {
            inner,
            wait: Wait::Idle,
            timer: None,
        }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    pub(crate) fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub(crate) fn into_inner(self) -> S {
        self.inner
    }

    /// The inner service's readiness, waited for at most `timeout` (or up
    /// to the current context's deadline); `own` is the error of a wait
    /// that the timeout ends.
    #[inline]
    pub(crate) fn poll_ready<Req>(
        &mut self,
        cx: &mut Context<'_>,
        timeout: Duration,
        own: ErrorKind,
    ) -> Poll<Result<(), S::Error>>
    where
        S: Service<Req>,
    {
        if let Wait::Expired { .. } = self.wait {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.wait = Wait::Idle;
                Poll::Ready(Err(e))
            }
            Poll::Pending => self.poll_wait(cx, timeout, own).map(Ok),
        }
    }

    /// The inner service is not ready: start the timer (first time) and
    /// see whether it fired.
    #[cold]
    #[inline(never)]
    fn poll_wait(&mut self, cx: &mut Context<'_>, timeout: Duration, own: ErrorKind) -> Poll<()> {
        if let Wait::Idle = self.wait {
            let now = Instant::now();
            let (at, kind) = deadline_from(now, timeout, own);
            if at <= now {
                self.wait = Wait::Expired { kind };
                return Poll::Ready(());
            }
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.wait = Wait::Waiting { kind };
        }
        let (Wait::Waiting { kind }, Some(timer)) = (self.wait, &mut self.timer) else {
            unreachable!("a wait has its timer")
        };
        if timer.as_mut().poll(cx).is_ready() {
            tracing::debug!(
                ?kind,
                "timer fired while waiting for the inner service to be ready"
            );
            self.wait = Wait::Expired { kind };
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// How the call being made starts; resets the wait for the next one.
    #[inline]
    pub(crate) fn start(&mut self) -> Start {
        match std::mem::replace(&mut self.wait, Wait::Idle) {
            Wait::Idle => Start::Fresh,
            Wait::Waiting { kind } => Start::Waited {
                at: self
                    .timer
                    .as_ref()
                    .map_or_else(Instant::now, |t| t.deadline()),
                kind,
            },
            Wait::Expired { kind } => Start::Expired { kind },
        }
    }

    /// Calls the inner service.
    #[inline]
    pub(crate) fn call<Req>(&mut self, req: Req) -> S::Future
    where
        S: Service<Req>,
    {
        self.inner.call(req)
    }
}
