//! [`KeyedLockLayer`]: calls with the same key run one at a time, in
//! arrival order; calls with different keys run in parallel.
//!
//! ```
//! use rampart_sync::KeyedLockLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // Requests are (account, amount); one account's updates never interleave.
//! let lock = KeyedLockLayer::new(|req: &(u32, i64)| req.0);
//! let svc = ServiceBuilder::new()
//!     .layer(lock.clone())
//!     .service(service_fn(|(_, amount): (u32, i64)| async move {
//!         Ok::<_, std::io::Error>(amount)
//!     }));
//! assert_eq!(svc.oneshot((7, 100)).await?, 100);
//! assert_eq!(lock.stats().keys, 0); // idle: the key map is empty
//! # Ok(())
//! # }
//! ```

use crate::metrics::{LockMetrics, Reason};
use crate::stats::LockStats;
use pin_project_lite::pin_project;
use rampart_core::hashed::HashedMap;
use rampart_core::telemetry::{LayerName, Registered};
use rampart_core::{BoxError, Context, Error};
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker, ready};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tower_layer::Layer;
use tower_service::Service;

/// Shards of the key map: calls for different keys rarely share a lock.
const SHARDS: usize = 16;
/// A shard's map is shrunk when fewer than a quarter of its capacity is
/// used and its capacity is above this.
const MIN_CAPACITY: usize = 64;

/// One active key: how many calls hold it or wait for it, and (only once a
/// second call came while it was held) the semaphore its waiters queue on.
#[derive(Debug)]
struct Slot {
    /// The holder (or the waiter it is being handed to) plus the waiters.
    refs: usize,
    /// Zero permits while held; a release with waiters adds one, which
    /// tokio hands to the first waiter in line.
    line: Option<Arc<Semaphore>>,
}

type Map = HashedMap<Slot>;

/// Keeps the shard locks on separate cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Map>);

/// The state every clone of a [`KeyedLockLayer`] and of its services
/// shares.
#[derive(Debug)]
struct Shared {
    hasher: RandomState,
    shards: [Shard; SHARDS],
    waiting: AtomicUsize,
    waited: AtomicU64,
    gave_up: AtomicU64,
    /// The `layer` field of events and label of metrics.
    name: LayerName,
    /// Registered when the layer makes its first service, under `name`.
    metrics: Registered<LockMetrics>,
}

impl Shared {
    /// The metric handles, once registered.
    #[inline]
    fn metrics(&self) -> Option<&LockMetrics> {
        self.metrics.get()
    }

    fn hash<K: Hash>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Map> {
        // Middle bits pick the shard; the map uses the low bits for the
        // bucket and the top bits for its tags.
        let i = (hash >> 32) as usize % SHARDS;
        self.shards[i]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A call's place on its key (holding it or waiting for it); dropping it
/// leaves: the next waiter, if any, is given the key, and the key leaves
/// the map when nobody else holds or waits for it. It keeps the `held` and
/// `waiting` gauges right on every path.
struct Guard {
    shared: Arc<Shared>,
    hash: u64,
    holding: bool,
    /// When it started waiting (only kept to be measured).
    #[cfg(feature = "metrics")]
    since: Option<Instant>,
    /// Why it would stop waiting if dropped now (fits in the padding).
    why: Reason,
}

impl Guard {
    /// The guard of a call that holds its key.
    fn holding(shared: &Arc<Shared>, hash: u64) -> Guard {
        if let Some(m) = shared.metrics() {
            m.held.increment(1.0);
        }
        Guard {
            shared: Arc::clone(shared),
            hash,
            holding: true,
            #[cfg(feature = "metrics")]
            since: None,
            why: Reason::Dropped,
        }
    }

    /// The guard of a call that waits for its key.
    fn waiting(shared: &Arc<Shared>, hash: u64) -> Guard {
        shared.waiting.fetch_add(1, Ordering::Relaxed);
        shared.waited.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = shared.metrics() {
            m.waiting.increment(1.0);
            m.waited.increment(1);
        }
        Guard {
            shared: Arc::clone(shared),
            hash,
            holding: false,
            #[cfg(feature = "metrics")]
            since: Some(Instant::now()),
            why: Reason::Dropped,
        }
    }

    /// A waiter was handed its key.
    fn take_key(&mut self) {
        self.holding = true;
        self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
        self.left_line();
        if let Some(m) = self.shared.metrics() {
            m.held.increment(1.0);
        }
    }

    /// Records that a waiter stopped waiting.
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    fn left_line(&self) {
        let Some(metrics) = self.shared.metrics() else {
            return;
        };
        metrics.waiting.decrement(1.0);
        #[cfg(feature = "metrics")]
        if let Some(since) = self.since {
            metrics.wait.record_duration(since.elapsed());
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.holding {
            if let Some(m) = self.shared.metrics() {
                m.held.decrement(1.0);
            }
        } else {
            self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
            self.shared.gave_up.fetch_add(1, Ordering::Relaxed);
            self.left_line();
            if let Some(m) = self.shared.metrics() {
                m.gave_up.count(self.why);
            }
        }
        let mut map = self.shared.shard(self.hash);
        if let Entry::Occupied(mut e) = map.entry(self.hash) {
            let slot = e.get_mut();
            slot.refs -= 1;
            if slot.refs == 0 {
                e.remove();
                let cap = map.capacity();
                if cap > MIN_CAPACITY && map.len() * 4 < cap {
                    let to = (map.len() * 2).max(MIN_CAPACITY);
                    map.shrink_to(to);
                }
            } else if self.holding
                && let Some(line) = &slot.line
            {
                // Hand the key to the first waiter in line (or, if it is
                // leaving at this moment, to whoever comes next).
                line.add_permits(1);
            }
        }
    }
}

/// A layer that serialises calls per key: calls whose key (a function of
/// the request) is equal run one at a time, in the order `call` was made;
/// calls with different keys run in parallel.
///
/// - The key map only holds keys that have a holder or waiters: it is empty
///   when the service is idle, whatever the number of keys seen.
/// - A waiter that gives up (its response future is dropped, say by a
///   timeout above) leaves the line without disturbing the others, also
///   when it had just been handed the key. A holder whose response future
///   is dropped, completes or panics releases the key.
/// - A waiter wakes on its request's [`Context`] cancellation token
///   ([`ErrorKind::Cancelled`](rampart_core::ErrorKind::Cancelled)) and
///   never waits past the context's deadline
///   ([`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded)).
///   The context is the one current when the response future is first
///   polled.
/// - Every clone of the layer, and every service it builds, shares one key
///   map (axum clones a service per request).
///
/// Keys are not stored: the map holds a 64-bit SipHash of each, under a
/// random key per layer. Two different keys whose hashes collide (odds of
/// 2⁻⁶⁴ per pair) would share a lock: they would be serialised, never run
/// together wrongly.
///
/// The inner service must be `Clone`: a call that waits keeps the service
/// that `poll_ready` made ready and calls it once the key is its own.
///
/// The uncontended path (nobody holds the key) takes one short shard lock
/// on `call` and one on completion, allocates nothing once the shard's
/// map has room, and touches no timer.
pub struct KeyedLockLayer<F> {
    key: F,
    shared: Arc<Shared>,
}

impl<F> KeyedLockLayer<F> {
    /// Serialises calls by the key `key(&request)` returns.
    pub fn new(key: F) -> KeyedLockLayer<F> {
        KeyedLockLayer {
            key,
            shared: Arc::new(Shared {
                hasher: RandomState::new(),
                shards: Default::default(),
                waiting: AtomicUsize::new(0),
                waited: AtomicU64::new(0),
                gave_up: AtomicU64::new(0),
                name: LayerName::default(),
                metrics: Registered::new(),
            }),
        }
    }

    /// Names the layer: the `layer` label of its metrics and the `layer`
    /// field of its tracing events (default `"default"`), never request
    /// data (the key is not a label).
    ///
    /// The name belongs to the state every clone shares, and the metric
    /// handles are registered under it (with the `metrics` recorder
    /// installed then) when the layer makes its first service: name the
    /// layer where it is made, before it is cloned or wraps a service. A layer whose state is already shared
    /// keeps its name (a `warn` event says so).
    ///
    /// ```
    /// use rampart_sync::KeyedLockLayer;
    /// let lock = KeyedLockLayer::new(|account: &u32| *account).name("accounts");
    /// assert_eq!(lock.layer_name(), "accounts");
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        let name = name.into();
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.metrics = Registered::new();
            shared.name = name;
        } else {
            tracing::warn!(
                layer = %self.shared.name,
                new_name = %name,
                "KeyedLockLayer::name on a layer already cloned or in use: name kept"
            );
        }
        self
    }

    /// The layer's name (see [`name`](Self::name)).
    pub fn layer_name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// A snapshot of the lock's state, shared by every clone.
    pub fn stats(&self) -> LockStats {
        stats(&self.shared)
    }
}

fn stats(shared: &Shared) -> LockStats {
    let keys = (0..SHARDS)
        .map(|i| {
            shared.shards[i]
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        })
        .sum();
    LockStats {
        keys,
        waiting: shared.waiting.load(Ordering::Relaxed),
        waited: shared.waited.load(Ordering::Relaxed),
        gave_up: shared.gave_up.load(Ordering::Relaxed),
    }
}

impl<F: Clone> Clone for KeyedLockLayer<F> {
    fn clone(&self) -> Self {
        KeyedLockLayer {
            key: self.key.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<F> fmt::Debug for KeyedLockLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLockLayer")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone> Layer<S> for KeyedLockLayer<F> {
    type Service = KeyedLock<S, F>;

    fn layer(&self, inner: S) -> KeyedLock<S, F> {
        // The first service registers the handles, under the name the
        // layer ends up with (building and naming it register nothing).
        let shared = &self.shared;
        shared.metrics.register(|| LockMetrics::new(&shared.name));
        KeyedLock {
            inner,
            key: self.key.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`KeyedLockLayer`].
pub struct KeyedLock<S, F> {
    inner: S,
    key: F,
    shared: Arc<Shared>,
}

impl<S, F> KeyedLock<S, F> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A snapshot of the lock's state (the layer's, shared by every clone).
    pub fn stats(&self) -> LockStats {
        stats(&self.shared)
    }
}

impl<S: Clone, F: Clone> Clone for KeyedLock<S, F> {
    fn clone(&self) -> Self {
        KeyedLock {
            inner: self.inner.clone(),
            key: self.key.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, F> fmt::Debug for KeyedLock<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLock")
            .field("inner", &self.inner)
            .field("stats", &stats(&self.shared))
            .finish_non_exhaustive()
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

impl<S, F, K, Req> Service<Req> for KeyedLock<S, F>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> K,
    K: Hash,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> ResponseFuture<S, Req> {
        let hash = self.shared.hash(&(self.key)(&req));
        let mut map = self.shared.shard(hash);
        let slot = map.entry(hash).or_insert(Slot {
            refs: 0,
            line: None,
        });
        slot.refs += 1;
        if slot.refs == 1 {
            drop(map);
            let guard = Guard::holding(&self.shared, hash);
            return ResponseFuture {
                state: State::Calling {
                    fut: self.inner.call(req),
                },
                guard: Some(guard),
            };
        }
        // Held: join the line now, so that the order of `call`s is the
        // order of service (the first poll is made with a no-op waker; the
        // real one replaces it when the response future is polled).
        let line = Arc::clone(slot.line.get_or_insert_with(|| Arc::new(Semaphore::new(0))));
        let mut acquire: Acquire = Box::pin(line.acquire_owned());
        let first = acquire
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()));
        drop(map);
        if let Poll::Ready(permit) = first {
            // A waiter that had just been handed the key left: it is ours.
            drop(acquire);
            if let Ok(p) = permit {
                p.forget();
            }
            let guard = Guard::holding(&self.shared, hash);
            return ResponseFuture {
                state: State::Calling {
                    fut: self.inner.call(req),
                },
                guard: Some(guard),
            };
        }
        let guard = Guard::waiting(&self.shared, hash);
        // Keep the service that `poll_ready` made ready for the call.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Waiting {
                acquire,
                cancel: None,
                sleep: None,
                first_poll: true,
                svc: Some(svc),
                req: Some(req),
            },
            guard: Some(guard),
        }
    }
}

pin_project! {
    /// The response future of [`KeyedLock`]: waits for the key (if another
    /// call holds it), then runs the inner call holding it.
    ///
    /// Dropping it at any point leaves the key's line or releases the key.
    ///
    /// # Panics
    ///
    /// When polled again after it completed.
    #[project = ResponseFutureProj]
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        // Declared before `guard`: a waiter's place in the semaphore's line
        // is dropped (giving back a permit it had just been handed) before
        // the guard hands the key on or removes it.
        #[pin]
        state: State<S, Req>,
        guard: Option<Guard>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Waiting {
            acquire: Acquire,
            #[pin]
            cancel: Option<WaitForCancellationFutureOwned>,
            #[pin]
            sleep: Option<Sleep>,
            first_poll: bool,
            svc: Option<S>,
            req: Option<Req>,
        },
        Calling {
            #[pin]
            fut: S::Future,
        },
        Done,
    }
}

/// Why a waiter stopped waiting.
enum GaveUp {
    Cancelled,
    Deadline,
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let out = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    // Release the key before handing the result back.
                    this.guard.take();
                    return Poll::Ready(out.map_err(Error::from_inner));
                }
                StateProj::Waiting {
                    acquire,
                    mut cancel,
                    mut sleep,
                    first_poll,
                    svc,
                    req,
                } => {
                    if let Poll::Ready(permit) = acquire.as_mut().poll(cx) {
                        if let Ok(p) = permit {
                            p.forget();
                        }
                        let (Some(mut svc), Some(req)) = (svc.take(), req.take()) else {
                            unreachable!("a waiting call holds its service and request")
                        };
                        if let Some(g) = this.guard.as_mut() {
                            g.take_key();
                        }
                        let fut = svc.call(req);
                        this.state.set(State::Calling { fut });
                        continue;
                    }
                    if *first_poll {
                        *first_poll = false;
                        let (token, deadline) = Context::with_current(|c| {
                            c.map_or((None, None), |c| (c.cancellation().cloned(), c.deadline()))
                        });
                        if let Some(t) = token {
                            cancel.set(Some(t.cancelled_owned()));
                        }
                        if let Some(d) = deadline {
                            if d <= Instant::now() {
                                return Poll::Ready(Err(this.give_up(GaveUp::Deadline)));
                            }
                            sleep.set(Some(sleep_until(d)));
                        }
                    }
                    if let Some(c) = cancel.as_pin_mut()
                        && c.poll(cx).is_ready()
                    {
                        return Poll::Ready(Err(this.give_up(GaveUp::Cancelled)));
                    }
                    if let Some(s) = sleep.as_pin_mut()
                        && s.poll(cx).is_ready()
                    {
                        return Poll::Ready(Err(this.give_up(GaveUp::Deadline)));
                    }
                    return Poll::Pending;
                }
                StateProj::Done => panic!("keyed lock ResponseFuture polled after completion"),
            }
        }
    }
}

impl<S, Req> ResponseFutureProj<'_, S, Req>
where
    S: Service<Req>,
{
    /// Leaves the line: the waiting state (and its place in the semaphore)
    /// first, then the guard.
    fn give_up(&mut self, why: GaveUp) -> Error {
        self.state.set(State::Done);
        // Counted as given up by the guard.
        let Some(mut guard) = self.guard.take() else {
            unreachable!("a waiting call holds its guard")
        };
        let (reason, error, what) = match why {
            GaveUp::Cancelled => (Reason::Cancelled, Error::cancelled(), "request cancelled"),
            GaveUp::Deadline => (
                Reason::Deadline,
                Error::deadline_exceeded(),
                "deadline passed",
            ),
        };
        guard.why = reason;
        tracing::debug!(
            layer = %guard.shared.name,
            "gave up waiting for a keyed lock: {what}"
        );
        drop(guard);
        error
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Calling { .. } => "calling",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("holding", &self.guard.as_ref().is_some_and(|g| g.holding))
            .finish()
    }
}
