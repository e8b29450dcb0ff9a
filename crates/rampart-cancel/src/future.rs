//! [`ResponseFuture`]: one request's cancellation scope.

use crate::hook::{CancelInfo, CancelReason};
use crate::layer::Config;
use crate::shutdown::Ended;
use pin_project_lite::pin_project;
use rampart_core::{BoxError, Context, Error, RequestId, Scoped};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// What a running request holds besides its inner future (whose scope
/// holds the request's context, and in it the request's token).
pub(crate) struct Running {
    pub(crate) config: Arc<Config>,
    /// Keeps the request counted as in flight by the [`Shutdown`](crate::Shutdown).
    pub(crate) _tracked: TaskTrackerToken,
    /// When the call was made, for the hooks: read only when there are
    /// some (their request id is read from the scope's context when the
    /// request is cancelled).
    pub(crate) started: Option<Instant>,
    /// The request's key among the shutdown's waiters, from its first
    /// `Pending`.
    pub(crate) watching: Option<u32>,
    /// The lane the request is tracked in (its waker goes there too).
    pub(crate) lane: u8,
}

impl Running {
    /// Watches the shutdown with `waker` (registered at the first
    /// `Pending`, replaced when a later poll comes with another one): false
    /// once [`Shutdown::cancel_all`](crate::Shutdown::cancel_all) ran.
    #[inline]
    fn watch_shutdown(&mut self, waker: &Waker) -> bool {
        let waiters = &self.config.shutdown.shared.lanes[usize::from(self.lane)].waiters;
        match self.watching {
            None => {
                let Some(key) = waiters.register(waker) else {
                    return false;
                };
                self.watching = Some(key);
                true
            }
            Some(key) => waiters.update(key, waker),
        }
    }
}

impl Drop for Running {
    /// The request is no longer in flight, however it ended.
    fn drop(&mut self) {
        if let Some(key) = self.watching {
            self.config.shutdown.shared.lanes[usize::from(self.lane)]
                .waiters
                .remove(key);
        }
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
        // The wait on the request's token, from the first `Pending` at which
        // the token exists (it may be made on demand later, or never).
        #[pin]
        token: Option<WaitForCancellationFutureOwned>,
        running: Option<Running>,
        refused: Option<Error>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if let Some(scoped) = this.inner.as_ref().get_ref() {
                // Dropped by the caller before it completed.
                let running = this.running.take().expect("a running request has its state");
                let reason = if peek(scoped).is_some_and(CancellationToken::is_cancelled) {
                    shutdown_or_token(&running)
                } else {
                    cancel_token(scoped);
                    CancelReason::CallerDropped
                };
                let id = request_id(scoped);
                this.inner.set(None);
                cancelled(&running, reason, id);
            }
        }
    }
}

/// The running request's scope, between polls of its inner future.
#[inline]
fn running_scope<'a, F>(inner: &'a Pin<&mut Option<Scoped<F>>>) -> &'a Scoped<F> {
    inner
        .as_ref()
        .get_ref()
        .as_ref()
        .expect("a running request has its scope")
}

/// The request's token, if it was made.
#[inline]
fn peek<F>(scoped: &Scoped<F>) -> Option<&CancellationToken> {
    scoped.context().and_then(Context::peek_cancellation)
}

/// Cancels the request's token, made now if nobody made it yet: code that
/// runs while the inner future is dropped (a drop guard in the handler)
/// and asks for it sees it cancelled.
#[cold]
fn cancel_token<F>(scoped: &Scoped<F>) {
    if let Some(token) = scoped.context().and_then(Context::cancellation) {
        token.cancel();
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
            token: None,
            running: Some(running),
            refused: None,
        }
    }

    pub(crate) fn refused(error: Error) -> Self {
        ResponseFuture {
            inner: None,
            token: None,
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

/// The request id of the request's context (read before its inner future,
/// and the scope with it, is dropped).
#[inline]
fn request_id<F>(scoped: &Scoped<F>) -> Option<RequestId> {
    scoped.context().and_then(Context::request_id).cloned()
}

/// Counts the cancellation and runs the hooks (the inner future is gone).
fn cancelled(running: &Running, reason: CancelReason, request_id: Option<RequestId>) {
    let shared = &running.config.shutdown.shared;
    shared.ended(Ended::Cancelled);
    running.config.metrics.cancelled(reason);
    let elapsed = running.started.map(|at| at.elapsed()).unwrap_or_default();
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
        if running.watching.is_some() {
            let scoped = running_scope(&this.inner);
            if running.config.shutdown.shared.is_stopped() {
                cancel_token(scoped);
                reason = Some(CancelReason::Shutdown);
            } else if peek(scoped).is_some_and(CancellationToken::is_cancelled) {
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
            if cfg!(feature = "ablation") && !running.config.watch_shutdown {
                return Poll::Pending;
            }
            let running = this
                .running
                .as_mut()
                .expect("a running request has its state");
            let scoped = running_scope(&this.inner);
            reason = watch(this.token, running, scoped, cx);
        }
        let Some(reason) = reason else {
            return Poll::Pending;
        };
        // Dropped inside the request's context, before the hooks run.
        let id = request_id(running_scope(&this.inner));
        this.inner.set(None);
        let running = this
            .running
            .take()
            .expect("a running request has its state");
        cancelled(&running, reason, id);
        Poll::Ready(Err(Error::cancelled()))
    }
}

/// Watches the request's token once it exists, and the shutdown: the
/// reason if the request was cancelled.
fn watch<F>(
    mut token: Pin<&mut Option<WaitForCancellationFutureOwned>>,
    running: &mut Running,
    scoped: &Scoped<F>,
    cx: &mut TaskContext<'_>,
) -> Option<CancelReason> {
    if token.is_none()
        && let Some(t) = peek(scoped)
    {
        // The token, once something made it (at the call, or in this poll
        // or an earlier one).
        token.set(Some(t.clone().cancelled_owned()));
    }
    if let Some(t) = token.as_pin_mut()
        && t.poll(cx).is_ready()
    {
        return Some(shutdown_or_token(running));
    }
    if !running.watch_shutdown(cx.waker()) {
        // Tell the tasks the request spawned.
        cancel_token(scoped);
        return Some(CancelReason::Shutdown);
    }
    None
}
