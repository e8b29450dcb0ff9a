//! The workers: each takes jobs from the shared channel and drives one call
//! at a time to completion.

use crate::config::{QueueConfig, WhenFull};
use crate::error::Panicked;
use futures_util::FutureExt;
use rampart_core::{BoxError, Context, Error, RequestId};
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;
use tower_service::Service;

/// Where a caller waits for its outcome.
pub(crate) type Reply<Res> = oneshot::Sender<Result<Res, Error>>;

/// One accepted request.
pub(crate) struct Job<Req, Res> {
    pub(crate) req: Req,
    /// The caller's context, in scope while the call runs.
    pub(crate) ctx: Option<Context>,
    /// `None` for a fire-and-forget job ([`Queue::submit`](crate::Queue::submit)).
    pub(crate) reply: Option<Reply<Res>>,
}

impl<Req, Res> Job<Req, Res> {
    /// Answers the caller (if it still listens) with `err`.
    pub(crate) fn fail(self, err: Error) {
        if let Some(reply) = self.reply {
            let _ = reply.send(Err(err));
        }
    }
}

/// Counters behind [`Stats`](crate::Stats).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) shed: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) abandoned: AtomicU64,
}

/// State shared by every handle of one queue and by its workers.
pub(crate) struct Inner<Req, Res> {
    /// The workers' end of the channel (one receiver, shared); also used to
    /// fail what is left at a drain deadline.
    pub(crate) rx: async_channel::Receiver<Job<Req, Res>>,
    pub(crate) capacity: usize,
    pub(crate) workers: usize,
    pub(crate) when_full: WhenFull,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) detach: bool,
    pub(crate) running: AtomicUsize,
    pub(crate) live: AtomicUsize,
    pub(crate) counters: Counters,
    /// Notified when the last worker exits.
    pub(crate) stopped: Notify,
    pub(crate) aborts: Mutex<Vec<AbortHandle>>,
}

impl<Req, Res> Inner<Req, Res> {
    pub(crate) fn new(rx: async_channel::Receiver<Job<Req, Res>>, cfg: &QueueConfig) -> Self {
        Inner {
            rx,
            capacity: cfg.capacity,
            workers: cfg.workers,
            when_full: cfg.when_full,
            max_wait: cfg.max_wait,
            retry_after: cfg.retry_after,
            detach: cfg.detach,
            running: AtomicUsize::new(0),
            live: AtomicUsize::new(cfg.workers),
            counters: Counters::default(),
            stopped: Notify::new(),
            aborts: Mutex::new(Vec::new()),
        }
    }
}

/// How a worker reaches the inner service: its own clone, or one service
/// shared by every worker behind a lock held only for `poll_ready` + `call`.
pub(crate) trait Backend<Req>: Send + 'static {
    type Response;
    type Error: Into<BoxError>;
    type Future: Future<Output = Result<Self::Response, Self::Error>>;

    /// Polls readiness and, once ready, calls with the request taken from
    /// `req` (left in place while pending).
    fn poll_call(
        &mut self,
        cx: &mut TaskContext<'_>,
        req: &mut Option<Req>,
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
        req: &mut Option<Req>,
    ) -> Poll<Result<S::Future, S::Error>> {
        match self.0.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                let req = req.take().expect("a request is called once");
                Poll::Ready(Ok(self.0.call(req)))
            }
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
        req: &mut Option<Req>,
    ) -> Poll<Result<S::Future, S::Error>> {
        // A panic in the inner service poisons the lock; the service is
        // still the one the user gave, keep using it.
        let mut svc = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match svc.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                let req = req.take().expect("a request is called once");
                Poll::Ready(Ok(svc.call(req)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Decrements the live-worker count when a worker ends (also when its task
/// is aborted at a drain deadline) and wakes whoever waits for all of them.
struct LiveGuard<'a, Req, Res>(&'a Inner<Req, Res>);

impl<Req, Res> Drop for LiveGuard<'_, Req, Res> {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Relaxed) == 1 {
            self.0.stopped.notify_waiters();
        }
    }
}

/// Counts a running call for as long as it runs (or until it is dropped).
struct RunningGuard<'a>(&'a AtomicUsize);

impl<'a> RunningGuard<'a> {
    fn new(running: &'a AtomicUsize) -> Self {
        running.fetch_add(1, Relaxed);
        RunningGuard(running)
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A worker: takes jobs until the channel is closed and empty.
pub(crate) async fn worker<Req, B>(inner: Arc<Inner<Req, B::Response>>, mut backend: B)
where
    B: Backend<Req>,
{
    let inner = &*inner;
    let _live = LiveGuard(inner);
    while let Ok(job) = inner.rx.recv().await {
        run(inner, &mut backend, job).await;
    }
    tracing::debug!("queue worker stopped: queue closed and empty");
}

/// Why a job is not run.
enum Skip {
    /// Its caller dropped the response future.
    CallerLeft,
    /// Its context was cancelled or passed its deadline: the caller is
    /// told so (if it still listens).
    Refused(Error),
}

fn skip_reason<Req, Res>(inner: &Inner<Req, Res>, job: &Job<Req, Res>) -> Option<Skip> {
    if let Some(reply) = &job.reply
        && !inner.detach
        && reply.is_closed()
    {
        return Some(Skip::CallerLeft);
    }
    let ctx = job.ctx.as_ref()?;
    if ctx.is_cancelled() {
        Some(Skip::Refused(Error::cancelled()))
    } else if ctx.is_expired() {
        Some(Skip::Refused(Error::deadline_exceeded()))
    } else {
        None
    }
}

/// Runs one job: skips it if its caller left (or its context was cancelled
/// or expired), else calls the inner service inside the caller's context and
/// answers the caller, dropping the call if the caller leaves meanwhile
/// (unless detached). A panic fails this job only.
async fn run<Req, B>(inner: &Inner<Req, B::Response>, backend: &mut B, job: Job<Req, B::Response>)
where
    B: Backend<Req>,
{
    if let Some(reason) = skip_reason(inner, &job) {
        inner.counters.skipped.fetch_add(1, Relaxed);
        tracing::debug!(
            request_id = ?job.ctx.as_ref().and_then(Context::request_id),
            reason = match &reason {
                Skip::CallerLeft => "caller left",
                Skip::Refused(_) => "cancelled or past its deadline",
            },
            "queue skipped a request before running it"
        );
        if let Skip::Refused(err) = reason {
            job.fail(err);
        }
        return;
    }
    let Job { req, ctx, reply } = job;
    let _running = RunningGuard::new(&inner.running);
    let mut req = Some(req);
    let call = async {
        let fut = poll_fn(|cx| backend.poll_call(cx, &mut req)).await?;
        fut.await
    };
    match ctx {
        Some(ctx) => {
            let id = ctx.request_id().cloned();
            drive(inner, ctx.scope(call), reply, id).await;
        }
        None => drive(inner, call, reply, None).await,
    }
}

/// Drives `call` (panics caught) and answers `reply`; gives up when the
/// caller leaves, unless detached.
async fn drive<Res, E, F>(
    inner: &Inner<impl Sized, Res>,
    call: F,
    reply: Option<Reply<Res>>,
    request_id: Option<RequestId>,
) where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    let mut call = pin!(AssertUnwindSafe(call).catch_unwind());
    let result = match reply {
        Some(mut reply) if !inner.detach => {
            let done = poll_fn(|cx| {
                if let Poll::Ready(r) = call.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if reply.poll_closed(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            let Some(r) = done else {
                inner.counters.abandoned.fetch_add(1, Relaxed);
                tracing::debug!("queue dropped a running call: its caller left");
                return;
            };
            (r, Some(reply))
        }
        reply => (call.await, reply),
    };
    let (result, reply) = result;
    let result = match result {
        Ok(Ok(res)) => {
            inner.counters.completed.fetch_add(1, Relaxed);
            Ok(res)
        }
        Ok(Err(e)) => {
            inner.counters.completed.fetch_add(1, Relaxed);
            inner.counters.failed.fetch_add(1, Relaxed);
            Err(Error::from_inner(e))
        }
        Err(payload) => {
            inner.counters.panicked.fetch_add(1, Relaxed);
            let panicked = Panicked::from_payload(&*payload);
            tracing::warn!(
                request_id = ?request_id,
                message = panicked.message(),
                "queue worker: the inner service panicked; this request fails, the worker keeps serving"
            );
            Err(Error::from_inner(panicked))
        }
    };
    match reply {
        Some(reply) => {
            let _ = reply.send(result);
        }
        None => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "queue: a fire-and-forget job failed");
            }
        }
    }
}
