//! [`Queue`]: the service in front of the workers, and the handle that
//! submits fire-and-forget jobs, closes, drains and reports.

use crate::config::{MAX_CAPACITY, QueueConfig, WhenFull};
use crate::core::Refused;
use crate::future::{Bounds, ResponseFuture, State, WaitingForSpace};
use crate::metrics::{Stamp, expired_at};
use crate::slot::Pool;
use crate::stats::{Drained, Stats};
use crate::worker::{Backend, Inner, Job, Owned, Shared, WorkerCounters, worker};
use rampart_core::telemetry::LayerName;
use rampart_core::{BoxError, Context, Error};
use std::fmt;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
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
    inner: Arc<Inner<Req, Res>>,
}

impl<Req, Res> Drop for Handle<Req, Res> {
    fn drop(&mut self) {
        self.inner.close();
    }
}

/// Counts and logs a request refused because the queue was full.
#[cold]
pub(crate) fn shed<Req, Res>(inner: &Inner<Req, Res>, why: &'static str) -> Error {
    inner.counters.shed.fetch_add(1, Relaxed);
    inner.metrics.shed.increment(1);
    tracing::debug!(layer = %inner.name, why, "queue shed a request");
    Error::overloaded(inner.retry_after)
}

/// Where a job went when offered to the queue.
enum Offer {
    /// Queued (an idle worker, if any, was woken).
    Queued,
    /// Waiting for space behind the other waiters, with this ticket.
    Waiting(u64),
}

/// Offers `job` to the queue: queued if there is a place, else refused
/// (`Closed`, or `Overloaded` when `wait` is false: the job is dropped,
/// its caller told), else left waiting for space; `placed` is told when a
/// waiting job gets its place.
#[inline]
fn offer<Req, Res>(
    inner: &Inner<Req, Res>,
    job: Job<Req, Res>,
    wait: bool,
    placed: impl FnOnce() -> Option<oneshot::Sender<()>>,
) -> Result<Offer, Error> {
    // Counted before a worker can take it, so the gauge never dips below 0.
    inner.metrics.depth.increment(1.0);
    let mut core = inner.core();
    let refused = match core.push(job) {
        Ok(wake) => {
            drop(core);
            // An idle worker, if any (none while all are busy).
            if let Some(w) = wake {
                w.wake();
            }
            return Ok(Offer::Queued);
        }
        Err(Refused::Full(job)) if wait => {
            let ticket = core.wait(job, placed());
            drop(core);
            inner.metrics.depth.decrement(1.0);
            return Ok(Offer::Waiting(ticket));
        }
        Err(Refused::Full(job)) => (job, false),
        Err(Refused::Closed(job)) => (job, true),
    };
    drop(core);
    inner.metrics.depth.decrement(1.0);
    let (job, closed) = refused;
    let err = if closed {
        Error::closed()
    } else {
        shed(inner, "full")
    };
    // The caller gets `err` from here; its answer slot goes back.
    job.fail(Error::cancelled(), &inner.pool);
    Err(err)
}

/// Takes back the job of a caller that waited for space and gives up
/// (`max_wait`, its deadline or cancellation, or its future dropped):
/// true if it still waited (its job is dropped, never queued), false if a
/// worker had already given it a place (or the queue closed).
pub(crate) trait Leave: Send + Sync {
    fn leave(&self, ticket: u64) -> bool;
    /// Counts a shed for `max_wait` and returns its error.
    fn shed_max_wait(&self) -> Error;
}

/// See [`Leave::leave`].
fn leave<Req, Res>(inner: &Inner<Req, Res>, ticket: u64) -> bool {
    let Some(job) = inner.core().leave(ticket) else {
        return false;
    };
    // Its answer slot goes back to the pool (the caller is leaving).
    job.fail(Error::cancelled(), &inner.pool);
    true
}

impl<Req: Send, Res: Send> Leave for Inner<Req, Res> {
    fn leave(&self, ticket: u64) -> bool {
        leave(self, ticket)
    }

    fn shed_max_wait(&self) -> Error {
        shed(self, "max_wait passed while full")
    }
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
        let inner = Arc::new(Inner::new(cfg, name));
        let aborts = (0..cfg.workers)
            .map(|i| {
                rt.spawn(worker(Arc::clone(&inner), i, backend(i)))
                    .abort_handle()
            })
            .collect();
        *inner.aborts.lock().unwrap_or_else(PoisonError::into_inner) = aborts;
        Queue {
            handle: Arc::new(Handle { inner }),
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
        let sum = |field: fn(&WorkerCounters) -> u64| {
            WorkerCounters::sum(&self.handle.inner.per_worker, field)
        };
        let core = self.handle.inner.core();
        Stats {
            capacity: self.handle.inner.capacity,
            workers: self.handle.inner.workers,
            live_workers: self.handle.inner.live.load(Relaxed),
            queued: core.len(),
            waiting: core.waiting(),
            running: self.handle.inner.running(),
            completed: sum(|w| w.completed.load(Relaxed)),
            failed: sum(|w| w.failed.load(Relaxed)),
            shed: c.shed.load(Relaxed),
            skipped: sum(|w| w.skipped.load(Relaxed)),
            panicked: sum(|w| w.panicked.load(Relaxed)),
            abandoned: sum(|w| w.abandoned.load(Relaxed)),
        }
    }

    /// Stops accepting requests: from now on calls and submissions fail
    /// with [`ErrorKind::Closed`](rampart_core::ErrorKind::Closed). What is
    /// queued still runs; every worker stops once the queue is empty.
    /// Returns `false` if it was already closed.
    pub fn close(&self) -> bool {
        self.handle.inner.close()
    }

    /// True once [`close`](Queue::close) was called (or every handle was
    /// dropped).
    pub fn is_closed(&self) -> bool {
        self.handle.inner.core().is_closed()
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
        let running = self.handle.inner.running();
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
        let jobs = inner.core().take_all();
        let n = jobs.len();
        if n > 0 {
            inner.metrics.depth.decrement(n as f64);
        }
        for job in jobs {
            job.fail(Error::closed(), &inner.pool);
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
        let inner = &self.handle.inner;
        // One clock reading (when the wait histogram records) for it and the
        // deadline check, which reads the clock itself otherwise.
        let now = inner.metrics.now();
        if let Some(err) = refused(ctx.as_ref(), now) {
            return Err(err);
        }
        let deadline = ctx.as_ref().and_then(Context::deadline);
        let cancel = ctx.as_ref().and_then(Context::cancellation).cloned();
        let mut placed = None;
        let job = inner.pool.unanswered(req, ctx, || now);
        let ticket = match offer(inner, job, true, || {
            let (tx, rx) = oneshot::channel();
            placed = Some(rx);
            Some(tx)
        })? {
            Offer::Queued => return Ok(()),
            Offer::Waiting(ticket) => ticket,
        };
        let mut placed = placed.expect("a waiting submission is told when placed");
        // Takes the job back if this future is dropped while it waits.
        let mut waiting = LeaveOnDrop {
            inner: &**inner,
            ticket: Some(ticket),
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
        let give_up = async {
            match inner.max_wait.and_then(|w| Instant::now().checked_add(w)) {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let err = tokio::select! {
            biased;
            r = &mut placed => {
                waiting.ticket = None;
                return r.map_err(|_| Error::closed());
            }
            () = cancelled => Error::cancelled(),
            () = timer => Error::deadline_exceeded(),
            () = give_up => Error::overloaded(inner.retry_after),
        };
        if waiting.leave() {
            if err.kind() == rampart_core::ErrorKind::Overloaded {
                return Err(shed(inner, "max_wait passed while full"));
            }
            return Err(err);
        }
        // A worker gave it a place just now (told next), or the queue
        // closed (the sender is dropped).
        placed.await.map_err(|_| Error::closed())
    }

    /// Accepts a job without waiting for space or for its result: fails at
    /// once with `Overloaded` when the queue is full, `Closed` when closed.
    pub fn try_submit(&self, req: Req) -> Result<(), Error> {
        let ctx = Context::current();
        let inner = &self.handle.inner;
        // One clock reading (when the wait histogram records) for it and the
        // deadline check, which reads the clock itself otherwise.
        let now = inner.metrics.now();
        if let Some(err) = refused(ctx.as_ref(), now) {
            return Err(err);
        }
        offer(
            inner,
            inner.pool.unanswered(req, ctx, || now),
            false,
            || None,
        )
        .map(drop)
    }
}

/// A request already cancelled or past its deadline (at `now`) is refused
/// at once.
fn refused(ctx: Option<&Context>, now: Stamp) -> Option<Error> {
    let ctx = ctx?;
    if ctx.is_cancelled() {
        Some(Error::cancelled())
    } else if expired_at(ctx, now) {
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
    type Future = ResponseFuture<Req, Res>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let ctx = Context::current();
        let inner = &self.handle.inner;
        let mut bounds = None;
        let mut early = None;
        if let Some(ctx) = &ctx {
            // One clock reading (when the wait histogram records) for it and
            // the deadline check, which reads the clock itself otherwise.
            let now = inner.metrics.now();
            if let Some(err) = refused(Some(ctx), now) {
                return ResponseFuture::failed(err);
            }
            early = Some(now);
            bounds = Bounds::new(
                ctx.deadline(),
                ctx.cancellation().map(|t| t.clone().cancelled_owned()),
            );
        }
        // Without a context, the queue's stamp is read as the slot is
        // filled (not kept across the pool's lock and allocation).
        let (job, answer) = Pool::pair(&inner.pool, req, ctx, || {
            early.unwrap_or_else(|| inner.metrics.now())
        });
        let wait = inner.when_full == WhenFull::Wait;
        let waiting = match offer(inner, job, wait, || None) {
            Ok(Offer::Queued) => None,
            Ok(Offer::Waiting(ticket)) => {
                // The wait for space ends at `max_wait` (then `Overloaded`).
                if let Some(at) = inner.max_wait.and_then(|w| Instant::now().checked_add(w)) {
                    bounds = Some(Bounds::with_give_up(bounds, at));
                }
                Some(WaitingForSpace::new(
                    Arc::clone(inner) as Arc<dyn Leave>,
                    ticket,
                ))
            }
            Err(e) => return ResponseFuture::failed(e),
        };
        ResponseFuture::new(State::Waiting { answer }, bounds, waiting)
    }
}

/// Takes a waiting submission's job back when its future is dropped (or
/// gives up) before a worker gave it a place.
struct LeaveOnDrop<'a, Req, Res> {
    inner: &'a Inner<Req, Res>,
    ticket: Option<u64>,
}

impl<Req, Res> LeaveOnDrop<'_, Req, Res> {
    /// True if the job still waited and was taken back.
    fn leave(&mut self) -> bool {
        self.ticket.take().is_some_and(|t| leave(self.inner, t))
    }
}

impl<Req, Res> Drop for LeaveOnDrop<'_, Req, Res> {
    fn drop(&mut self) {
        self.leave();
    }
}
