//! [`Queue`]: the service in front of the workers, and the handle that
//! submits fire-and-forget jobs, closes, drains and reports.

use crate::config::{MAX_CAPACITY, QueueConfig, WhenFull};
use crate::future::{Bounds, ResponseFuture, State};
use crate::metrics::Stamp;
use crate::slot::{Answer, Pool};
use crate::stats::{Drained, Stats};
use crate::worker::{Backend, Inner, Job, Owned, Shared, worker};
use rampart_core::telemetry::LayerName;
use rampart_core::{BoxError, Context, Error};
use std::fmt;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::sync::TryAcquireError;
use tokio::time::Instant;
use tower_service::Service;

/// A bounded queue in front of a pool of workers that call the inner
/// service: the service [`QueueLayer`](crate::QueueLayer) builds, and the
/// handle to submit jobs, [`close`](Queue::close), [`drain`](Queue::drain)
/// and read [`stats`](Queue::stats).
///
/// Every clone is a handle on the same queue and workers. The workers stop
/// when the queue is closed and empty, which also happens when the last
/// handle is dropped.
///
/// `poll_ready` is always ready: whether a request is accepted is decided
/// in the call (queued, waiting for space, or refused with `Overloaded` or
/// `Closed`), so a timeout or deadline around it bounds the wait.
pub struct Queue<Req, Res> {
    handle: Arc<Handle<Req, Res>>,
}

/// What every clone of a [`Queue`] shares; dropping the last one closes
/// the queue (the workers finish what is queued and stop).
struct Handle<Req, Res> {
    tx: async_channel::Sender<Job<Req, Res>>,
    inner: Arc<Inner<Req, Res>>,
}

impl<Req, Res> Drop for Handle<Req, Res> {
    fn drop(&mut self) {
        self.tx.close();
        self.inner.space.close();
        self.inner.work.notify_waiters();
    }
}

/// Reserves a place in the queue now: `Ok(false)` when it is full.
fn try_reserve<Req, Res>(inner: &Inner<Req, Res>) -> Result<bool, Error> {
    match inner.space.try_acquire() {
        Ok(permit) => {
            // Given back by the worker that takes the job off the queue.
            permit.forget();
            Ok(true)
        }
        Err(TryAcquireError::NoPermits) => Ok(false),
        Err(TryAcquireError::Closed) => Err(Error::closed()),
    }
}

/// Queues a job whose place is reserved, and wakes an idle worker.
// Inlined: with the `metrics` feature the compiler stops inlining it on
// its own, and the call copies the job once more (measured under
// callgrind: 40 instructions per request more).
#[allow(clippy::inline_always)]
#[inline(always)]
fn push<Req, Res>(
    tx: &async_channel::Sender<Job<Req, Res>>,
    inner: &Inner<Req, Res>,
    job: Job<Req, Res>,
) -> Result<(), Error> {
    // Counted before a worker can take it, so the gauge never dips below 0.
    inner.metrics.depth.increment(1.0);
    // Never full: the reserved places are as many as the channel's slots.
    if tx.try_send(job).is_err() {
        inner.metrics.depth.decrement(1.0);
        return Err(Error::closed());
    }
    inner.work.notify_one();
    Ok(())
}

/// Counts and logs a request refused because the queue was full.
#[cold]
fn shed<Req, Res>(inner: &Inner<Req, Res>, why: &'static str) -> Error {
    inner.counters.shed.fetch_add(1, Relaxed);
    inner.metrics.shed.increment(1);
    tracing::debug!(layer = %inner.name, why, "queue shed a request");
    Error::overloaded(inner.retry_after)
}

/// Waits for a place (first come, first served: tokio's semaphore), for at
/// most the queue's `max_wait` (then `Overloaded`), and queues `job`; with
/// `answer`, the job gets an answer slot (taken only now, so callers
/// waiting for space hold none) and the caller's half is returned.
async fn wait_and_push<Req, Res>(
    tx: async_channel::Sender<Job<Req, Res>>,
    inner: Arc<Inner<Req, Res>>,
    mut job: Job<Req, Res>,
    answer: bool,
) -> Result<Option<Answer<Res>>, Error> {
    let give_up_at = inner.max_wait.and_then(|w| Instant::now().checked_add(w));
    let acquire = Arc::clone(&inner.space).acquire_owned();
    let permit = match give_up_at {
        None => acquire.await,
        Some(at) => {
            let Ok(permit) = tokio::time::timeout_at(at, acquire).await else {
                return Err(shed(&inner, "max_wait passed while full"));
            };
            permit
        }
    };
    permit.map_err(|_| Error::closed())?.forget();
    // Its wait in the queue starts now.
    job.stamp = Stamp::now();
    let answer = answer.then(|| {
        let (reply, answer) = Pool::pair(&inner.pool);
        job.reply = Some(reply);
        answer
    });
    push(&tx, &inner, job)?;
    Ok(answer)
}

impl<Req, Res> Clone for Queue<Req, Res> {
    fn clone(&self) -> Self {
        Queue {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<Req, Res> fmt::Debug for Queue<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<Req, Res> Queue<Req, Res>
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    /// A queue of `capacity` requests in front of `workers` workers, each
    /// with its own clone of `service`. A zero `capacity` or `workers`
    /// counts as 1, a `capacity` over [`MAX_CAPACITY`](crate::MAX_CAPACITY)
    /// as that maximum (use [`QueueLayer::builder`](crate::QueueLayer::builder)
    /// to have them refused instead).
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (the workers are spawned on the
    /// current one).
    pub fn new<S>(service: S, capacity: usize, workers: usize) -> Self
    where
        S: Service<Req, Response = Res> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
    {
        let cfg = QueueConfig {
            capacity: capacity.clamp(1, MAX_CAPACITY),
            workers: workers.max(1),
            ..QueueConfig::default()
        };
        Queue::per_worker(service, &cfg, LayerName::default())
    }

    /// A queue of `capacity` requests in front of `workers` workers that
    /// share one `service`, which need not be `Clone`: `poll_ready` and
    /// `call` run under a lock (held only for those two), the calls' futures
    /// run concurrently. Zero counts as 1, a `capacity` over
    /// [`MAX_CAPACITY`](crate::MAX_CAPACITY) as that maximum.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (the workers are spawned on the
    /// current one).
    pub fn new_shared<S>(service: S, capacity: usize, workers: usize) -> Self
    where
        S: Service<Req, Response = Res> + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
    {
        let cfg = QueueConfig {
            capacity: capacity.clamp(1, MAX_CAPACITY),
            workers: workers.max(1),
            ..QueueConfig::default()
        };
        Queue::shared(service, &cfg, LayerName::default())
    }

    /// `cfg` must be checked; the metrics are registered under `name`.
    pub(crate) fn per_worker<S>(service: S, cfg: &QueueConfig, name: LayerName) -> Self
    where
        S: Service<Req, Response = Res> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
    {
        let mut service = Some(service);
        Queue::spawn(cfg, name, |i| {
            // The last worker takes the original: n workers, n - 1 clones.
            let s = if i + 1 == cfg.workers {
                service.take().expect("the original is taken last")
            } else {
                service.clone().expect("the original is taken last")
            };
            Owned(s)
        })
    }

    /// `cfg` must be checked; the metrics are registered under `name`.
    pub(crate) fn shared<S>(service: S, cfg: &QueueConfig, name: LayerName) -> Self
    where
        S: Service<Req, Response = Res> + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
    {
        let service = Arc::new(Mutex::new(service));
        Queue::spawn(cfg, name, |_| Shared(Arc::clone(&service)))
    }

    fn spawn<B>(cfg: &QueueConfig, name: LayerName, mut backend: impl FnMut(usize) -> B) -> Self
    where
        B: Backend<Req, Response = Res>,
        B::Future: Send,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            panic!("rampart-queue: a Queue must be built inside a Tokio runtime");
        };
        let (tx, rx) = async_channel::bounded(cfg.capacity);
        let inner = Arc::new(Inner::new(rx, cfg, name));
        let aborts = (0..cfg.workers)
            .map(|i| {
                rt.spawn(worker(Arc::clone(&inner), backend(i)))
                    .abort_handle()
            })
            .collect();
        *inner.aborts.lock().unwrap_or_else(PoisonError::into_inner) = aborts;
        Queue {
            handle: Arc::new(Handle { tx, inner }),
        }
    }
}

impl<Req, Res> Queue<Req, Res> {
    /// The name of the layer that built this queue (`"default"` when it was
    /// given none, or for [`Queue::new`]): the `layer` label of its metrics
    /// and the `layer` field of its tracing events.
    pub fn layer_name(&self) -> &str {
        self.handle.inner.name.as_str()
    }

    /// A snapshot of the queue's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.handle.inner.counters;
        Stats {
            capacity: self.handle.inner.capacity,
            workers: self.handle.inner.workers,
            live_workers: self.handle.inner.live.load(Relaxed),
            queued: self.handle.inner.rx.len(),
            running: self.handle.inner.running.load(Relaxed),
            completed: c.completed.load(Relaxed),
            failed: c.failed.load(Relaxed),
            shed: c.shed.load(Relaxed),
            skipped: c.skipped.load(Relaxed),
            panicked: c.panicked.load(Relaxed),
            abandoned: c.abandoned.load(Relaxed),
        }
    }

    /// Stops accepting requests: from now on calls and submissions fail
    /// with [`ErrorKind::Closed`](rampart_core::ErrorKind::Closed). What is
    /// queued still runs; every worker stops once the queue is empty.
    /// Returns `false` if it was already closed.
    pub fn close(&self) -> bool {
        let closed = self.handle.tx.close();
        self.handle.inner.space.close();
        // Idle workers wake, find the queue closed (once empty) and stop.
        self.handle.inner.work.notify_waiters();
        if closed {
            tracing::debug!(
                layer = %self.handle.inner.name,
                queued = self.handle.inner.rx.len(),
                "queue closed"
            );
        }
        closed
    }

    /// True once [`close`](Queue::close) was called (or every handle was
    /// dropped).
    pub fn is_closed(&self) -> bool {
        self.handle.tx.is_closed()
    }

    /// Resolves when every worker has stopped (after [`close`](Queue::close)
    /// and the queue ran empty, or after a [`drain`](Queue::drain) deadline).
    pub async fn stopped(&self) {
        loop {
            let mut notified = pin!(self.handle.inner.stopped.notified());
            notified.as_mut().enable();
            if self.handle.inner.live.load(Relaxed) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Closes the queue and lets the workers finish what is queued and
    /// running, for at most `timeout`. At the deadline every worker is
    /// stopped: the running calls are dropped and the queued requests are
    /// failed, both with [`ErrorKind::Closed`](rampart_core::ErrorKind::Closed).
    /// A zero `timeout` drops everything at once. Resolves once every worker
    /// has stopped.
    pub async fn drain(&self, timeout: Duration) -> Drained {
        self.close();
        let started = Instant::now();
        if tokio::time::timeout(timeout, self.stopped()).await.is_ok() {
            return Drained {
                in_time: true,
                queued_dropped: 0,
                running_dropped: 0,
                took: started.elapsed(),
            };
        }
        let running = self.handle.inner.running.load(Relaxed);
        for h in self
            .handle
            .inner
            .aborts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            h.abort();
        }
        let mut queued = self.fail_queued();
        self.stopped().await;
        // A worker may have taken a job between the abort and its stop.
        queued += self.fail_queued();
        tracing::debug!(
            layer = %self.handle.inner.name,
            queued_dropped = queued,
            running_dropped = running,
            "queue drain deadline: workers stopped"
        );
        Drained {
            in_time: false,
            queued_dropped: queued,
            running_dropped: running,
            took: started.elapsed(),
        }
    }

    /// Fails every queued job with `Closed` (a drain deadline); returns how
    /// many.
    fn fail_queued(&self) -> usize {
        let inner = &self.handle.inner;
        let mut n = 0;
        while let Ok(job) = inner.rx.try_recv() {
            inner.metrics.depth.decrement(1.0);
            job.fail(Error::closed(), &inner.pool);
            n += 1;
        }
        n
    }

    /// Accepts a job without waiting for its result (the producer side of
    /// the article): waits for space while the queue is full, bounded by
    /// the current [`Context`]'s deadline (`DeadlineExceeded`) and
    /// cancellation (`Cancelled`) and by the queue's `max_wait`
    /// (`Overloaded`). Fails with `Closed` once the queue is closed. The job
    /// runs in the current [`Context`]; its outcome is logged, not returned.
    pub async fn submit(&self, req: Req) -> Result<(), Error> {
        let ctx = Context::current();
        if let Some(err) = refused(ctx.as_ref()) {
            return Err(err);
        }
        let deadline = ctx.as_ref().and_then(Context::deadline);
        let cancel = ctx.as_ref().and_then(Context::cancellation).cloned();
        let job = Job::new(req, ctx);
        if try_reserve(&self.handle.inner)? {
            return push(&self.handle.tx, &self.handle.inner, job);
        }
        let send = async {
            wait_and_push(
                self.handle.tx.clone(),
                Arc::clone(&self.handle.inner),
                job,
                false,
            )
            .await
            .map(drop)
        };
        let cancelled = async {
            match &cancel {
                Some(t) => t.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = send => r,
            () = cancelled => Err(Error::cancelled()),
            () = timer => Err(Error::deadline_exceeded()),
        }
    }

    /// Accepts a job without waiting for space or for its result: fails at
    /// once with `Overloaded` when the queue is full, `Closed` when closed.
    pub fn try_submit(&self, req: Req) -> Result<(), Error> {
        let ctx = Context::current();
        if let Some(err) = refused(ctx.as_ref()) {
            return Err(err);
        }
        let job = Job::new(req, ctx);
        if try_reserve(&self.handle.inner)? {
            push(&self.handle.tx, &self.handle.inner, job)
        } else {
            Err(shed(&self.handle.inner, "full"))
        }
    }
}

/// A request already cancelled or past its deadline is refused at once.
fn refused(ctx: Option<&Context>) -> Option<Error> {
    let ctx = ctx?;
    if ctx.is_cancelled() {
        Some(Error::cancelled())
    } else if ctx.is_expired() {
        Some(Error::deadline_exceeded())
    } else {
        None
    }
}

impl<Req, Res> Service<Req> for Queue<Req, Res>
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = Error;
    type Future = ResponseFuture<Res>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let ctx = Context::current();
        let mut bounds = None;
        if let Some(ctx) = &ctx {
            if let Some(err) = refused(Some(ctx)) {
                return ResponseFuture::failed(err);
            }
            bounds = Bounds::new(
                ctx.deadline(),
                ctx.cancellation().map(|t| t.clone().cancelled_owned()),
            );
        }
        let mut job = Job::new(req, ctx);
        let reserved = match try_reserve(&self.handle.inner) {
            Ok(reserved) => reserved,
            Err(e) => return ResponseFuture::failed(e),
        };
        let state = if reserved {
            let (reply, answer) = Pool::pair(&self.handle.inner.pool);
            job.reply = Some(reply);
            if let Err(e) = push(&self.handle.tx, &self.handle.inner, job) {
                return ResponseFuture::failed(e);
            }
            State::Waiting { answer }
        } else {
            match self.handle.inner.when_full {
                WhenFull::Shed => {
                    return ResponseFuture::failed(shed(&self.handle.inner, "full"));
                }
                WhenFull::Wait => State::Sending {
                    send: Box::pin(wait_and_push(
                        self.handle.tx.clone(),
                        Arc::clone(&self.handle.inner),
                        job,
                        true,
                    )),
                },
            }
        };
        ResponseFuture::new(state, bounds)
    }
}
