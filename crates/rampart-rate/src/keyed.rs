//! [`KeyedRateLimit`]: a bucket per key, decided in `call`.

use crate::KeyExtractor;
use crate::service::ResponseFuture;
use crate::store::{KeyedStore, RateStore};
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        let bound = shared.wait_bound();
        let mut check = shared
            .store
            .check(&self.extractor.extract(&req), &shared.quota, bound);
        // An in-process store has decided already: no waker is needed.
        let mut noop = Context::from_waker(Waker::noop());
        let state = match Pin::new(&mut check).poll(&mut noop) {
            Poll::Ready(d) => match shared.settle(d, bound) {
                Settled::Go => State::Called {
                    fut: ResponseFuture::called(self.inner.call(req)),
                },
                Settled::Refused(e) => State::Called {
                    fut: ResponseFuture::refused(e),
                },
                Settled::Wait(wait) => State::Waiting {
                    wait,
                    call: Some((self.inner.clone(), req)),
                },
            },
            Poll::Pending => State::Checking {
                check,
                bound,
                shared: Arc::clone(&self.shared),
                call: Some((self.inner.clone(), req)),
            },
        };
        KeyedResponseFuture { state }
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
        Checking {
            check: St::Future,
            bound: Duration,
            shared: Arc<Shared<St>>,
            call: Option<(S, Req)>,
        },
        Waiting { wait: Wait, call: Option<(S, Req)> },
        Readying { call: Option<(S, Req)> },
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Called { fut } => return fut.poll(cx),
                StateProj::Checking {
                    check,
                    bound,
                    shared,
                    call,
                } => {
                    let d = ready!(Pin::new(check).poll(cx));
                    match shared.settle(d, *bound) {
                        Settled::Go => State::Readying { call: call.take() },
                        Settled::Wait(wait) => State::Waiting {
                            wait,
                            call: call.take(),
                        },
                        Settled::Refused(e) => State::Called {
                            fut: ResponseFuture::refused(e),
                        },
                    }
                }
                StateProj::Waiting { wait, call } => match ready!(wait.as_mut().poll(cx)) {
                    Ok(()) => State::Readying { call: call.take() },
                    Err(e) => State::Called {
                        fut: ResponseFuture::refused(e),
                    },
                },
                StateProj::Readying { call } => {
                    let (svc, _) = call.as_mut().expect("polled after completion");
                    ready!(svc.poll_ready(cx)).map_err(Error::from_inner)?;
                    let (mut svc, req) = call.take().expect("polled after completion");
                    State::Called {
                        fut: ResponseFuture::called(svc.call(req)),
                    }
                }
            };
            state.set(next);
        }
    }
}
