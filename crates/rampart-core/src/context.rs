//! Request-scoped context: Python's `contextvars` for async Rust.
//!
//! A [`Context`] holds a request id, a deadline and a cancellation token. It
//! lives in a tokio task-local for the duration of a request (set with
//! [`Context::scope`]) and in the request's extensions, so every layer and
//! every downstream call made while handling the request can read it with
//! [`Context::current`].
//!
//! Task-locals do not cross `tokio::spawn`: a task started with a bare
//! `tokio::spawn` sees no context. Use [`spawn`] or
//! [`InContextExt::in_context`] to carry it.
//!
//! ```
//! use rampart_core::{Context, RequestId};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ctx = Context::new().with_request_id(RequestId::parse(b"req-1").unwrap());
//! ctx.scope(async {
//!     let seen = Context::current().unwrap();
//!     assert_eq!(seen.request_id().unwrap().as_str(), "req-1");
//!     // A task spawned with rampart's helper keeps it.
//!     let id = rampart_core::spawn(async {
//!         Context::current().and_then(|c| c.request_id().cloned())
//!     })
//!     .await
//!     .unwrap();
//!     assert_eq!(id.unwrap().as_str(), "req-1");
//! })
//! .await;
//! # }
//! ```

use crate::RequestId;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

tokio::task_local! {
    static CURRENT: Context;
}

/// Request-scoped data: request id, deadline, cancellation token.
///
/// Cheap to clone (a shared id and a reference-counted token).
#[derive(Clone, Debug, Default)]
pub struct Context {
    request_id: Option<RequestId>,
    deadline: Option<Instant>,
    cancel: Option<CancellationToken>,
}

/// A future that runs inside a [`Context`] scope.
pub type Scoped<F> = TaskLocalFuture<Context, F>;

impl Context {
    /// An empty context.
    pub fn new() -> Context {
        Context::default()
    }

    /// The context of the running task, if a scope set one.
    pub fn current() -> Option<Context> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Calls `f` with the current context without cloning it.
    pub fn with_current<R>(f: impl FnOnce(Option<&Context>) -> R) -> R {
        let mut f = Some(f);
        match CURRENT.try_with(|c| (f.take().expect("called once"))(Some(c))) {
            Ok(r) => r,
            Err(_) => (f.take().expect("not called yet"))(None),
        }
    }

    /// The current context's deadline, if any (no clone).
    pub fn current_deadline() -> Option<Instant> {
        CURRENT.try_with(|c| c.deadline).ok().flatten()
    }

    /// Runs `f` with this context as the current one.
    pub fn scope<F: Future>(self, f: F) -> Scoped<F> {
        CURRENT.scope(self, f)
    }

    /// Runs the closure `f` with this context as the current one (the
    /// synchronous twin of [`Context::scope`]), e.g. a `Service::call` that
    /// must see the context its future will run in.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }

    /// Merges `self` over the current context: fields `self` leaves empty are
    /// taken from the current one, and the earliest deadline wins.
    pub fn inherit(self) -> Context {
        Context::with_current(|cur| match cur {
            None => self,
            Some(cur) => cur.clone().merge(self),
        })
    }

    /// `other`'s fields over `self`'s; the earliest deadline of the two wins,
    /// and an id or token `other` lacks is kept from `self`.
    pub fn merge(self, other: Context) -> Context {
        let deadline = match (self.deadline, other.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Context {
            request_id: other.request_id.or(self.request_id),
            deadline,
            cancel: other.cancel.or(self.cancel),
        }
    }

    /// The request id.
    pub fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    /// The request id, moved out of the context (no clone).
    pub fn into_request_id(self) -> Option<RequestId> {
        self.request_id
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, id: RequestId) -> Context {
        self.request_id = Some(id);
        self
    }

    /// The deadline of the whole request.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (zero once it passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True when the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| d <= Instant::now())
    }

    /// Sets the deadline; the earliest wins, so a caller's shorter deadline is
    /// never extended.
    pub fn with_deadline(mut self, at: Instant) -> Context {
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
        self
    }

    /// Sets the deadline `timeout` from now; the earliest wins.
    pub fn with_timeout(self, timeout: Duration) -> Context {
        self.with_deadline(crate::codec::deadline_after(Instant::now(), timeout))
    }

    /// The request's cancellation token.
    pub fn cancellation(&self) -> Option<&CancellationToken> {
        self.cancel.as_ref()
    }

    /// Sets the cancellation token.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Context {
        self.cancel = Some(token);
        self
    }

    /// True when the cancellation token fired.
    pub fn is_cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// The context stored in a request's extensions.
    pub fn from_request<B>(req: &http::Request<B>) -> Option<&Context> {
        req.extensions().get::<Context>()
    }
}

/// Spawns `f` on the tokio runtime carrying the current [`Context`], if any.
///
/// A bare `tokio::spawn` loses task-locals, the context among them.
pub fn spawn<F>(f: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(f.in_context())
}

/// Carries the current [`Context`] into a future that will run elsewhere.
pub trait InContextExt: Future + Sized {
    /// Captures the current context (if any) now; the returned future runs
    /// `self` inside it wherever it is polled.
    fn in_context(self) -> InContext<Self> {
        let inner = match Context::current() {
            Some(ctx) => Inner::Scoped {
                fut: ctx.scope(self),
            },
            None => Inner::Bare { fut: self },
        };
        InContext { inner }
    }
}

impl<F: Future> InContextExt for F {}

pin_project! {
    /// A future that runs inside the context captured by
    /// [`InContextExt::in_context`].
    pub struct InContext<F> {
        #[pin]
        inner: Inner<F>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Scoped { #[pin] fut: Scoped<F> },
        Bare { #[pin] fut: F },
    }
}

impl<F: Future> Future for InContext<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        match self.project().inner.project() {
            InnerProj::Scoped { fut } => fut.poll(cx),
            InnerProj::Bare { fut } => fut.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RequestId {
        RequestId::parse(s.as_bytes()).unwrap()
    }

    fn current_id() -> Option<String> {
        Context::current().and_then(|c| c.request_id().map(ToString::to_string))
    }

    #[tokio::test]
    async fn no_scope_means_no_context() {
        assert!(Context::current().is_none());
        assert!(Context::current_deadline().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawn_helper_carries_context_and_concurrent_requests_do_not_see_each_other() {
        let mut handles = Vec::new();
        for i in 0..50 {
            handles.push(tokio::spawn(
                Context::new()
                    .with_request_id(id(&format!("req-{i}")))
                    .scope(async move {
                        tokio::task::yield_now().await;
                        let inner = spawn(async { current_id() }).await.unwrap();
                        let bare = tokio::spawn(async { current_id() }).await.unwrap();
                        (i, current_id(), inner, bare)
                    }),
            ));
        }
        for h in handles {
            let (i, here, inner, bare) = h.await.unwrap();
            let want = format!("req-{i}");
            assert_eq!(here.as_deref(), Some(want.as_str()));
            assert_eq!(
                inner.as_deref(),
                Some(want.as_str()),
                "spawn helper keeps the context"
            );
            assert_eq!(bare, None, "a bare tokio::spawn loses it, as documented");
        }
        assert_eq!(current_id(), None, "nothing leaks outside the scopes");
    }

    #[tokio::test(start_paused = true)]
    async fn earliest_deadline_wins() {
        let now = Instant::now();
        let short = now + Duration::from_millis(300);
        let long = now + Duration::from_secs(5);
        let c = Context::new().with_deadline(short).with_deadline(long);
        assert_eq!(c.deadline(), Some(short));
        let c = Context::new().with_deadline(long).with_deadline(short);
        assert_eq!(c.deadline(), Some(short));
        // Inheriting from a caller with a shorter deadline never extends it.
        let seen = Context::new()
            .with_deadline(short)
            .scope(async {
                Context::new()
                    .with_timeout(Duration::from_secs(5))
                    .inherit()
                    .deadline()
            })
            .await;
        assert_eq!(seen, Some(short));
        assert_eq!(c.remaining(), Some(Duration::from_millis(300)));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(c.is_expired());
        assert_eq!(c.remaining(), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn merge_keeps_outer_fields_the_inner_lacks() {
        let token = CancellationToken::new();
        let outer = Context::new()
            .with_request_id(id("outer"))
            .with_cancellation(token.clone());
        let merged = outer.scope(async { Context::new().inherit() }).await;
        assert_eq!(merged.request_id().unwrap().as_str(), "outer");
        token.cancel();
        assert!(merged.is_cancelled());
    }

    #[test]
    fn into_request_id_moves_the_id_out() {
        assert!(Context::new().into_request_id().is_none());
        let ctx = Context::new().with_request_id(id("moved"));
        assert_eq!(ctx.into_request_id().unwrap().as_str(), "moved");
    }

    #[test]
    fn sync_scope_sets_the_context_for_the_closure_only() {
        let seen = Context::new()
            .with_request_id(id("sync"))
            .sync_scope(current_id);
        assert_eq!(seen.as_deref(), Some("sync"));
        assert_eq!(current_id(), None);
    }

    #[tokio::test]
    async fn in_context_captures_at_creation() {
        let ctx = Context::new().with_request_id(id("captured"));
        let fut = CURRENT.sync_scope(ctx, || async { current_id() }.in_context());
        assert!(Context::current().is_none());
        assert_eq!(fut.await.as_deref(), Some("captured"));
    }
}
