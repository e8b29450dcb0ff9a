//! [`KeyedRateLimit`]: a bucket per key, decided in `call`.

use crate::KeyExtractor;
use crate::service::ResponseFuture;
use crate::store::{Decision, KeyedStore, RateStore};
use crate::wait::{Settled, Shared, Wait};
use pin_project_lite::pin_project;
use rampart_core::{BoxError, Error};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tower_service::Service;

/// A service under a [`KeyedRateLimitLayer`](crate::KeyedRateLimitLayer):
/// the key is read from each request in `call`, and every clone draws on
/// the layer's one store.
///
/// An in-process store decides inside `call`; an admitted request with no
/// wait calls the inner service at once. A request that must wait (or a
/// store that answers later) takes a clone of the inner service and drives
/// it ready only after the wait, so it never sleeps holding the readiness
/// (a permit of a limit further in) that other keys need: hence `S: Clone`.
pub struct KeyedRateLimit<S, E, St = KeyedStore> {
    inner: S,
    extractor: E,
    shared: Arc<Shared<St>>,
}

impl<S, E, St> KeyedRateLimit<S, E, St> {
    pub(crate) fn new(inner: S, extractor: E, shared: Arc<Shared<St>>) -> Self {
        KeyedRateLimit {
            inner,
            extractor,
            shared,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, E: Clone, St> Clone for KeyedRateLimit<S, E, St> {
    fn clone(&self) -> Self {
        KeyedRateLimit::new(
            self.inner.clone(),
            self.extractor.clone(),
            Arc::clone(&self.shared),
        )
    }
}

impl<S: fmt::Debug, E, St> fmt::Debug for KeyedRateLimit<S, E, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("quota", &self.shared.quota)
            .finish_non_exhaustive()
    }
}

impl<S, E, St, Req> Service<Req> for KeyedRateLimit<S, E, St>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    E: KeyExtractor<Req>,
    St: RateStore,
{
    type Response = S::Response;
    type Error = Error;
    type Future = KeyedResponseFuture<S, Req, St>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        let bound = shared.wait_bound();
        let mut check = shared
            .store
            .check(&self.extractor.extract(&req), &shared.quota, bound);
        // An in-process store has decided already: no waker is needed.
        let mut noop = Context::from_waker(Waker::noop());
        let state = match Pin::new(&mut check).poll(&mut noop) {
            // The hot path: admitted with no wait, nothing built.
            Poll::Ready(Ok(Decision::Admit { wait })) if wait.is_zero() => {
                shared.admitted_now();
                State::Called {
                    fut: ResponseFuture::called(self.inner.call(req)),
                }
            }
            Poll::Ready(d) => self.settled(d, bound, req),
            Poll::Pending => State::Slow {
                slow: Box::new(Slow::Checking {
                    check,
                    bound,
                    shared: Arc::clone(&self.shared),
                    call: Some((self.inner.clone(), req)),
                }),
            },
        };
        KeyedResponseFuture { state }
    }
}

impl<S, E, St> KeyedRateLimit<S, E, St>
where
    St: RateStore,
{
    /// Any decision but an admission with no wait: off the hot path.
    #[cold]
    #[inline(never)]
    fn settled<Req>(
        &mut self,
        d: Result<Decision, Error>,
        bound: Duration,
        req: Req,
    ) -> State<S, Req, St>
    where
        S: Service<Req> + Clone,
    {
        match self.shared.settle(d, bound) {
            Settled::Go => State::Called {
                fut: ResponseFuture::called(self.inner.call(req)),
            },
            Settled::Refused(e) => State::Called {
                fut: ResponseFuture::refused(e),
            },
            Settled::Wait(wait) => State::Slow {
                slow: Box::new(Slow::Waiting {
                    wait,
                    call: Some((self.inner.clone(), req)),
                }),
            },
        }
    }
}

pin_project! {
    /// The response future of [`KeyedRateLimit`].
    pub struct KeyedResponseFuture<S, Req, St>
    where
        S: Service<Req>,
        St: RateStore,
    {
        #[pin]
        state: State<S, Req, St>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, St>
    where
        S: Service<Req>,
        St: RateStore,
    {
        Called { #[pin] fut: ResponseFuture<S::Future> },
        // Checking with a store that answers later, waiting for a slot, or
        // driving the inner service ready after that: boxed, off the hot
        // path, so the response future stays as small as the inner one
        // (the request and a clone of the service are held here).
        Slow { slow: Box<Slow<S, Req, St>> },
    }
}

enum Slow<S, Req, St: RateStore> {
    Checking {
        check: St::Future,
        bound: Duration,
        shared: Arc<Shared<St>>,
        call: Option<(S, Req)>,
    },
    Waiting {
        wait: Wait,
        call: Option<(S, Req)>,
    },
    Readying {
        call: Option<(S, Req)>,
    },
}

impl<S, Req, St> Slow<S, Req, St>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    St: RateStore,
{
    /// Runs the slow states to the inner call (or a refusal).
    fn poll_call(&mut self, cx: &mut Context<'_>) -> Poll<ResponseFuture<S::Future>> {
        loop {
            *self = match self {
                Slow::Checking {
                    check,
                    bound,
                    shared,
                    call,
                } => {
                    let d = ready!(Pin::new(check).poll(cx));
                    match shared.settle(d, *bound) {
                        Settled::Go => Slow::Readying { call: call.take() },
                        Settled::Wait(wait) => Slow::Waiting {
                            wait,
                            call: call.take(),
                        },
                        Settled::Refused(e) => return Poll::Ready(ResponseFuture::refused(e)),
                    }
                }
                Slow::Waiting { wait, call } => match ready!(wait.as_mut().poll(cx)) {
                    Ok(()) => Slow::Readying { call: call.take() },
                    Err(e) => return Poll::Ready(ResponseFuture::refused(e)),
                },
                Slow::Readying { call } => {
                    let (svc, _) = call.as_mut().expect("polled after completion");
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        return Poll::Ready(ResponseFuture::refused(Error::from_inner(e)));
                    }
                    let (mut svc, req) = call.take().expect("polled after completion");
                    return Poll::Ready(ResponseFuture::called(svc.call(req)));
                }
            };
        }
    }
}

impl<S, Req, St> fmt::Debug for KeyedResponseFuture<S, Req, St>
where
    S: Service<Req>,
    St: RateStore,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedResponseFuture")
            .finish_non_exhaustive()
    }
}

impl<S, Req, St> Future for KeyedResponseFuture<S, Req, St>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    St: RateStore,
{
    type Output = Result<S::Response, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Called { fut } => return fut.poll(cx),
                StateProj::Slow { slow } => ready!(slow.poll_call(cx)),
            };
            state.set(State::Called { fut: next });
        }
    }
}
