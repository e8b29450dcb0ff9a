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

use crate::metrics::{CoalesceMetrics, Reason};
use crate::stats::CoalesceStats;
use hashbrown::HashTable;
use pin_project_lite::pin_project;
use rampart_core::telemetry::{LayerName, Registered};
use rampart_core::{BoxError, Context, Error};
use std::any::Any;
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
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
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

/// The coalescer's counts for `stats()`, its name (the `layer` field of
/// its events and label of its metrics) and its metric handles: each
/// change goes through one method that keeps both in step.
#[derive(Debug)]
struct Counters {
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
    calls: AtomicU64,
    coalesced: AtomicU64,
    cached: AtomicU64,
    abandoned: AtomicU64,
    name: LayerName,
    /// Registered when the layer makes its first service, under `name`.
    metrics: Registered<CoalesceMetrics>,
}

impl Counters {
    fn new(name: LayerName) -> Counters {
        Counters {
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            metrics: Registered::new(),
            name,
        }
    }

    /// A new shared call, its leader waiting for it.
    fn lead(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.leaders.increment(1);
            m.in_flight.increment(1.0);
            m.waiting.increment(1.0);
        }
    }

    /// A caller joined a shared call in flight.
    fn join(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.coalesced.increment(1);
            m.waiting.increment(1.0);
        }
    }

    /// A caller answered from a kept result.
    fn cached(&self) {
        self.cached.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.cached.increment(1);
        }
    }

    /// A caller (leader or not) stopped waiting.
    fn left(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.waiting.decrement(1.0);
        }
    }

    /// A shared call ended (result published).
    fn landed(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.in_flight.decrement(1.0);
        }
    }

    /// Every caller of a shared call left.
    fn abandoned(&self) {
        self.abandoned.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.abandoned.increment(1);
        }
    }
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
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            counters: Arc::clone(&self.counters),
            ttl: self.ttl,
        }
    }
}

/// One shard: the flights, found by their key's hash (computed once per
/// request) and key.
type Shard<K, Res> = HashTable<Arc<Flight<K, Res>>>;

/// The calls in flight (and, with a time to live, recent results), by key.
struct FlightMap<K, Res> {
    hasher: RandomState,
    shards: Box<[Mutex<Shard<K, Res>>]>,
    counters: Arc<Counters>,
    ttl: Option<Duration>,
}

impl<K: Hash + Eq, Res> FlightMap<K, Res> {
    fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard<K, Res>> {
        // Middle bits pick the shard; the table uses the low bits for the
        // bucket and the top bits for its tags.
        let i = (hash >> 32) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes `flight` from the map if it is still there (a newer flight
    /// for the same key is left alone). Call with its shard locked.
    fn remove(shard: &mut Shard<K, Res>, flight: &Arc<Flight<K, Res>>) {
        if let Ok(e) = shard.find_entry(flight.hash, |f| Arc::ptr_eq(f, flight)) {
            e.remove();
        }
    }
}

/// One shared call: its key, its result once known, and who waits for it.
struct Flight<K, Res> {
    key: K,
    /// The key's hash, under the map's hasher.
    hash: u64,
    /// Set once, with the key's shard locked.
    result: OnceLock<Result<Res, Arc<Error>>>,
    /// Woken once, after `result` is set; made when a second caller joins.
    done: OnceLock<Arc<Notify>>,
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
/// - The shared call is not tied to the first caller's future: that
///   caller drives it in its own task while it waits (so a lone request
///   costs no task and no cross-task wake-up), and if it is cancelled or
///   dropped while others still wait, the call moves, as it is, to a task
///   of its own (`tokio::spawn`) and goes on for them. The call is dropped
///   only when *every* caller waiting for it has gone.
/// - The other callers are woken once, by the result (a
///   `tokio::sync::Notify`): never polled in a loop.
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
/// The first caller's future must be dropped within a tokio runtime for
/// the call to move to a task (otherwise the others get an
/// [`ErrorKind::Inner`](rampart_core::ErrorKind::Inner) failure).
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
                counters: Arc::new(Counters::new(LayerName::default())),
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
    /// use rampart_sync::CoalesceLayer;
    /// let coalesce = CoalesceLayer::new(|path: &String| path.clone()).name("profiles");
    /// assert_eq!(coalesce.layer_name(), "profiles");
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        let name = name.into();
        if let Some(counters) =
            Arc::get_mut(&mut self.registry).and_then(|r| Arc::get_mut(&mut r.counters))
        {
            counters.metrics = Registered::new();
            counters.name = name;
        } else {
            tracing::warn!(
                layer = %self.registry.counters.name,
                new_name = %name,
                "CoalesceLayer::name on a layer already cloned or in use: name kept"
            );
        }
        self
    }

    /// The layer's name (see [`name`](Self::name)).
    pub fn layer_name(&self) -> &str {
        self.registry.counters.name.as_str()
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
            .field("name", &self.registry.counters.name)
            .field("time_to_live", &self.registry.ttl)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone> Layer<S> for CoalesceLayer<F> {
    type Service = Coalesce<S, F>;

    fn layer(&self, inner: S) -> Coalesce<S, F> {
        // The first service registers the handles, under the name the
        // layer ends up with (building and naming it register nothing).
        let counters = &self.registry.counters;
        counters
            .metrics
            .register(|| CoalesceMetrics::new(&counters.name));
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
    K: Hash + Eq + Send + Sync + 'static,
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
        let hash = map.hash(&key);
        let mut shard = map.shard(hash);
        if let Some(flight) = shard.find(hash, |f| f.key == key) {
            let flight = Arc::clone(flight);
            if flight.result.get().is_some() {
                drop(shard);
                counters.cached();
                return ResponseFuture::new(flight, Role::Done);
            }
            flight.waiters.fetch_add(1, Ordering::Relaxed);
            flight.done.get_or_init(|| Arc::new(Notify::new()));
            drop(shard);
            counters.join();
            tracing::trace!(
                layer = %counters.name,
                "request joined a coalesced call in flight"
            );
            let waiter = Waiter {
                map,
                flight: Arc::clone(&flight),
            };
            return ResponseFuture::new(flight, Role::Follower { _waiter: waiter });
        }
        let flight = Arc::new(Flight {
            key,
            hash,
            result: OnceLock::new(),
            done: OnceLock::new(),
            waiters: AtomicUsize::new(1),
            abort: OnceLock::new(),
        });
        shard.insert_unique(hash, Arc::clone(&flight), |f| f.hash);
        drop(shard);
        counters.lead();
        // From here on, whatever happens (the inner `call` panics, the call
        // panics, its driver is dropped), the publisher gives the waiters a
        // result, and the lead, made before the inner `call` so that a panic
        // in it unwinds through the lead's drop, stops the leader waiting.
        let mut lead = Lead {
            call: None,
            publisher: Some(Publisher {
                map,
                flight: Arc::clone(&flight),
                published: false,
            }),
        };
        // The call runs in a context of its own, holding the leader's
        // request id only: no caller's cancellation or deadline binds the
        // others.
        let ctx = Context::with_current(|c| {
            c.and_then(Context::request_id)
                .map_or_else(Context::new, |id| {
                    Context::new().with_request_id(id.clone())
                })
        });
        let fut = ctx.scope_call(|| self.inner.call(req));
        let call: Call<S::Response> =
            Box::pin(async move { fut.await.map_err(|e| Arc::new(Error::from_inner(e))) });
        lead.call = Some(call);
        ResponseFuture::new(flight, Role::Leader(lead))
    }
}

/// Polls a shared call; a panic in it becomes the call's failure (shared
/// by every waiter, the leader included), as it would in a task.
fn poll_call<Res>(
    call: &mut Call<Res>,
    layer: &LayerName,
    cx: &mut TaskContext<'_>,
) -> Poll<Result<Res, Arc<Error>>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call.as_mut().poll(cx)))
        .unwrap_or_else(|_| {
            tracing::debug!(layer = %layer, "a coalesced call panicked");
            Poll::Ready(Err(Arc::new(Error::from_inner(
                "the coalesced call panicked",
            ))))
        })
}

/// A shared call, boxed so that it can move to a task of its own when its
/// first caller leaves before it finished.
type Call<Res> = Pin<Box<dyn Future<Output = Result<Res, Arc<Error>>> + Send>>;

/// Publishes a shared call's result (or a failure if the call panicked or
/// was abandoned) and wakes its waiters.
struct Publisher<K: Hash + Eq + Send + Sync + 'static, Res: Send + Sync + 'static> {
    map: Arc<FlightMap<K, Res>>,
    flight: Arc<Flight<K, Res>>,
    published: bool,
}

impl<K: Hash + Eq + Send + Sync + 'static, Res: Send + Sync + 'static> Publisher<K, Res> {
    fn publish(&mut self, result: Result<Res, Arc<Error>>) {
        self.published = true;
        let keep = self.map.ttl.filter(|_| result.is_ok());
        {
            let mut shard = self.map.shard(self.flight.hash);
            if keep.is_none() {
                FlightMap::remove(&mut shard, &self.flight);
            }
            let _ = self.flight.result.set(result);
        }
        self.map.counters.landed();
        if let Some(done) = self.flight.done.get() {
            done.notify_waiters();
        }
        if let Some(ttl) = keep {
            // Forget the kept result after its time to live (at once if
            // there is no runtime to wait in).
            let (map, flight) = (Arc::clone(&self.map), Arc::clone(&self.flight));
            let forget = move || {
                let mut shard = map.shard(flight.hash);
                FlightMap::remove(&mut shard, &flight);
            };
            let until = rampart_core::codec::deadline_after(Instant::now(), ttl);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn(async move {
                    sleep_until(until).await;
                    forget();
                })),
                Err(_) => forget(),
            }
        }
    }
}

impl<K: Hash + Eq + Send + Sync + 'static, Res: Send + Sync + 'static> Drop for Publisher<K, Res> {
    fn drop(&mut self) {
        if !self.published {
            // Panicked, or dropped because every waiter left.
            self.publish(Err(Arc::new(Error::from_inner(
                "the coalesced call panicked or was abandoned",
            ))));
        }
    }
}

/// The first caller of a shared call: it drives the call in its own task.
/// Dropped before the call finished, it hands the call to a task of its own
/// if other callers still wait for it, and drops it otherwise.
struct Lead<K: Hash + Eq + Send + Sync + 'static, Res: Send + Sync + 'static> {
    /// The call; `None` only while the inner `call` makes it.
    call: Option<Call<Res>>,
    publisher: Option<Publisher<K, Res>>,
}

impl<K: Hash + Eq + Send + Sync + 'static, Res: Send + Sync + 'static> Drop for Lead<K, Res> {
    fn drop(&mut self) {
        let Some(mut publisher) = self.publisher.take() else {
            return;
        };
        let counters = Arc::clone(&publisher.map.counters);
        counters.left();
        if publisher.published {
            return;
        }
        if self.call.is_none() {
            // The inner `call` panicked before giving a call: `publisher`
            // drops here and fails whoever joined meanwhile.
            return;
        }
        let map = Arc::clone(&publisher.map);
        let flight = Arc::clone(&publisher.flight);
        let mut shard = map.shard(flight.hash);
        if flight.waiters.fetch_sub(1, Ordering::Relaxed) == 1 {
            FlightMap::remove(&mut shard, &flight);
            drop(shard);
            counters.abandoned();
            tracing::debug!(
                layer = %counters.name,
                "every caller of a coalesced call left: call dropped"
            );
            // `call` and `publisher` drop here: nobody listens any more.
            return;
        }
        let call = self.call.take();
        let rt = tokio::runtime::Handle::try_current();
        match (call, rt) {
            // A call that panicked while the leader polled it is not polled
            // again: its waiters get a failure.
            (Some(call), Ok(rt)) if !std::thread::panicking() => {
                tracing::debug!(
                    layer = %counters.name,
                    "first caller of a coalesced call left: call moved to a task"
                );
                let task = rt.spawn(async move {
                    let out = call.await;
                    publisher.publish(out);
                });
                // Under the shard lock: the last waiter to leave sees it.
                let _ = flight.abort.set(task.abort_handle());
                drop(shard);
            }
            (call, _) => {
                drop(shard);
                drop(call);
                publisher.publish(Err(Arc::new(Error::from_inner(
                    "the coalesced call's first caller left and no runtime could take it over",
                ))));
            }
        }
    }
}

/// A caller waiting for a shared call that another caller started;
/// dropped before the result came, it leaves, and the last one to leave
/// drops the call.
struct Waiter<K: Hash + Eq, Res> {
    map: Arc<FlightMap<K, Res>>,
    flight: Arc<Flight<K, Res>>,
}

impl<K: Hash + Eq, Res> Drop for Waiter<K, Res> {
    fn drop(&mut self) {
        let counters = &self.map.counters;
        counters.left();
        if self.flight.result.get().is_some() {
            return;
        }
        let mut shard = self.map.shard(self.flight.hash);
        // The result is set with the shard locked: checked again under it.
        if self.flight.result.get().is_some() {
            return;
        }
        if self.flight.waiters.fetch_sub(1, Ordering::Relaxed) == 1 {
            FlightMap::remove(&mut shard, &self.flight);
            drop(shard);
            counters.abandoned();
            tracing::debug!(
                layer = %counters.name,
                "every caller of a coalesced call left: call dropped"
            );
            if let Some(task) = self.flight.abort.get() {
                task.abort();
            }
        }
    }
}

/// What a response future is to its shared call.
enum Role<K: Hash + Eq + Send + Sync + 'static, Res: Send + Sync + 'static> {
    /// It started the call and drives it.
    Leader(Lead<K, Res>),
    /// It waits for a call another caller started.
    Follower { _waiter: Waiter<K, Res> },
    /// It has its result, or gave up.
    Done,
}

pin_project! {
    /// What a caller waits on besides its call: the result's wake-up (a
    /// caller that did not start the call), its request's cancellation and
    /// deadline. Boxed, and only made when there is something to wait on.
    struct Waits {
        #[pin]
        done: Option<OwnedNotified>,
        #[pin]
        cancel: Option<WaitForCancellationFutureOwned>,
        #[pin]
        sleep: Option<Sleep>,
    }
}

/// Why a caller stopped waiting.
#[derive(Clone, Copy)]
enum GaveUp {
    Cancelled,
    Deadline,
}

impl Waits {
    /// Ready when the result was announced (`Ok`) or the caller gave up.
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), GaveUp>> {
        let this = self.project();
        if let Some(n) = this.done.as_pin_mut()
            && n.poll(cx).is_ready()
        {
            return Poll::Ready(Ok(()));
        }
        if let Some(c) = this.cancel.as_pin_mut()
            && c.poll(cx).is_ready()
        {
            return Poll::Ready(Err(GaveUp::Cancelled));
        }
        if let Some(s) = this.sleep.as_pin_mut()
            && s.poll(cx).is_ready()
        {
            return Poll::Ready(Err(GaveUp::Deadline));
        }
        Poll::Pending
    }
}

/// The response future of [`Coalesce`]: the shared call's result, or the
/// caller's own cancellation or deadline.
///
/// The first caller's future drives the shared call (no task, no channel,
/// when nobody else asks for the same key); if it is dropped before the call
/// finished while others wait, the call moves to a task of its own. Other
/// callers' futures are woken once, by the result.
///
/// Polled again after it finished, it gives the same outcome again (the
/// shared result, or the error it gave up with): it never panics.
pub struct ResponseFuture<K, Res>
where
    K: Hash + Eq + Send + Sync + 'static,
    Res: Send + Sync + 'static,
{
    flight: Arc<Flight<K, Res>>,
    role: Role<K, Res>,
    waits: Option<Pin<Box<Waits>>>,
    first_poll: bool,
    gave_up: Option<GaveUp>,
}

impl<K, Res> ResponseFuture<K, Res>
where
    K: Hash + Eq + Send + Sync + 'static,
    Res: Send + Sync + 'static,
{
    fn new(flight: Arc<Flight<K, Res>>, role: Role<K, Res>) -> Self {
        ResponseFuture {
            flight,
            role,
            waits: None,
            first_poll: true,
            gave_up: None,
        }
    }

    /// The first poll: starts listening for the result (a caller that did
    /// not start the call) and for the request's cancellation and deadline.
    /// `Ready` if the result is already there or the deadline has passed.
    fn start_waiting(&mut self) -> Option<Result<(), GaveUp>> {
        let (token, deadline) = Context::with_current(|c| {
            c.map_or((None, None), |c| (c.cancellation().cloned(), c.deadline()))
        });
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Some(Err(GaveUp::Deadline));
        }
        let done = match (&self.role, self.flight.done.get()) {
            (Role::Follower { .. }, Some(notify)) => Some(Arc::clone(notify).notified_owned()),
            _ => None,
        };
        if done.is_none() && token.is_none() && deadline.is_none() {
            return None;
        }
        let waits = self.waits.insert(Box::pin(Waits {
            done,
            cancel: token.map(CancellationToken::cancelled_owned),
            sleep: deadline.map(sleep_until),
        }));
        if let Some(n) = waits.as_mut().project().done.as_pin_mut() {
            n.enable();
            // `enable` before this look: a result set after it wakes us.
            if self.flight.result.get().is_some() {
                return Some(Ok(()));
            }
        }
        None
    }
}

impl<K, Res> Future for ResponseFuture<K, Res>
where
    K: Hash + Eq + Send + Sync + 'static,
    Res: Clone + Send + Sync + 'static,
{
    type Output = Result<Res, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(why) = this.gave_up {
            return Poll::Ready(Err(this.give_up(why)));
        }
        if let Some(result) = this.flight.result.get() {
            this.role = Role::Done;
            return Poll::Ready(share(result));
        }
        if this.first_poll {
            this.first_poll = false;
            // `Some(Ok(()))`: the result is in, picked up below.
            if let Some(Err(why)) = this.start_waiting() {
                return Poll::Ready(Err(this.give_up(why)));
            }
        }
        if let Role::Leader(lead) = &mut this.role
            && let (Some(call), Some(publisher)) = (lead.call.as_mut(), lead.publisher.as_mut())
            && let Poll::Ready(out) = poll_call(call, &publisher.map.counters.name, cx)
        {
            publisher.publish(out);
        }
        if let Some(result) = this.flight.result.get() {
            this.role = Role::Done;
            return Poll::Ready(share(result));
        }
        if let Some(w) = this.waits.as_mut()
            && let Poll::Ready(r) = w.as_mut().poll(cx)
        {
            match r {
                Ok(()) => {
                    if let Some(result) = this.flight.result.get() {
                        this.role = Role::Done;
                        return Poll::Ready(share(result));
                    }
                }
                Err(why) => return Poll::Ready(Err(this.give_up(why))),
            }
        }
        Poll::Pending
    }
}

impl<K, Res> ResponseFuture<K, Res>
where
    K: Hash + Eq + Send + Sync + 'static,
    Res: Send + Sync + 'static,
{
    /// Leaves the call (handing it on, or dropping it if nobody else
    /// waits) and says why.
    fn give_up(&mut self, why: GaveUp) -> Error {
        let (reason, error, what) = match why {
            GaveUp::Cancelled => (Reason::Cancelled, Error::cancelled(), "request cancelled"),
            GaveUp::Deadline => (
                Reason::Deadline,
                Error::deadline_exceeded(),
                "deadline passed",
            ),
        };
        // Counted and reported once: the first time (a later poll gives the
        // same error again, the caller having left already).
        let counters = match &self.role {
            Role::Leader(lead) => lead.publisher.as_ref().map(|p| Arc::clone(&p.map.counters)),
            Role::Follower { _waiter: waiter } => Some(Arc::clone(&waiter.map.counters)),
            Role::Done => None,
        };
        if let Some(c) = counters {
            if let Some(m) = c.metrics.get() {
                m.gave_up.count(reason);
            }
            tracing::debug!(layer = %c.name, "gave up waiting for a coalesced call: {what}");
        }
        self.role = Role::Done;
        self.waits = None;
        self.gave_up = Some(why);
        error
    }
}

impl<K, Res> fmt::Debug for ResponseFuture<K, Res>
where
    K: Hash + Eq + Send + Sync + 'static,
    Res: Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            Role::Leader(_) => "leader",
            Role::Follower { .. } => "follower",
            Role::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("role", &role)
            .field("result", &self.flight.result.get().is_some())
            .finish_non_exhaustive()
    }
}
