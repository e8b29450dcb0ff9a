//! [`RateLimit`]: one bucket, decided in `poll_ready`.

use crate::store::{Decision, LocalStore, RateStore};
use crate::wait::{Settled, Shared, Wait};
use pin_project_lite::pin_project;
use rampart_core::{BoxError, Error};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tower_service::Service;

/// A service under a [`RateLimitLayer`](crate::RateLimitLayer): every clone
/// draws on the layer's one bucket.
///
/// The inner service need not be `Clone`. With an in-process store and no
/// [`max_wait`](crate::RateLimitBuilder::max_wait) (the default), the
/// decision is taken in `call` and nothing is kept between `poll_ready` and
/// `call`. Otherwise it is taken in `poll_ready`, as tower's `RateLimit`
/// takes it: a waiting call holds the service's readiness, an admitted one
/// then waits for the inner service's readiness, and a refused one is
/// answered by `call` without reaching the inner service.
///
/// # Panics
///
/// `call` panics if `poll_ready` has not returned `Ready(Ok(()))` since the
/// last `call` ("`RateLimit::call` before `poll_ready`"), as tower's
/// services do.
pub struct RateLimit<S, St: RateStore = LocalStore> {
    inner: S,
    /// The layer's shared state, and where the decision taken in
    /// `poll_ready` stands. One 16-byte field: the service is the inner
    /// service plus two words, as small as a bare limiter around it, so
    /// moving it (`oneshot`, axum's clone per request) costs no more.
    gate: Gate<St>,
}

enum Gate<St: RateStore> {
    /// Nothing decided (always, when the decision is taken in `call`).
    Idle(Arc<Shared<St>>),
    /// Admitted in `poll_ready`; now readying the inner service.
    Admitted(Arc<Shared<St>>),
    /// Refused, waiting for a slot, or asking a store that answers later:
    /// boxed, off the common path.
    Pending(Box<Pending<St>>),
    /// Only between taking the state out and putting the next one in (no
    /// user code runs then).
    Moving,
}

struct Pending<St: RateStore> {
    shared: Arc<Shared<St>>,
    state: PendingState<St::Future>,
}

enum PendingState<F> {
    /// A store that answers later (a remote one), with the bound it was
    /// asked under. (The mutex is never locked, only reached through
    /// `get_mut`: it makes the service `Sync`, as axum requires, for any
    /// `Send` store future.)
    Checking(std::sync::Mutex<(F, Duration)>),
    Waiting(Wait),
    Refused(Error),
}

impl<St: RateStore> Gate<St> {
    #[inline]
    fn shared(&self) -> &Arc<Shared<St>> {
        match self {
            Gate::Idle(s) | Gate::Admitted(s) => s,
            Gate::Pending(p) => &p.shared,
            Gate::Moving => unreachable!("`RateLimit`'s state is put back before any use"),
        }
    }

    /// The shared state, leaving [`Gate::Moving`] behind.
    fn take_shared(&mut self) -> Arc<Shared<St>> {
        match std::mem::replace(self, Gate::Moving) {
            Gate::Idle(s) | Gate::Admitted(s) => s,
            Gate::Pending(p) => p.shared,
            Gate::Moving => unreachable!("`RateLimit`'s state is put back before any use"),
        }
    }

    /// Moves to what `settled` says.
    fn enter(&mut self, settled: Settled) {
        let shared = self.take_shared();
        *self = match settled {
            Settled::Go => Gate::Admitted(shared),
            Settled::Wait(w) => Gate::pending(shared, PendingState::Waiting(w)),
            Settled::Refused(e) => Gate::pending(shared, PendingState::Refused(e)),
        };
    }

    /// The outcome of `poll_ready` for `call` (go, or the refusal),
    /// back to [`Gate::Idle`]; `None` if `poll_ready` has not decided.
    fn take_outcome(&mut self) -> Option<Result<(), Error>> {
        let (gate, outcome) = match std::mem::replace(self, Gate::Moving) {
            Gate::Admitted(shared) => (Gate::Idle(shared), Some(Ok(()))),
            Gate::Pending(p) => match *p {
                Pending {
                    shared,
                    state: PendingState::Refused(e),
                } => (Gate::Idle(shared), Some(Err(e))),
                p => (Gate::Pending(Box::new(p)), None),
            },
            gate => (gate, None),
        };
        *self = gate;
        outcome
    }

    fn pending(shared: Arc<Shared<St>>, state: PendingState<St::Future>) -> Self {
        Gate::Pending(Box::new(Pending { shared, state }))
    }
}

impl<S, St: RateStore> RateLimit<S, St> {
    #[inline]
    fn shared(&self) -> &Shared<St> {
        self.gate.shared()
    }

    /// An in-process store and no waiting: the decision needs no state
    /// between `poll_ready` and `call`, so it is taken in `call`.
    #[inline]
    fn decides_in_call(&self) -> bool {
        St::IMMEDIATE && self.shared().max_wait.is_zero()
    }

    pub(crate) fn new(inner: S, shared: Arc<Shared<St>>) -> Self {
        RateLimit {
            inner,
            gate: Gate::Idle(shared),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, St: RateStore> Clone for RateLimit<S, St> {
    /// A clone shares the bucket; it has not been polled ready.
    fn clone(&self) -> Self {
        RateLimit::new(self.inner.clone(), Arc::clone(self.gate.shared()))
    }
}

impl<S: fmt::Debug, St: RateStore> fmt::Debug for RateLimit<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("quota", &self.shared().quota)
            .finish_non_exhaustive()
    }
}

impl<S, St, Req> Service<Req> for RateLimit<S, St>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    St: RateStore,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.decides_in_call() {
            return self.inner.poll_ready(cx).map_err(Error::from_inner);
        }
        loop {
            let settled = match &mut self.gate {
                Gate::Admitted(_) => return self.inner.poll_ready(cx).map_err(Error::from_inner),
                Gate::Idle(shared) => {
                    // The common path: an in-process store answers at once,
                    // and nothing is stored but the outcome.
                    let bound = shared.wait_bound();
                    let mut check = shared.store.check(&(), &shared.quota, bound);
                    match Pin::new(&mut check).poll(cx) {
                        Poll::Ready(d) => shared.settle(d, bound),
                        Poll::Pending => {
                            let shared = self.gate.take_shared();
                            self.gate = Gate::pending(
                                shared,
                                PendingState::Checking(std::sync::Mutex::new((check, bound))),
                            );
                            return Poll::Pending;
                        }
                    }
                }
                Gate::Pending(p) => match &mut p.state {
                    PendingState::Refused(_) => return Poll::Ready(Ok(())),
                    PendingState::Checking(pending) => {
                        let (check, bound) = pending
                            .get_mut()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let d = ready!(Pin::new(check).poll(cx));
                        p.shared.settle(d, *bound)
                    }
                    PendingState::Waiting(w) => match ready!(w.as_mut().poll(cx)) {
                        Ok(()) => Settled::Go,
                        Err(e) => Settled::Refused(e),
                    },
                },
                Gate::Moving => unreachable!("`RateLimit`'s state is put back before any use"),
            };
            self.gate.enter(settled);
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if self.decides_in_call() {
            let shared = self.gate.shared();
            let mut check = shared.store.check(&(), &shared.quota, Duration::ZERO);
            let mut noop = Context::from_waker(std::task::Waker::noop());
            let d = match Pin::new(&mut check).poll(&mut noop) {
                // The hot path: admitted with no wait, nothing built.
                Poll::Ready(Ok(Decision::Admit { wait })) if wait.is_zero() => {
                    shared.admitted_now();
                    return ResponseFuture::called(self.inner.call(req));
                }
                Poll::Ready(d) => d,
                Poll::Pending => Err(Error::from_inner(
                    "a rate store declared IMMEDIATE did not answer at once",
                )),
            };
            return match shared.settle_cold(d) {
                Some(e) => ResponseFuture::refused(e),
                None => ResponseFuture::called(self.inner.call(req)),
            };
        }
        match self.gate.take_outcome() {
            Some(Ok(())) => ResponseFuture::called(self.inner.call(req)),
            Some(Err(e)) => ResponseFuture::refused(e),
            None => panic!("`RateLimit::call` before `poll_ready`"),
        }
    }
}

pin_project! {
    /// The response future of the rate-limited services.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Inner<F>,
    }
}

pin_project! {
    #[project = Proj]
    enum Inner<F> {
        Called { #[pin] fut: F },
        Refused { error: Option<Error> },
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn called(fut: F) -> Self {
        ResponseFuture {
            inner: Inner::Called { fut },
        }
    }

    pub(crate) fn refused(error: Error) -> Self {
        ResponseFuture {
            inner: Inner::Refused { error: Some(error) },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.inner {
            Inner::Called { .. } => "called",
            Inner::Refused { .. } => "refused",
        };
        f.debug_tuple("ResponseFuture").field(&state).finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            Proj::Called { fut } => fut.poll(cx).map_err(Error::from_inner),
            Proj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("`ResponseFuture` polled after completion"))),
        }
    }
}
