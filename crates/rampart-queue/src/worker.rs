//! The workers: each takes jobs from the shared channel and drives one call
//! at a time to completion.

use crate::config::{QueueConfig, WhenFull};
use crate::core::{Core, Taken};
use crate::error::Panicked;
use crate::metrics::{Metrics, Stamp, expired_at};
use crate::slot::{Pool, Reply};
use pin_project_lite::pin_project;
use rampart_core::telemetry::LayerName;
use rampart_core::{BoxError, Context, Error, Scoped};
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tower_service::Service;

/// One accepted request, as it moves through the queue: the worker's half
/// of its answer slot, a pointer (the slot holds the request, its context
/// and when it was queued until a worker takes them, then the answer).
pub(crate) type Job<Req, Res> = Reply<Req, Res>;

/// The job a worker runs: its reply half, and its context taken out of
/// the slot (the request stays in the slot until the inner service is
/// called, so it is moved once, from the slot into the call).
pub(crate) struct Running<Req, Res> {
    /// `None` when idle.
    reply: Option<Reply<Req, Res>>,
    /// The caller's context, in scope while the call runs.
    ctx: Option<Context>,
    /// The worker's id (its counters).
    id: usize,
    /// The inner service was not ready for this job at least once: before
    /// it is called, the worker checks again that its caller is still
    /// there (the caller may have left in the meantime).
    waited_ready: bool,
}

/// The callers' counters behind [`Stats`](crate::Stats) (the workers'
/// are in [`WorkerCounters`]).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) shed: AtomicU64,
}

/// One worker's counters behind [`Stats`](crate::Stats), on cache lines of
/// their own: only that worker writes them (a load and a store, no
/// read-modify-write, and no line bouncing between workers that count at
/// once); [`stats`](crate::Queue::stats) sums them.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct WorkerCounters {
    /// 1 while the worker runs a call.
    pub(crate) running: AtomicUsize,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) abandoned: AtomicU64,
}

/// Adds one to a counter only its worker writes.
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Relaxed) + 1, Relaxed);
}

impl WorkerCounters {
    /// The sum of `field` over `workers`.
    pub(crate) fn sum(workers: &[WorkerCounters], field: impl Fn(&WorkerCounters) -> u64) -> u64 {
        workers.iter().map(field).sum()
    }
}

/// State shared by every handle of one queue and by its workers.
pub(crate) struct Inner<Req, Res> {
    /// The queued jobs and the callers waiting for space, under one lock
    /// (held only to move a job in or out).
    core: crate::sync::Mutex<Core<Job<Req, Res>>>,
    pub(crate) capacity: usize,
    pub(crate) workers: usize,
    pub(crate) when_full: WhenFull,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) detach: bool,
    pub(crate) live: AtomicUsize,
    pub(crate) counters: Counters,
    /// Each worker's counters, by worker id.
    pub(crate) per_worker: Box<[WorkerCounters]>,
    /// The name of the queue's layer: the `layer` label of its metrics and
    /// the `layer` field of its tracing events.
    pub(crate) name: LayerName,
    /// The metric handles, registered when the queue was built.
    pub(crate) metrics: Metrics,
    /// Notified when the last worker exits.
    pub(crate) stopped: Notify,
    pub(crate) aborts: Mutex<Vec<AbortHandle>>,
    /// The callers' answer slots, reused.
    pub(crate) pool: crate::sync::Arc<Pool<Req, Res>>,
}

impl<Req, Res> Inner<Req, Res> {
    pub(crate) fn new(cfg: &QueueConfig, name: LayerName) -> Self {
        let metrics = Metrics::new(&name);
        // Counted live from now on (as `live`), until their `LiveGuard`s drop.
        metrics.workers.increment(cfg.workers as f64);
        Inner {
            core: crate::sync::Mutex::new(Core::new(cfg.capacity, cfg.workers)),
            capacity: cfg.capacity,
            workers: cfg.workers,
            when_full: cfg.when_full,
            max_wait: cfg.max_wait,
            retry_after: cfg.retry_after,
            detach: cfg.detach,
            live: AtomicUsize::new(cfg.workers),
            counters: Counters::default(),
            per_worker: (0..cfg.workers)
                .map(|_| WorkerCounters::default())
                .collect(),
            name,
            metrics,
            stopped: Notify::new(),
            aborts: Mutex::new(Vec::new()),
            // Enough idle slots for a full queue, every worker's call and as
            // many answers not yet read by their callers.
            pool: crate::sync::Arc::new(Pool::new(
                cfg.capacity.saturating_mul(2).saturating_add(cfg.workers),
            )),
        }
    }

    /// The queue, locked (nothing panics under the lock).
    #[inline]
    pub(crate) fn core(&self) -> crate::sync::MutexGuard<'_, Core<Job<Req, Res>>> {
        self.core.lock()
    }

    /// Stops accepting: the callers waiting for space fail with `Closed`,
    /// idle workers wake (and stop once the queue is empty). Returns
    /// whether it was open.
    pub(crate) fn close(&self) -> bool {
        let (was_open, waiters, idle) = self.core().close();
        for job in waiters {
            job.fail(Error::closed(), &self.pool);
        }
        // Idle workers wake, find the queue closed (once empty) and stop.
        for w in idle {
            w.wake();
        }
        if was_open {
            tracing::debug!(
                layer = %self.name,
                queued = self.core().len(),
                "queue closed"
            );
        }
        was_open
    }

    /// Calls running now.
    pub(crate) fn running(&self) -> usize {
        self.per_worker
            .iter()
            .map(|w| w.running.load(Relaxed))
            .sum()
    }

    /// Worker `id` starts running a call.
    #[inline]
    fn call_started(&self, id: usize) {
        self.per_worker[id].running.store(1, Relaxed);
        self.metrics.running.increment(1.0);
    }

    /// Worker `id`'s call ended (answered, abandoned or dropped).
    #[inline]
    fn call_ended(&self, id: usize) {
        self.per_worker[id].running.store(0, Relaxed);
        self.metrics.running.decrement(1.0);
    }
}

impl<Req, Res> Drop for Inner<Req, Res> {
    /// Jobs still queued when the queue goes (its workers were aborted, or
    /// the runtime shut down) leave the depth gauge.
    fn drop(&mut self) {
        let left = self.core().len();
        if left > 0 {
            self.metrics.depth.decrement(left as f64);
        }
    }
}

/// How a worker reaches the inner service: its own clone, or one service
/// shared by every worker behind a lock held only for `poll_ready` + `call`.
pub(crate) trait Backend<Req>: Send + 'static {
    type Response;
    type Error: Into<BoxError>;
    type Future: Future<Output = Result<Self::Response, Self::Error>>;

    /// Polls readiness and, once ready, calls with the request `req`
    /// returns (not called while pending).
    fn poll_call(
        &mut self,
        cx: &mut TaskContext<'_>,
        req: impl FnOnce() -> Req,
    ) -> Poll<Result<Self::Future, Self::Error>>;
}

/// A worker's own clone of the inner service.
pub(crate) struct Owned<S>(pub(crate) S);

impl<S, Req> Backend<Req> for Owned<S>
where
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_call(
        &mut self,
        cx: &mut TaskContext<'_>,
        req: impl FnOnce() -> Req,
    ) -> Poll<Result<S::Future, S::Error>> {
        match self.0.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(self.0.call(req()))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One inner service shared by every worker: `poll_ready` and `call` run
/// under one lock hold, so a readiness one worker saw is the one it uses.
pub(crate) struct Shared<S>(pub(crate) Arc<Mutex<S>>);

impl<S, Req> Backend<Req> for Shared<S>
where
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_call(
        &mut self,
        cx: &mut TaskContext<'_>,
        req: impl FnOnce() -> Req,
    ) -> Poll<Result<S::Future, S::Error>> {
        // A panic in the inner service poisons the lock; the service is
        // still the one the user gave, keep using it.
        let mut svc = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match svc.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(svc.call(req()))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Jobs a worker takes in one poll before it yields to other tasks.
const BUDGET: usize = 32;

pin_project! {
    /// The inner call a worker is driving, in the caller's context if it had
    /// one.
    #[project = CallProj]
    enum Call<F> {
        Idle,
        Scoped { #[pin] fut: Scoped<F> },
        Bare { #[pin] fut: F },
    }
}

pin_project! {
    /// What a worker runs: one job at a time, and, once it is done, the
    /// next queued jobs without waiting ([`BUDGET`] per poll).
    ///
    /// Hand-written rather than an `async fn`, so that a job (and the
    /// request in it) is moved once into `job` and stays there while it
    /// runs. The worker task waits for work with the channel's `recv`
    /// (which wakes one idle worker per request, not all of them).
    struct Runner<Req, B: Backend<Req>> {
        inner: Arc<Inner<Req, B::Response>>,
        backend: B,
        // The job being run (idle when its reply is `None`).
        job: Running<Req, B::Response>,
        #[pin]
        call: Call<B::Future>,
    }

    impl<Req, B: Backend<Req>> PinnedDrop for Runner<Req, B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.job.reply.is_some() {
                this.inner.call_ended(this.job.id);
            }
        }
    }
}

/// Counts a worker as live until its task ends (also when it is aborted at
/// a drain deadline), and wakes whoever waits for all of them to stop.
struct LiveGuard<Req, Res>(Arc<Inner<Req, Res>>);

impl<Req, Res> Drop for LiveGuard<Req, Res> {
    fn drop(&mut self) {
        self.0.metrics.workers.decrement(1.0);
        if self.0.live.fetch_sub(1, Relaxed) == 1 {
            self.0.stopped.notify_waiters();
        }
    }
}

/// A worker task: waits for a job, runs it and whatever else is queued,
/// until the channel is closed and empty.
///
/// An idle worker leaves its waker in the queue (one place per worker:
/// waiting allocates nothing) and is woken by the next job queued; while
/// every worker is busy, queuing a job wakes nobody.
///
/// Not an `async fn`: the worker's [`LiveGuard`] is made here, before the
/// task is first polled, so a task dropped unpolled (its runtime shut down
/// right after the queue was built) still stops counting as live.
pub(crate) fn worker<Req, B: Backend<Req>>(
    inner: Arc<Inner<Req, B::Response>>,
    id: usize,
    backend: B,
) -> impl Future<Output = ()> {
    let live = LiveGuard(Arc::clone(&inner));
    async move {
        let _live = live;
        work(inner, id, backend).await;
    }
}

/// The body of [`worker`] number `id`.
async fn work<Req, B: Backend<Req>>(inner: Arc<Inner<Req, B::Response>>, id: usize, backend: B) {
    let mut runner = pin!(Runner {
        inner: Arc::clone(&inner),
        backend,
        job: Running {
            reply: None,
            ctx: None,
            id,
            waited_ready: false,
        },
        call: Call::Idle,
    });
    loop {
        // The runner left the queue empty: look again, and wait as idle
        // (the waker left in the queue under the same lock hold, so the
        // next job queued wakes this worker or another idle one).
        let mut now = Stamp::default();
        let Some(job) = poll_fn(|cx| {
            take(&inner, Some((id, cx)), &mut now).map_or_else(
                || {
                    if inner.core().is_closed() {
                        Poll::Ready(None)
                    } else {
                        Poll::Pending
                    }
                },
                |job| Poll::Ready(Some(job)),
            )
        })
        .await
        else {
            break;
        };
        runner.as_mut().start(job, now);
        poll_fn(|cx| runner.as_mut().poll_run(cx)).await;
    }
    tracing::debug!(layer = %inner.name, "queue worker stopped: queue closed and empty");
}

/// Why a job is not run.
enum Skip {
    /// Its caller dropped the response future.
    CallerLeft,
    /// Its context was cancelled or passed its deadline: the caller is
    /// told so (if it still listens).
    Refused(Error),
}

#[inline]
fn skip_reason(detach: bool, gone: bool, ctx: Option<&Context>, now: Stamp) -> Option<Skip> {
    if gone && !detach {
        return Some(Skip::CallerLeft);
    }
    let ctx = ctx?;
    if ctx.is_cancelled() {
        Some(Skip::Refused(Error::cancelled()))
    } else if expired_at(ctx, now) {
        Some(Skip::Refused(Error::deadline_exceeded()))
    } else {
        None
    }
}

/// Where a running job stands after a poll.
enum Step<Res> {
    Pending,
    /// The caller left (not detached): drop the call.
    Abandoned,
    /// Finished: the outcome goes to the caller.
    Done(Result<Res, Error>),
}

impl<Req, B: Backend<Req>> Runner<Req, B> {
    /// Takes `job` unless it is to be skipped.
    fn start(self: Pin<&mut Self>, job: Job<Req, B::Response>, now: Stamp) {
        let this = self.project();
        if accept(this.inner, job, now, this.job) {
            this.inner.call_started(this.job.id);
        }
    }

    /// Runs the current job, then the queued ones; `Ready` once the queue
    /// is empty (the worker then waits with `recv`).
    fn poll_run(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let mut this = self.project();
        let inner = &**this.inner;
        let mut budget = BUDGET;
        loop {
            if this.job.reply.is_some() {
                let step = step(inner, this.backend, this.job, this.call.as_mut(), cx);
                let result = match step {
                    Step::Pending => return Poll::Pending,
                    Step::Abandoned => {
                        bump(&inner.per_worker[this.job.id].abandoned);
                        tracing::debug!(
                            layer = %inner.name,
                            "queue dropped a running call: its caller left"
                        );
                        None
                    }
                    Step::Done(result) => Some(result),
                };
                // The call is dropped in the caller's context, before the
                // caller hears of it; a panic while dropping it stays here.
                let _ = catch_unwind(AssertUnwindSafe(|| this.call.set(Call::Idle)));
                let reply = this.job.reply.take().expect("a job is running");
                // Left by a `poll_ready` error (or a panic before the call);
                // a request not called is dropped with the reply.
                this.job.ctx = None;
                inner.call_ended(this.job.id);
                if let Some(result) = result {
                    answer(inner, reply, result);
                }
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            let mut now = Stamp::default();
            let Some(job) = take(inner, None, &mut now) else {
                return Poll::Ready(());
            };
            if accept(inner, job, now, this.job) {
                inner.call_started(this.job.id);
            }
        }
    }
}

/// Takes the next job off the queue; the first caller waiting for space
/// (if any) gets the place it freed, and its wait in the queue starts now.
/// Returns the job, and sets `now` to when it was taken (a clock reading
/// when the wait histogram records, reused for the job's deadline check).
///
/// With `idle` (worker id and its task's context), a worker that finds the
/// queue empty and open leaves its waker in the queue, under the same lock
/// hold; one that takes a job is counted busy.
#[inline]
fn take<Req, Res>(
    inner: &Inner<Req, Res>,
    idle: Option<(usize, &TaskContext<'_>)>,
    now: &mut Stamp,
) -> Option<Job<Req, Res>> {
    let (
        Taken {
            job,
            promoted,
            wake,
            placed,
        },
        taken_at,
    ) = {
        let mut core = inner.core();
        let taken = core.take(|| inner.metrics.now(), |next, now| next.restamp(now));
        if let Some((id, cx)) = idle {
            if taken.is_some() {
                core.set_busy(id);
            } else if !core.is_closed() {
                core.set_idle(id, cx.waker());
            }
        }
        taken?
    };
    inner.metrics.depth.decrement(1.0);
    if promoted {
        inner.metrics.depth.increment(1.0);
        // An idle worker takes it if this one is busy with `job`.
        if let Some(w) = wake {
            w.wake();
        }
        if let Some(placed) = placed {
            let _ = placed.send(());
        }
    }
    *now = taken_at;
    Some(job)
}

/// Makes `job` the one `running` runs (its context moved from the slot
/// into `running`), unless it is skipped: its caller left,
/// or it was cancelled or passed its deadline (then its caller is told
/// so). Returns whether it runs.
#[inline]
fn accept<Req, Res>(
    inner: &Inner<Req, Res>,
    job: Job<Req, Res>,
    now: Stamp,
    running: &mut Running<Req, Res>,
) -> bool {
    debug_assert!(running.reply.is_none(), "one job at a time");
    let (gone, queued) = job.take_context_into(&mut running.ctx);
    inner.metrics.waited(queued, now);
    let Some(reason) = skip_reason(inner.detach, gone, running.ctx.as_ref(), now) else {
        running.reply = Some(job);
        running.waited_ready = false;
        return true;
    };
    bump(&inner.per_worker[running.id].skipped);
    inner.metrics.skipped.increment(1);
    tracing::debug!(
        layer = %inner.name,
        request_id = ?running.ctx.as_ref().and_then(Context::request_id),
        reason = match &reason {
            Skip::CallerLeft => "caller left",
            Skip::Refused(_) => "cancelled or past its deadline",
        },
        "queue skipped a request before running it"
    );
    // A caller that left hears nothing; its slot goes back to the pool.
    job.fail(
        match reason {
            Skip::CallerLeft => Error::cancelled(),
            Skip::Refused(err) => err,
        },
        &inner.pool,
    );
    running.ctx = None;
    false
}

/// Answers the caller of `job` (a fire-and-forget job's failure is logged).
#[inline]
fn answer<Req, Res>(inner: &Inner<Req, Res>, reply: Reply<Req, Res>, result: Result<Res, Error>) {
    if !reply.wants_answer()
        && let Err(e) = &result
    {
        tracing::debug!(
            layer = %inner.name,
            error = %e,
            "queue: a fire-and-forget job failed"
        );
    }
    reply.send(result, &inner.pool);
}

/// Polls the running job: calls the inner service once it is ready (in the
/// caller's context), then drives the call; a panic anywhere fails this job
/// only. Gives up when the caller leaves, unless detached.
#[inline]
fn step<Req, B: Backend<Req>>(
    inner: &Inner<Req, B::Response>,
    backend: &mut B,
    job: &mut Running<Req, B::Response>,
    mut call: Pin<&mut Call<B::Future>>,
    cx: &mut TaskContext<'_>,
) -> Step<B::Response> {
    // A job that waited for the inner service's readiness is not called
    // once its caller has left (unless detached): the inner service never
    // sees abandoned work, even when it becomes ready in the same wake-up.
    if job.waited_ready
        && !inner.detach
        && matches!(call.as_mut().project(), CallProj::Idle)
        && let Some(reply) = job.reply.as_ref()
        && reply.wants_answer()
        && reply.caller_gone()
    {
        return Step::Abandoned;
    }
    let polled = catch_unwind(AssertUnwindSafe(
        || -> Poll<Result<B::Response, B::Error>> {
            if let CallProj::Idle = call.as_mut().project() {
                let reply = job.reply.as_ref().expect("a job is running");
                let req = || reply.take_request();
                let ready = match job.ctx {
                    // Lent, not cloned: the call's future takes it next.
                    Some(_) => Context::lend(&mut job.ctx, || backend.poll_call(cx, req)),
                    None => backend.poll_call(cx, req),
                };
                match ready {
                    Poll::Ready(Ok(fut)) => match job.ctx.take() {
                        Some(ctx) => call.set(Call::Scoped {
                            fut: ctx.scope(fut),
                        }),
                        None => call.set(Call::Bare { fut }),
                    },
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        job.waited_ready = true;
                        return Poll::Pending;
                    }
                }
            }
            match call.as_mut().project() {
                CallProj::Scoped { fut } => fut.poll(cx),
                CallProj::Bare { fut } => fut.poll(cx),
                CallProj::Idle => unreachable!("a call was just made"),
            }
        },
    ));
    let result = match polled {
        Ok(Poll::Pending) => {
            if !inner.detach
                && let Some(reply) = job.reply.as_mut()
                && reply.wants_answer()
                && reply.poll_caller_gone(cx).is_ready()
            {
                return Step::Abandoned;
            }
            return Step::Pending;
        }
        Ok(Poll::Ready(Ok(res))) => {
            bump(&inner.per_worker[job.id].completed);
            inner.metrics.completed.increment(1);
            Ok(res)
        }
        Ok(Poll::Ready(Err(e))) => {
            let counters = &inner.per_worker[job.id];
            bump(&counters.completed);
            inner.metrics.completed.increment(1);
            bump(&counters.failed);
            Err(Error::from_inner(e))
        }
        Err(payload) => {
            bump(&inner.per_worker[job.id].panicked);
            inner.metrics.panicked.increment(1);
            let panicked = Panicked::from_payload(&*payload);
            // The context for the log (the broken call is dropped next,
            // without it).
            let request_id = match call.as_mut().project() {
                CallProj::Scoped { fut } => fut.take_context().and_then(Context::into_request_id),
                _ => job.ctx.as_ref().and_then(Context::request_id).cloned(),
            };
            tracing::warn!(
                layer = %inner.name,
                request_id = ?request_id,
                message = panicked.message(),
                "queue worker: the inner service panicked; this request fails, the worker keeps serving"
            );
            Err(Error::from_inner(panicked))
        }
    };
    Step::Done(result)
}
