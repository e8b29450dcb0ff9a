//! The [`ResponseFuture`] of [`Retry`](crate::Retry): a state machine
//! calling, sleeping between attempts, and waiting for readiness.

use crate::backoff::Delays;
use crate::policy::{GiveUp, Policy, with_request_id};
use crate::replay::Replay;
use pin_project_lite::pin_project;
use rampart_core::classify::{Classify, ClassifyResult, ErrorRef, Outcome};
use rampart_core::{BoxError, Error};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

pin_project! {
    /// The future of a [`Retry`](crate::Retry) call.
    ///
    /// Dropping it at any point (during an attempt or a backoff sleep)
    /// drops the attempt in flight, the kept request and the timer.
    pub struct ResponseFuture<S, Req, C, R>
    where
        R: Replay<Req>,
        S: Service<R::Request>,
        C: Classify<Req, S::Response>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        replay: R,
        policy: Policy,
        classifier: C::Classifier,
        kept: Option<R::Kept>,
        attempt: u32,
        give_up_at: Option<Instant>,
        // Everything only a retry needs, allocated at the first retry so the
        // success path stays small and allocation-free.
        retry: Option<Pin<Box<Retrying<R::Request>>>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Calling { #[pin] fut: F },
        // Sleeping before the next attempt.
        Backoff,
        // Waiting for the service to be ready for the next attempt.
        Ready,
    }
}

pin_project! {
    struct Retrying<Q> {
        delays: Option<Delays>,
        // The request of the next attempt, prepared when the retry is decided.
        next: Option<Q>,
        // Created on the first non-zero delay, reset for later ones.
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<S, Req, C, R> ResponseFuture<S, Req, C, R>
where
    R: Replay<Req>,
    S: Service<R::Request>,
    C: Classify<Req, S::Response>,
{
    #[inline]
    pub(crate) fn new(
        fut: S::Future,
        service: S,
        replay: R,
        policy: Policy,
        classifier: C::Classifier,
        kept: Option<R::Kept>,
        give_up_at: Option<Instant>,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            service,
            replay,
            policy,
            classifier,
            kept,
            attempt: 1,
            give_up_at,
            retry: None,
        }
    }
}

impl<S, Req, C, R> fmt::Debug for ResponseFuture<S, Req, C, R>
where
    R: Replay<Req>,
    S: Service<R::Request>,
    C: Classify<Req, S::Response>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } => "calling",
            State::Backoff => "backoff",
            State::Ready => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.attempt)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R> Future for ResponseFuture<S, Req, C, R>
where
    R: Replay<Req>,
    S: Service<R::Request>,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    // Judge the result; anything not retryable returns at once.
                    let (result, after) = match ready!(fut.poll(cx)) {
                        Ok(res) => match this.classifier.classify(Ok(&res)) {
                            Outcome::Retryable { after } => (Ok(res), after),
                            Outcome::Success | Outcome::Fatal => return Poll::Ready(Ok(res)),
                        },
                        Err(e) => {
                            let e: BoxError = e.into();
                            match this.classifier.classify(Err(&*e as ErrorRef<'_>)) {
                                Outcome::Retryable { after } => (Err(e), after),
                                Outcome::Success | Outcome::Fatal => {
                                    return Poll::Ready(Err(Error::from_inner(e)));
                                }
                            }
                        }
                    };
                    let (policy, replay) = (&*this.policy, &*this.replay);
                    let attempt = *this.attempt;
                    let replayable = this.kept.as_ref().is_some_and(|k| replay.is_replayable(k));
                    let mut delays = this
                        .retry
                        .as_mut()
                        .and_then(|r| r.as_mut().project().delays.take());
                    let decided = policy
                        .decide(attempt, replayable, *this.give_up_at, &mut delays, after)
                        .and_then(|delay| {
                            let kept = this.kept.as_ref().ok_or(GiveUp::NotReplayable)?;
                            let next = replay.next(kept, attempt + 1);
                            Ok((delay, next.ok_or(GiveUp::NotReplayable)?))
                        });
                    let (delay, next) = match decided {
                        Ok(decided) => decided,
                        Err(why) => return Poll::Ready(policy.give_up(result, attempt, why)),
                    };
                    // Allocated at the first retry only (never on the success
                    // or give-up paths).
                    let retry = this.retry.get_or_insert_with(|| {
                        Box::pin(Retrying {
                            delays: None,
                            next: None,
                            sleep: None,
                        })
                    });
                    let mut retry = retry.as_mut().project();
                    *retry.delays = delays;
                    *retry.next = Some(next);
                    trace_retry(&result, attempt + 1, delay, after);
                    drop(result);
                    policy.on_retry();
                    *this.attempt += 1;
                    if delay.is_zero() {
                        // No timer for a zero delay: straight to the next attempt.
                        this.state.set(State::Ready);
                    } else {
                        let at = rampart_core::codec::deadline_after(Instant::now(), delay);
                        match retry.sleep.as_mut().as_pin_mut() {
                            Some(sleep) => sleep.reset(at),
                            None => retry.sleep.set(Some(tokio::time::sleep_until(at))),
                        }
                        this.state.set(State::Backoff);
                    }
                }
                StateProj::Backoff => {
                    if let Some(retry) = this.retry.as_mut()
                        && let Some(sleep) = retry.as_mut().project().sleep.as_pin_mut()
                    {
                        ready!(sleep.poll(cx));
                    }
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        *this.retry = None;
                        return Poll::Ready(Err(Error::from_inner(e)));
                    }
                    let next = this
                        .retry
                        .as_mut()
                        .and_then(|r| r.as_mut().project().next.take());
                    let Some(req) = next else {
                        // Unreachable: a retry is always prepared before
                        // entering this state. Fail rather than panic.
                        return Poll::Ready(Err(Error::closed()));
                    };
                    let fut = this.service.call(req);
                    this.state.set(State::Calling { fut });
                }
            }
        }
    }
}

fn trace_retry<T>(
    result: &Result<T, BoxError>,
    attempt: u32,
    delay: Duration,
    after: Option<Duration>,
) {
    let reason = match (result, after) {
        (Err(_), _) => "retryable error",
        (Ok(_), Some(_)) => "retryable response, delay asked by the peer",
        (Ok(_), None) => "retryable response",
    };
    with_request_id(|request_id| {
        tracing::debug!(
            attempt,
            delay_ms = delay.as_millis() as u64,
            reason,
            error = result.as_ref().err().map(tracing::field::display),
            request_id,
            "retry: next attempt"
        );
    });
}
