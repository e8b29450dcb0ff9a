//! A future raced against a [`Timer`]: the core of both layers.

use crate::metrics::Fire;
use crate::timer::Timer;
use pin_project_lite::pin_project;
use rampart_core::{BoxError, Error, ErrorKind};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// Polls `fut` first and the timer only when `fut` is pending; when the
    /// timer expires, `fut` is dropped at once and the result is an error of
    /// `kind`.
    #[project = BoundedProj]
    pub(crate) enum Bounded<F> {
        Running { #[pin] fut: F, #[pin] timer: Timer, kind: ErrorKind, fire: Fire },
        // Failed before the inner service was called (its wait for
        // readiness timed out).
        Expired { kind: ErrorKind },
        Fired,
    }
}

impl<F> Bounded<F> {
    #[inline]
    pub(crate) fn new(fut: F, timer: Timer, kind: ErrorKind, fire: Fire) -> Self {
        Bounded::Running {
            fut,
            timer,
            kind,
            fire,
        }
    }

    /// Fails with `kind` on the first poll; no inner call.
    #[inline]
    pub(crate) fn expired(kind: ErrorKind) -> Self {
        Bounded::Expired { kind }
    }
}

impl<F, T, E> Future for Bounded<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (fut, timer, kind, fire) = match self.as_mut().project() {
            BoundedProj::Running {
                fut,
                timer,
                kind,
                fire,
            } => (fut, timer, kind, fire),
            BoundedProj::Expired { kind } => {
                let kind = *kind;
                self.set(Bounded::Fired);
                return Poll::Ready(Err(Error::new(kind)));
            }
            BoundedProj::Fired => panic!("timeout future polled after it completed"),
        };
        if let Poll::Ready(res) = fut.poll(cx) {
            return Poll::Ready(match res {
                Ok(v) => Ok(v),
                Err(e) => Err(inner_failed(e, *kind, fire)),
            });
        }
        if timer.poll_expired(cx).is_pending() {
            return Poll::Pending;
        }
        let kind = *kind;
        fire.fired(kind);
        // Drop the inner call now, not whenever the caller drops this future.
        self.set(Bounded::Fired);
        Poll::Ready(Err(Error::new(kind)))
    }
}

/// The inner call failed. A `DeadlineExceeded` from inside, under a layer
/// whose own clock is that deadline (an inner queue or limit that gave up
/// at the same deadline first), is this layer's deadline passing: counted
/// as its own.
#[cold]
#[inline(never)]
fn inner_failed<E: Into<BoxError>>(e: E, kind: ErrorKind, fire: &Fire) -> Error {
    let e = Error::from_inner(e);
    if kind == ErrorKind::DeadlineExceeded && e.kind() == ErrorKind::DeadlineExceeded {
        fire.deadline_passed_inside();
    }
    e
}

impl<F> std::fmt::Debug for Bounded<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bounded::Running { timer, kind, .. } => f
                .debug_struct("Bounded")
                .field("timer", timer)
                .field("kind", kind)
                .finish_non_exhaustive(),
            Bounded::Expired { kind } => f
                .debug_struct("Bounded::Expired")
                .field("kind", kind)
                .finish(),
            Bounded::Fired => f.write_str("Bounded::Fired"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Kind, Metrics};
    use rampart_core::telemetry::LayerName;
    use std::future::poll_fn;
    use std::pin::pin;
    use std::time::Duration;
    use tokio::time::Instant;

    type Res = Result<(), std::convert::Infallible>;

    fn fire() -> Fire {
        Metrics::new(&LayerName::default(), Kind::Timeout { limit_ns: 0 }).fire()
    }

    fn never() -> impl Future<Output = Res> {
        std::future::pending()
    }

    async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
        poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn fires_exactly_at_the_deadline_fixed_before_the_first_poll() {
        let start = Instant::now();
        let mut fut = pin!(Bounded::new(
            never(),
            Timer::at(start + Duration::from_millis(700)),
            ErrorKind::Timeout,
            fire(),
        ));
        assert!(poll_once(fut.as_mut()).await.is_pending());
        assert!(matches!(
            &*fut,
            Bounded::Running {
                timer: Timer::Armed { .. },
                ..
            }
        ));
        tokio::time::advance(Duration::from_millis(699)).await;
        assert!(poll_once(fut.as_mut()).await.is_pending(), "1 ms early");
        tokio::time::advance(Duration::from_millis(1)).await;
        let out = poll_once(fut.as_mut()).await;
        assert!(
            matches!(&out, Poll::Ready(Err(e)) if e.kind() == ErrorKind::Timeout),
            "{out:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_that_passed_before_the_first_poll_fires_on_that_poll() {
        let start = Instant::now();
        let mut fut = pin!(Bounded::new(
            never(),
            Timer::at(start + Duration::from_millis(10)),
            ErrorKind::DeadlineExceeded,
            fire(),
        ));
        tokio::time::advance(Duration::from_millis(100)).await;
        let out = poll_once(fut.as_mut()).await;
        assert!(
            matches!(&out, Poll::Ready(Err(e)) if e.kind() == ErrorKind::DeadlineExceeded),
            "{out:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_future_never_arms_the_timer() {
        let mut fut = pin!(Bounded::new(
            std::future::ready(Ok::<_, std::convert::Infallible>(3)),
            Timer::at(Instant::now()),
            ErrorKind::Timeout,
            fire(),
        ));
        // Even an expired deadline: the inner is polled first, as tower does.
        let out = poll_once(fut.as_mut()).await;
        assert!(matches!(out, Poll::Ready(Ok(3))), "{out:?}");
    }
}
