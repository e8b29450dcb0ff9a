//! [`FanOutFuture`]: sends the requests, bounded, and gathers the outcomes.

use crate::config::Settings;
use crate::error::{Failure, FanOutError};
use crate::metrics::{DropReason, Telemetry};
use crate::outcome::{Gathered, NotDone, Outcome, Reason};
use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use rampart_core::{CancellationToken, Context};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{DropGuard, WaitForCancellationFutureOwned};
use tower_service::Service;

/// The result of a fan-out: every outcome, or why the group failed (with
/// every outcome).
pub type FanOutResult<T, E> = Result<Gathered<T, E>, FanOutError<T, E>>;

pin_project! {
    /// One call, with its input position.
    struct Call<F> {
        idx: usize,
        #[pin]
        fut: F,
    }
}

impl<F, T, E> Future for Call<F>
where
    F: Future<Output = Result<T, E>>,
{
    /// The input position and the result, or `None` when the call panicked.
    type Output = (usize, Option<Result<T, E>>);

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let idx = *this.idx;
        // A panicking call fails only itself (it is dropped at once).
        match catch_unwind(AssertUnwindSafe(|| this.fut.poll(cx))) {
            Ok(p) => p.map(|r| (idx, Some(r))),
            Err(_) => Poll::Ready((idx, None)),
        }
    }
}

/// How a group ended.
#[derive(Clone, Copy, Debug)]
enum End {
    /// Nothing left to run, or the mode's goal was met.
    Done,
    /// The mode's goal can no longer be met.
    Unreachable,
    /// Stopped from outside (timeout, deadline, cancellation).
    Stopped(Failure),
}

pin_project! {
    /// The future of [`FanOut`](crate::FanOut)'s `call`: sends the requests
    /// (at most `concurrency` in flight, each when the inner service is
    /// ready), gathers their outcomes in input order, and stops as the mode,
    /// the collective timeout, the caller's deadline or its cancellation
    /// token say. Dropping it drops (cancels) every call in flight.
    ///
    /// # Panics
    ///
    /// When polled after it completed. A panic of the inner service does
    /// not reach the caller: a call whose future panics fails alone
    /// ([`Reason::Panicked`]); a panic in `poll_ready` or `call` fails that
    /// request and the rest are never sent.
    #[must_use = "futures do nothing unless polled"]
    #[project = FanOutFutureProj]
    pub struct FanOutFuture<S, Req>
    where
        S: Service<Req>,
    {
        svc: S,
        reqs: std::vec::IntoIter<Req>,
        next: usize,
        running: FuturesUnordered<Call<S::Future>>,
        outcomes: Vec<Outcome<S::Response, S::Error>>,
        need: Option<usize>,
        limit: usize,
        ok: usize,
        err: usize,
        // Errors plus requests that can never be sent: what cannot succeed.
        lost: usize,
        first_err: Option<usize>,
        // When the collective timeout passes, if there is one.
        timeout: Option<Instant>,
        // The context each call runs in: the caller's, with the group's
        // deadline and token. `None` when there is nothing to carry.
        call_ctx: Option<Context>,
        // Cancels the group's token (a child of the caller's) when the group
        // ends or is dropped.
        group: Option<DropGuard>,
        deadline: Option<(Instant, Failure)>,
        #[pin]
        sleep: Option<Sleep>,
        #[pin]
        cancelled: Option<WaitForCancellationFutureOwned>,
        // A caller context was current at construction.
        had_caller: bool,
        started: bool,
        finished: bool,
        // The layer's name and metric handles.
        telemetry: Telemetry,
        // When the group was called, if its duration is recorded.
        called_at: Option<Instant>,
    }

    impl<S, Req> PinnedDrop for FanOutFuture<S, Req>
    where
        S: Service<Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Calls still in flight are dropped in the group's context, as
            // they ran in it (`Scoped` enters it without ever panicking).
            if let Some(m) = this.telemetry.metrics() {
                m.cancelled(DropReason::CallerDropped, this.running.len());
            }
            if !this.running.is_empty()
                && let Some(ctx) = this.call_ctx.as_ref()
            {
                let running = std::mem::take(this.running);
                drop(ctx.clone().scope(std::future::ready(running)));
            }
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for FanOutFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOutFuture")
            .field("requests", &self.outcomes.len())
            .field("unsent", &self.reqs.len())
            .field("in_flight", &self.running.len())
            .field("succeeded", &self.ok)
            .field("failed", &self.err)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req> FanOutFuture<S, Req> {
    /// A group over `reqs` with `config`, in the current [`Context`]. The
    /// collective timeout starts now.
    pub(crate) fn new(svc: S, reqs: Vec<Req>, config: &Settings, telemetry: Telemetry) -> Self {
        let n = reqs.len();
        let caller = Context::current();
        let now = (config.timeout.is_some() || telemetry.metrics().is_some()).then(Instant::now);
        let timeout = config
            .timeout
            .zip(now)
            .map(|(t, now)| rampart_core::codec::deadline_after(now, t));
        let called_at = now.filter(|_| telemetry.metrics().is_some());
        let placeholder = || Outcome::NotDone(NotDone::new(Reason::Decided, false));
        let mut this = FanOutFuture {
            svc,
            reqs: reqs.into_iter(),
            next: 0,
            running: FuturesUnordered::new(),
            outcomes: std::iter::repeat_with(placeholder).take(n).collect(),
            need: config.mode.need(n),
            limit: config
                .concurrency
                .map_or(usize::MAX, std::num::NonZeroUsize::get),
            ok: 0,
            err: 0,
            lost: 0,
            first_err: None,
            timeout,
            call_ctx: None,
            group: None,
            deadline: None,
            sleep: None,
            cancelled: None,
            had_caller: caller.is_some(),
            started: false,
            finished: false,
            telemetry,
            called_at,
        };
        if caller.is_some() || timeout.is_some() {
            let g = Group::new(caller.unwrap_or_default(), timeout);
            this.deadline = g.deadline;
            this.call_ctx = Some(g.ctx);
            this.group = Some(g.guard);
            this.cancelled = g.cancelled;
        }
        this
    }
}

/// What a group needs when there is a context to carry: its deadline (the
/// collective timeout or the caller's, whichever is earlier, and which one
/// it is), the context its calls run in (the caller's with that deadline and
/// the group's token), the guard that cancels the group's token, and the
/// wait for the caller's token.
struct Group {
    deadline: Option<(Instant, Failure)>,
    ctx: Context,
    guard: DropGuard,
    cancelled: Option<WaitForCancellationFutureOwned>,
}

impl Group {
    fn new(caller: Context, timeout: Option<Instant>) -> Group {
        let mut deadline = timeout.map(|at| (at, Failure::Timeout));
        if let Some(at) = caller.deadline()
            && deadline.is_none_or(|(ours, _)| at < ours)
        {
            deadline = Some((at, Failure::DeadlineExceeded));
        }
        let (token, cancelled) = match caller.cancellation() {
            Some(t) => (t.child_token(), Some(t.clone().cancelled_owned())),
            None => (CancellationToken::new(), None),
        };
        let mut ctx = caller.with_cancellation(token.clone());
        if let Some((at, _)) = deadline {
            ctx = ctx.with_deadline(at);
        }
        Group {
            deadline,
            ctx,
            guard: token.drop_guard(),
            cancelled,
        }
    }
}

/// The mode's verdict so far, if it has one.
#[inline]
fn decide(need: Option<usize>, n: usize, ok: usize, lost: usize) -> Option<End> {
    let need = need?;
    if ok >= need {
        Some(End::Done)
    } else if n - lost < need {
        Some(End::Unreachable)
    } else {
        None
    }
}

impl<S: Service<Req>, Req> Future for FanOutFuture<S, Req> {
    type Output = FanOutResult<S::Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.as_mut().project();
        assert!(!*this.finished, "FanOutFuture polled after it completed");
        // Created outside the caller's scope (`ctx.scope(gather(..))`): the
        // context is the one it is first polled in.
        if !*this.started
            && !*this.had_caller
            && let Some(caller) = Context::current()
        {
            let g = Group::new(caller, *this.timeout);
            *this.deadline = g.deadline;
            *this.call_ctx = Some(g.ctx);
            *this.group = Some(g.guard);
            this.cancelled.set(g.cancelled);
        }
        // The calls are made, polled and dropped inside the poll of the
        // group: in the group's context, entered once per poll.
        match this.call_ctx.clone() {
            Some(ctx) => ctx.sync_scope(|| self.poll_group(cx)),
            None => self.poll_group(cx),
        }
    }
}

impl<S: Service<Req>, Req> FanOutFuture<S, Req> {
    fn poll_group(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<FanOutResult<S::Response, S::Error>> {
        let mut this = self.project();
        if !*this.started {
            *this.started = true;
            if let Some(end) = decide(*this.need, this.outcomes.len(), 0, 0) {
                return Poll::Ready(finish(this, end));
            }
            if let Some((at, _)) = *this.deadline {
                this.sleep.set(Some(tokio::time::sleep_until(at)));
            }
        }
        if let Some(c) = this.cancelled.as_mut().as_pin_mut()
            && c.poll(cx).is_ready()
        {
            return Poll::Ready(finish(this, End::Stopped(Failure::Cancelled)));
        }
        if let Some(s) = this.sleep.as_mut().as_pin_mut()
            && s.poll(cx).is_ready()
        {
            let why = this.deadline.map_or(Failure::Timeout, |(_, why)| why);
            return Poll::Ready(finish(this, End::Stopped(why)));
        }
        // Take one that finished, send one more, and again, until neither
        // is possible. A call that answers at once is done before the next
        // is made, and a freed slot is refilled at once, so few calls are
        // alive at a time (their memory is reused while it is warm).
        loop {
            let mut progressed = false;
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some((idx, res))) => {
                    progressed = true;
                    match res {
                        Some(Ok(t)) => {
                            this.outcomes[idx] = Outcome::Ok(t);
                            *this.ok += 1;
                        }
                        Some(Err(e)) => {
                            if let Some(m) = this.telemetry.metrics() {
                                m.failed.increment(1);
                            }
                            this.outcomes[idx] = Outcome::Err(e);
                            *this.err += 1;
                            *this.lost += 1;
                            this.first_err.get_or_insert(idx);
                        }
                        None => {
                            if let Some(m) = this.telemetry.metrics() {
                                m.panicked.increment(1);
                            }
                            tracing::debug!(
                                layer = %this.telemetry.name(),
                                idx,
                                "fan-out: a call panicked"
                            );
                            this.outcomes[idx] =
                                Outcome::NotDone(NotDone::new(Reason::Panicked, true));
                            *this.lost += 1;
                        }
                    }
                    if let Some(end) = decide(*this.need, this.outcomes.len(), *this.ok, *this.lost)
                    {
                        return Poll::Ready(finish(this, end));
                    }
                }
                Poll::Ready(None) if this.reqs.len() == 0 => {
                    return Poll::Ready(finish(this, End::Done));
                }
                Poll::Ready(None) | Poll::Pending => {}
            }
            if this.running.len() < *this.limit && this.reqs.len() > 0 {
                let svc = &mut *this.svc;
                let ready = catch_unwind(AssertUnwindSafe(|| svc.poll_ready(cx)));
                let broken = match ready {
                    Ok(Poll::Pending) => None,
                    Ok(Poll::Ready(Ok(()))) => {
                        progressed = true;
                        let req = this.reqs.next().expect("a request is left");
                        let idx = *this.next;
                        *this.next += 1;
                        if let Some(m) = this.telemetry.metrics() {
                            m.calls.increment(1);
                        }
                        match catch_unwind(AssertUnwindSafe(|| svc.call(req))) {
                            Ok(fut) => {
                                this.running.push(Call { idx, fut });
                                None
                            }
                            Err(_) => Some(Outcome::NotDone(NotDone::new(Reason::Panicked, true))),
                        }
                    }
                    Ok(Poll::Ready(Err(e))) => {
                        progressed = true;
                        drop(this.reqs.next());
                        *this.next += 1;
                        *this.err += 1;
                        this.first_err.get_or_insert(*this.next - 1);
                        Some(Outcome::Err(e))
                    }
                    Err(_) => {
                        progressed = true;
                        drop(this.reqs.next());
                        *this.next += 1;
                        Some(Outcome::NotDone(NotDone::new(Reason::Panicked, false)))
                    }
                };
                if let Some(outcome) = broken {
                    if let Some(m) = this.telemetry.metrics() {
                        match outcome {
                            Outcome::Err(_) => m.failed.increment(1),
                            _ => m.panicked.increment(1),
                        }
                    }
                    // The request that waited for the failed (or panicking)
                    // service holds its error; the rest can never be sent.
                    let idx = *this.next - 1;
                    this.outcomes[idx] = outcome;
                    let never = this.reqs.len();
                    for o in &mut this.outcomes[idx + 1..] {
                        *o = Outcome::NotDone(NotDone::new(Reason::NotReady, false));
                    }
                    this.reqs.by_ref().for_each(drop);
                    *this.next = this.outcomes.len();
                    *this.lost += 1 + never;
                    tracing::debug!(
                        layer = %this.telemetry.name(),
                        never,
                        "fan-out: the inner service failed or panicked"
                    );
                    if let Some(end) = decide(*this.need, this.outcomes.len(), *this.ok, *this.lost)
                    {
                        return Poll::Ready(finish(this, end));
                    }
                }
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }
}

/// Ends the group: drops what is in flight, cancels the group's token,
/// marks the unfinished, and builds the result.
fn finish<S: Service<Req>, Req>(
    this: FanOutFutureProj<'_, S, Req>,
    end: End,
) -> FanOutResult<S::Response, S::Error> {
    *this.finished = true;
    let in_flight = this.running.len();
    this.running.clear();
    this.reqs.by_ref().for_each(drop);
    drop(this.group.take());
    let mut this_sleep = this.sleep;
    this_sleep.set(None);
    let mut this_cancelled = this.cancelled;
    this_cancelled.set(None);
    let reason = match end {
        End::Done | End::Unreachable => Reason::Decided,
        End::Stopped(Failure::Timeout) => Reason::Timeout,
        End::Stopped(Failure::DeadlineExceeded) => Reason::DeadlineExceeded,
        End::Stopped(Failure::Cancelled | Failure::Unreachable) => Reason::Cancelled,
    };
    if let Some(m) = this.telemetry.metrics() {
        m.cancelled(DropReason::from_reason(reason), in_flight);
        if let Some(at) = *this.called_at {
            m.duration.record_duration(at.elapsed());
        }
    }
    // Requests are sent in input order: those before `next` were sent.
    let sent = *this.next;
    for (i, o) in this.outcomes.iter_mut().enumerate() {
        // Placeholders only: `NotReady` and `Panicked` are final already.
        if let Outcome::NotDone(n) = o
            && n.reason() == Reason::Decided
        {
            *n = NotDone::new(reason, i < sent);
        }
    }
    let gathered = Gathered::new(
        std::mem::take(this.outcomes),
        *this.ok,
        *this.err,
        *this.first_err,
    );
    match end {
        End::Done => {
            if gathered.not_done() > 0 {
                tracing::debug!(
                    layer = %this.telemetry.name(),
                    in_flight,
                    not_done = gathered.not_done(),
                    "fan-out: decided, the rest cancelled"
                );
            }
            Ok(gathered)
        }
        End::Unreachable => {
            tracing::debug!(
                layer = %this.telemetry.name(),
                in_flight,
                failed = gathered.failed(),
                "fan-out: goal unreachable, the rest cancelled"
            );
            Err(FanOutError::new(Failure::Unreachable, gathered))
        }
        End::Stopped(failure) => {
            tracing::debug!(
                layer = %this.telemetry.name(),
                in_flight,
                %failure,
                "fan-out: stopped, the rest cancelled"
            );
            Err(FanOutError::new(failure, gathered))
        }
    }
}
