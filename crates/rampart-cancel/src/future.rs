//! [`ResponseFuture`]: one request's cancellation scope.

use crate::hook::{CancelInfo, CancelReason};
use crate::layer::Config;
use crate::shutdown::Ended;
use pin_project_lite::pin_project;
use rampart_core::{BoxError, Error, RequestId, Scoped};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// What a running request holds besides its inner future.
pub(crate) struct Running {
    /// The request's own token (the context's is a clone of it).
    pub(crate) token: CancellationToken,
    pub(crate) config: Arc<Config>,
    /// Keeps the request counted as in flight by the [`Shutdown`](crate::Shutdown).
    pub(crate) _tracked: TaskTrackerToken,
    /// For the hooks, captured only when there are some.
    pub(crate) started: Option<(Instant, Option<RequestId>)>,
}

impl Drop for Running {
    /// The request is no longer in flight, however it ended.
    fn drop(&mut self) {
        self.config.metrics.ended();
    }
}

pin_project! {
    /// The response future of [`Cancel`](crate::Cancel): the inner future
    /// run in the request's cancellation scope.
    ///
    /// Resolves to the inner result, or to
    /// [`ErrorKind::Cancelled`](rampart_core::ErrorKind::Cancelled) as soon
    /// as the request's token fires (the inner future is dropped first), or
    /// at once to [`ErrorKind::Closed`](rampart_core::ErrorKind::Closed)
    /// when the call was refused by a drain. Dropping it before it
    /// completes cancels the request's token and runs the cleanup hooks.
    ///
    /// # Panics
    ///
    /// When polled after it completed.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        // `None` once finished (or never, for a refused call).
        #[pin]
        inner: Option<Scoped<F>>,
        // Registered on the first `Pending`, not before.
        #[pin]
        watch: Option<WaitForCancellationFutureOwned>,
        #[pin]
        watch_stop: Option<OwnedNotified>,
        running: Option<Running>,
        refused: Option<Error>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.inner.is_some() {
                // Dropped by the caller before it completed.
                let running = this.running.take().expect("a running request has its state");
                let reason = if running.token.is_cancelled() {
                    shutdown_or_token(&running)
                } else {
                    running.token.cancel();
                    CancelReason::CallerDropped
                };
                this.inner.set(None);
                cancelled(&running, reason);
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("running", &self.inner.is_some())
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn running(inner: Scoped<F>, running: Running) -> Self {
        ResponseFuture {
            inner: Some(inner),
            watch: None,
            watch_stop: None,
            running: Some(running),
            refused: None,
        }
    }

    pub(crate) fn refused(error: Error) -> Self {
        ResponseFuture {
            inner: None,
            watch: None,
            watch_stop: None,
            running: None,
            refused: Some(error),
        }
    }
}

/// The reason to report when the request's token had fired.
fn shutdown_or_token(running: &Running) -> CancelReason {
    if running.config.shutdown.shared.is_stopped() {
        CancelReason::Shutdown
    } else {
        CancelReason::Token
    }
}

/// Counts the cancellation and runs the hooks (the inner future is gone).
fn cancelled(running: &Running, reason: CancelReason) {
    let shared = &running.config.shutdown.shared;
    shared.ended(Ended::Cancelled);
    running.config.metrics.cancelled(reason);
    let (elapsed, request_id) = match &running.started {
        Some((at, id)) => (at.elapsed(), id.clone()),
        None => Default::default(),
    };
    tracing::debug!(
        layer = %running.config.name,
        request_id = request_id.as_ref().map(RequestId::as_str),
        ?elapsed,
        %reason,
        "request cancelled"
    );
    if running.config.hooks.is_empty() {
        return;
    }
    let info = CancelInfo {
        request_id,
        elapsed,
        reason,
    };
    for hook in &running.config.hooks {
        hook.run(&info, &shared.cleanups, &running.config.name);
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if this.inner.is_none() {
            let error = this.refused.take();
            return Poll::Ready(Err(
                error.expect("a cancel ResponseFuture was polled after it completed")
            ));
        }
        // Once the request was seen pending, its cancellation wins over
        // anything the inner future would still do (a handler that noticed
        // its token and answers is answered for): the inner future is not
        // polled again once the cancellation is visible. Checked with the
        // flags, not by polling the watchers (the common second poll is the
        // one that completes).
        let running = this
            .running
            .as_ref()
            .expect("a running request has its state");
        let mut reason = None;
        if this.watch.is_some() {
            if running.config.shutdown.shared.is_stopped() {
                running.token.cancel();
                reason = Some(CancelReason::Shutdown);
            } else if running.token.is_cancelled() {
                reason = Some(CancelReason::Token);
            }
        }
        if reason.is_none() {
            let inner = this.inner.as_mut().as_pin_mut().expect("checked above");
            if let Poll::Ready(res) = inner.poll(cx) {
                this.inner.set(None);
                let running = this
                    .running
                    .take()
                    .expect("a running request has its state");
                running.config.shutdown.shared.ended(Ended::Completed);
                return Poll::Ready(res.map_err(Error::from_inner));
            }
            if this.watch.is_none() {
                // First `Pending`: register the watchers now, not before.
                this.watch
                    .set(Some(running.token.clone().cancelled_owned()));
                // Created before the flag is read (in `watch`): a
                // `cancel_all` in between wakes it.
                let stop = running.config.shutdown.shared.stop_notified();
                this.watch_stop.set(Some(stop));
            }
            // (Re)registers this task's waker with both.
            reason = watch(this.watch.as_mut(), this.watch_stop.as_mut(), running, cx);
        }
        let Some(reason) = reason else {
            return Poll::Pending;
        };
        // Dropped inside the request's context, before the hooks run.
        this.inner.set(None);
        let running = this
            .running
            .take()
            .expect("a running request has its state");
        cancelled(&running, reason);
        Poll::Ready(Err(Error::cancelled()))
    }
}

/// Polls the watchers: the reason if the request was cancelled.
fn watch(
    watch: Pin<&mut Option<WaitForCancellationFutureOwned>>,
    watch_stop: Pin<&mut Option<OwnedNotified>>,
    running: &Running,
    cx: &mut TaskContext<'_>,
) -> Option<CancelReason> {
    if let Some(watch) = watch.as_pin_mut()
        && watch.poll(cx).is_ready()
    {
        return Some(shutdown_or_token(running));
    }
    if let Some(stop) = watch_stop.as_pin_mut()
        && (running.config.shutdown.shared.is_stopped() || stop.poll(cx).is_ready())
    {
        // Tell the tasks the request spawned.
        running.token.cancel();
        return Some(CancelReason::Shutdown);
    }
    None
}
