//! The [`ResponseFuture`] of [`Retry`](crate::Retry): a state machine
//! calling, sleeping between attempts, and waiting for readiness.

use crate::backoff::Delays;
use crate::policy::{GiveUp, with_request_id};
use crate::replay::Replay;
use crate::service::Shared;
use pin_project_lite::pin_project;
use rampart_core::classify::{Classify, ClassifyResult, ErrorRef, Outcome};
use rampart_core::telemetry::LayerName;
use rampart_core::{BoxError, Error};
use std::fmt;
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tower_service::Service;

pin_project! {
    /// The future of a [`Retry`](crate::Retry) call.
    ///
    /// Dropping it at any point (during an attempt or a backoff sleep)
    /// drops the attempt in flight, the kept request and the timer. While it
    /// sleeps between attempts (or waits for the service to be ready for the
    /// next one) it also watches the request's cancellation token (of the
    /// task-local [`Context`](rampart_core::Context)), and resolves to
    /// [`ErrorKind::Cancelled`](rampart_core::ErrorKind::Cancelled) as soon
    /// as it fires.
    pub struct ResponseFuture<S, Req, C, R>
    where
        R: Replay<Req>,
        S: Service<R::Request>,
        C: Classify<Req, S::Response>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        shared: Arc<Shared<C, R>>,
        classifier: C::Classifier,
        kept: Option<R::Kept>,
        give_up_at: Option<NonZeroU64>,
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
        // Between attempts: sleeping, then waiting for readiness (see
        // `Retrying::sleeping`).
        Retrying,
    }
}

pin_project! {
    struct Retrying<Q> {
        // The attempt in flight or next (2, 3, …).
        attempt: u32,
        // Sleeping before the next attempt (else: waiting for readiness).
        sleeping: bool,
        delays: Option<Delays>,
        // The request of the next attempt, prepared when the retry is decided.
        next: Option<Q>,
        // Created on the first non-zero delay, reset for later ones.
        #[pin]
        sleep: Option<Sleep>,
        // The request's cancellation token, watched between attempts.
        #[pin]
        cancelled: Option<WaitForCancellationFutureOwned>,
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
        shared: Arc<Shared<C, R>>,
        classifier: C::Classifier,
        kept: Option<R::Kept>,
        give_up_at: Option<NonZeroU64>,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            service,
            shared,
            classifier,
            kept,
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
        let (attempt, sleeping) = self
            .retry
            .as_ref()
            .map_or((1, false), |r| (r.attempt, r.sleeping));
        let state = match self.state {
            State::Calling { .. } => "calling",
            State::Retrying if sleeping => "backoff",
            State::Retrying => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("attempt", &attempt)
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
                    let shared = &**this.shared;
                    let (policy, replay) = (&shared.policy, &shared.replay);
                    let attempt = this.retry.as_ref().map_or(1, |r| r.attempt);
                    let replayable = this.kept.as_ref().is_some_and(|k| replay.is_replayable(k));
                    let mut delays = this
                        .retry
                        .as_mut()
                        .and_then(|r| r.as_mut().project().delays.take());
                    let decided = policy
                        .decide(attempt, replayable, *this.give_up_at, &mut delays, after)
                        .and_then(|(delay, cancel)| {
                            let kept = this.kept.as_ref().ok_or(GiveUp::NotReplayable)?;
                            let next = replay.next(kept, attempt + 1);
                            Ok((delay, cancel, next.ok_or(GiveUp::NotReplayable)?))
                        });
                    let (delay, cancel, next) = match decided {
                        Ok(decided) => decided,
                        Err(why) => return Poll::Ready(policy.give_up(result, attempt, why)),
                    };
                    // Allocated at the first retry only (never on the success
                    // or give-up paths).
                    let retry = this.retry.get_or_insert_with(|| {
                        Box::pin(Retrying {
                            attempt: 1,
                            sleeping: false,
                            delays: None,
                            next: None,
                            sleep: None,
                            cancelled: None,
                        })
                    });
                    let mut retry = retry.as_mut().project();
                    *retry.delays = delays;
                    *retry.next = Some(next);
                    *retry.attempt = attempt + 1;
                    if retry.cancelled.is_none()
                        && let Some(token) = cancel
                    {
                        retry.cancelled.set(Some(token.cancelled_owned()));
                    }
                    trace_retry(&policy.name, &result, attempt + 1, delay, after);
                    drop(result);
                    policy.on_retry(delay);
                    if delay.is_zero() {
                        // No timer for a zero delay: straight to the next attempt.
                        *retry.sleeping = false;
                    } else {
                        let at = rampart_core::codec::deadline_after(Instant::now(), delay);
                        match retry.sleep.as_mut().as_pin_mut() {
                            Some(sleep) => sleep.reset(at),
                            None => retry.sleep.set(Some(tokio::time::sleep_until(at))),
                        }
                        *retry.sleeping = true;
                    }
                    this.state.set(State::Retrying);
                }
                StateProj::Retrying => {
                    let Some(retry) = this.retry.as_mut() else {
                        // Unreachable: the retry state is allocated before
                        // entering this state. Fail rather than panic.
                        return Poll::Ready(Err(Error::closed()));
                    };
                    let mut retry = retry.as_mut().project();
                    if let Some(cancelled) = retry.cancelled.as_mut().as_pin_mut()
                        && cancelled.poll(cx).is_ready()
                    {
                        let attempts = *retry.attempt - 1;
                        *this.retry = None;
                        let policy = &this.shared.policy;
                        policy.count_give_up(GiveUp::Cancelled);
                        trace_cancelled(&policy.name, attempts);
                        return Poll::Ready(Err(Error::cancelled()));
                    }
                    if *retry.sleeping {
                        if let Some(sleep) = retry.sleep.as_mut().as_pin_mut() {
                            ready!(sleep.poll(cx));
                        }
                        *retry.sleeping = false;
                    }
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        *this.retry = None;
                        return Poll::Ready(Err(Error::from_inner(e)));
                    }
                    let Some(req) = retry.next.take() else {
                        // Unreachable: a retry is always prepared before
                        // entering this state. Fail rather than panic.
                        return Poll::Ready(Err(Error::closed()));
                    };
                    this.shared.policy.on_attempt();
                    let fut = this.service.call(req);
                    this.state.set(State::Calling { fut });
                }
            }
        }
    }
}

fn trace_cancelled(name: &LayerName, attempts: u32) {
    with_request_id(|request_id| {
        tracing::debug!(
            layer = %name,
            attempts,
            reason = GiveUp::Cancelled.as_str(),
            request_id,
            "retry: giving up"
        );
    });
}

fn trace_retry<T>(
    name: &LayerName,
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
            layer = %name,
            attempt,
            delay_ms = delay.as_millis() as u64,
            reason,
            error = result.as_ref().err().map(tracing::field::display),
            request_id,
            "retry: next attempt"
        );
    });
}
