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

use crate::metrics::{Metrics, event};
use crate::timer::deadline_from;
use pin_project_lite::pin_project;
use rampart_core::ErrorKind;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

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

pin_project! {
    /// A wait for readiness: its timer (kept, boxed, for the next wait)
    /// and where it stands.
    #[derive(Debug)]
    struct Wait {
        #[pin]
        timer: Sleep,
        kind: ErrorKind,
        // A wait is under way (or ended, `expired` saying how).
        active: bool,
        // The timer fired: the next call fails with `kind`.
        expired: bool,
    }
}

/// The inner service plus the state of the wait for its readiness. One
/// word besides the service: a service that never made anyone wait has no
/// `Wait`.
#[derive(Debug)]
pub(crate) struct ReadyGate<S> {
    inner: S,
    wait: WaitSlot,
}

/// The boxed wait, if the service ever waited. Dropping an empty slot is
/// one inline test: the box's drop glue runs out of line, and only for a
/// service that once waited (measured under callgrind: an out-of-line
/// `drop_in_place` call on every dropped clone otherwise).
#[derive(Default)]
struct WaitSlot(ManuallyDrop<Option<Pin<Box<Wait>>>>);

impl std::fmt::Debug for WaitSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Drop for WaitSlot {
    #[inline]
    fn drop(&mut self) {
        if self.0.is_some() {
            drop_wait(std::mem::take(&mut self.0));
        }
    }
}

#[cold]
#[inline(never)]
fn drop_wait(wait: ManuallyDrop<Option<Pin<Box<Wait>>>>) {
    drop(ManuallyDrop::into_inner(wait));
}

impl std::ops::Deref for WaitSlot {
    type Target = Option<Pin<Box<Wait>>>;
    #[inline]
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for WaitSlot {
    #[inline]
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
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
            wait: WaitSlot::default(),
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
        metrics: &Metrics,
    ) -> Poll<Result<(), S::Error>>
    where
        S: Service<Req>,
    {
        if self.wait.as_ref().is_some_and(|w| w.expired) {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                if let Some(w) = &mut *self.wait {
                    *w.as_mut().project().active = false;
                }
                Poll::Ready(Err(e))
            }
            Poll::Pending => self.poll_wait(cx, timeout, own, metrics).map(Ok),
        }
    }

    /// The inner service is not ready: start the timer (first time) and
    /// see whether it fired.
    #[cold]
    #[inline(never)]
    fn poll_wait(
        &mut self,
        cx: &mut Context<'_>,
        timeout: Duration,
        own: ErrorKind,
        metrics: &Metrics,
    ) -> Poll<()> {
        if !self.wait.as_ref().is_some_and(|w| w.active) {
            let now = Instant::now();
            let (at, kind) = deadline_from(now, timeout, own);
            let wait = match &mut *self.wait {
                Some(w) => {
                    w.as_mut().project().timer.reset(at);
                    w
                }
                None => self.wait.insert(Box::pin(Wait {
                    timer: tokio::time::sleep_until(at),
                    kind,
                    active: false,
                    expired: false,
                })),
            };
            let w = wait.as_mut().project();
            *w.active = true;
            *w.kind = kind;
            if at <= now {
                *w.expired = true;
                return Poll::Ready(());
            }
        }
        let Some(wait) = &mut *self.wait else {
            unreachable!("an active wait has its timer")
        };
        let w = wait.as_mut().project();
        if w.timer.poll(cx).is_ready() {
            event!(
                debug,
                metrics,
                kind = ?*w.kind,
                "timer fired while waiting for the inner service to be ready"
            );
            *w.expired = true;
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// How the call being made starts; resets the wait for the next one.
    #[inline]
    pub(crate) fn start(&mut self) -> Start {
        match &mut *self.wait {
            Some(w) if w.active => {
                let w = w.as_mut().project();
                *w.active = false;
                if std::mem::take(w.expired) {
                    Start::Expired { kind: *w.kind }
                } else {
                    Start::Waited {
                        at: w.timer.deadline(),
                        kind: *w.kind,
                    }
                }
            }
            _ => Start::Fresh,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Kind, Metrics};
    use rampart_core::telemetry::LayerName;
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Never ready; remembers being dropped.
    struct NeverReady(Arc<AtomicBool>);

    impl Drop for NeverReady {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl Service<()> for NeverReady {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<(), Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }
        fn call(&mut self, (): ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_that_waited_drops_its_boxed_timer_and_its_service() {
        let dropped = Arc::new(AtomicBool::new(false));
        let mut gate = ReadyGate::new(NeverReady(Arc::clone(&dropped)));
        let metrics = Metrics::new(&LayerName::default(), Kind::Timeout { limit_ns: 0 });
        let first = poll_fn(|cx| {
            Poll::Ready(gate.poll_ready::<()>(
                cx,
                Duration::from_secs(1),
                ErrorKind::Timeout,
                &metrics,
            ))
        })
        .await;
        assert!(first.is_pending());
        assert!(gate.wait.is_some(), "the wait's timer is kept in the slot");
        // The slot's own drop runs the boxed wait's (its `Sleep`), out of
        // line; the service goes with it.
        drop(gate);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
