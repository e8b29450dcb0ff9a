//! Request-scoped context: Python's `contextvars` for async Rust.
//!
//! A [`Context`] holds a request id, a deadline and a cancellation token. It
//! lives in a task-local for the duration of a request (set with
//! [`Context::scope`] or [`Context::scope_call`]; like tokio's
//! `task_local!`, a thread-local that a scoped future fills for the length
//! of each of its polls), and, when a layer stores it, in the request's
//! extensions, so every layer and every downstream call made while handling
//! the request can read it with [`Context::current`].
//!
//! Task-locals do not cross `tokio::spawn`: a task started with a bare
//! `tokio::spawn` sees no context. Use [`spawn`] or
//! [`InContextExt::in_context`] to carry it, and [`spawn_blocking`] for
//! blocking work (a bare `tokio::task::spawn_blocking` loses it too).
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
use std::cell::RefCell;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// The context of the scope being run on this thread. A task-local in
    /// effect: a [`Scoped`] future puts its context here for the length of
    /// each poll and takes it back after (tokio's `task_local!` works the
    /// same way; this one also hands the context back after a synchronous
    /// scope, so [`Context::scope_call`] runs a `Service::call` and its
    /// future in one context without a clone).
    static CURRENT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Makes `slot`'s context the current one while `f` runs, and puts it back
/// in `slot` after (also when `f` panics).
///
/// # Panics
///
/// Inside the closure of [`Context::with_current`], which holds the current
/// context borrowed: entering a scope there is a bug, as with tokio's
/// task-locals.
#[inline]
fn enter<R>(slot: &mut Option<Context>, f: impl FnOnce() -> R) -> R {
    let _entered = Entered::new(slot);
    f()
}

/// While alive, the context taken from `slot` is the current one; dropping
/// it puts the previous one back and the context back in `slot`. Private:
/// scopes must nest, which only [`enter`] and [`Scoped`] guarantee.
struct Entered<'a> {
    // `None` when the thread's locals are being destroyed: nothing entered.
    slot: Option<&'a mut Option<Context>>,
}

impl<'a> Entered<'a> {
    /// Enters `slot`'s context; panics inside [`Context::with_current`].
    #[inline]
    fn new(slot: &'a mut Option<Context>) -> Entered<'a> {
        Entered::try_new(slot)
            .unwrap_or_else(|_| panic!("a Context scope was entered inside Context::with_current"))
    }

    /// Enters `slot`'s context, or gives `slot` back when the current one
    /// is borrowed (inside [`Context::with_current`]). When the thread's
    /// locals are being destroyed nothing is entered (there is no context to
    /// see any more) and the guard is inert.
    #[inline]
    fn try_new(slot: &'a mut Option<Context>) -> Result<Entered<'a>, &'a mut Option<Context>> {
        match CURRENT.try_with(|cur| {
            cur.try_borrow_mut()
                .map(|mut cur| mem::swap(slot, &mut cur))
                .is_ok()
        }) {
            Ok(true) => Ok(Entered { slot: Some(slot) }),
            Ok(false) => Err(slot),
            Err(_) => Ok(Entered { slot: None }),
        }
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let _ = CURRENT.try_with(|cur| mem::swap(slot, &mut cur.borrow_mut()));
        }
    }
}

/// Request-scoped data: request id, deadline, cancellation token.
///
/// Cheap to clone (a shared id and a reference-counted token).
#[derive(Clone, Debug, Default)]
pub struct Context {
    request_id: Option<RequestId>,
    deadline: Option<Instant>,
    cancel: CancelSlot,
}

/// A context's cancellation token: none, one given, or one of its own made
/// the first time something needs it
/// ([`Context::with_cancellation_on_demand`]).
#[derive(Debug, Default)]
enum CancelSlot {
    #[default]
    None,
    Token(CancellationToken),
    OnDemand(OnceLock<CancellationToken>),
}

impl CancelSlot {
    /// The token, made now if it is made on demand and nobody asked yet.
    #[inline]
    fn get(&self) -> Option<&CancellationToken> {
        match self {
            CancelSlot::None => None,
            CancelSlot::Token(t) => Some(t),
            CancelSlot::OnDemand(cell) => Some(cell.get_or_init(CancellationToken::new)),
        }
    }

    /// The token if it exists, without making one.
    #[inline]
    fn peek(&self) -> Option<&CancellationToken> {
        match self {
            CancelSlot::None => None,
            CancelSlot::Token(t) => Some(t),
            CancelSlot::OnDemand(cell) => cell.get(),
        }
    }
}

impl Clone for CancelSlot {
    /// A clone shares the token: one made on demand is made now.
    fn clone(&self) -> Self {
        match self.get() {
            Some(t) => CancelSlot::Token(t.clone()),
            None => CancelSlot::None,
        }
    }
}

pin_project! {
    /// A future that runs inside a [`Context`] scope (see
    /// [`Context::scope`] and [`Context::scope_call`]): the context is
    /// current during each poll of the inner future and while the inner
    /// future is dropped, whether it completed or not. A `Scoped` dropped
    /// inside [`Context::with_current`]'s closure drops its inner future
    /// without the context (entering one there is not possible); one polled
    /// while the thread's locals are being destroyed runs without it.
    ///
    /// # Panics
    ///
    /// When polled after it completed, or polled inside
    /// [`Context::with_current`]'s closure (a bug, as with tokio's
    /// task-locals).
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F> {
        ctx: Option<Context>,
        // `None` once the inner future completed (it is dropped in scope).
        #[pin]
        fut: Option<F>,
    }

    impl<F> PinnedDrop for Scoped<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if mem::needs_drop::<F>() && this.fut.is_some() {
                let mut fut = this.fut;
                // Never panics: a drop may run while unwinding.
                let _entered = Entered::try_new(this.ctx);
                fut.set(None);
            }
        }
    }
}

impl<F> std::fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped")
            .field("ctx", &self.ctx)
            .field("completed", &self.fut.is_none())
            .finish_non_exhaustive()
    }
}

impl<F> Scoped<F> {
    /// Takes the scope's context out, e.g. once the inner future completed;
    /// later polls run without one.
    #[inline]
    pub fn take_context(self: Pin<&mut Self>) -> Option<Context> {
        self.project().ctx.take()
    }

    /// The scope's context, between polls (e.g. to read a token made on
    /// demand while the inner future ran).
    #[inline]
    pub fn context(&self) -> Option<&Context> {
        self.ctx.as_ref()
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut fut = this.fut;
        let _entered = Entered::new(this.ctx);
        let Some(inner) = fut.as_mut().as_pin_mut() else {
            panic!("a Scoped future was polled after it completed");
        };
        let res = inner.poll(cx);
        if res.is_ready() {
            // Dropped here, inside the scope, like a pending one would be.
            fut.set(None);
        }
        res
    }
}

impl Context {
    /// An empty context.
    #[inline]
    pub fn new() -> Context {
        Context::default()
    }

    /// The context of the running task, if a scope set one.
    #[inline]
    pub fn current() -> Option<Context> {
        CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
    }

    /// Calls `f` with the current context without cloning it. The context
    /// stays borrowed while `f` runs: entering a scope inside `f` panics.
    #[inline]
    pub fn with_current<R>(f: impl FnOnce(Option<&Context>) -> R) -> R {
        let mut f = Some(f);
        match CURRENT.try_with(|c| (f.take().expect("called once"))(c.borrow().as_ref())) {
            Ok(r) => r,
            Err(_) => (f.take().expect("not called yet"))(None),
        }
    }

    /// The current context's deadline, if any (no clone).
    #[inline]
    pub fn current_deadline() -> Option<Instant> {
        Context::with_current(|c| c.and_then(Context::deadline))
    }

    /// Runs `f` with this context as the current one (see [`Scoped`] for
    /// when it panics).
    #[inline]
    pub fn scope<F: Future>(self, f: F) -> Scoped<F> {
        Scoped {
            ctx: Some(self),
            fut: Some(f),
        }
    }

    /// Runs the closure `f` with this context as the current one (the
    /// synchronous twin of [`Context::scope`]).
    ///
    /// # Panics
    ///
    /// Inside [`Context::with_current`]'s closure, which holds the current
    /// context borrowed (a bug, as with tokio's task-locals).
    #[inline]
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        enter(&mut Some(self), f)
    }

    /// Runs the closure `f` with the context in `slot` as the current one and
    /// leaves it back in `slot` after, also when `f` panics: the context is
    /// lent to the scope, not cloned, for a caller that keeps it for a later
    /// scope (a `poll_ready` then a `call` in the same context). With `slot`
    /// empty, `f` runs with no current context.
    ///
    /// # Panics
    ///
    /// Inside [`Context::with_current`]'s closure, which holds the current
    /// context borrowed (a bug, as with tokio's task-locals).
    ///
    /// ```
    /// use rampart_core::{Context, RequestId};
    /// let mut slot = Some(Context::new().with_request_id(RequestId::parse(b"req-1").unwrap()));
    /// let seen = Context::lend(&mut slot, || Context::current().unwrap().request_id().cloned());
    /// assert_eq!(seen.unwrap().as_str(), "req-1");
    /// assert!(slot.is_some(), "the context is back in its slot");
    /// assert!(Context::current().is_none());
    /// ```
    #[inline]
    pub fn lend<R>(slot: &mut Option<Context>, f: impl FnOnce() -> R) -> R {
        enter(slot, f)
    }

    /// Calls `call` with this context as the current one, then runs the
    /// future it returns in the same context: a `Service::call` that must
    /// see the context its future will run in. One context serves both (no
    /// clone). The returned future panics as [`Scoped`] says.
    ///
    /// # Panics
    ///
    /// Inside [`Context::with_current`]'s closure, which holds the current
    /// context borrowed (a bug, as with tokio's task-locals).
    ///
    /// ```
    /// use rampart_core::{Context, RequestId};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let ctx = Context::new().with_request_id(RequestId::parse(b"req-1").unwrap());
    /// let fut = ctx.scope_call(|| {
    ///     let at_call = Context::current().unwrap().request_id().cloned();
    ///     async move { (at_call, Context::current().unwrap().request_id().cloned()) }
    /// });
    /// assert!(Context::current().is_none());
    /// let (at_call, at_poll) = fut.await;
    /// assert_eq!(at_call.unwrap().as_str(), "req-1");
    /// assert_eq!(at_poll.unwrap().as_str(), "req-1");
    /// # }
    /// ```
    #[inline]
    pub fn scope_call<F: Future>(self, call: impl FnOnce() -> F) -> Scoped<F> {
        let mut ctx = Some(self);
        let fut = enter(&mut ctx, call);
        Scoped {
            ctx,
            fut: Some(fut),
        }
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
        let cancel = match other.cancel {
            CancelSlot::None => self.cancel,
            theirs => theirs,
        };
        Context {
            request_id: other.request_id.or(self.request_id),
            deadline,
            cancel,
        }
    }

    /// The request id.
    #[inline]
    pub fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    /// The request id, moved out of the context (no clone).
    #[inline]
    pub fn into_request_id(self) -> Option<RequestId> {
        self.request_id
    }

    /// Sets the request id.
    #[inline]
    pub fn with_request_id(mut self, id: RequestId) -> Context {
        self.request_id = Some(id);
        self
    }

    /// The deadline of the whole request.
    #[inline]
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
    #[inline]
    pub fn with_deadline(mut self, at: Instant) -> Context {
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
        self
    }

    /// Sets the deadline `timeout` from now; the earliest wins.
    pub fn with_timeout(self, timeout: Duration) -> Context {
        self.with_deadline(crate::codec::deadline_after(Instant::now(), timeout))
    }

    /// The request's cancellation token. A context whose token is made on
    /// demand ([`Context::with_cancellation_on_demand`]) makes it now, if
    /// nobody did before.
    #[inline]
    pub fn cancellation(&self) -> Option<&CancellationToken> {
        self.cancel.get()
    }

    /// The request's cancellation token if it exists, without making one
    /// that is made on demand: `None` then means nobody holds it, so nobody
    /// can be waiting on it or have cancelled it.
    #[inline]
    pub fn peek_cancellation(&self) -> Option<&CancellationToken> {
        self.cancel.peek()
    }

    /// Sets the cancellation token.
    #[inline]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Context {
        self.cancel = CancelSlot::Token(token);
        self
    }

    /// Gives the context a cancellation token of its own (a new root token)
    /// that is made only when something needs it: the first call to
    /// [`Context::cancellation`] on it, or a clone of the context (a clone
    /// shares the token, so it is made then: [`Context::current`],
    /// [`spawn`], a layer that stores the context). A request nothing asks
    /// about costs no token: no allocation and no lock.
    ///
    /// ```
    /// use rampart_core::Context;
    ///
    /// let ctx = Context::new().with_cancellation_on_demand();
    /// assert!(ctx.peek_cancellation().is_none()); // not made yet
    /// let copy = ctx.clone(); // shares it: made now
    /// ctx.cancellation().unwrap().cancel();
    /// assert!(copy.is_cancelled());
    /// ```
    #[inline]
    pub fn with_cancellation_on_demand(mut self) -> Context {
        self.cancel = CancelSlot::OnDemand(OnceLock::new());
        self
    }

    /// True when the cancellation token fired (a token made on demand that
    /// was never made has not).
    pub fn is_cancelled(&self) -> bool {
        self.cancel
            .peek()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// The context stored in a request's extensions.
    #[inline]
    pub fn from_request<B>(req: &http::Request<B>) -> Option<&Context> {
        req.extensions().get::<Context>()
    }
}

/// Spawns `f` on the tokio runtime carrying the current [`Context`], if any.
///
/// A bare `tokio::spawn` loses task-locals, the context among them.
///
/// # Panics
///
/// Outside a tokio runtime, as `tokio::spawn` does ("there is no reactor
/// running, must be called from the context of a Tokio 1.x runtime").
pub fn spawn<F>(f: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(f.in_context())
}

/// Runs the blocking closure `f` on tokio's blocking pool carrying the
/// current [`Context`], if any: the twin of [`spawn`] for blocking work.
///
/// Inside `f`, [`Context::current`] is the caller's context (its request
/// id, deadline and cancellation token), so blocking code can log the
/// request id, check [`Context::is_expired`] or [`Context::is_cancelled`]
/// between steps, or call back into async code with the context kept. A
/// bare `tokio::task::spawn_blocking` loses it.
///
/// Like `tokio::task::spawn_blocking`, the closure runs to its end even if
/// the handle is dropped: cancellation is the closure's to check.
///
/// # Panics
///
/// Outside a tokio runtime, as `tokio::task::spawn_blocking` does ("there
/// is no reactor running, must be called from the context of a Tokio 1.x
/// runtime").
///
/// ```
/// use rampart_core::{Context, RequestId};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let ctx = Context::new().with_request_id(RequestId::parse(b"req-9").unwrap());
/// let id = ctx
///     .scope(async {
///         // e.g. hashing a password, reading a file with std::fs
///         rampart_core::spawn_blocking(|| Context::current().and_then(|c| c.request_id().cloned()))
///             .await
///     })
///     .await
///     .unwrap();
/// assert_eq!(id.unwrap().as_str(), "req-9");
/// # }
/// ```
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let ctx = Context::current();
    tokio::task::spawn_blocking(move || match ctx {
        Some(ctx) => ctx.sync_scope(f),
        None => f(),
    })
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

    #[test]
    #[should_panic(expected = "must be called from the context of a Tokio 1.x runtime")]
    fn spawn_blocking_outside_a_runtime_panics_as_tokios_does() {
        drop(Context::new().sync_scope(|| spawn_blocking(|| ())));
    }

    #[test]
    #[should_panic(expected = "must be called from the context of a Tokio 1.x runtime")]
    fn spawn_outside_a_runtime_panics_as_tokios_does() {
        drop(spawn(async {}));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawn_blocking_carries_the_context_and_a_bare_one_loses_it() {
        let token = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let ctx = Context::new()
            .with_request_id(id("req-b"))
            .with_deadline(deadline)
            .with_cancellation(token.clone());
        let (seen, bare) = ctx
            .clone()
            .scope(async {
                let seen = spawn_blocking(|| {
                    let c = Context::current().expect("context inside the blocking closure");
                    (current_id(), c.deadline(), c.is_cancelled())
                })
                .await
                .unwrap();
                let bare = tokio::task::spawn_blocking(current_id).await.unwrap();
                (seen, bare)
            })
            .await;
        assert_eq!(seen, (Some("req-b".to_owned()), Some(deadline), false));
        assert_eq!(bare, None, "a bare spawn_blocking loses it");
        // The token is the caller's: cancelling it is seen inside.
        token.cancel();
        let cancelled = ctx
            .scope(async { spawn_blocking(|| Context::current().unwrap().is_cancelled()).await })
            .await
            .unwrap();
        assert!(cancelled);
        // Without a context the closure runs without one, and the pool
        // thread keeps none afterwards.
        assert_eq!(spawn_blocking(current_id).await.unwrap(), None);
        for _ in 0..4 {
            assert_eq!(tokio::task::spawn_blocking(current_id).await.unwrap(), None);
        }
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

    #[test]
    fn nested_scopes_and_a_panic_inside_one_restore_the_outer_context() {
        Context::new().with_request_id(id("outer")).sync_scope(|| {
            let inner = Context::new()
                .with_request_id(id("inner"))
                .sync_scope(current_id);
            assert_eq!(inner.as_deref(), Some("inner"));
            assert_eq!(current_id().as_deref(), Some("outer"));
            let panicked = std::panic::catch_unwind(|| {
                Context::new()
                    .with_request_id(id("panics"))
                    .sync_scope(|| panic!("inside the scope"))
            });
            assert!(panicked.is_err());
            assert_eq!(current_id().as_deref(), Some("outer"));
        });
        assert_eq!(current_id(), None);
    }

    #[test]
    fn scope_call_runs_the_call_and_every_poll_in_the_same_context() {
        let mut fut = std::pin::pin!(Context::new().with_request_id(id("req")).scope_call(|| {
            let at_call = current_id();
            async move {
                let first = current_id();
                tokio::task::yield_now().await;
                (at_call, first, current_id())
            }
        }));
        assert_eq!(current_id(), None, "the call's scope ended with it");
        let mut cx = noop_cx();
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(current_id(), None, "the poll's scope ended with it");
        let Poll::Ready(seen) = fut.as_mut().poll(&mut cx) else {
            panic!("ready after one yield");
        };
        let want = Some("req".to_owned());
        assert_eq!(seen, (want.clone(), want.clone(), want));
        assert_eq!(taken_id(fut.as_mut()), "req");
    }

    /// The request ids a [`Probe`] saw when it was dropped.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>;

    /// Records the current request id when dropped.
    struct Probe(Seen);

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.lock().unwrap().push(current_id());
        }
    }

    fn probe() -> (Probe, Seen) {
        let seen = Seen::default();
        (Probe(seen.clone()), seen)
    }

    /// The request id of the context `fut` holds, taken out of it.
    fn taken_id<F>(fut: Pin<&mut Scoped<F>>) -> String {
        let ctx = fut
            .take_context()
            .expect("the scope still holds its context");
        ctx.request_id().expect("it has an id").to_string()
    }

    /// A future that owns a probe and is ready at once: the probe drops when
    /// the future itself is dropped, not inside its poll.
    struct ReadyWith(#[allow(dead_code)] Probe);

    impl Future for ReadyWith {
        type Output = Option<String>;
        fn poll(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Option<String>> {
            Poll::Ready(current_id())
        }
    }

    fn noop_cx() -> TaskContext<'static> {
        TaskContext::from_waker(std::task::Waker::noop())
    }

    #[test]
    fn scoped_futures_inside_an_outer_scope_give_it_back_after_every_poll_and_drop() {
        Context::new().with_request_id(id("outer")).sync_scope(|| {
            // Pending, then dropped while pending.
            let (p, pending_seen) = probe();
            let mut pending = Box::pin(Context::new().with_request_id(id("pending")).scope(
                async move {
                    let _p = p;
                    std::future::pending::<()>().await;
                },
            ));
            assert!(pending.as_mut().poll(&mut noop_cx()).is_pending());
            assert_eq!(current_id().as_deref(), Some("outer"));
            drop(pending);
            assert_eq!(*pending_seen.lock().unwrap(), [Some("pending".into())]);
            assert_eq!(current_id().as_deref(), Some("outer"));
            // Completed: the finished inner future is dropped inside its scope.
            let (p, done_seen) = probe();
            let mut done = Box::pin(
                Context::new()
                    .with_request_id(id("done"))
                    .scope(ReadyWith(p)),
            );
            assert_eq!(
                done.as_mut().poll(&mut noop_cx()),
                Poll::Ready(Some("done".into()))
            );
            assert_eq!(*done_seen.lock().unwrap(), [Some("done".into())]);
            assert_eq!(current_id().as_deref(), Some("outer"));
            drop(done);
            assert_eq!(current_id().as_deref(), Some("outer"));
        });
        assert_eq!(current_id(), None);
    }

    #[test]
    fn a_panicking_poll_inside_an_outer_poll_gives_the_outer_context_back_at_once() {
        let mut outer = Box::pin(Context::new().with_request_id(id("outer")).scope(async {
            let mut inner = Box::pin(Context::new().with_request_id(id("inner")).scope(async {
                panic!("inner poll panics");
            }));
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                inner.as_mut().poll(&mut noop_cx())
            }));
            assert!(caught.is_err());
            current_id()
        }));
        assert_eq!(
            outer.as_mut().poll(&mut noop_cx()),
            Poll::Ready(Some("outer".into()))
        );
        assert_eq!(current_id(), None);
    }

    #[test]
    fn after_take_context_polls_run_without_one_and_the_outer_comes_back() {
        Context::new().with_request_id(id("outer")).sync_scope(|| {
            let mut fut = Box::pin(Context::new().with_request_id(id("taken")).scope(async {
                let first = current_id();
                tokio::task::yield_now().await;
                (first, current_id())
            }));
            assert!(fut.as_mut().poll(&mut noop_cx()).is_pending());
            assert_eq!(taken_id(fut.as_mut()), "taken");
            let Poll::Ready((first, second)) = fut.as_mut().poll(&mut noop_cx()) else {
                panic!("ready after one yield");
            };
            assert_eq!(first.as_deref(), Some("taken"));
            assert_eq!(second, None, "no context once it was taken");
            assert_eq!(current_id().as_deref(), Some("outer"));
        });
    }

    #[test]
    #[should_panic(expected = "polled after it completed")]
    fn polling_a_scoped_future_after_it_completed_panics() {
        let mut fut = Box::pin(Context::new().scope(std::future::ready(())));
        assert!(fut.as_mut().poll(&mut noop_cx()).is_ready());
        let _ = fut.as_mut().poll(&mut noop_cx());
    }

    #[test]
    fn dropping_a_scoped_future_inside_with_current_never_panics() {
        Context::new().with_request_id(id("outer")).sync_scope(|| {
            let (p, seen) = probe();
            let fut = Context::new()
                .with_request_id(id("never-polled"))
                .scope(ReadyWith(p));
            Context::with_current(move |_| drop(fut));
            // Dropped without its own context: the current one was borrowed.
            assert_eq!(*seen.lock().unwrap(), [Some("outer".into())]);
            assert_eq!(current_id().as_deref(), Some("outer"));
        });
    }

    #[test]
    #[should_panic(expected = "inside Context::with_current")]
    fn entering_a_scope_inside_with_current_is_a_bug_that_panics() {
        Context::new().with_request_id(id("outer")).sync_scope(|| {
            Context::with_current(|_| Context::new().sync_scope(|| ()));
        });
    }

    #[tokio::test]
    async fn in_context_captures_at_creation() {
        let ctx = Context::new().with_request_id(id("captured"));
        let fut = ctx.sync_scope(|| async { current_id() }.in_context());
        assert!(Context::current().is_none());
        assert_eq!(fut.await.as_deref(), Some("captured"));
    }
}
