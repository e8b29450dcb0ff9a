//! Keyed limits: one limit per key (tenant, host, route), so one busy key
//! cannot take every permit.

mod extract;
mod map;
mod service;

pub use extract::{HeaderKey, KeyExtractor};
pub use service::{KeyedConcurrencyLimit, KeyedResponseFuture};

use crate::config::{Mode, WaitPolicy};
use crate::error::{LimitConfigError, check_limit};
use crate::stats::KeyedStats;
use map::KeyMap;
use rampart_core::ConfigError;
use rampart_core::telemetry::LayerName;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tower_layer::Layer;

/// The default cap on the number of keys.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// Plain configuration of a keyed limit (deserializes with the `serde`
/// feature).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct KeyedConfig {
    /// At most this many calls at once per key.
    pub limit_per_key: usize,
    /// At most this many keys are tracked (default 10 000).
    #[cfg_attr(feature = "serde", serde(default = "default_max_keys"))]
    pub max_keys: usize,
    /// What a call does when its key is at its limit.
    #[cfg_attr(feature = "serde", serde(default))]
    pub wait: WaitPolicy,
}

#[cfg(feature = "serde")]
fn default_max_keys() -> usize {
    DEFAULT_MAX_KEYS
}

/// A concurrency limit per key, shared by every service this layer makes
/// and their clones.
///
/// Each key gets its own FIFO limit, so two keys never wait for each other.
/// The map of keys is capped at `max_keys`: keys with nothing in flight or
/// waiting are evicted when the cap is reached, and when every tracked key
/// is busy a request with a new key is refused with
/// [`ErrorKind::Overloaded`](rampart_core::ErrorKind::Overloaded) — a stream
/// of distinct keys cannot grow memory without bound.
///
/// Keys are identified by a 64-bit SipHash under a random per-layer key,
/// not stored: memory per key is constant whatever the key, and an attacker
/// cannot aim keys at one bucket. Two distinct keys share a limit only if
/// their hashes collide (about 1 in 2⁶⁴ per pair).
///
/// The map is split into 16 shards by key hash, each behind its own short
/// lock taken once per request to find the key (tower has no keyed limit to
/// compare with): there is no global lock, and requests for different keys
/// rarely meet. The per-key permit is then the same lock-free fast path as
/// [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer). When the map is
/// full, a new key looks at a bounded number of tracked keys for idle ones,
/// resuming where the last look stopped (a clock), so a stream of distinct
/// keys against a map of busy keys costs O(1) per request; an idle key is
/// found within about `max_keys / 64` such looks, so a new key may be
/// refused for a while although an idle key exists.
///
/// ```
/// use rampart_limit::{HeaderKey, KeyedConcurrencyLimitLayer};
///
/// // At most 4 at once per tenant; busy tenants are told to come back.
/// let per_tenant = KeyedConcurrencyLimitLayer::builder(HeaderKey::from_static("x-tenant"), 4)
///     .shed()
///     .max_keys(50_000)
///     .build()?;
/// // Any key: here the URI's host.
/// let per_host = KeyedConcurrencyLimitLayer::new(
///     |req: &http::Request<()>| req.uri().host().map(str::to_owned),
///     8,
/// );
/// # Ok::<(), rampart_limit::ConfigError>(())
/// ```
pub struct KeyedConcurrencyLimitLayer<E> {
    shared: Arc<KeyedShared>,
    extractor: E,
}

#[derive(Debug)]
pub(crate) struct KeyedShared {
    pub(crate) keys: KeyMap,
    pub(crate) map_full: AtomicU64,
}

impl KeyedShared {
    pub(crate) fn stats(&self) -> KeyedStats {
        let t = self.keys.totals();
        KeyedStats {
            keys: t.keys,
            in_flight: t.in_flight,
            waiting: t.waiting,
            limit_per_key: crate::error::count(self.keys.limit()),
            shed: self.keys.counters.shed_count(),
            expired: self.keys.counters.expired_count(),
            key_map_full: self.map_full.load(Ordering::Relaxed),
        }
    }
}

impl<E: Clone> Clone for KeyedConcurrencyLimitLayer<E> {
    fn clone(&self) -> Self {
        KeyedConcurrencyLimitLayer {
            shared: Arc::clone(&self.shared),
            extractor: self.extractor.clone(),
        }
    }
}

impl<E> fmt::Debug for KeyedConcurrencyLimitLayer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedConcurrencyLimitLayer")
            .field("name", &self.shared.keys.counters.name)
            .field("stats", &self.shared.stats())
            .finish_non_exhaustive()
    }
}

impl<E> KeyedConcurrencyLimitLayer<E> {
    /// At most `limit_per_key` calls at once per key; the others wait, first
    /// come first served; at most [`DEFAULT_MAX_KEYS`] keys. A limit above
    /// [`MAX_LIMIT`](crate::MAX_LIMIT) saturates there.
    ///
    /// # Panics
    ///
    /// If `limit_per_key` is 0. For a value read at run time use
    /// [`try_new`](Self::try_new).
    pub fn new(extractor: E, limit_per_key: usize) -> Self {
        assert!(
            limit_per_key != 0,
            "KeyedConcurrencyLimitLayer::new: limit_per_key is 0, nothing could ever run"
        );
        let limit = limit_per_key.min(crate::MAX_LIMIT as usize);
        match Self::builder(extractor, limit).build() {
            Ok(layer) => layer,
            Err(e) => unreachable!("a limit in 1..=MAX_LIMIT with the default policy: {e}"),
        }
    }

    /// Like [`new`](Self::new): 0 or a limit above
    /// [`MAX_LIMIT`](crate::MAX_LIMIT) is a [`ConfigError`] naming the
    /// field `limit_per_key`.
    pub fn try_new(extractor: E, limit_per_key: usize) -> Result<Self, ConfigError> {
        Self::builder(extractor, limit_per_key).build()
    }

    /// Starts a builder.
    pub fn builder(extractor: E, limit_per_key: usize) -> KeyedBuilder<E> {
        KeyedBuilder {
            extractor,
            config: KeyedConfig {
                limit_per_key,
                max_keys: DEFAULT_MAX_KEYS,
                wait: WaitPolicy::default(),
            },
            name: LayerName::default(),
        }
    }

    /// Builds a layer from plain configuration.
    pub fn from_config(extractor: E, config: &KeyedConfig) -> Result<Self, ConfigError> {
        KeyedBuilder {
            extractor,
            config: config.clone(),
            name: LayerName::default(),
        }
        .build()
    }

    /// Names the layer: the `layer` label of its metrics and the `layer`
    /// field of its tracing events (default `"default"`); the same as
    /// [`KeyedBuilder::name`].
    ///
    /// The name belongs to the state every clone shares, and the metric
    /// handles are registered under it (with the `metrics` recorder
    /// installed then) when the layer makes its first service: name the
    /// layer where it is made, before it is cloned or wraps a service. A layer whose state is already shared
    /// keeps its name (a `warn` event says so).
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        let name = name.into();
        let renamed = match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.keys.rename(name.clone()),
            None => false,
        };
        if !renamed {
            tracing::warn!(
                layer = %self.shared.keys.counters.name,
                new_name = %name,
                "KeyedConcurrencyLimitLayer::name on a layer already cloned or in use: name kept"
            );
        }
        self
    }

    /// The layer's name (see [`name`](Self::name)).
    pub fn layer_name(&self) -> &str {
        self.shared.keys.counters.name.as_str()
    }

    /// Keys, in flight and waiting (all keys together), and what was
    /// refused so far.
    pub fn stats(&self) -> KeyedStats {
        self.shared.stats()
    }
}

impl<S, E: Clone> Layer<S> for KeyedConcurrencyLimitLayer<E> {
    type Service = KeyedConcurrencyLimit<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        // The first service registers the handles, under the name the
        // layer ends up with (building and naming it register nothing).
        self.shared.keys.register_metrics();
        KeyedConcurrencyLimit::from_parts(inner, Arc::clone(&self.shared), self.extractor.clone())
    }
}

/// Builds a [`KeyedConcurrencyLimitLayer`].
#[derive(Debug)]
pub struct KeyedBuilder<E> {
    extractor: E,
    config: KeyedConfig,
    name: LayerName,
}

impl<E> KeyedBuilder<E> {
    /// Names the layer: the `layer` label of its metrics and the `layer`
    /// field of its tracing events (default `"default"`), never request
    /// data (the key is not a label).
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// At most this many keys are tracked (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max: usize) -> Self {
        self.config.max_keys = max;
        self
    }

    /// Callers wait for their key's permit, first come first served (the
    /// default).
    pub fn wait(mut self) -> Self {
        self.config.wait.mode = Mode::Wait;
        self
    }

    /// Callers whose key is at its limit fail at once with `Overloaded`.
    pub fn shed(mut self) -> Self {
        self.config.wait.mode = Mode::Shed;
        self
    }

    /// The longest a caller waits before failing with `Overloaded`.
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.config.wait.max_wait = Some(max);
        self
    }

    /// The most callers that may wait per key.
    pub fn max_waiting(mut self, max: usize) -> Self {
        self.config.wait.max_waiting = Some(max);
        self
    }

    /// The `retry_after` hint of `Overloaded` errors (default 1 s; longer
    /// than [`MAX_RETRY_AFTER`](crate::MAX_RETRY_AFTER) saturates there).
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.config.wait.retry_after = after;
        self
    }

    /// Checks the settings and builds the layer.
    /// Every refusal is a [`ConfigError`] naming the field and the value.
    pub fn build(self) -> Result<KeyedConcurrencyLimitLayer<E>, ConfigError> {
        let limit = check_limit("limit_per_key", self.config.limit_per_key)?;
        if self.config.max_keys == 0 {
            return Err(LimitConfigError::Zero { field: "max_keys" }.into());
        }
        let policy = self.config.wait.check()?;
        Ok(KeyedConcurrencyLimitLayer {
            shared: Arc::new(KeyedShared {
                keys: KeyMap::new(limit, self.config.max_keys, policy, self.name),
                map_full: AtomicU64::new(0),
            }),
            extractor: self.extractor,
        })
    }
}
