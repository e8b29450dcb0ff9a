//! [`Cancel`]: the service of [`CancelLayer`](crate::CancelLayer).

use crate::future::{ResponseFuture, Running};
use crate::hook::CancelReason;
use crate::layer::{CancelLayer, Config};
use rampart_core::{BoxError, Context, Error};
use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::time::Instant;
use tower_service::Service;

/// Runs every call in a cancellation scope of its own (see the
/// [crate docs](crate)).
///
/// Each call gets a [`CancellationToken`](rampart_core::CancellationToken)
/// of its own — a child of the token of the caller's [`Context`] when it
/// has one, else one made on demand, the first time something asks for it
/// ([`Context::with_cancellation_on_demand`]) — that the layer's
/// [`Shutdown`](crate::Shutdown) fires too, and runs (its `call` and every
/// poll of its future) inside a [`Context`] carrying it, so the handler and
/// the tasks it starts with [`rampart_core::spawn`] see it through
/// [`Context::current`]. The caller's request id and deadline are kept.
#[derive(Clone)]
pub struct Cancel<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for Cancel<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancel")
            .field("inner", &self.inner)
            .field("shutdown", &self.config.shutdown)
            .finish_non_exhaustive()
    }
}

impl<S> Cancel<S> {
    /// Wraps `inner` with the configuration of `layer`.
    pub fn new(inner: S, layer: &CancelLayer) -> Self {
        Cancel::from_config(inner, layer.config.clone())
    }

    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Cancel { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for Cancel<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        // Once draining, `call` refuses without touching the inner service:
        // a caller must not wait for an inner permit only to be refused.
        if self.config.shutdown.shared.is_closed() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.config.shutdown.shared;
        // Tracked before the check: a drain that closes in between waits
        // for this call until it is refused, and never misses an admitted one.
        let lane = crate::shutdown::lane();
        let requests = &shared.lanes[lane].requests;
        let tracked = requests.token();
        // The lane's tracker decides that a call it admits is waited for;
        // the shared flag (set by `close` before it closes the lanes one by
        // one) keeps `call` refusing whenever `poll_ready` let the call
        // through without readying the inner service.
        if requests.is_closed() || shared.is_closed() {
            drop(tracked);
            shared.refused();
            self.config.metrics.refused();
            tracing::debug!(layer = %self.config.name, "call refused: draining");
            return ResponseFuture::refused(Error::closed());
        }
        // The request's token: a child of the caller's token if its context
        // has one, else a token of its own made on demand — only when
        // something asks for it (the handler, a clone of the context, a
        // cancellation to pass on) — so a request nobody asks about costs no
        // token at all. The layer cancels it when the `Shutdown` cancels
        // everything (no parent to lock, no child list to grow).
        let (ctx, child_of_caller) = Context::with_current(|outer| match outer {
            None => (Context::new().with_cancellation_on_demand(), false),
            Some(outer) => {
                // Built field by field: cloning `outer` would clone its
                // token only to replace it.
                let mut ctx = Context::new();
                if let Some(id) = outer.request_id() {
                    ctx = ctx.with_request_id(id.clone());
                }
                if let Some(at) = outer.deadline() {
                    ctx = ctx.with_deadline(at);
                }
                // A caller's token made on demand is made now, to be the
                // parent of this one.
                match outer.cancellation() {
                    Some(parent) => (ctx.with_cancellation(parent.child_token()), true),
                    None => (ctx.with_cancellation_on_demand(), false),
                }
            }
        });
        if child_of_caller && ctx.is_cancelled() {
            // The caller gave up before the call: the handler never runs.
            drop(tracked);
            self.config.metrics.cancelled(CancelReason::Token);
            tracing::debug!(
                layer = %self.config.name,
                "call refused: the caller's token had fired"
            );
            return ResponseFuture::refused(Error::cancelled());
        }
        let started = if self.config.hooks.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        self.config.metrics.admitted();
        let running = Running {
            config: self.config.clone(),
            _tracked: tracked,
            started,
            watching: None,
            lane: lane as u8,
        };
        let inner = ctx.scope_call(|| self.inner.call(req));
        ResponseFuture::running(inner, running)
    }
}
