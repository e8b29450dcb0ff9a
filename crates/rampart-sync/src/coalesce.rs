//! [`CoalesceLayer`] (single-flight): concurrent requests with the same key
//! share one call to the inner service.
//!
//! ```
//! use rampart_sync::CoalesceLayer;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counted = Arc::clone(&calls);
//! let coalesce = CoalesceLayer::new(|path: &String| path.clone());
//! let svc = ServiceBuilder::new()
//!     .layer(coalesce.clone())
//!     .service(service_fn(move |path: String| {
//!         counted.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             tokio::task::yield_now().await;
//!             Ok::<_, std::io::Error>(format!("contents of {path}"))
//!         }
//!     }));
//! let (a, b) = tokio::join!(
//!     svc.clone().oneshot("/a".to_string()),
//!     svc.clone().oneshot("/a".to_string()),
//! );
//! assert_eq!(a?, b?);
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! assert_eq!(coalesce.stats().coalesced, 1);
//! # Ok(())
//! # }
//! ```

use crate::stats::CoalesceStats;
use pin_project_lite::pin_project;
use rampart_core::{BoxError, Context, Error};
use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tower_layer::Layer;
use tower_service::Service;

/// Shards of a flight map: calls for different keys rarely share a lock.
const SHARDS: usize = 16;

/// The configuration of a [`CoalesceLayer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct CoalesceConfig {
    /// How long a successful result is kept and given to later requests
    /// with the same key. Zero (the default): not kept; a request that
    /// comes after the call finished makes a new one.
    pub time_to_live: Duration,
}

impl CoalesceConfig {
    /// The default: results are not kept once the shared call finished.
    pub fn new() -> CoalesceConfig {
        CoalesceConfig::default()
    }

    /// Keeps successful results for `ttl` (zero: not kept).
    pub fn time_to_live(mut self, ttl: Duration) -> CoalesceConfig {
        self.time_to_live = ttl;
        self
    }
}

#[derive(Debug, Default)]
struct Counters {
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
    calls: AtomicU64,
    coalesced: AtomicU64,
    cached: AtomicU64,
    abandoned: AtomicU64,
}

/// The state every clone of a [`CoalesceLayer`] and of its services share:
/// counters, and one flight map per (key, response) type pair (a layer is
/// normally used with one; the map is made on the first call).
#[derive(Debug)]
struct Registry {
    counters: Arc<Counters>,
    ttl: Option<Duration>,
    first: OnceLock<Arc<dyn Any + Send + Sync>>,
    others: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl Registry {
    fn map<K, Res>(&self) -> Arc<FlightMap<K, Res>>
    where
        K: Hash + Eq + Send + Sync + 'static,
        Res: Send + Sync + 'static,
    {
        let first = self
            .first
            .get_or_init(|| Arc::new(self.new_map::<K, Res>()));
        if let Ok(map) = Arc::clone(first).downcast() {
            return map;
        }
        // Cold: the layer serves a second pair of key and response types.
        let mut others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
        for m in others.iter() {
            if let Ok(map) = Arc::clone(m).downcast() {
                return map;
            }
        }
        let map = Arc::new(self.new_map::<K, Res>());
        others.push(map.clone());
        map
    }

    fn new_map<K, Res>(&self) -> FlightMap<K, Res> {
        FlightMap {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            counters: Arc::clone(&self.counters),
            ttl: self.ttl,
        }
    }
}

type Shard<K, Res> = HashMap<K, Arc<Flight<K, Res>>>;

/// The calls in flight (and, with a time to live, recent results), by key.
struct FlightMap<K, Res> {
    hasher: RandomState,
    shards: Box<[Mutex<Shard<K, Res>>]>,
    counters: Arc<Counters>,
    ttl: Option<Duration>,
}

impl<K: Hash + Eq, Res> FlightMap<K, Res> {
    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K, Res>> {
        let i = (self.hasher.hash_one(key) >> 32) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes `flight` from the map if it is still there (a newer flight
    /// for the same key is left alone). Call with the key's shard locked.
    fn remove(shard: &mut Shard<K, Res>, flight: &Arc<Flight<K, Res>>) {
        if shard
            .get(&flight.key)
            .is_some_and(|f| Arc::ptr_eq(f, flight))
        {
            shard.remove(&flight.key);
        }
    }
}

/// One shared call: its key, its result once known, and who waits for it.
struct Flight<K, Res> {
    key: K,
    /// Set once, with the key's shard locked.
    result: OnceLock<Result<Res, Arc<Error>>>,
    /// Woken once, after `result` is set.
    done: Arc<Notify>,
    /// Callers waiting for the result; changed with the key's shard locked.
    waiters: AtomicUsize,
    /// Aborts the task that drives the call once every waiter has gone.
    abort: OnceLock<AbortHandle>,
}

/// The error every waiter of a failed shared call gets as the source of
/// its own [`Error`] (which has the same kind and `retry_after`): the one
/// failure, shared.
#[derive(Clone)]
pub struct SharedError(Arc<Error>);

impl SharedError {
    /// The error the shared call failed with.
    pub fn original(&self) -> &Error {
        &self.0
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::error::Error::source(&*self.0) {
            Some(s) => fmt::Display::fmt(s, f),
            None => fmt::Display::fmt(&*self.0, f),
        }
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// One waiter's copy of the shared result.
fn share<Res: Clone>(result: &Result<Res, Arc<Error>>) -> Result<Res, Error> {
    match result {
        Ok(res) => Ok(res.clone()),
        Err(e) => Err(Error::new(e.kind())
            .with_retry_after(e.retry_after())
            .with_source(SharedError(Arc::clone(e)))),
    }
}

/// A layer that coalesces concurrent requests with the same key into one
/// call to the inner service (single-flight), and gives every caller the
/// result.
///
/// - The shared call runs in a task of its own (`tokio::spawn`), so it is
///   not tied to the first caller's future: if that caller is cancelled or
///   dropped, the call goes on for the others. It is dropped (the task
///   aborted) only when *every* caller waiting for it has gone.
/// - Waiters are woken once, by the result (a `tokio::sync::Notify`): never
///   polled in a loop.
/// - Every waiter gets a clone of the response — use an `Arc<T>` response
///   (say, `.map_response(Arc::new)` below this layer) when it is not
///   `Clone` or costly to clone. A failure is shared too: each waiter gets
///   an [`Error`] of the same kind and `retry_after` whose source is the
///   one [`SharedError`]. A panicking inner call fails its waiters with
///   [`ErrorKind::Inner`](rampart_core::ErrorKind::Inner), never leaves
///   them hanging.
/// - A waiter wakes on its request's [`Context`] cancellation token
///   ([`ErrorKind::Cancelled`](rampart_core::ErrorKind::Cancelled)) and
///   never waits past its deadline
///   ([`ErrorKind::DeadlineExceeded`](rampart_core::ErrorKind::DeadlineExceeded));
///   the context is the one current when its response future is first
///   polled. The shared call runs in a context holding the first caller's
///   request id only: no caller's deadline or cancellation binds the others.
/// - With a time to live ([`CoalesceLayer::time_to_live`]) a successful
///   result is also given to requests that come within that time after it;
///   failures are never kept.
/// - Every clone of the layer, and every service it builds, shares one map
///   of calls in flight; it holds only keys with a call in flight (or a
///   kept result).
///
/// Only the first request of a flight reaches the inner service; the key
/// must therefore capture everything the response depends on.
///
/// `call` must be made within a tokio runtime.
pub struct CoalesceLayer<F> {
    key: F,
    registry: Arc<Registry>,
}

impl<F> CoalesceLayer<F> {
    /// Coalesces requests by the key `key(&request)` returns; results are
    /// not kept once the shared call finished.
    pub fn new(key: F) -> CoalesceLayer<F> {
        CoalesceLayer::with_config(key, CoalesceConfig::new())
    }

    /// Coalesces requests by `key`, configured by `config`.
    pub fn with_config(key: F, config: CoalesceConfig) -> CoalesceLayer<F> {
        let ttl = Some(config.time_to_live).filter(|t| !t.is_zero());
        CoalesceLayer {
            key,
            registry: Arc::new(Registry {
                counters: Arc::default(),
                ttl,
                first: OnceLock::new(),
                others: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Coalesces requests by `key` and keeps each successful result for
    /// `ttl` after its call finished (zero: not kept).
    pub fn time_to_live(key: F, ttl: Duration) -> CoalesceLayer<F> {
        CoalesceLayer::with_config(key, CoalesceConfig::new().time_to_live(ttl))
    }

    /// A snapshot of the coalescer's state, shared by every clone.
    pub fn stats(&self) -> CoalesceStats {
        stats(&self.registry.counters)
    }
}

fn stats(c: &Counters) -> CoalesceStats {
    CoalesceStats {
        in_flight: c.in_flight.load(Ordering::Relaxed),
        waiting: c.waiting.load(Ordering::Relaxed),
        calls: c.calls.load(Ordering::Relaxed),
        coalesced: c.coalesced.load(Ordering::Relaxed),
        cached: c.cached.load(Ordering::Relaxed),
        abandoned: c.abandoned.load(Ordering::Relaxed),
    }
}

impl<F: Clone> Clone for CoalesceLayer<F> {
    fn clone(&self) -> Self {
        CoalesceLayer {
            key: self.key.clone(),
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<F> fmt::Debug for CoalesceLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceLayer")
            .field("time_to_live", &self.registry.ttl)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone> Layer<S> for CoalesceLayer<F> {
    type Service = Coalesce<S, F>;

    fn layer(&self, inner: S) -> Coalesce<S, F> {
        Coalesce {
            inner,
            key: self.key.clone(),
            registry: Arc::clone(&self.registry),
        }
    }
}

/// The service of [`CoalesceLayer`].
pub struct Coalesce<S, F> {
    inner: S,
    key: F,
    registry: Arc<Registry>,
}

impl<S, F> Coalesce<S, F> {
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

    /// A snapshot of the coalescer's state (the layer's, shared by every
    /// clone).
    pub fn stats(&self) -> CoalesceStats {
        stats(&self.registry.counters)
    }
}

impl<S: Clone, F: Clone> Clone for Coalesce<S, F> {
    fn clone(&self) -> Self {
        Coalesce {
            inner: self.inner.clone(),
            key: self.key.clone(),
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<S: fmt::Debug, F> fmt::Debug for Coalesce<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S, F, K, Req> Service<Req> for Coalesce<S, F>
where
    S: Service<Req>,
    S::Response: Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    F: Fn(&Req) -> K,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<K, S::Response>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.key)(&req);
        let map = self.registry.map::<K, S::Response>();
        let counters = &map.counters;
        let mut shard = map.shard(&key);
        if let Some(flight) = shard.get(&key) {
            let flight = Arc::clone(flight);
            if flight.result.get().is_some() {
                drop(shard);
                counters.cached.fetch_add(1, Ordering::Relaxed);
                return ResponseFuture::new(flight, None);
            }
            flight.waiters.fetch_add(1, Ordering::Relaxed);
            drop(shard);
            counters.coalesced.fetch_add(1, Ordering::Relaxed);
            counters.waiting.fetch_add(1, Ordering::Relaxed);
            tracing::trace!("request joined a coalesced call in flight");
            return ResponseFuture::new(flight, Some(map));
        }
        let flight = Arc::new(Flight {
            key: key.clone(),
            result: OnceLock::new(),
            done: Arc::new(Notify::new()),
            waiters: AtomicUsize::new(1),
            abort: OnceLock::new(),
        });
        shard.insert(key, Arc::clone(&flight));
        drop(shard);
        counters.calls.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        counters.waiting.fetch_add(1, Ordering::Relaxed);
        // From here on, whatever happens (the inner `call` or `spawn`
        // panics, the task is aborted or panics), the publisher gives the
        // waiters a result.
        let publisher = Publisher {
            map: Arc::clone(&map),
            flight: Arc::clone(&flight),
            published: false,
        };
        let fut = self.inner.call(req);
        let ctx = Context::with_current(|c| {
            c.and_then(Context::request_id)
                .map_or_else(Context::new, |id| {
                    Context::new().with_request_id(id.clone())
                })
        });
        let ttl = map.ttl;
        let task = tokio::spawn(ctx.scope(async move {
            let mut publisher = publisher;
            let out = fut.await.map_err(|e| Arc::new(Error::from_inner(e)));
            let ok = out.is_ok();
            publisher.publish(out);
            if ok && let Some(ttl) = ttl {
                tokio::time::sleep(ttl).await;
            }
            // Dropping the publisher forgets the kept result.
        }));
        let _ = flight.abort.set(task.abort_handle());
        ResponseFuture::new(flight, Some(map))
    }
}

/// Owned by the task driving a shared call: publishes its result, or a
/// failure if the call panicked or was aborted, and takes the flight out
/// of the map when dropped.
struct Publisher<K: Hash + Eq, Res> {
    map: Arc<FlightMap<K, Res>>,
    flight: Arc<Flight<K, Res>>,
    published: bool,
}

impl<K: Hash + Eq, Res> Publisher<K, Res> {
    fn publish(&mut self, result: Result<Res, Arc<Error>>) {
        self.published = true;
        let keep = self.map.ttl.is_some() && result.is_ok();
        {
            let mut shard = self.map.shard(&self.flight.key);
            if !keep {
                FlightMap::remove(&mut shard, &self.flight);
            }
            let _ = self.flight.result.set(result);
        }
        self.map.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.flight.done.notify_waiters();
    }
}

impl<K: Hash + Eq, Res> Drop for Publisher<K, Res> {
    fn drop(&mut self) {
        if !self.published {
            // Panicked, or aborted because every waiter left.
            self.publish(Err(Arc::new(Error::from_inner(
                "the coalesced call panicked or was abandoned",
            ))));
        }
        let mut shard = self.map.shard(&self.flight.key);
        FlightMap::remove(&mut shard, &self.flight);
    }
}

/// A caller waiting for a shared call; dropped before the result came, it
/// leaves, and the last one to leave aborts the call.
struct Waiter<K: Hash + Eq, Res> {
    map: Arc<FlightMap<K, Res>>,
    flight: Arc<Flight<K, Res>>,
}

impl<K: Hash + Eq, Res> Drop for Waiter<K, Res> {
    fn drop(&mut self) {
        let counters = &self.map.counters;
        counters.waiting.fetch_sub(1, Ordering::Relaxed);
        if self.flight.result.get().is_some() {
            return;
        }
        let mut shard = self.map.shard(&self.flight.key);
        // The result is set with the shard locked: checked again under it.
        if self.flight.result.get().is_some() {
            return;
        }
        if self.flight.waiters.fetch_sub(1, Ordering::Relaxed) == 1 {
            FlightMap::remove(&mut shard, &self.flight);
            drop(shard);
            counters.abandoned.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("every caller of a coalesced call left: call dropped");
            if let Some(task) = self.flight.abort.get() {
                task.abort();
            }
        }
    }
}

pin_project! {
    /// The response future of [`Coalesce`]: the shared call's result, or
    /// the caller's own cancellation or deadline.
    pub struct ResponseFuture<K, Res>
    where
        K: Hash,
        K: Eq,
    {
        #[pin]
        done: Option<OwnedNotified>,
        #[pin]
        cancel: Option<WaitForCancellationFutureOwned>,
        #[pin]
        sleep: Option<Sleep>,
        flight: Arc<Flight<K, Res>>,
        waiter: Option<Waiter<K, Res>>,
        first_poll: bool,
    }
}

impl<K: Hash + Eq, Res> ResponseFuture<K, Res> {
    fn new(flight: Arc<Flight<K, Res>>, map: Option<Arc<FlightMap<K, Res>>>) -> Self {
        ResponseFuture {
            done: None,
            cancel: None,
            sleep: None,
            waiter: map.map(|map| Waiter {
                map,
                flight: Arc::clone(&flight),
            }),
            flight,
            first_poll: true,
        }
    }
}

impl<K: Hash + Eq, Res: Clone> Future for ResponseFuture<K, Res> {
    type Output = Result<Res, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(result) = this.flight.result.get() {
            this.waiter.take();
            return Poll::Ready(share(result));
        }
        if *this.first_poll {
            *this.first_poll = false;
            let mut done = this.done.as_mut();
            done.set(Some(Arc::clone(&this.flight.done).notified_owned()));
            if let Some(n) = done.as_pin_mut() {
                n.enable();
            }
            // `enable` before this look: a result set after it wakes us.
            if let Some(result) = this.flight.result.get() {
                this.waiter.take();
                return Poll::Ready(share(result));
            }
            let (token, deadline) = Context::with_current(|c| {
                c.map_or((None, None), |c| (c.cancellation().cloned(), c.deadline()))
            });
            if let Some(t) = token {
                this.cancel.set(Some(t.cancelled_owned()));
            }
            if let Some(d) = deadline {
                if d <= Instant::now() {
                    this.waiter.take();
                    tracing::debug!("gave up waiting for a coalesced call: deadline passed");
                    return Poll::Ready(Err(Error::deadline_exceeded()));
                }
                this.sleep.set(Some(sleep_until(d)));
            }
        }
        if let Some(n) = this.done.as_pin_mut()
            && n.poll(cx).is_ready()
            && let Some(result) = this.flight.result.get()
        {
            this.waiter.take();
            return Poll::Ready(share(result));
        }
        if let Some(c) = this.cancel.as_pin_mut()
            && c.poll(cx).is_ready()
        {
            this.waiter.take();
            tracing::debug!("gave up waiting for a coalesced call: request cancelled");
            return Poll::Ready(Err(Error::cancelled()));
        }
        if let Some(s) = this.sleep.as_pin_mut()
            && s.poll(cx).is_ready()
        {
            this.waiter.take();
            tracing::debug!("gave up waiting for a coalesced call: deadline passed");
            return Poll::Ready(Err(Error::deadline_exceeded()));
        }
        Poll::Pending
    }
}

impl<K: Hash + Eq, Res> fmt::Debug for ResponseFuture<K, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.flight.result.get().is_some())
            .finish_non_exhaustive()
    }
}
