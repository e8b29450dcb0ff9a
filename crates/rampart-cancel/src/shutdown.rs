//! [`Shutdown`]: graceful drain of every request admitted by the
//! [`CancelLayer`](crate::CancelLayer)s that share it.

use rampart_core::telemetry::LayerName;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::waiters::Waiters;

/// How long [`Shutdown::drain`] waits, after cancelling the requests left at
/// its deadline, for them to unwind (their futures resolve on their next
/// poll, which the cancellation schedules at once) and for the async
/// cleanup hooks they started (each bounded by its own timeout).
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(1);

/// A graceful-shutdown handle for the requests of one or more
/// [`CancelLayer`](crate::CancelLayer)s.
///
/// [`drain`](Shutdown::drain) (1) stops admitting: new calls fail with
/// [`ErrorKind::Closed`](rampart_core::ErrorKind::Closed) (503 at the HTTP
/// edge), (2) waits for the requests in flight up to a drain deadline,
/// (3) cancels those still running (their cleanup hooks run) and (4)
/// reports the counts in a [`DrainReport`].
///
/// In-flight requests are tracked with tokio-util's [`TaskTracker`].
/// [`cancel_all`](Shutdown::cancel_all) (which the drain calls at its
/// deadline) is the server-wide parent of every request's token: it
/// cancels every request in flight, and so every task they spawned with
/// the request's context.
///
/// Cheap to clone: clones share the same state.
///
/// With axum, pass [`draining`](Shutdown::draining) to
/// `with_graceful_shutdown` so the server stops accepting connections when
/// the drain begins (hyper-util's `GracefulShutdown` the same way):
///
/// ```
/// use rampart_cancel::{CancelLayer, Shutdown};
/// use std::time::Duration;
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let shutdown = Shutdown::new();
/// let app = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(
///         ServiceBuilder::new()
///             .layer(rampart_core::HandleErrorsLayer::new())
///             .layer(CancelLayer::with_shutdown(&shutdown)),
///     );
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let server = tokio::spawn(
///     axum::serve(listener, app)
///         .with_graceful_shutdown(shutdown.draining())
///         .into_future(),
/// );
/// // On SIGTERM / ctrl-c:
/// let report = shutdown.drain(Duration::from_secs(10)).await;
/// server.await.unwrap().unwrap();
/// assert_eq!(report.cancelled(), 0);
/// # }
/// ```
#[derive(Clone)]
pub struct Shutdown {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    /// Set first by `cancel_all` (read at every poll of a pending request).
    stopped: AtomicBool,
    /// Set first by `close` (the drain began): then requests that end are
    /// counted, and `poll_ready` lets calls through to be refused.
    closed: AtomicBool,
    /// The requests, by lane: each call is tracked, and its waker kept
    /// once it is pending, in the lane of the thread that made the call, so
    /// the threads of a runtime do not all write the same cache lines.
    pub(crate) lanes: [Lane; LANES],
    /// Fired by `cancel_all`, for [`Shutdown::cancelled`].
    stop: CancellationToken,
    /// Fires when the drain begins.
    draining: CancellationToken,
    /// Async cleanup hooks still running.
    pub(crate) cleanups: TaskTracker,
    /// Counted once the drain began.
    completed: AtomicUsize,
    cancelled: AtomicUsize,
    refused: AtomicUsize,
    /// The `layer` field of the drain's tracing events.
    name: LayerName,
}

/// How many lanes a [`Shutdown`] has (threads share them round-robin).
pub(crate) const LANES: usize = 8;

/// One lane of a [`Shutdown`]: the requests made on the threads that use
/// it. Aligned to its own cache lines.
#[repr(align(128))]
pub(crate) struct Lane {
    /// Admitted requests still running; closed when the drain begins.
    pub(crate) requests: TaskTracker,
    /// The wakers of the requests pending, woken by `cancel_all`. Requests
    /// register only once they returned `Pending` (a token tree would
    /// register every request, lock the parent and allocate its child list).
    pub(crate) waiters: Waiters,
}

/// The lane of the current thread: given round-robin at its first call
/// (lane 0 while the thread's locals are being destroyed).
#[inline]
pub(crate) fn lane() -> usize {
    thread_local! {
        static LANE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    LANE.try_with(|lane| {
        let mine = lane.get();
        if mine < LANES {
            return mine;
        }
        let mine = NEXT.fetch_add(1, Ordering::Relaxed) % LANES;
        lane.set(mine);
        mine
    })
    .unwrap_or(0)
}

/// How a request admitted by the layer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Completed,
    Cancelled,
}

impl Shared {
    /// True once [`Shutdown::cancel_all`] was called.
    #[inline]
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// True once the drain began ([`Shutdown::close`]).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Requests admitted and not finished, on every lane.
    fn in_flight(&self) -> usize {
        self.lanes.iter().map(|l| l.requests.len()).sum()
    }

    /// Resolves once every lane's tracker is closed and empty.
    async fn requests_done(&self) {
        for lane in &self.lanes {
            lane.requests.wait().await;
        }
    }

    /// Counts a request that ended, if the drain has begun.
    #[inline]
    pub(crate) fn ended(&self, how: Ended) {
        if self.is_closed() {
            let counter = match how {
                Ended::Completed => &self.completed,
                Ended::Cancelled => &self.cancelled,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a call refused because the drain has begun.
    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("draining", &self.is_draining())
            .field("in_flight", &self.in_flight())
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Shutdown {
    /// A handle admitting requests.
    pub fn new() -> Shutdown {
        Shutdown::named(LayerName::default())
    }

    /// A handle admitting requests, whose drain's tracing events carry
    /// `name` in their `layer` field (`"default"` for [`Shutdown::new`]),
    /// e.g. the name of the [`CancelLayer`](crate::CancelLayer) it drains.
    ///
    /// ```
    /// use rampart_cancel::{CancelLayer, Shutdown};
    /// let shutdown = Shutdown::named("api");
    /// let layer = CancelLayer::with_shutdown(&shutdown).name("api");
    /// # drop(layer);
    /// ```
    pub fn named(name: impl Into<LayerName>) -> Shutdown {
        Shutdown {
            shared: Arc::new(Shared {
                stopped: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                lanes: std::array::from_fn(|_| Lane {
                    requests: TaskTracker::new(),
                    waiters: Waiters::default(),
                }),
                stop: CancellationToken::new(),
                draining: CancellationToken::new(),
                cleanups: TaskTracker::new(),
                completed: AtomicUsize::new(0),
                cancelled: AtomicUsize::new(0),
                refused: AtomicUsize::new(0),
                name: name.into(),
            }),
        }
    }

    /// Requests admitted and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// True once [`drain`](Shutdown::drain) (or
    /// [`close`](Shutdown::close)) began: new calls are refused.
    pub fn is_draining(&self) -> bool {
        self.shared.is_closed()
    }

    /// A future that resolves when the drain begins: give it to axum's
    /// `with_graceful_shutdown` or select on it before hyper-util's
    /// `GracefulShutdown::shutdown`, so the server stops accepting
    /// connections at the same moment the layer stops admitting requests.
    pub fn draining(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.draining.clone().cancelled_owned()
    }

    /// Stops admitting requests (new calls fail with
    /// [`ErrorKind::Closed`](rampart_core::ErrorKind::Closed)) without
    /// waiting; [`drain`](Shutdown::drain) does this first. From here on
    /// requests that end are counted in the [`DrainReport`].
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for lane in &self.shared.lanes {
            lane.requests.close();
        }
        self.shared.draining.cancel();
    }

    /// Cancels every request in flight, and every one admitted later (a
    /// request is cancelled as soon as it is first pending): their tokens
    /// fire, their inner futures are dropped, they resolve to
    /// [`ErrorKind::Cancelled`](rampart_core::ErrorKind::Cancelled) and
    /// their cleanup hooks run with
    /// [`CancelReason::Shutdown`](crate::CancelReason::Shutdown).
    /// [`drain`](Shutdown::drain) calls it at its deadline.
    pub fn cancel_all(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Every lane is stopped before any waker runs: a waker that panics
        // cannot leave a lane admitting registrations.
        let wakers: Vec<_> = self
            .shared
            .lanes
            .iter()
            .flat_map(|lane| lane.waiters.stop_and_take())
            .collect();
        for waker in wakers {
            waker.wake();
        }
        self.shared.stop.cancel();
    }

    /// True once [`cancel_all`](Shutdown::cancel_all) was called.
    pub fn is_cancelled(&self) -> bool {
        self.shared.is_stopped()
    }

    /// A future that resolves once [`cancel_all`](Shutdown::cancel_all)
    /// was called, e.g. to stop background work with the requests.
    pub async fn cancelled(&self) {
        self.shared.stop.cancelled().await;
    }

    /// Graceful drain with [`DEFAULT_CANCEL_GRACE`]; see
    /// [`drain_with_grace`](Shutdown::drain_with_grace).
    pub async fn drain(&self, deadline: Duration) -> DrainReport {
        self.drain_with_grace(deadline, DEFAULT_CANCEL_GRACE).await
    }

    /// Graceful drain: stops admitting, waits up to `deadline` for the
    /// requests in flight, cancels the rest, then waits up to `grace` for
    /// the cancelled requests to unwind and for the async cleanup hooks to
    /// finish. A zero `deadline` cancels at once.
    ///
    /// Never waits longer than `deadline + grace`: a request whose future
    /// is not polled again after its cancellation (held but abandoned by
    /// its caller) is reported as [`unfinished`](DrainReport::unfinished).
    ///
    /// Calling it again (or after [`close`](Shutdown::close)) waits again
    /// and reports the counts since the drain first began.
    pub async fn drain_with_grace(&self, deadline: Duration, grace: Duration) -> DrainReport {
        let started = Instant::now();
        self.close();
        let s = &self.shared;
        let in_flight_at_start = s.in_flight();
        tracing::debug!(
            layer = %s.name,
            in_flight = in_flight_at_start,
            ?deadline,
            "drain started"
        );
        let deadline_hit = tokio::time::timeout(deadline, s.requests_done())
            .await
            .is_err();
        if deadline_hit {
            tracing::debug!(
                layer = %s.name,
                in_flight = s.in_flight(),
                "drain deadline passed: cancelling the requests left"
            );
            self.cancel_all();
        }
        let grace_end = Instant::now() + grace;
        let _ = tokio::time::timeout_at(grace_end, s.requests_done()).await;
        s.cleanups.close();
        let _ = tokio::time::timeout_at(grace_end, s.cleanups.wait()).await;
        let report = DrainReport {
            completed: s.completed.load(Ordering::Relaxed),
            cancelled: s.cancelled.load(Ordering::Relaxed),
            unfinished: s.in_flight(),
            refused: s.refused.load(Ordering::Relaxed),
            deadline_hit,
            elapsed: started.elapsed(),
        };
        tracing::debug!(layer = %s.name, ?report, "drain finished");
        report
    }
}

/// The counts of a drain ([`Shutdown::drain`]).
///
/// Every request admitted before the drain began and still running when
/// it began is in exactly one of `completed`, `cancelled` and `unfinished`.
/// A request that ends in the instant the drain begins (it saw the drain
/// not begun yet while the drain counted it) can be in
/// [`in_flight_at_start`](DrainReport::in_flight_at_start) and in none of
/// the three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainReport {
    completed: usize,
    cancelled: usize,
    unfinished: usize,
    refused: usize,
    deadline_hit: bool,
    elapsed: Duration,
}

impl DrainReport {
    /// Requests that completed (successfully or with their own error)
    /// after the drain began.
    pub fn completed(&self) -> usize {
        self.completed
    }

    /// Requests cancelled after the drain began: still running at the
    /// deadline, or dropped by their caller during the drain.
    pub fn cancelled(&self) -> usize {
        self.cancelled
    }

    /// Requests still not finished when the drain returned (cancelled, but
    /// their futures were not polled again within the grace period).
    pub fn unfinished(&self) -> usize {
        self.unfinished
    }

    /// Calls refused with `Closed` since the drain began.
    pub fn refused(&self) -> usize {
        self.refused
    }

    /// Requests that were in flight when the drain began:
    /// `completed + cancelled + unfinished`.
    pub fn in_flight_at_start(&self) -> usize {
        self.completed + self.cancelled + self.unfinished
    }

    /// True when the deadline passed with requests still running (they
    /// were cancelled).
    pub fn deadline_hit(&self) -> bool {
        self.deadline_hit
    }

    /// How long the drain took.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in flight: {} completed, {} cancelled, {} unfinished; {} refused",
            self.in_flight_at_start(),
            self.completed,
            self.cancelled,
            self.unfinished,
            self.refused
        )
    }
}
