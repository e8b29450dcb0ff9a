//! The layers and their builder.

use crate::Stats;
use crate::keyed::KeyedRateLimit;
use crate::quota::Quota;
use crate::service::RateLimit;
use crate::store::{KeyedStore, LocalStore, RateStore};
use crate::wait::Shared;
use rampart_core::telemetry::LayerName;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// How many keys a [`KeyedRateLimitLayer`] tracks unless told otherwise.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// A rate limit shared by every service the layer makes and every clone of
/// them: GCRA with a rate and a burst, refusing with
/// [`ErrorKind::RateLimited`](rampart_core::ErrorKind::RateLimited) and the
/// exact `retry_after` (answered as `429` + `Retry-After`), or waiting up to
/// [`max_wait`](RateLimitBuilder::max_wait).
///
/// See the [crate docs](crate) for an example.
pub struct RateLimitLayer<St = LocalStore> {
    shared: Arc<Shared<St>>,
}

/// A rate limit per key (tenant, client address, route): one bucket per
/// key, idle keys dropped automatically, at most
/// [`DEFAULT_MAX_KEYS`] keys unless [`max_keys`](RateLimitBuilder::max_keys)
/// says otherwise.
pub struct KeyedRateLimitLayer<E, St = KeyedStore> {
    shared: Arc<Shared<St>>,
    extractor: E,
}

impl RateLimitLayer {
    /// `quota` for every request, refusing at once when it is used up.
    pub fn new(quota: Quota) -> RateLimitLayer {
        RateLimitLayer::builder(quota).build()
    }

    /// A builder starting from [`RateLimitLayer::new`]'s settings.
    pub fn builder(quota: Quota) -> RateLimitBuilder<LocalStore> {
        RateLimitBuilder {
            quota,
            max_wait: Duration::ZERO,
            store: LocalStore::new(),
            extractor: (),
            name: LayerName::default(),
        }
    }
}

impl<E> KeyedRateLimitLayer<E> {
    /// `quota` for each key that `extractor` reads from a request, refusing
    /// at once when a key's quota is used up.
    pub fn new(quota: Quota, extractor: E) -> KeyedRateLimitLayer<E> {
        KeyedRateLimitLayer::builder(quota, extractor).build()
    }

    /// A builder starting from [`KeyedRateLimitLayer::new`]'s settings.
    pub fn builder(quota: Quota, extractor: E) -> RateLimitBuilder<KeyedStore, Keyed<E>> {
        RateLimitBuilder {
            quota,
            max_wait: Duration::ZERO,
            store: KeyedStore::new(NonZeroUsize::new(DEFAULT_MAX_KEYS).expect("not zero")),
            extractor: Keyed(extractor),
            name: LayerName::default(),
        }
    }
}

/// Marks a [`RateLimitBuilder`] of a keyed layer.
#[derive(Clone, Debug)]
pub struct Keyed<E>(E);

/// Builds a [`RateLimitLayer`] or a [`KeyedRateLimitLayer`]. Every setting
/// has a meaning for every value, so `build()` cannot fail.
#[derive(Debug)]
pub struct RateLimitBuilder<St, E = ()> {
    quota: Quota,
    max_wait: Duration,
    store: St,
    extractor: E,
    name: LayerName,
}

impl<St, E> RateLimitBuilder<St, E> {
    /// Wait up to `max_wait` for a slot instead of refusing at once
    /// (default zero: refuse at once). A request waits no longer than what
    /// is left of its [`Context`](rampart_core::Context) deadline (it fails
    /// with `DeadlineExceeded` if the slot would come later) and stops
    /// waiting with `Cancelled` when its cancellation token fires. The
    /// unkeyed [`RateLimitLayer`] waits in `poll_ready` and sees the context
    /// current there (see the [crate docs](crate#where-the-decision-is-taken)).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Keeps the state in `store` (say, one shared by every replica).
    pub fn store<St2: RateStore>(self, store: St2) -> RateLimitBuilder<St2, E> {
        RateLimitBuilder {
            quota: self.quota,
            max_wait: self.max_wait,
            store,
            extractor: self.extractor,
            name: self.name,
        }
    }

    /// Names the layer: the `layer` label of its metrics (with the
    /// `metrics` feature) and the `layer` field of its tracing events.
    /// Unnamed, it reports as `"default"`. The metric handles are
    /// registered when the layer makes its first service, with the
    /// recorder installed then.
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    fn shared(self) -> (Arc<Shared<St>>, E)
    where
        St: RateStore,
    {
        (
            Arc::new(Shared::new(
                self.store,
                self.quota,
                self.max_wait,
                self.name,
            )),
            self.extractor,
        )
    }
}

impl<E> RateLimitBuilder<KeyedStore, Keyed<E>> {
    /// Tracks at most `max_keys` keys (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(self, max_keys: NonZeroUsize) -> Self {
        RateLimitBuilder {
            store: KeyedStore::new(max_keys),
            ..self
        }
    }
}

impl<St: RateStore> RateLimitBuilder<St> {
    /// The layer.
    pub fn build(self) -> RateLimitLayer<St> {
        RateLimitLayer {
            shared: self.shared().0,
        }
    }
}

impl<St: RateStore, E> RateLimitBuilder<St, Keyed<E>> {
    /// The layer.
    pub fn build(self) -> KeyedRateLimitLayer<E, St> {
        let (shared, Keyed(extractor)) = self.shared();
        KeyedRateLimitLayer { shared, extractor }
    }
}

macro_rules! common {
    ($layer:ident < $($p:ident),* >) => {
        impl<$($p),*> $layer<$($p),*> {
            /// Names the layer: the `layer` label of its metrics (with the
            /// `metrics` feature) and the `layer` field of its tracing
            /// events; unnamed, it reports as `"default"`. The metric
            /// handles are registered under the name the layer has when it
            /// makes its first service: naming registers nothing.
            ///
            /// Name the layer as it is built (or use the builder's
            /// `name`): while its state is shared with a clone of the layer
            /// or a service it made, the state keeps its name, and a
            /// warning is logged.
            #[must_use]
            pub fn name(mut self, name: impl Into<LayerName>) -> Self
            where
                St: RateStore,
            {
                let name = name.into();
                match Arc::get_mut(&mut self.shared) {
                    Some(shared) => shared.rename(name),
                    None => tracing::warn!(
                        layer = %self.shared.name(),
                        new_name = %name,
                        "rate limit: a layer whose state is already shared keeps its name"
                    ),
                }
                self
            }

            /// The layer's name (`"default"` when it was given none).
            pub fn layer_name(&self) -> &str {
                self.shared.name().as_str()
            }

            /// Counts since the layer was built, over every service it made.
            pub fn stats(&self) -> Stats {
                self.shared.stats()
            }

            /// The store holding the limiter's state.
            pub fn store(&self) -> &St {
                &self.shared.store
            }

            /// The quota.
            pub fn quota(&self) -> Quota {
                self.shared.quota
            }
        }
    };
}
common!(RateLimitLayer<St>);
common!(KeyedRateLimitLayer<E, St>);

impl<St> Clone for RateLimitLayer<St> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<E: Clone, St> Clone for KeyedRateLimitLayer<E, St> {
    fn clone(&self) -> Self {
        KeyedRateLimitLayer {
            shared: Arc::clone(&self.shared),
            extractor: self.extractor.clone(),
        }
    }
}

impl<St> fmt::Debug for RateLimitLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("quota", &self.shared.quota)
            .field("max_wait", &self.shared.max_wait)
            .finish_non_exhaustive()
    }
}

impl<E, St> fmt::Debug for KeyedRateLimitLayer<E, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("quota", &self.shared.quota)
            .field("max_wait", &self.shared.max_wait)
            .finish_non_exhaustive()
    }
}

impl<S, St: RateStore> Layer<S> for RateLimitLayer<St> {
    type Service = RateLimit<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        // The first service registers the handles, under the name the
        // layer ends up with (building and naming it register nothing).
        self.shared.register_metrics();
        RateLimit::new(inner, Arc::clone(&self.shared))
    }
}

impl<S, E: Clone, St: RateStore> Layer<S> for KeyedRateLimitLayer<E, St> {
    type Service = KeyedRateLimit<S, E, St>;

    fn layer(&self, inner: S) -> Self::Service {
        // The first service registers the handles, under the name the
        // layer ends up with (building and naming it register nothing).
        self.shared.register_metrics();
        KeyedRateLimit::new(inner, self.extractor.clone(), Arc::clone(&self.shared))
    }
}
