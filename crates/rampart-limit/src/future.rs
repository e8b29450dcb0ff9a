//! The response futures: admission (`admit`) and the state machine that
//! waits for a permit, calls the inner service and gives the permit back.

use crate::permit::{Owner, Permit};
use crate::shared::Shared;
use crate::wait::{Waiter, shed};
use pin_project_lite::pin_project;
use rampart_core::classify::{ClassifyResult, ErrorRef};
use rampart_core::{BoxError, Error};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use tokio::time::Instant;
use tower_service::Service;

const POLLED_AFTER_COMPLETION: &str = "rampart-limit response future polled after completion";

/// How an adaptive call is measured.
#[derive(Debug)]
pub(crate) struct Timing<K> {
    judge: K,
    start: Instant,
    in_flight: u32,
}

pin_project! {
    #[project = StateProj]
    pub(crate) enum State<S, Req, K, O>
    where
        S: Service<Req>,
        O: Owner,
    {
        // No permit yet (keyed limit): joins the line on its first poll
        // (with its waker at hand), then waits to be granted one.
        // The fields are taken (not moved out with the whole state) when
        // the call starts: that copies only what is needed.
        Waiting {
            svc: Option<S>,
            req: Option<Req>,
            judge: Option<K>,
            waiter: Waiter<O>,
        },
        // `permit` is taken when the inner future completes (so a second
        // poll is caught without moving the whole state).
        Calling {
            #[pin]
            fut: S::Future,
            permit: Option<Permit<O>>,
            timing: Option<Timing<K>>,
        },
        Rejected {
            error: Option<Error>,
        },
        Done,
    }
}

pin_project! {
    /// The keyed limit's future (the fixed and adaptive limits have their
    /// own, smaller [`ResponseFuture`]).
    pub(crate) struct LimitFuture<S, Req, K, O>
    where
        S: Service<Req>,
        O: Owner,
    {
        #[pin]
        state: State<S, Req, K, O>,
    }
}

impl<S, Req, K, O> LimitFuture<S, Req, K, O>
where
    S: Service<Req>,
    O: Owner,
{
    pub(crate) fn rejected(error: Error) -> Self {
        LimitFuture {
            state: State::Rejected { error: Some(error) },
        }
    }
}

fn timing<K>(judge: Option<K>, in_flight: u32) -> Option<Timing<K>> {
    judge.map(|judge| Timing {
        judge,
        start: Instant::now(),
        in_flight,
    })
}

/// Takes a permit for `req` or decides what to do without one.
///
/// The fast path (a free permit, nobody waiting) is one CAS, and calls the
/// service that `poll_ready` readied. Otherwise a shedding limit refuses at
/// once; a waiting one moves that ready service into the future (a clone
/// stays behind for the next `poll_ready`), and the future joins the line
/// when first polled.
pub(crate) fn admit<S, Req, K, O>(
    owner: Arc<O>,
    svc: &mut S,
    req: Req,
    judge: Option<K>,
) -> LimitFuture<S, Req, K, O>
where
    S: Service<Req> + Clone,
    O: Owner,
{
    if let Some(in_flight) = owner.sem().try_acquire() {
        let permit = Permit::taken(owner);
        let timing = timing(judge, in_flight);
        return LimitFuture {
            state: State::Calling {
                fut: svc.call(req),
                permit: Some(permit),
                timing,
            },
        };
    }
    if owner.policy().max_waiting == 0 {
        return LimitFuture::rejected(shed(&*owner));
    }
    let ready = std::mem::replace(svc, svc.clone());
    LimitFuture {
        state: State::Waiting {
            svc: Some(ready),
            req: Some(req),
            judge,
            waiter: Waiter::new(owner),
        },
    }
}

impl<S, Req, K, O> State<S, Req, K, O>
where
    S: Service<Req>,
    O: Owner,
{
    /// The waiting state: waits for a permit (see [`Waiter`]), then calls
    /// the service. `Ready(Ok(()))`: the call has started (the state is
    /// `Calling`). Kept out of line so that the common path (a permit
    /// taken in `call`) stays small.
    #[inline(never)]
    fn poll_wait(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        let StateProj::Waiting {
            svc,
            req,
            judge,
            waiter,
        } = self.as_mut().project()
        else {
            unreachable!("called in the waiting state")
        };
        match ready!(waiter.poll_permit(cx)) {
            Ok((permit, in_flight)) => {
                let (Some(mut ready_svc), Some(req)) = (svc.take(), req.take()) else {
                    panic!("{POLLED_AFTER_COMPLETION}")
                };
                let timing = timing(judge.take(), in_flight);
                let fut = ready_svc.call(req);
                self.set(State::Calling {
                    fut,
                    permit: Some(permit),
                    timing,
                });
                Poll::Ready(Ok(()))
            }
            Err(error) => {
                self.set(State::Done);
                Poll::Ready(Err(error))
            }
        }
    }
}

/// Feeds a finished call to its adaptive limit, if it has one.
fn report<K, Res, O>(permit: &Permit<O>, timing: Option<Timing<K>>, out: &Result<Res, Error>)
where
    K: ClassifyResult<Res>,
    O: Owner,
{
    if let (Some(t), Some(adaptive)) = (timing, permit.owner().adaptive()) {
        let outcome = t
            .judge
            .classify(out.as_ref().map_err(|e| e as ErrorRef<'_>));
        let end = Instant::now();
        adaptive.on_result(
            permit.owner().sem(),
            permit.owner().counters(),
            end,
            end.saturating_duration_since(t.start),
            t.in_flight,
            outcome,
        );
    }
}

/// Polls a call that holds its permit; when it completes, gives the permit
/// back and reports the outcome to an adaptive limit.
#[inline]
fn poll_call<F, T, E, K, O>(
    fut: Pin<&mut F>,
    permit: &mut Option<Permit<O>>,
    timing: &mut Option<Timing<K>>,
    cx: &mut TaskContext<'_>,
) -> Poll<Result<T, Error>>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    K: ClassifyResult<T>,
    O: Owner,
{
    assert!(permit.is_some(), "{POLLED_AFTER_COMPLETION}");
    let out = ready!(fut.poll(cx)).map_err(Error::from_inner);
    if let Some(permit) = permit.take() {
        report(&permit, timing.take(), &out);
    }
    Poll::Ready(out)
}

impl<S, Req, K, O> Future for LimitFuture<S, Req, K, O>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: ClassifyResult<S::Response>,
    O: Owner,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Calling {
                    fut,
                    permit,
                    timing,
                } => {
                    return poll_call(fut, permit, timing, cx);
                }
                StateProj::Waiting { .. } => {
                    if let Err(e) = ready!(state.as_mut().poll_wait(cx)) {
                        return Poll::Ready(Err(e));
                    }
                }
                StateProj::Rejected { error } => {
                    let error = error.take().unwrap_or_else(Error::closed);
                    state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("{POLLED_AFTER_COMPLETION}"),
            }
        }
    }
}

pin_project! {
    /// The response future of [`ConcurrencyLimit`](crate::ConcurrencyLimit):
    /// calls the inner service with the permit `poll_ready` took, and gives
    /// the permit back when the response is ready or the future is dropped.
    ///
    /// The wait for a permit happens in `poll_ready`, so this future never
    /// holds the request: it is the inner future, the permit and the
    /// adaptive limit's timing slot (four words beside the inner future).
    pub struct ResponseFuture<S, Req, K>
    where
        S: Service<Req>,
    {
        #[pin]
        pub(crate) state: Fixed<S::Future, K>,
    }
}

pin_project! {
    #[project = FixedProj]
    pub(crate) enum Fixed<F, K> {
        // `permit` is taken when the inner future completes (so a second
        // poll is caught without moving the whole state).
        Calling {
            #[pin]
            fut: F,
            permit: Option<Permit<Shared>>,
            timing: Option<Timing<K>>,
        },
        Rejected {
            error: Option<Error>,
        },
    }
}

impl<S, Req, K> ResponseFuture<S, Req, K>
where
    S: Service<Req>,
{
    pub(crate) fn rejected(error: Error) -> Self {
        ResponseFuture {
            state: Fixed::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn calling(
        fut: S::Future,
        permit: Permit<Shared>,
        in_flight: u32,
        judge: Option<K>,
    ) -> Self {
        ResponseFuture {
            state: Fixed::Calling {
                fut,
                permit: Some(permit),
                timing: timing(judge, in_flight),
            },
        }
    }
}

impl<S, Req, K> fmt::Debug for ResponseFuture<S, Req, K>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, Req, K> Future for ResponseFuture<S, Req, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: ClassifyResult<S::Response>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            FixedProj::Calling {
                fut,
                permit,
                timing,
            } => poll_call(fut, permit, timing, cx),
            FixedProj::Rejected { error } => {
                Poll::Ready(Err(error.take().expect(POLLED_AFTER_COMPLETION)))
            }
        }
    }
}
