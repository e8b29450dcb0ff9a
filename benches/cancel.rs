//! Cancellation scope: rampart's `CancelLayer` (a cancellation token per
//! request, made on demand, tracked for a graceful drain, no hooks) against
//! the bare inner service. tower has no equivalent, so there is no `tower`
//! id: the figure to read is Δ = rampart − floor (target ≤ 100 ns, ≤ 1
//! allocation per request).
//!
//! Group `cancel`: ready, yielding and remote (answered by another task)
//! inners, current-thread and multi-thread runtimes, one caller; and 64
//! callers on the multi-thread runtime (every request is tracked by the
//! same server-wide `Shutdown`).
//!
//! In probe mode only (callgrind, never timed by criterion), the ablation
//! ids (current thread, one caller): `abl_pass`, `abl_scope`, `abl_track`
//! and `abl_notify`, the pieces the layer's semantics require, each added to
//! the one before (see [`ablation`] and `benches/README.md`), and
//! `abl_nowatch`, rampart's `CancelLayer` built so it never watches the
//! shutdown (its `cancel_all` then reaches no request: not a usable layer,
//! only a price).

mod common;

use common::{
    InnerKind::{Ready, Remote, Yield},
    Rt::{Ct, Mt},
    bench_floor, bench_layer, cases, group,
};
use criterion::Criterion;

fn cancel(c: &mut Criterion) {
    let mut g = group(c, "cancel");
    let mut all = cases(&[Ct, Mt], &[Ready, Yield, Remote], &[1]);
    all.extend(cases(&[Mt], &[Ready, Yield, Remote], &[64]));
    for case in all {
        bench_floor(&mut g, case);
        bench_layer(&mut g, "rampart", case, rampart::cancel::CancelLayer::new());
        if common::probing() && case.rt == Ct && case.callers == 1 {
            use ablation::{Abl, Step};
            bench_layer(&mut g, "abl_pass", case, Abl::<{ Step::PASS }>::new());
            bench_layer(&mut g, "abl_scope", case, Abl::<{ Step::SCOPE }>::new());
            bench_layer(&mut g, "abl_track", case, Abl::<{ Step::TRACK }>::new());
            bench_layer(&mut g, "abl_notify", case, Abl::<{ Step::NOTIFY }>::new());
            let nowatch = rampart::cancel::CancelLayer::new().ablation_never_watch_shutdown();
            bench_layer(&mut g, "abl_nowatch", case, nowatch);
        }
    }
    g.finish();
}

/// Stripped cancellation scopes for the ablation, each doing one thing
/// more than the one before (a `const` step, so each is compiled with only
/// its pieces):
///
/// - `PASS`: a layer that wraps the service and its future and does
///   nothing else (what any layer costs: the clone, the wrapper future,
///   the error mapped to rampart's `Error`);
/// - `SCOPE`: + the request's `Context` (the caller's id and deadline, a
///   token made on demand, or a child of the caller's), current during
///   `call()` and every poll (`Context::scope_call`): the handler sees its
///   token through `Context::current()`;
/// - `TRACK`: + the request counted in flight by a `TaskTracker` (a token
///   held by the future; refused once the tracker is closed): what a drain
///   waits on;
/// - `NOTIFY`: + at the first `Pending`, the shutdown watched: one
///   `tokio::sync::Notify` registration (an `Arc<Notify>` clone and an
///   `OwnedNotified` polled), with the stop flag read at every later poll,
///   and the request's token peeked (watched once it exists). The least a
///   request that goes pending must do for `cancel_all` to reach it.
///   Hooks, metrics, the drain counts and the caller-drop path are left
///   out.
pub(crate) mod ablation {
    use pin_project_lite::pin_project;
    use rampart::core::{BoxError, Context, Error, Scoped};
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context as TaskContext, Poll};
    use tokio::sync::Notify;
    use tokio::sync::futures::OwnedNotified;
    use tokio_util::task::TaskTracker;
    use tokio_util::task::task_tracker::TaskTrackerToken;
    use tower::{Layer, Service};

    /// The steps (see the module).
    pub(crate) struct Step;
    impl Step {
        pub(crate) const PASS: u8 = 0;
        pub(crate) const SCOPE: u8 = 1;
        pub(crate) const TRACK: u8 = 2;
        pub(crate) const NOTIFY: u8 = 3;
    }

    /// What the requests of one layer share (a `Shutdown`'s minimum).
    pub(crate) struct Shared {
        tracker: TaskTracker,
        stopped: AtomicBool,
        stop: Arc<Notify>,
    }

    /// The layer of step `STEP`.
    #[derive(Clone)]
    pub(crate) struct Abl<const STEP: u8>(Arc<Shared>);

    impl<const STEP: u8> Abl<STEP> {
        pub(crate) fn new() -> Self {
            Abl(Arc::new(Shared {
                tracker: TaskTracker::new(),
                stopped: AtomicBool::new(false),
                stop: Arc::new(Notify::new()),
            }))
        }
    }

    impl<S, const STEP: u8> Layer<S> for Abl<STEP> {
        type Service = AblService<S, STEP>;
        fn layer(&self, inner: S) -> Self::Service {
            AblService {
                inner,
                shared: self.0.clone(),
            }
        }
    }

    /// The service: the inner one and the shared state.
    #[derive(Clone)]
    pub(crate) struct AblService<S, const STEP: u8> {
        inner: S,
        shared: Arc<Shared>,
    }

    pin_project! {
        #[project = InnerProj]
        enum Inner<F> {
            Bare { #[pin] fut: F },
            Scoped { #[pin] fut: Scoped<F> },
            Refused,
        }
    }

    pin_project! {
        /// The response future.
        pub(crate) struct AblFuture<F> {
            #[pin]
            inner: Inner<F>,
            tracked: Option<TaskTrackerToken>,
            shared: Option<Arc<Shared>>,
            #[pin]
            stop: Option<OwnedNotified>,
        }
    }

    /// The request's context, as `CancelLayer` builds it.
    fn request_context() -> Context {
        Context::with_current(|outer| match outer {
            None => Context::new().with_cancellation_on_demand(),
            Some(outer) => {
                let mut ctx = Context::new();
                if let Some(id) = outer.request_id() {
                    ctx = ctx.with_request_id(id.clone());
                }
                if let Some(at) = outer.deadline() {
                    ctx = ctx.with_deadline(at);
                }
                match outer.cancellation() {
                    Some(parent) => ctx.with_cancellation(parent.child_token()),
                    None => ctx.with_cancellation_on_demand(),
                }
            }
        })
    }

    impl<S, Req, const STEP: u8> Service<Req> for AblService<S, STEP>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        type Response = S::Response;
        type Error = Error;
        type Future = AblFuture<S::Future>;

        fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
            self.inner.poll_ready(cx).map_err(Error::from_inner)
        }

        fn call(&mut self, req: Req) -> Self::Future {
            let tracked = if STEP >= Step::TRACK {
                let tracked = self.shared.tracker.token();
                if self.shared.tracker.is_closed() {
                    return AblFuture {
                        inner: Inner::Refused,
                        tracked: None,
                        shared: None,
                        stop: None,
                    };
                }
                Some(tracked)
            } else {
                None
            };
            let inner = if STEP >= Step::SCOPE {
                let ctx = request_context();
                Inner::Scoped {
                    fut: ctx.scope_call(|| self.inner.call(req)),
                }
            } else {
                Inner::Bare {
                    fut: self.inner.call(req),
                }
            };
            AblFuture {
                inner,
                tracked,
                shared: (STEP >= Step::NOTIFY).then(|| self.shared.clone()),
                stop: None,
            }
        }
    }

    impl<F, T, E> Future for AblFuture<F>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        type Output = Result<T, Error>;

        fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
            let mut this = self.project();
            if let Some(shared) = this.shared.as_ref()
                && this.stop.is_some()
                && shared.stopped.load(Ordering::SeqCst)
            {
                return Poll::Ready(Err(Error::cancelled()));
            }
            let res = match this.inner.as_mut().project() {
                InnerProj::Bare { fut } => fut.poll(cx),
                InnerProj::Scoped { fut } => fut.poll(cx),
                InnerProj::Refused => return Poll::Ready(Err(Error::closed())),
            };
            if let Poll::Ready(res) = res {
                return Poll::Ready(res.map_err(Error::from_inner));
            }
            let Some(shared) = this.shared.as_ref() else {
                return Poll::Pending;
            };
            if this.stop.is_none() {
                this.stop.set(Some(shared.stop.clone().notified_owned()));
            }
            // The request's token, once something made it (never here).
            if let InnerProj::Scoped { fut } = this.inner.project()
                && fut
                    .context()
                    .and_then(Context::peek_cancellation)
                    .is_some_and(rampart::core::CancellationToken::is_cancelled)
            {
                return Poll::Ready(Err(Error::cancelled()));
            }
            let stop = this.stop.as_pin_mut().expect("set above");
            if shared.stopped.load(Ordering::SeqCst) || stop.poll(cx).is_ready() {
                return Poll::Ready(Err(Error::cancelled()));
            }
            Poll::Pending
        }
    }
}

fn main() {
    common::main(&[cancel]);
}
