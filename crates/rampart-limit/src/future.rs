//! The response futures: admission (`admit`) and the state machine that
//! waits for a permit, calls the inner service and gives the permit back.

use crate::permit::{Joined, Owner, Permit, Ticket};
use crate::shared::Shared;
use pin_project_lite::pin_project;
use rampart_core::classify::{ClassifyResult, ErrorRef};
use rampart_core::{BoxError, Context, Error};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

const POLLED_AFTER_COMPLETION: &str = "rampart-limit response future polled after completion";

/// How an adaptive call is measured.
#[derive(Debug)]
pub(crate) struct Timing<K> {
    judge: K,
    start: Instant,
    in_flight: u32,
}

/// Why a waiting call gives up when its timer fires.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expiry {
    MaxWait,
    Deadline,
}

pin_project! {
    #[project = StateProj]
    pub(crate) enum State<S, Req, K, O>
    where
        S: Service<Req>,
        O: Owner,
    {
        // No permit yet: joins the line on its first poll (with its waker
        // at hand), then waits to be granted one.
        // The fields are taken (not moved out with the whole state) when
        // the call starts: that copies only what is needed.
        Waiting {
            svc: Option<S>,
            req: Option<Req>,
            ticket: Option<Ticket<O>>,
            judge: Option<K>,
            // Boxed: only a waiter with a max wait or a deadline has one,
            // and it would double the size of every future.
            timer: Option<Pin<Box<Sleep>>>,
            expiry: Expiry,
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
    /// The future shared by the fixed/adaptive and the keyed limits.
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
            ticket: Some(Ticket::new(owner)),
            judge,
            timer: None,
            expiry: Expiry::MaxWait,
        },
    }
}

/// Counts and reports a refused call.
fn shed<O: Owner>(owner: &O) -> Error {
    owner.counters().shed();
    let sem = owner.sem();
    tracing::debug!(
        limit = sem.limit(),
        in_flight = sem.in_flight(),
        "concurrency limit reached: request shed"
    );
    Error::overloaded(owner.policy().retry_after)
}

/// Counts and reports a waiter that gave up.
fn expired<O: Owner>(owner: &O, expiry: Expiry) -> Error {
    owner.counters().expired();
    match expiry {
        Expiry::MaxWait => {
            tracing::debug!("gave up waiting for a concurrency permit: max wait passed");
            Error::overloaded(owner.policy().retry_after)
        }
        Expiry::Deadline => {
            tracing::debug!("gave up waiting for a concurrency permit: deadline passed");
            Error::deadline_exceeded()
        }
    }
}

/// The timer of a new waiter: the earlier of its maximum wait and its
/// request's deadline, if either.
#[inline]
fn timer(max_wait: Option<Duration>, deadline: Option<Instant>) -> (Option<Instant>, Expiry) {
    let max_wait = max_wait.map(|d| rampart_core::codec::deadline_after(Instant::now(), d));
    match (max_wait, deadline) {
        (Some(w), Some(d)) if d <= w => (Some(d), Expiry::Deadline),
        (Some(w), _) => (Some(w), Expiry::MaxWait),
        (None, d) => (d, Expiry::Deadline),
    }
}

impl<S, Req, K, O> State<S, Req, K, O>
where
    S: Service<Req>,
    O: Owner,
{
    /// The waiting state: joins the line on the first poll, then waits for
    /// a permit or the timer. `Ready(Ok(()))`: the call has started (the
    /// state is `Calling`). Kept out of line so that the common path (a
    /// permit taken in `call`) stays small.
    #[inline(never)]
    fn poll_wait(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        let StateProj::Waiting {
            svc,
            req,
            ticket: ticket_slot,
            judge,
            timer: slot,
            expiry,
        } = self.as_mut().project()
        else {
            unreachable!("called in the waiting state")
        };
        let Some(ticket) = ticket_slot else {
            panic!("{POLLED_AFTER_COMPLETION}")
        };
        let granted = if ticket.is_queued() {
            ticket.poll(cx)
        } else {
            // First poll: join the line, unless the deadline already passed.
            let Some(owner) = ticket.owner() else {
                unreachable!("an unqueued ticket has its owner")
            };
            let policy = *owner.policy();
            let deadline = Context::current_deadline();
            if deadline.is_some_and(|d| d <= Instant::now()) {
                let error = expired(owner, Expiry::Deadline);
                self.set(State::Done);
                return Poll::Ready(Err(error));
            }
            match ticket.join(policy.max_waiting, cx) {
                Joined::Acquired(in_flight) => Poll::Ready(in_flight),
                Joined::Full => {
                    let Some(owner) = ticket.owner() else {
                        unreachable!("an unqueued ticket has its owner")
                    };
                    let error = shed(owner);
                    self.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                Joined::Queued => {
                    let (until, why) = timer(policy.max_wait, deadline);
                    *slot = until.map(|at| Box::pin(sleep_until(at)));
                    *expiry = why;
                    Poll::Pending
                }
            }
        };
        if let Poll::Ready(in_flight) = granted {
            let (Some(mut ready_svc), Some(req), Some(ticket)) =
                (svc.take(), req.take(), ticket_slot.take())
            else {
                unreachable!("a waiting call holds its service and request")
            };
            let Some(permit) = ticket.into_permit() else {
                unreachable!("a granted ticket holds its permit")
            };
            let timing = timing(judge.take(), in_flight);
            let fut = ready_svc.call(req);
            self.set(State::Calling {
                fut,
                permit: Some(permit),
                timing,
            });
            return Poll::Ready(Ok(()));
        }
        let fired = slot
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready());
        if !fired {
            return Poll::Pending;
        }
        let expiry = *expiry;
        let Some(ticket) = ticket_slot.take() else {
            unreachable!("checked above")
        };
        self.set(State::Done);
        let Some(owner) = ticket.owner() else {
            unreachable!("a waiting ticket has its owner")
        };
        let error = expired(owner, expiry);
        drop(ticket); // leaves the line
        Poll::Ready(Err(error))
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
            end,
            end.saturating_duration_since(t.start),
            t.in_flight,
            outcome,
        );
    }
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
                    assert!(permit.is_some(), "{POLLED_AFTER_COMPLETION}");
                    let out = ready!(fut.poll(cx)).map_err(Error::from_inner);
                    if let Some(permit) = permit.take() {
                        report(&permit, timing.take(), &out);
                    }
                    return Poll::Ready(out);
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
    /// waits for a permit (unless one is free), calls the inner service,
    /// and gives the permit back when the response is ready or the future
    /// is dropped.
    pub struct ResponseFuture<S, Req, K>
    where
        S: Service<Req>,
    {
        #[pin]
        pub(crate) inner: LimitFuture<S, Req, K, Shared>,
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
        self.project().inner.poll(cx)
    }
}
