//! Calling the inner service from inside the response future, so that a
//! timer around the future bounds the wait for readiness as well.
//!
//! tower's `Timeout` starts its timer in `call`, after the caller already
//! waited in `poll_ready` for as long as the inner service wanted
//! (tower#648). Here `poll_ready` never waits: [`ReadyGate::poll_ready`]
//! polls the inner service once and reports `Ready` either way. If the
//! inner service was ready, `call` calls it at once (the usual path, no
//! clone); if not, `call` moves the inner service and the request into
//! the future (boxed, keeping a clone of the service in its place, as
//! tower's `Oneshot`-based routers do) and the future drives `poll_ready`
//! and `call` itself, under the timer.

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower_service::Service;

/// The inner service plus whether its last `poll_ready` said `Ready`.
#[derive(Debug)]
pub(crate) struct ReadyGate<S> {
    inner: S,
    ready: bool,
}

impl<S: Clone> Clone for ReadyGate<S> {
    fn clone(&self) -> Self {
        // A clone has not been polled ready: readiness belongs to one handle.
        ReadyGate {
            inner: self.inner.clone(),
            ready: false,
        }
    }
}

impl<S> ReadyGate<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadyGate {
            inner,
            ready: false,
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

    /// Polls the inner service once; `Ready` unless it failed. A `Pending`
    /// inner service is waited for inside the call future instead.
    #[inline]
    pub(crate) fn poll_ready<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>>
    where
        S: Service<Req>,
    {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.ready = false;
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Calls the inner service now if it is ready, or hands it to the
    /// returned future to wait for readiness there.
    #[inline]
    pub(crate) fn call<Req>(&mut self, req: Req) -> Call<S, Req>
    where
        S: Service<Req> + Clone,
    {
        if std::mem::take(&mut self.ready) {
            Call::Called {
                fut: self.inner.call(req),
            }
        } else {
            self.wait_then_call(req)
        }
    }

    /// The inner service was not ready: it moves into the future with the
    /// request and a clone takes its place. Boxed: this path waits anyway,
    /// and it keeps the future of the ready path as small as the inner one.
    #[cold]
    #[inline(never)]
    fn wait_then_call<Req>(&mut self, req: Req) -> Call<S, Req>
    where
        S: Service<Req> + Clone,
    {
        let fresh = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, fresh);
        Call::Waiting {
            pending: Box::new((svc, Some(req))),
        }
    }
}

pin_project! {
    /// The inner call: either made, or waiting for the inner service to be
    /// ready.
    #[project = CallProj]
    pub(crate) enum Call<S, Req>
    where
        S: Service<Req>,
    {
        Called { #[pin] fut: S::Future },
        Waiting { pending: Box<(S, Option<Req>)> },
    }
}

impl<S, Req> Future for Call<S, Req>
where
    S: Service<Req>,
{
    type Output = Result<S::Response, S::Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                CallProj::Called { fut } => return fut.poll(cx),
                CallProj::Waiting { pending } => {
                    let (svc, req) = &mut **pending;
                    ready!(svc.poll_ready(cx))?;
                    let req = req.take().expect("request taken only here, once");
                    let fut = svc.call(req);
                    self.set(Call::Called { fut });
                }
            }
        }
    }
}
