//! Cleanup hooks: what runs when a request is cancelled.

use rampart_core::telemetry::LayerName;
use rampart_core::{Context, InContextExt, RequestId};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// Why a request was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelReason {
    /// The request's cancellation token fired: its parent (the caller's
    /// token) was cancelled, or someone holding the request's token
    /// cancelled it.
    Token,
    /// The caller dropped the response future before it completed (a
    /// client that went away, a timeout or `select!` further out).
    CallerDropped,
    /// A [`Shutdown`](crate::Shutdown) cancelled the request: it was still
    /// in flight when the drain deadline passed, or
    /// [`Shutdown::cancel_all`](crate::Shutdown::cancel_all) was called.
    Shutdown,
}

impl CancelReason {
    /// A short description, e.g. for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Token => "cancellation token fired",
            CancelReason::CallerDropped => "caller dropped the response future",
            CancelReason::Shutdown => "cancelled by shutdown",
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a cleanup hook learns about the cancelled request.
#[derive(Clone, Debug)]
pub struct CancelInfo {
    pub(crate) request_id: Option<RequestId>,
    pub(crate) elapsed: Duration,
    pub(crate) reason: CancelReason,
}

impl CancelInfo {
    /// The request id of the request's [`Context`], if a layer further out
    /// (e.g. `RequestIdLayer`) gave it one.
    pub fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    /// Time from the call to the cancellation (tokio's clock, so a paused
    /// test clock is honoured).
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Why the request was cancelled.
    pub fn reason(&self) -> CancelReason {
        self.reason
    }
}

/// A cleanup hook, synchronous (runs where the cancellation is noticed) or
/// asynchronous (spawned, bounded by a timeout).
#[derive(Clone)]
pub(crate) enum Hook {
    Sync(Arc<dyn Fn(&CancelInfo) + Send + Sync>),
    Async {
        timeout: Duration,
        spawn: Arc<dyn Fn(CancelInfo) -> BoxFuture + Send + Sync>,
    },
}

pub(crate) type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::Sync(_) => f.write_str("Hook::Sync"),
            Hook::Async { timeout, .. } => f
                .debug_struct("Hook::Async")
                .field("timeout", timeout)
                .finish_non_exhaustive(),
        }
    }
}

impl Hook {
    pub(crate) fn async_hook<F, Fut>(timeout: Duration, f: F) -> Hook
    where
        F: Fn(CancelInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Hook::Async {
            timeout,
            spawn: Arc::new(move |info| Box::pin(f(info))),
        }
    }

    /// Runs the hook once for `info`. A panicking hook is caught and logged:
    /// it may run while a future is being dropped, where a second panic
    /// would abort the process.
    pub(crate) fn run(&self, info: &CancelInfo, cleanups: &TaskTracker, layer: &LayerName) {
        match self {
            Hook::Sync(f) => {
                if catch_unwind(AssertUnwindSafe(|| f(info))).is_err() {
                    tracing::error!(
                        layer = %layer,
                        request_id = info.request_id.as_ref().map(RequestId::as_str),
                        "a cancellation hook panicked"
                    );
                }
            }
            Hook::Async { timeout, spawn } => {
                let Ok(handle) = tokio::runtime::Handle::try_current() else {
                    tracing::warn!(
                        layer = %layer,
                        request_id = info.request_id.as_ref().map(RequestId::as_str),
                        "no tokio runtime: the async cancellation hook was not started"
                    );
                    return;
                };
                let Ok(fut) = catch_unwind(AssertUnwindSafe(|| spawn(info.clone()))) else {
                    tracing::error!(
                        layer = %layer,
                        request_id = info.request_id.as_ref().map(RequestId::as_str),
                        "an async cancellation hook panicked while starting"
                    );
                    return;
                };
                // The cleanup runs in a context of its own: the request's id,
                // no cancellation token (the request's fired, and calls the
                // cleanup makes must not fail at once because of it) and the
                // cleanup's timeout as its deadline.
                let mut ctx = Context::new().with_timeout(*timeout);
                if let Some(id) = &info.request_id {
                    ctx = ctx.with_request_id(id.clone());
                }
                let timeout = *timeout;
                let id = info.request_id.clone();
                let layer = layer.clone();
                let bounded = ctx.sync_scope(|| {
                    async move {
                        if tokio::time::timeout(timeout, fut).await.is_err() {
                            tracing::warn!(
                                layer = %layer,
                                request_id = id.as_ref().map(RequestId::as_str),
                                ?timeout,
                                "an async cancellation hook timed out and was dropped"
                            );
                        }
                    }
                    .in_context()
                });
                cleanups.spawn_on(bounded, &handle);
            }
        }
    }
}
