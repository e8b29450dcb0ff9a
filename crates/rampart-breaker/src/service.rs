//! [`CircuitBreaker`]: the service of [`CircuitBreakerLayer`](crate::CircuitBreakerLayer),
//! and its [`ResponseFuture`].

use crate::breaker::Breaker;
use crate::circuit::{Admit, Verdict};
use crate::classify::{is_local_shed, verdict};
use crate::layer::CircuitBreakerHandle;
use crate::stats::Stats;
use pin_project_lite::pin_project;
use rampart_core::classify::{Classify, ClassifyResult, ErrorClassify, ErrorRef};
use rampart_core::{BoxError, Error};
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::time::Instant;
use tower_service::Service;

/// Stops calling `S` while its circuit is open; made by
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer), whose circuit it
/// shares with every clone.
///
/// `poll_ready` is the inner service's readiness, except while the circuit
/// refuses every call (open, or forced open): then it is ready at once
/// without polling the inner service, and the call fails at once, so a
/// caller never waits on a failing backend's readiness. A closed circuit
/// costs one atomic load in `poll_ready`, one in `call` and the recording
/// of the result; no lock, no allocation, no timer.
pub struct CircuitBreaker<S, C = ErrorClassify> {
    inner: S,
    breaker: Arc<Breaker>,
    classify: C,
    /// The refusal decided by `poll_ready`, for the next `call`.
    refused: Option<Error>,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_parts(inner: S, breaker: Arc<Breaker>, classify: C) -> Self {
        CircuitBreaker {
            inner,
            breaker,
            classify,
            refused: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle on the circuit.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(Arc::clone(&self.breaker))
    }

    /// A snapshot of the circuit.
    pub fn stats(&self) -> Stats {
        self.breaker.stats()
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            breaker: Arc::clone(&self.breaker),
            classify: self.classify.clone(),
            refused: None,
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("state", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future, C::Classifier>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.refused.is_some() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = self.breaker.refusal() {
            self.refused = Some(e);
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(error) = self.refused.take() {
            return ResponseFuture {
                kind: Kind::Rejected { error: Some(error) },
            };
        }
        dispatch(
            Cow::Borrowed(&self.breaker),
            &mut self.inner,
            &self.classify,
            req,
        )
    }
}

/// Admits `req` through `breaker` and calls `inner`, or refuses it. The
/// breaker is borrowed or owned so that an admitted call clones its `Arc`
/// at most once (the keyed service passes the one it got from its map).
pub(crate) fn dispatch<S, C, Req>(
    breaker: Cow<'_, Arc<Breaker>>,
    inner: &mut S,
    classify: &C,
    req: Req,
) -> ResponseFuture<S::Future, C::Classifier>
where
    S: Service<Req>,
    C: Classify<Req, S::Response>,
{
    let ticket = match breaker.admit() {
        Err(error) => {
            return ResponseFuture {
                kind: Kind::Rejected { error: Some(error) },
            };
        }
        Ok(Admit::Call(g)) => Ticket::Call(g),
        Ok(Admit::Probe(g)) => Ticket::Probe(g),
        Ok(Admit::Pass | Admit::Reject(_)) => {
            return ResponseFuture {
                kind: Kind::Called {
                    fut: inner.call(req),
                    judge: None,
                    record: None,
                },
            };
        }
    };
    let judge = classify.classify_request(&req);
    let start = breaker
        .circuit
        .settings
        .slow
        .map(|s| (Instant::now(), s.threshold));
    ResponseFuture {
        kind: Kind::Called {
            fut: inner.call(req),
            judge: Some(judge),
            record: Some(Record {
                breaker: breaker.into_owned(),
                ticket,
                start,
            }),
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ticket {
    Call(u64),
    Probe(u64),
    Done,
}

/// What a call needs to report its result; a probe dropped unfinished
/// gives its slot back.
struct Record {
    breaker: Arc<Breaker>,
    ticket: Ticket,
    start: Option<(Instant, std::time::Duration)>,
}

impl Record {
    fn finish(mut self, v: Verdict) {
        let slow = self.start.is_some_and(|(t, max)| t.elapsed() >= max);
        match std::mem::replace(&mut self.ticket, Ticket::Done) {
            Ticket::Call(g) => self.breaker.record_call(g, v, slow),
            Ticket::Probe(g) => {
                let v = if slow && v == Verdict::Success {
                    Verdict::Failure
                } else {
                    v
                };
                self.breaker.record_probe(g, v);
            }
            Ticket::Done => {}
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Ticket::Probe(g) = self.ticket {
            self.breaker.record_probe(g, Verdict::Ignored);
        }
    }
}

pin_project! {
    /// The future of [`CircuitBreaker`]: the inner call, judged when it
    /// ends, or a refusal.
    pub struct ResponseFuture<F, K> {
        #[pin]
        kind: Kind<F, K>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, K> {
        Called {
            #[pin]
            fut: F,
            judge: Option<K>,
            record: Option<Record>,
        },
        Rejected {
            error: Option<Error>,
        },
    }
}

impl<F, K> fmt::Debug for ResponseFuture<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_tuple("ResponseFuture").field(&what).finish()
    }
}

impl<F, K, T, E> Future for ResponseFuture<F, K>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    K: ClassifyResult<T>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => {
                Poll::Ready(Err(error.take().unwrap_or_else(Error::closed)))
            }
            KindProj::Called { fut, judge, record } => {
                let out = ready!(fut.poll(cx)).map_err(Error::from_inner);
                if let (Some(record), Some(judge)) = (record.take(), judge.as_ref()) {
                    let result = out.as_ref().map_err(|e| e as ErrorRef<'_>);
                    // A local shed (a limit inside the breaker, an inner
                    // open circuit) says nothing of the backend's health,
                    // whatever the classifier makes of it.
                    let v = match result {
                        Err(e) if is_local_shed(e) => Verdict::Ignored,
                        result => verdict(judge.classify(result)),
                    };
                    record.finish(v);
                }
                Poll::Ready(out)
            }
        }
    }
}
