//! Timeout: tower `Timeout` (1 s, never fires) against the bare inner
//! service, with a ready, a yielding and a remote inner (answered by another
//! task, as a network client is), current-thread and multi-thread runtimes,
//! one caller (and 64 callers for the yielding and remote inners).
//!
//! Group `timeout`; ids `floor`, `tower` and `rampart` (the per-attempt
//! `TimeoutLayer` of `rampart-timeout`, also 1 s), registered with the same
//! `common::bench_layer` call.
//!
//! In probe mode only (callgrind, never timed by criterion), the ablation
//! ids `abl_pass`, `abl_clock`, `abl_ctx` and `abl_min` (current thread, one
//! caller): the pieces of a timeout that times from `call()`, each added to
//! the one before (see [`ablation`] and `benches/README.md`).

mod common;

use std::time::Duration;

use common::{
    InnerKind::{Ready, Remote, Yield},
    Rt::{Ct, Mt},
    bench_floor, bench_layer, cases, group,
};
use criterion::Criterion;
use tower::timeout::TimeoutLayer;

/// The timeout every id uses: long enough never to fire.
const TIMEOUT: Duration = Duration::from_secs(1);

fn timeout(c: &mut Criterion) {
    let mut g = group(c, "timeout");
    let mut all = cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1]);
    all.extend(cases(&[Ct, Mt], &[Ready, Yield, Remote], &[64]));
    for case in all {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "tower", case, TimeoutLayer::new(TIMEOUT));
        let rampart = rampart::timeout::TimeoutLayer::new(TIMEOUT);
        bench_layer(&mut g, "rampart", case, rampart);
        if common::probing() && case.rt == Ct && case.callers == 1 {
            use ablation::{Abl, Step};
            bench_layer(&mut g, "abl_pass", case, Abl::<{ Step::PASS }>(TIMEOUT));
            bench_layer(&mut g, "abl_clock", case, Abl::<{ Step::CLOCK }>(TIMEOUT));
            bench_layer(&mut g, "abl_ctx", case, Abl::<{ Step::CTX }>(TIMEOUT));
            bench_layer(&mut g, "abl_min", case, Abl::<{ Step::MIN }>(TIMEOUT));
        }
    }
    g.finish();
}

/// Stripped timeouts for the ablation, each doing one thing more than the
/// one before (a `const` step, so each is compiled with only its pieces):
///
/// - `PASS`: a layer that wraps the service and its future and does
///   nothing else (what any layer costs: the clone, the wrapper future);
/// - `CLOCK`: + one clock read in `call()`, kept in the future: the least
///   a timeout that times from `call()` must do while the inner is ready;
/// - `CTX`: + the request `Context`'s deadline, read in `call()`;
/// - `MIN`: + the timer: at the first `Pending`, the deadline (`call()` +
///   timeout, or the context's if earlier) is computed, compared with a
///   second clock read (fire on that poll if it passed) and registered
///   with tokio (`sleep_until`). The semantics of rampart's `TimeoutLayer`
///   minus the bounded readiness wait, the error kinds and metrics.
pub(crate) mod ablation {
    use pin_project_lite::pin_project;
    use rampart::core::Context;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};
    use std::time::Duration;
    use tokio::time::{Instant, Sleep};
    use tower::{BoxError, Layer, Service};

    /// The steps (see the module).
    pub(crate) struct Step;
    impl Step {
        pub(crate) const PASS: u8 = 0;
        pub(crate) const CLOCK: u8 = 1;
        pub(crate) const CTX: u8 = 2;
        pub(crate) const MIN: u8 = 3;
    }

    /// The layer of step `STEP`, with its timeout.
    #[derive(Clone, Copy)]
    pub(crate) struct Abl<const STEP: u8>(pub(crate) Duration);

    impl<S, const STEP: u8> Layer<S> for Abl<STEP> {
        type Service = AblService<S, STEP>;
        fn layer(&self, inner: S) -> Self::Service {
            AblService {
                inner,
                timeout: self.0,
            }
        }
    }

    /// The service: the inner one and the timeout, tower's layout.
    #[derive(Clone)]
    pub(crate) struct AblService<S, const STEP: u8> {
        inner: S,
        timeout: Duration,
    }

    pin_project! {
        #[project = TimerProj]
        enum Timer {
            // What `call()` fixed; the `Sleep`'s niche holds the tag.
            Started { start: Option<Instant>, ctx: Option<Instant>, timeout: Option<Duration> },
            Armed { #[pin] sleep: Sleep },
        }
    }

    pin_project! {
        /// The response future: the inner one and the timer state.
        pub(crate) struct AblFuture<F> {
            #[pin]
            fut: F,
            #[pin]
            timer: Timer,
        }
    }

    impl<S, Req, const STEP: u8> Service<Req> for AblService<S, STEP>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        type Response = S::Response;
        type Error = BoxError;
        type Future = AblFuture<S::Future>;

        fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
            self.inner.poll_ready(cx).map_err(Into::into)
        }

        fn call(&mut self, req: Req) -> Self::Future {
            let fut = self.inner.call(req);
            let start = (STEP >= Step::CLOCK).then(Instant::now);
            let ctx = if STEP >= Step::CTX {
                Context::current_deadline()
            } else {
                None
            };
            AblFuture {
                fut,
                timer: Timer::Started {
                    start,
                    ctx,
                    timeout: (STEP >= Step::MIN).then_some(self.timeout),
                },
            }
        }
    }

    impl<F, T, E> Future for AblFuture<F>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        type Output = Result<T, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
            let mut this = self.project();
            if let Poll::Ready(res) = this.fut.poll(cx) {
                return Poll::Ready(res.map_err(Into::into));
            }
            let deadline = match this.timer.as_mut().project() {
                TimerProj::Armed { sleep } => {
                    return match sleep.poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Err("timed out".into())),
                        Poll::Pending => Poll::Pending,
                    };
                }
                TimerProj::Started {
                    start: Some(start),
                    ctx,
                    timeout: Some(timeout),
                } => {
                    let mine = *start + *timeout;
                    ctx.map_or(mine, |c| c.min(mine))
                }
                // Steps without a timer never fire.
                TimerProj::Started { .. } => return Poll::Pending,
            };
            if deadline <= Instant::now() {
                return Poll::Ready(Err("timed out".into()));
            }
            this.timer.set(Timer::Armed {
                sleep: tokio::time::sleep_until(deadline),
            });
            match this.timer.project() {
                TimerProj::Armed { sleep } => match sleep.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err("timed out".into())),
                    Poll::Pending => Poll::Pending,
                },
                TimerProj::Started { .. } => Poll::Pending,
            }
        }
    }
}

fn main() {
    common::main(&[timeout]);
}
