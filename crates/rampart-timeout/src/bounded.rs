//! A future raced against a [`Timer`]: the core of both layers.

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
        Running { #[pin] fut: F, #[pin] timer: Timer, kind: ErrorKind },
        Fired,
    }
}

impl<F> Bounded<F> {
    #[inline]
    pub(crate) fn new(fut: F, timer: Timer, kind: ErrorKind) -> Self {
        Bounded::Running { fut, timer, kind }
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
        let BoundedProj::Running { fut, timer, kind } = self.as_mut().project() else {
            panic!("timeout future polled after it completed");
        };
        if let Poll::Ready(res) = fut.poll(cx) {
            timer.on_complete();
            return Poll::Ready(res.map_err(Error::from_inner));
        }
        if timer.poll_expired(cx).is_pending() {
            return Poll::Pending;
        }
        let kind = *kind;
        tracing::debug!(?kind, "timer fired, dropping the inner call");
        // Drop the inner call now, not whenever the caller drops this future.
        self.set(Bounded::Fired);
        Poll::Ready(Err(Error::new(kind)))
    }
}

impl<F> std::fmt::Debug for Bounded<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bounded::Running { timer, kind, .. } => f
                .debug_struct("Bounded")
                .field("timer", timer)
                .field("kind", kind)
                .finish_non_exhaustive(),
            Bounded::Fired => f.write_str("Bounded::Fired"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arming;
    use std::future::poll_fn;
    use std::pin::pin;
    use std::time::Duration;
    use tokio::time::Instant;

    type Res = Result<(), std::convert::Infallible>;

    fn never() -> impl Future<Output = Res> {
        std::future::pending()
    }

    async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
        poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
    }

    /// Both ways of arming: at once (score 0) and after one more turn
    /// (score at its maximum).
    const MODES: [(&str, u8); 2] = [("armed at once", 0), ("deferred one turn", 16)];

    #[tokio::test(start_paused = true)]
    async fn fires_exactly_on_time_whichever_way_the_timer_is_armed() {
        for (mode, score) in MODES {
            arming::set_score(score);
            let after = Duration::from_millis(700);
            let mut fut = pin!(Bounded::new(
                never(),
                Timer::after(after),
                ErrorKind::Timeout
            ));
            assert!(poll_once(fut.as_mut()).await.is_pending(), "{mode}");
            // Let a deferred wake-up run, as the scheduler would.
            tokio::task::yield_now().await;
            assert!(poll_once(fut.as_mut()).await.is_pending(), "{mode}");
            tokio::time::advance(Duration::from_millis(699)).await;
            assert!(
                poll_once(fut.as_mut()).await.is_pending(),
                "{mode}: 1 ms early"
            );
            tokio::time::advance(Duration::from_millis(1)).await;
            let out = poll_once(fut.as_mut()).await;
            assert!(
                matches!(&out, Poll::Ready(Err(e)) if e.kind() == ErrorKind::Timeout),
                "{mode}: {out:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferred_timer_still_fires_for_a_future_that_never_wakes() {
        arming::set_score(16);
        let start = Instant::now();
        let at = start + Duration::from_secs(3);
        let bounded = Bounded::new(never(), Timer::at(at), ErrorKind::DeadlineExceeded);
        // An hour of paused time passes at once: a timer that never fires
        // fails the test instead of hanging it.
        let err = tokio::time::timeout(Duration::from_secs(3600), bounded)
            .await
            .expect("the deadline fired")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert!(arming::score() < 16, "the extra turn did not pay off");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_pending_for_one_turn_completes_without_arming_when_deferred() {
        arming::set_score(12);
        let one_turn = async {
            tokio::task::yield_now().await;
            Ok::<_, std::convert::Infallible>(1)
        };
        let mut fut = pin!(Bounded::new(
            one_turn,
            Timer::after(Duration::from_secs(1)),
            ErrorKind::Timeout
        ));
        assert!(poll_once(fut.as_mut()).await.is_pending());
        assert!(matches!(
            &*fut,
            Bounded::Running {
                timer: Timer::Deferred { .. },
                ..
            }
        ));
        assert_eq!(fut.await.unwrap(), 1);
        assert_eq!(arming::score(), 13, "the extra turn paid off");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_woken_later_arms_the_timer_on_its_second_poll() {
        arming::set_score(12);
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let waiting = async move { Ok::<_, std::convert::Infallible>(rx.await.unwrap()) };
        let mut fut = pin!(Bounded::new(
            waiting,
            Timer::after(Duration::from_secs(1)),
            ErrorKind::Timeout
        ));
        assert!(poll_once(fut.as_mut()).await.is_pending());
        tokio::task::yield_now().await;
        assert!(poll_once(fut.as_mut()).await.is_pending());
        assert!(matches!(
            &*fut,
            Bounded::Running {
                timer: Timer::Armed { .. },
                ..
            }
        ));
        assert_eq!(arming::score(), 10);
        tx.send(4).unwrap();
        assert_eq!(fut.await.unwrap(), 4);
    }
}
