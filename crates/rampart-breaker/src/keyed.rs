//! [`KeyedCircuitBreakerLayer`]: a circuit per key (host, route, tenant),
//! with a capped key map.

use crate::breaker::Breaker;
use crate::config::Settings;
use crate::layer::{CircuitBreakerBuilder, CircuitBreakerHandle, CircuitBreakerLayer};
use crate::metrics::{KEYS, Metrics, layer_name};
use crate::service::{ResponseFuture, dispatch};
use crate::stats::State;
use rampart_core::classify::{Classify, ErrorClassify};
use rampart_core::hashed::HashedMap;
use rampart_core::telemetry::{Gauge, Registered, UNNAMED};
use rampart_core::{BoxError, ConfigError, Error};
use rampart_limit::KeyExtractor;
use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Shards of the key map.
const SHARDS: usize = 16;
/// At most this many entries are looked at when a new key finds the map full.
const SWEEP: usize = 64;

type Shard = HashedMap<Arc<Breaker>>;

struct KeyMap {
    shards: Box<[RwLock<Shard>]>,
    keys: AtomicUsize,
    max_keys: usize,
    hasher: RandomState,
    settings: Settings,
    /// The circuit of every key that finds the map full of keys that cannot
    /// be evicted (open, or with calls in flight).
    overflow: Arc<Breaker>,
    overflowed: AtomicU64,
    /// The shard the next eviction sweep starts at, so sweeps spread over
    /// the whole map instead of always searching the first entries.
    cursor: AtomicUsize,
    /// The handles every circuit of the map records through, registered
    /// when the layer makes its first service
    /// ([`register_metrics`](Self::register_metrics)).
    metrics: Registered<Metrics>,
    /// `rampart.breaker.keys`: circuits in the map. The map owns its share
    /// (one per circuit it holds) and takes it off when dropped.
    keys_gauge: Registered<Gauge>,
}

impl Drop for KeyMap {
    fn drop(&mut self) {
        let held: usize = self
            .shards
            .iter_mut()
            .map(|s| s.get_mut().unwrap_or_else(PoisonError::into_inner).len())
            .sum();
        if held > 0
            && let Some(g) = self.keys_gauge.get()
        {
            g.decrement(held as f64);
        }
    }
}

impl KeyMap {
    fn new(settings: Settings, max_keys: usize) -> KeyMap {
        KeyMap {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            keys: AtomicUsize::new(0),
            max_keys,
            hasher: RandomState::new(),
            overflow: Arc::new(Breaker::with_metrics(settings.clone(), Registered::new())),
            settings,
            overflowed: AtomicU64::new(0),
            cursor: AtomicUsize::new(0),
            metrics: Registered::new(),
            keys_gauge: Registered::new(),
        }
    }

    /// Registers the handles under the layer's name, with the recorder
    /// installed now, unless done already (`Layer::layer`). The map's
    /// share of the keys series is the circuits it holds (none before its
    /// first service).
    fn register_metrics(&self) {
        let name = layer_name(self.settings.name.as_deref());
        self.metrics.register(|| Metrics::new(&name, None));
        self.keys_gauge.register(|| {
            let g = Gauge::new(KEYS, &name);
            g.increment(self.keys.load(Ordering::Acquire) as f64);
            g
        });
        if let Some(m) = self.metrics.get() {
            self.overflow.register_shared(m);
        }
    }

    /// The `layer` field of tracing events.
    fn layer(&self) -> &str {
        self.settings.name.as_deref().unwrap_or(UNNAMED)
    }

    fn shard(&self, key: u64) -> &RwLock<Shard> {
        &self.shards[(key >> 32) as usize % SHARDS]
    }

    fn get(&self, key: u64) -> Option<Arc<Breaker>> {
        self.shard(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
    }

    /// The circuit of `key`, made if needed; the overflow circuit when the
    /// map is full and nothing can be evicted.
    fn breaker(&self, key: u64) -> Arc<Breaker> {
        if let Some(b) = self.get(key) {
            return b;
        }
        if !self.reserve() && !self.evict_one() {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return Arc::clone(&self.overflow);
        }
        let mut shard = self
            .shard(key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = shard.get(&key) {
            // Someone else made it meanwhile: give the slot back.
            self.keys.fetch_sub(1, Ordering::AcqRel);
            return Arc::clone(b);
        }
        let metrics = Registered::new();
        if let Some(m) = self.metrics.get() {
            metrics.register(|| m.clone());
        }
        let b = Arc::new(Breaker::with_metrics(self.settings.clone(), metrics));
        shard.insert(key, Arc::clone(&b));
        if let Some(g) = self.keys_gauge.get() {
            g.increment(1.0);
        }
        b
    }

    fn reserve(&self) -> bool {
        self.keys
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok()
    }

    /// Evicts one closed circuit with no call in flight (its history is
    /// only successes and a few failures: little is lost), looking at no
    /// more than [`SWEEP`] entries, starting at the shard after the one the
    /// previous sweep started at; the freed slot is taken for the caller.
    fn evict_one(&self) -> bool {
        let mut budget = SWEEP;
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for i in 0..SHARDS {
            let shard = &self.shards[start.wrapping_add(i) % SHARDS];
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            let found = shard
                .iter()
                .take(budget)
                .find(|(_, b)| Arc::strong_count(b) == 1 && b.circuit.is_closed())
                .map(|(k, _)| *k);
            if let Some(k) = found {
                shard.remove(&k);
                if let Some(g) = self.keys_gauge.get() {
                    g.decrement(1.0);
                }
                tracing::debug!(
                    layer = %self.layer(),
                    "keyed circuit breaker: key map full, a closed idle key evicted"
                );
                return true;
            }
            budget = budget.saturating_sub(shard.len());
            if budget == 0 {
                break;
            }
        }
        false
    }
}

/// A circuit per key (host, route, tenant), shared by every service this
/// layer makes and their clones, so one failing backend does not cut off
/// the others.
///
/// Each key gets a circuit with the settings and classification of the
/// template layer. The map is capped at `max_keys`: when it is full, a
/// closed circuit with no call in flight is evicted for the new key; if
/// every tracked key is open or busy, new keys share one overflow circuit
/// (so a stream of distinct keys cannot grow memory, and is still
/// protected). `max_keys` 0 sends every key to the overflow circuit. Keys
/// are stored as 64-bit SipHash values under a random per-layer key.
///
/// ```
/// use rampart_breaker::{CircuitBreakerLayer, HeaderKey, KeyedCircuitBreakerLayer};
/// use std::time::Duration;
///
/// let template = CircuitBreakerLayer::http_builder()
///     .consecutive_failures(5)
///     .break_duration(Duration::from_secs(10))
///     .build()?;
/// let per_host = KeyedCircuitBreakerLayer::new(HeaderKey::from_static("host"), template, 1_000);
/// assert_eq!(per_host.keys(), 0);
/// # Ok::<(), rampart_core::ConfigError>(())
/// ```
pub struct KeyedCircuitBreakerLayer<E, C = ErrorClassify> {
    map: Arc<KeyMap>,
    extractor: E,
    classify: C,
}

impl<E: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<E, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerLayer {
            map: Arc::clone(&self.map),
            extractor: self.extractor.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<E, C> fmt::Debug for KeyedCircuitBreakerLayer<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("keys", &self.keys())
            .field("max_keys", &self.map.max_keys)
            .finish_non_exhaustive()
    }
}

impl<E, C: Clone> KeyedCircuitBreakerLayer<E, C> {
    /// A circuit per key found by `extractor` (a closure `Fn(&Req) -> K`
    /// with `K: Hash`, or a [`HeaderKey`](crate::HeaderKey)), each with the
    /// settings and classification of `template` (whose own circuit is not
    /// used), at most `max_keys` of them. The layer takes the template's
    /// name (the template registers no metrics: it never makes a
    /// service).
    pub fn new(extractor: E, template: CircuitBreakerLayer<C>, max_keys: usize) -> Self {
        KeyedCircuitBreakerLayer {
            map: Arc::new(KeyMap::new(template.settings().clone(), max_keys)),
            extractor,
            classify: template.classify().clone(),
        }
    }

    /// [`new`](Self::new) with each key's settings from a builder, checked
    /// here.
    ///
    /// ```
    /// use rampart_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer};
    ///
    /// let per_route = KeyedCircuitBreakerLayer::try_new(
    ///     |req: &http::Request<()>| req.uri().path().to_owned(),
    ///     CircuitBreakerLayer::http_builder().consecutive_failures(3),
    ///     100,
    /// )?;
    /// assert!(KeyedCircuitBreakerLayer::try_new(
    ///     |req: &http::Request<()>| req.uri().path().to_owned(),
    ///     CircuitBreakerLayer::http_builder().probes(0),
    ///     100,
    /// ).is_err());
    /// # Ok::<(), rampart_core::ConfigError>(())
    /// ```
    pub fn try_new(
        extractor: E,
        builder: CircuitBreakerBuilder<C>,
        max_keys: usize,
    ) -> Result<Self, ConfigError> {
        // No template circuit: nothing registers metrics under the name
        // but the keyed layer.
        let (settings, classify) = builder.checked()?;
        Ok(KeyedCircuitBreakerLayer {
            map: Arc::new(KeyMap::new(settings, max_keys)),
            extractor,
            classify,
        })
    }
}

impl<E, C> KeyedCircuitBreakerLayer<E, C> {
    /// Names the layer: the `layer` label of its metrics and the `layer`
    /// field of its tracing events; every key's circuit carries the name
    /// (in [`CircuitOpen`](crate::CircuitOpen) and its handle). It starts as
    /// the template's name, or `"default"`.
    ///
    /// The layer gets a fresh, empty key map under the new name (its
    /// metric handles are registered when the layer makes its first
    /// service, with the recorder installed then), so name it as it is
    /// built, before layering a service: services made
    /// before keep the map they were given.
    ///
    /// ```
    /// use rampart_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer};
    ///
    /// let per_route = KeyedCircuitBreakerLayer::new(
    ///     |req: &http::Request<()>| req.uri().path().to_owned(),
    ///     CircuitBreakerLayer::new(),
    ///     100,
    /// )
    /// .name("routes");
    /// assert_eq!(per_route.overflow_handle().name(), Some("routes"));
    /// ```
    #[must_use]
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        let mut settings = self.map.settings.clone();
        settings.name = Some(Arc::from(name.into().as_ref()));
        self.map = Arc::new(KeyMap::new(settings, self.map.max_keys));
        self
    }

    /// Keys tracked now (at most `max_keys`).
    pub fn keys(&self) -> usize {
        self.map
            .shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Keys whose circuit is not closed now.
    pub fn keys_not_closed(&self) -> usize {
        self.map
            .shards
            .iter()
            .map(|s| {
                s.read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                    .filter(|b| b.state() != State::Closed)
                    .count()
            })
            .sum()
    }

    /// Calls sent to the overflow circuit because the map was full.
    pub fn overflowed(&self) -> u64 {
        self.map.overflowed.load(Ordering::Relaxed)
    }

    /// The handle of `key`'s circuit, if it is tracked. `key` must hash as
    /// the extractor's key does (for [`HeaderKey`](crate::HeaderKey):
    /// `Some(&b"value"[..])`).
    pub fn handle<K: Hash>(&self, key: &K) -> Option<CircuitBreakerHandle> {
        self.map
            .get(self.map.hasher.hash_one(key))
            .map(CircuitBreakerHandle::new)
    }

    /// The handle of the overflow circuit.
    pub fn overflow_handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(Arc::clone(&self.map.overflow))
    }
}

impl<S, E: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<E, C> {
    type Service = KeyedCircuitBreaker<S, E, C>;

    fn layer(&self, inner: S) -> Self::Service {
        // The first service registers the handles, under the name the
        // layer ends up with (building and naming it register nothing).
        self.map.register_metrics();
        KeyedCircuitBreaker {
            inner,
            map: Arc::clone(&self.map),
            extractor: self.extractor.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service of [`KeyedCircuitBreakerLayer`].
pub struct KeyedCircuitBreaker<S, E, C = ErrorClassify> {
    inner: S,
    map: Arc<KeyMap>,
    extractor: E,
    classify: C,
}

impl<S, E, C> KeyedCircuitBreaker<S, E, C> {
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

impl<S: Clone, E: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, E, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreaker {
            inner: self.inner.clone(),
            map: Arc::clone(&self.map),
            extractor: self.extractor.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, E, C> fmt::Debug for KeyedCircuitBreaker<S, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, E, C, Req> Service<Req> for KeyedCircuitBreaker<S, E, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    E: KeyExtractor<Req>,
    C: Classify<Req, S::Response>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future, C::Classifier>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.map.hasher.hash_one(self.extractor.extract(&req));
        let breaker = self.map.breaker(key);
        dispatch(Cow::Owned(breaker), &mut self.inner, &self.classify, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key in shard `shard` (the map picks the shard from the high half).
    fn key_in(shard: u64, n: u64) -> u64 {
        (n * SHARDS as u64 + shard) << 32
    }

    /// The first shard holds a sweep's worth of circuits with calls in
    /// flight; the other shards hold idle closed ones. New keys must still
    /// evict those idle ones rather than all share the overflow circuit.
    #[test]
    fn eviction_sweeps_start_at_a_rotating_shard() {
        let template = CircuitBreakerLayer::builder().build().unwrap();
        let layer = KeyedCircuitBreakerLayer::new(|(): &()| 0u8, template, SWEEP + SHARDS - 1);
        let map = &layer.map;
        let busy: Vec<_> = (0..SWEEP as u64)
            .map(|n| map.breaker(key_in(0, n)))
            .collect();
        for shard in 1..SHARDS as u64 {
            drop(map.breaker(key_in(shard, 0)));
        }
        assert_eq!(map.keys.load(Ordering::Relaxed), SWEEP + SHARDS - 1);
        let overflowed = (0..SHARDS as u64)
            .filter(|&n| Arc::ptr_eq(&map.breaker(key_in(1, 1_000 + n)), &map.overflow))
            .count();
        assert!(
            overflowed <= 1,
            "{overflowed} of {SHARDS} new keys overflowed with idle keys to evict"
        );
        drop(busy);
    }
}
