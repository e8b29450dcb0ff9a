//! [`MockService`]: a scripted `tower_service::Service` with counters, for
//! unit tests of layers.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tower_service::Service;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test closure must not poison the mock for the assertions.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The error type of [`MockService`]: a message, nothing more.
///
/// `Send + Sync + 'static`, so it converts into tower's `BoxError`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MockError {
    message: Cow<'static, str>,
}

impl MockError {
    /// An error with this message.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MockError {}

/// A latch the test opens by hand: replies can wait on it
/// ([`MockReply::after_gate`]) and [`MockService::poll_ready`] can be held
/// on it ([`ReadyMode::Gated`]).
///
/// Clones share the same latch. Starts closed.
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<Mutex<GateState>>,
}

#[derive(Default)]
struct GateState {
    open: bool,
    wakers: Vec<Waker>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("open", &self.is_open())
            .finish()
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the gate and wakes everything waiting on it.
    pub fn open(&self) {
        let wakers = {
            let mut st = lock(&self.inner);
            st.open = true;
            std::mem::take(&mut st.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Closes the gate again (waiters that already passed are unaffected).
    pub fn close(&self) {
        lock(&self.inner).open = false;
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        lock(&self.inner).open
    }

    /// `Ready` once the gate is open; otherwise registers `cx`'s waker.
    pub fn poll_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = lock(&self.inner);
        if st.open {
            return Poll::Ready(());
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll_open(cx)).await;
    }

    fn wake_all(&self) {
        let wakers = std::mem::take(&mut lock(&self.inner).wakers);
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// What [`MockService::poll_ready`] answers.
#[derive(Clone, Debug, Default)]
pub enum ReadyMode {
    /// Always ready (the default).
    #[default]
    Ready,
    /// Not ready until the gate is open (the waker is registered, so a
    /// waiting `ServiceExt::ready()` wakes when it opens).
    Gated(Gate),
    /// `poll_ready` fails with this error (every time, until changed).
    Fail(MockError),
}

/// One scripted result of a [`MockService`] call.
///
/// The wrapping variants ([`Delay`](Self::Delay),
/// [`YieldOnce`](Self::YieldOnce), [`WaitFor`](Self::WaitFor)) do something
/// and then continue with the inner reply, so they nest:
/// `MockReply::ok(1).after(Duration::from_millis(10)).after_yield()` yields
/// once, sleeps 10 ms, then answers `Ok(1)`.
#[derive(Clone, Debug)]
pub enum MockReply<Res> {
    /// Complete with `Ok(response)`.
    Ok(Res),
    /// Complete with `Err(error)`.
    Err(MockError),
    /// `tokio::time::sleep(duration)` (so paused-clock tests work), then
    /// continue.
    Delay(Duration, Box<MockReply<Res>>),
    /// Return `Pending` once (waking itself at once), then continue.
    YieldOnce(Box<MockReply<Res>>),
    /// Wait until the gate is open, then continue.
    WaitFor(Gate, Box<MockReply<Res>>),
    /// Never complete.
    Pending,
    /// Panic with this message when polled.
    Panic(String),
}

impl<Res> MockReply<Res> {
    /// `Ok(response)`, at once.
    pub fn ok(response: Res) -> Self {
        Self::Ok(response)
    }

    /// `Err(MockError::new(message))`, at once.
    pub fn err(message: impl Into<Cow<'static, str>>) -> Self {
        Self::Err(MockError::new(message))
    }

    /// Never completes.
    pub fn pending() -> Self {
        Self::Pending
    }

    /// Panics with `message` when polled.
    pub fn panic(message: impl Into<String>) -> Self {
        Self::Panic(message.into())
    }

    /// `reply` after sleeping `delay` (tokio time). Same as
    /// `reply.after(delay)`.
    pub fn delay(delay: Duration, reply: Self) -> Self {
        Self::Delay(delay, Box::new(reply))
    }

    /// This reply after sleeping `delay` (tokio time).
    pub fn after(self, delay: Duration) -> Self {
        Self::Delay(delay, Box::new(self))
    }

    /// This reply after returning `Pending` once.
    pub fn after_yield(self) -> Self {
        Self::YieldOnce(Box::new(self))
    }

    /// This reply once `gate` is open.
    pub fn after_gate(self, gate: &Gate) -> Self {
        Self::WaitFor(gate.clone(), Box::new(self))
    }
}

type Responder<Req, Res> = dyn Fn(Req) -> MockReply<Res> + Send + Sync;
type OnCall<Req> = dyn Fn(&Req) + Send + Sync;

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicUsize,
    inflight: AtomicUsize,
    peak_inflight: AtomicUsize,
    completed: AtomicUsize,
    dropped: AtomicUsize,
    ready_polls: AtomicUsize,
}

struct Shared<Req, Res> {
    script: Mutex<VecDeque<MockReply<Res>>>,
    responder: Box<Responder<Req, Res>>,
    on_call: Mutex<Option<Arc<OnCall<Req>>>>,
    ready: Mutex<ReadyMode>,
    counters: Arc<Counters>,
}

/// A scripted [`Service`] for unit tests of layers.
///
/// Each call takes the next [`MockReply`] from the script; when the script
/// is empty it asks the responder given to [`MockService::new`] (or fails
/// with `"mock script exhausted"` for [`MockService::scripted`]).
///
/// Clones share the script, the readiness and the counters, so a test keeps
/// one clone for assertions and gives another to the layer under test:
///
/// - [`calls`](Self::calls), [`inflight`](Self::inflight),
///   [`peak_inflight`](Self::peak_inflight) — "the inner service never saw
///   more than N concurrent calls";
/// - [`dropped`](Self::dropped) — response futures dropped before they
///   completed (a drop guard lives in the future), i.e. "the inner future was
///   dropped when the timeout fired";
/// - [`completed`](Self::completed) — futures that resolved (a
///   [`MockReply::Panic`] counts as completed).
///
/// A call counts as in flight from `call()` until its future completes or
/// is dropped, so dropping an unpolled future counts too.
///
/// ```
/// use rampart_testkit::{MockReply, MockService};
/// use std::time::Duration;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let svc = MockService::<&str, &str>::scripted([
///     MockReply::ok("slow").after(Duration::from_secs(10)),
/// ]);
/// let call = svc.clone().oneshot("hi");
/// let res = tokio::time::timeout(Duration::from_secs(1), call).await;
/// assert!(res.is_err());
/// assert_eq!(svc.dropped(), 1);
/// assert_eq!(svc.inflight(), 0);
/// # }
/// ```
pub struct MockService<Req, Res> {
    shared: Arc<Shared<Req, Res>>,
}

impl<Req, Res> Clone for MockService<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Req, Res> fmt::Debug for MockService<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockService")
            .field("counters", &self.shared.counters)
            .field("script_remaining", &self.script_remaining())
            .finish_non_exhaustive()
    }
}

impl<Req, Res> MockService<Req, Res> {
    /// A mock that answers with `responder(request)` whenever the script is
    /// empty (it starts empty; add entries with [`push`](Self::push)).
    pub fn new<F>(responder: F) -> Self
    where
        F: Fn(Req) -> MockReply<Res> + Send + Sync + 'static,
    {
        Self {
            shared: Arc::new(Shared {
                script: Mutex::new(VecDeque::new()),
                responder: Box::new(responder),
                on_call: Mutex::new(None),
                ready: Mutex::new(ReadyMode::Ready),
                counters: Arc::new(Counters::default()),
            }),
        }
    }

    /// A mock that plays `replies` in order, then fails every further call
    /// with `MockError("mock script exhausted")`.
    pub fn scripted(replies: impl IntoIterator<Item = MockReply<Res>>) -> Self {
        let svc = Self::new(|_| MockReply::err("mock script exhausted"));
        svc.extend(replies);
        svc
    }

    /// Appends one reply to the shared script.
    pub fn push(&self, reply: MockReply<Res>) {
        lock(&self.shared.script).push_back(reply);
    }

    /// Appends replies to the shared script.
    pub fn extend(&self, replies: impl IntoIterator<Item = MockReply<Res>>) {
        lock(&self.shared.script).extend(replies);
    }

    /// Script entries not consumed yet.
    pub fn script_remaining(&self) -> usize {
        lock(&self.shared.script).len()
    }

    /// Sets a hook called with every request at `call()` time, before the
    /// reply is chosen (e.g. to capture headers). Replaces any earlier hook.
    pub fn on_call<F>(&self, hook: F)
    where
        F: Fn(&Req) + Send + Sync + 'static,
    {
        *lock(&self.shared.on_call) = Some(Arc::new(hook));
    }

    /// Changes what `poll_ready` answers, for every clone. Tasks waiting on a
    /// previous [`ReadyMode::Gated`] gate are woken to re-check.
    pub fn set_ready(&self, mode: ReadyMode) {
        let old = std::mem::replace(&mut *lock(&self.shared.ready), mode);
        if let ReadyMode::Gated(gate) = old {
            gate.wake_all();
        }
    }

    /// Number of `call()`s so far.
    pub fn calls(&self) -> usize {
        self.shared.counters.calls.load(Ordering::SeqCst)
    }

    /// Calls whose future has neither completed nor been dropped.
    pub fn inflight(&self) -> usize {
        self.shared.counters.inflight.load(Ordering::SeqCst)
    }

    /// The most calls ever in flight at once.
    pub fn peak_inflight(&self) -> usize {
        self.shared.counters.peak_inflight.load(Ordering::SeqCst)
    }

    /// Futures that resolved (`Ok`, `Err`, or panicked).
    pub fn completed(&self) -> usize {
        self.shared.counters.completed.load(Ordering::SeqCst)
    }

    /// Futures dropped before they resolved (including never-polled ones).
    pub fn dropped(&self) -> usize {
        self.shared.counters.dropped.load(Ordering::SeqCst)
    }

    /// Number of `poll_ready` calls so far.
    pub fn ready_polls(&self) -> usize {
        self.shared.counters.ready_polls.load(Ordering::SeqCst)
    }
}

impl<Req, Res> Service<Req> for MockService<Req, Res>
where
    Res: Send + 'static,
{
    type Response = Res;
    type Error = MockError;
    type Future = MockFuture<Res>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.shared
            .counters
            .ready_polls
            .fetch_add(1, Ordering::SeqCst);
        let mode = lock(&self.shared.ready).clone();
        match mode {
            ReadyMode::Ready => Poll::Ready(Ok(())),
            ReadyMode::Gated(gate) => gate.poll_open(cx).map(Ok),
            ReadyMode::Fail(e) => Poll::Ready(Err(e)),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let hook = lock(&self.shared.on_call).clone();
        if let Some(hook) = hook {
            hook(&req);
        }
        let scripted = lock(&self.shared.script).pop_front();
        let reply = scripted.unwrap_or_else(|| (self.shared.responder)(req));

        let counters = Arc::clone(&self.shared.counters);
        counters.calls.fetch_add(1, Ordering::SeqCst);
        let now = counters.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.peak_inflight.fetch_max(now, Ordering::SeqCst);
        let guard = FlightGuard {
            counters,
            done: false,
        };
        MockFuture {
            inner: Box::pin(play(reply, guard)),
        }
    }
}

/// Counts a call as in flight until it completes or is dropped.
struct FlightGuard {
    counters: Arc<Counters>,
    done: bool,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let c = &self.counters;
        c.inflight.fetch_sub(1, Ordering::SeqCst);
        if self.done {
            c.completed.fetch_add(1, Ordering::SeqCst);
        } else {
            c.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Returns `Pending` once (after waking itself), then `Ready`.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

async fn play<Res>(mut reply: MockReply<Res>, mut guard: FlightGuard) -> Result<Res, MockError> {
    loop {
        reply = match reply {
            MockReply::Ok(res) => {
                guard.done = true;
                return Ok(res);
            }
            MockReply::Err(e) => {
                guard.done = true;
                return Err(e);
            }
            MockReply::Delay(d, next) => {
                tokio::time::sleep(d).await;
                *next
            }
            MockReply::YieldOnce(next) => {
                YieldOnce(false).await;
                *next
            }
            MockReply::WaitFor(gate, next) => {
                gate.wait().await;
                *next
            }
            MockReply::Pending => match std::future::pending::<Infallible>().await {},
            MockReply::Panic(message) => {
                guard.done = true;
                panic!("{message}");
            }
        };
    }
}

/// The response future of [`MockService`].
#[must_use = "futures do nothing unless polled"]
pub struct MockFuture<Res> {
    inner: Pin<Box<dyn Future<Output = Result<Res, MockError>> + Send>>,
}

impl<Res> fmt::Debug for MockFuture<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockFuture").finish_non_exhaustive()
    }
}

impl<Res> Future for MockFuture<Res> {
    type Output = Result<Res, MockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
