//! [`cancel_at_every_poll`]: drop a future at each of its suspension points
//! and check an invariant after every drop.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Most polls [`cancel_at_every_poll`] allows one future before giving up.
pub const DEFAULT_MAX_POLLS: usize = 10_000;

/// Why [`cancel_at_every_poll`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelCheckFailed {
    /// How many times the future had been polled when it was dropped (0:
    /// dropped without being polled), or, with `completed`, the poll on which
    /// it completed.
    pub k: usize,
    /// `true` if the invariant failed after the future *completed* (not after
    /// a cancellation).
    pub completed: bool,
    /// The invariant check's message (or the bound that was hit).
    pub message: String,
}

impl fmt::Display for CancelCheckFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.completed {
            write!(
                f,
                "invariant failed after the future completed on poll {}: {}",
                self.k, self.message
            )
        } else {
            write!(
                f,
                "invariant failed after dropping the future after {} poll(s): {}",
                self.k, self.message
            )
        }
    }
}

impl Error for CancelCheckFailed {}

/// Cancellation-safety harness.
///
/// For k = 0, 1, 2, ...: builds a fresh future with `make`, awaits it (in the
/// current task, so wakeups, timers and tokio's paused-clock auto-advance
/// work normally) but lets it be polled at most k times; if it has not
/// completed after its k-th poll it is dropped right there (k = 0: dropped
/// without ever being polled), and `check` is called. The first `Err` from
/// `check` is returned with its k.
///
/// Stops when the future completes within k polls (then `check` runs once
/// more, after the completed future is dropped) and returns the number of
/// drop points exercised, i.e. k. `make` must build equivalent futures
/// each time (same number of polls to complete).
///
/// Bounded by [`DEFAULT_MAX_POLLS`]: a future still not done after that many
/// polls is an error (use [`cancel_at_every_poll_bounded`] to change it). A
/// future that never wakes up again keeps this waiting, so for real I/O wrap
/// the call in `tokio::time::timeout`.
///
/// ```
/// use rampart_testkit::{cancel_at_every_poll, MockReply, MockService};
/// use std::time::Duration;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let svc = MockService::<(), u32>::new(|()| {
///     MockReply::ok(7).after(Duration::from_millis(5)).after_yield()
/// });
/// let drops = cancel_at_every_poll(
///     || svc.clone().oneshot(()),
///     || match svc.inflight() {
///         0 => Ok(()),
///         n => Err(format!("{n} calls still in flight")),
///     },
/// )
/// .await
/// .unwrap();
/// assert!(drops >= 2);
/// # }
/// ```
pub async fn cancel_at_every_poll<F, Fut, C>(make: F, check: C) -> Result<usize, CancelCheckFailed>
where
    F: FnMut() -> Fut,
    Fut: Future,
    C: FnMut() -> Result<(), String>,
{
    cancel_at_every_poll_bounded(DEFAULT_MAX_POLLS, make, check).await
}

/// [`cancel_at_every_poll`] with an explicit bound on the polls per future.
pub async fn cancel_at_every_poll_bounded<F, Fut, C>(
    max_polls: usize,
    mut make: F,
    mut check: C,
) -> Result<usize, CancelCheckFailed>
where
    F: FnMut() -> Fut,
    Fut: Future,
    C: FnMut() -> Result<(), String>,
{
    for k in 0..=max_polls {
        let completed = PollLimit::new(make(), k).await;
        if let Err(message) = check() {
            return Err(CancelCheckFailed {
                k,
                completed,
                message,
            });
        }
        if completed {
            return Ok(k);
        }
    }
    Err(CancelCheckFailed {
        k: max_polls,
        completed: false,
        message: format!("the future did not complete within {max_polls} polls"),
    })
}

/// Polls the inner future at most `limit` times; resolves to `true` if it
/// completed, `false` if it was dropped unfinished. The inner future is
/// dropped before this resolves either way.
///
/// The inner future gets its own waker, so that (a) wakeups left behind by
/// the futures of earlier runs (e.g. a deferred `yield_now` wake) cannot
/// cause extra polls in this run, and (b) spurious polls of the outer task
/// do not count: the inner future is only polled first, and then after it
/// woke itself.
struct PollLimit<Fut> {
    fut: Option<Pin<Box<Fut>>>,
    polls: usize,
    limit: usize,
    waker: Arc<RunWaker>,
}

impl<Fut> PollLimit<Fut> {
    fn new(fut: Fut, limit: usize) -> Self {
        Self {
            fut: Some(Box::pin(fut)),
            polls: 0,
            limit,
            waker: Arc::new(RunWaker::default()),
        }
    }

    fn finish(&mut self, completed: bool) -> Poll<bool> {
        self.fut = None;
        self.waker.dead.store(true, Ordering::SeqCst);
        Poll::Ready(completed)
    }
}

impl<Fut> Drop for PollLimit<Fut> {
    fn drop(&mut self) {
        self.waker.dead.store(true, Ordering::SeqCst);
    }
}

impl<Fut: Future> Future for PollLimit<Fut> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        if this.fut.is_none() {
            return Poll::Ready(false);
        }
        if this.polls >= this.limit {
            return this.finish(false);
        }
        this.waker.set_task(cx.waker());
        // Only the first poll and polls after a wakeup of this run count.
        if this.polls > 0 && !this.waker.woken.swap(false, Ordering::SeqCst) {
            return Poll::Pending;
        }
        this.polls += 1;
        let waker = Waker::from(Arc::clone(&this.waker));
        let mut inner_cx = Context::from_waker(&waker);
        let fut = this.fut.as_mut().expect("checked above");
        if fut.as_mut().poll(&mut inner_cx).is_ready() {
            return this.finish(true);
        }
        if this.polls >= this.limit {
            return this.finish(false);
        }
        Poll::Pending
    }
}

/// The waker handed to the future under test: forwards to the harness
/// task's waker while its run is alive.
#[derive(Default)]
struct RunWaker {
    dead: AtomicBool,
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl RunWaker {
    fn set_task(&self, waker: &Waker) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        match task.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *task = Some(waker.clone()),
        }
    }
}

impl Wake for RunWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.dead.load(Ordering::SeqCst) {
            return;
        }
        self.woken.store(true, Ordering::SeqCst);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}
