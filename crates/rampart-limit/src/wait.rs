//! [`Waiter`]: one caller's wait for a permit — its place in line, the
//! timer of its maximum wait or request deadline, and its request's
//! cancellation token. Shared by the fixed limit (which waits in
//! `poll_ready`) and the keyed limit (which waits in the response future).

use crate::metrics::Reason;
use crate::permit::{Joined, Owner, Permit, Ticket};
use pin_project_lite::pin_project;
use rampart_core::{CancellationToken, Context, Error};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// Why a waiting call gives up when its timer fires.
#[derive(Clone, Copy, Debug)]
enum Expiry {
    MaxWait,
    Deadline,
}

/// A wait for a permit: a place in line, and (boxed, only when there is
/// one) the timer of a maximum wait or a deadline and the watch on a
/// cancellation token. A plain wait allocates nothing.
pub(crate) struct Waiter<O: Owner> {
    ticket: Option<Ticket<O>>,
    expiry: Expiry,
    watch: Option<Pin<Box<Watch>>>,
}

pin_project! {
    /// What ends a wait early.
    struct Watch {
        #[pin]
        timer: Option<Sleep>,
        #[pin]
        cancelled: Option<WaitForCancellationFutureOwned>,
    }
}

impl<O: Owner> std::fmt::Debug for Waiter<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field(
                "queued",
                &self.ticket.as_ref().is_some_and(Ticket::is_queued),
            )
            .field("expiry", &self.expiry)
            .field(
                "timer",
                &self
                    .watch
                    .as_ref()
                    .and_then(|w| w.timer.as_ref().map(Sleep::deadline)),
            )
            .finish_non_exhaustive()
    }
}

impl<O: Owner> Waiter<O> {
    /// A wait for `owner`'s line; joins it on the first poll.
    pub(crate) fn new(owner: Arc<O>) -> Waiter<O> {
        Waiter {
            ticket: Some(Ticket::new(owner)),
            expiry: Expiry::MaxWait,
            watch: None,
        }
    }

    /// `Ready(Ok((permit, in_flight)))` once granted; `Ready(Err)` when the
    /// line is full (`Overloaded`), the maximum wait passed (`Overloaded`),
    /// the request's deadline passed (`DeadlineExceeded`) or its
    /// cancellation token fired (`Cancelled`, at once). The request's
    /// [`Context`] is the current one at the first poll. On `Err` the
    /// waiter has left the line.
    pub(crate) fn poll_permit(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<(Permit<O>, u32), Error>> {
        let this = self;
        let Some(ticket) = this.ticket.as_mut() else {
            panic!("rampart-limit: a wait for a permit polled after it ended")
        };
        if !ticket.is_queued() {
            // First poll: join the line, unless the request is already
            // cancelled or past its deadline.
            let Some(owner) = ticket.owner() else {
                unreachable!("an unqueued ticket has its owner")
            };
            let policy = *owner.policy();
            let (deadline, token) = Context::with_current(|c| {
                c.map_or((None, None), |c| (c.deadline(), c.cancellation().cloned()))
            });
            if token.as_ref().is_some_and(CancellationToken::is_cancelled) {
                return Poll::Ready(Err(cancelled(&mut this.ticket)));
            }
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return Poll::Ready(Err(expired(&mut this.ticket, Expiry::Deadline)));
            }
            match ticket.join(policy.max_waiting, cx) {
                Joined::Acquired(in_flight) => {
                    return Poll::Ready(Ok(grant(&mut this.ticket, in_flight)));
                }
                Joined::Full => {
                    let ticket = this.ticket.take();
                    let owner = ticket.as_ref().and_then(Ticket::owner);
                    let Some(owner) = owner else {
                        unreachable!("an unqueued ticket has its owner")
                    };
                    return Poll::Ready(Err(shed(owner)));
                }
                Joined::Queued => {
                    let (until, why) = timer(policy.max_wait, deadline);
                    this.expiry = why;
                    if until.is_some() || token.is_some() {
                        this.watch = Some(Box::pin(Watch {
                            timer: until.map(sleep_until),
                            cancelled: token.map(CancellationToken::cancelled_owned),
                        }));
                    }
                }
            }
        }
        let Some(ticket) = this.ticket.as_ref() else {
            unreachable!("checked above")
        };
        if let Poll::Ready(in_flight) = ticket.poll(cx) {
            return Poll::Ready(Ok(grant(&mut this.ticket, in_flight)));
        }
        let Some(watch) = this.watch.as_mut() else {
            return Poll::Pending;
        };
        let mut watch = watch.as_mut().project();
        if let Some(c) = watch.cancelled.as_mut().as_pin_mut()
            && c.poll(cx).is_ready()
        {
            return Poll::Ready(Err(cancelled(&mut this.ticket)));
        }
        if let Some(t) = watch.timer.as_mut().as_pin_mut()
            && t.poll(cx).is_ready()
        {
            return Poll::Ready(Err(expired(&mut this.ticket, this.expiry)));
        }
        Poll::Pending
    }
}

fn grant<O: Owner>(slot: &mut Option<Ticket<O>>, in_flight: u32) -> (Permit<O>, u32) {
    let Some(permit) = slot.take().and_then(Ticket::into_permit) else {
        unreachable!("a granted ticket holds its permit")
    };
    (permit, in_flight)
}

/// Counts and reports a refused call.
pub(crate) fn shed<O: Owner>(owner: &O) -> Error {
    let counters = owner.counters();
    counters.shed();
    let sem = owner.sem();
    tracing::debug!(
        layer = %counters.name,
        limit = sem.limit(),
        in_flight = sem.in_flight(),
        "concurrency limit reached: request shed"
    );
    Error::overloaded(owner.policy().retry_after)
}

/// Leaves the line (dropping the ticket) and reports a waiter that gave up.
fn expired<O: Owner>(slot: &mut Option<Ticket<O>>, expiry: Expiry) -> Error {
    let ticket = slot.take();
    let Some(owner) = ticket.as_ref().and_then(Ticket::owner) else {
        unreachable!("a waiting ticket has its owner")
    };
    let counters = owner.counters();
    match expiry {
        Expiry::MaxWait => {
            counters.expired(Reason::MaxWait);
            tracing::debug!(
                layer = %counters.name,
                "gave up waiting for a concurrency permit: max wait passed"
            );
            Error::overloaded(owner.policy().retry_after)
        }
        Expiry::Deadline => {
            counters.expired(Reason::Deadline);
            tracing::debug!(
                layer = %counters.name,
                "gave up waiting for a concurrency permit: deadline passed"
            );
            Error::deadline_exceeded()
        }
    }
}

/// Leaves the line (dropping the ticket): the request was cancelled.
fn cancelled<O: Owner>(slot: &mut Option<Ticket<O>>) -> Error {
    let ticket = slot.take();
    if let Some(owner) = ticket.as_ref().and_then(Ticket::owner) {
        let counters = owner.counters();
        counters.expired(Reason::Cancelled);
        tracing::debug!(
            layer = %counters.name,
            "gave up waiting for a concurrency permit: request cancelled"
        );
    }
    drop(ticket);
    Error::cancelled()
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
