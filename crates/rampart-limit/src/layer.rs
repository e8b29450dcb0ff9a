//! [`ConcurrencyLimitLayer`] and its builder.

use crate::adaptive::{Adaptive, LimitAlgorithm, SampleWindow};
use crate::config::{Limit, LimitConfig, Mode, WaitPolicy};
use crate::sem::Sem;
use crate::service::ConcurrencyLimit;
use crate::shared::Shared;
use crate::stats::{Counters, Stats};
use rampart_core::ConfigError;
use rampart_core::classify::ErrorClassify;
use rampart_core::telemetry::LayerName;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// A concurrency limit shared by every service this layer makes and every
/// clone of them.
///
/// The state (permits, waiters, counters) is created with the layer, so
/// the services axum clones for each request all count against the same
/// limit, and one layer applied to several services limits them together.
/// For a limit per route, build one layer per route.
///
/// The permit is taken in `poll_ready` (see
/// [`ConcurrencyLimit`](crate::ConcurrencyLimit) for the wait and what
/// ends it early), so any service can be wrapped, `Clone` or not; it is
/// given back when the inner response future completes or is dropped (for
/// HTTP: when the response head arrives — the body may still be
/// streaming). The keyed limit, which needs the request to know its key,
/// waits inside the response future instead (and needs `S: Clone`).
///
/// ```
/// use rampart_limit::ConcurrencyLimitLayer;
/// use std::time::Duration;
///
/// // At most 3 at once; callers wait in line up to 2 s, at most 100 of them.
/// let layer = ConcurrencyLimitLayer::builder(3)
///     .max_wait(Duration::from_secs(2))
///     .max_waiting(100)
///     .build()?;
/// // At most 64 at once; refuse the rest at once (503 + Retry-After: 1).
/// let shed = ConcurrencyLimitLayer::builder(64).shed().build()?;
/// // The simple form cannot fail (it panics on a zero limit only).
/// let plain = ConcurrencyLimitLayer::new(16);
/// // A limit read at run time: a typed error naming the field.
/// let err = ConcurrencyLimitLayer::try_new(0).unwrap_err();
/// assert_eq!((err.field(), err.value()), ("limit", "0"));
/// # Ok::<(), rampart_limit::ConfigError>(())
/// ```
pub struct ConcurrencyLimitLayer<C = ErrorClassify> {
    shared: Arc<Shared>,
    classify: C,
}

impl<C: Clone> Clone for ConcurrencyLimitLayer<C> {
    fn clone(&self) -> Self {
        ConcurrencyLimitLayer {
            shared: Arc::clone(&self.shared),
            classify: self.classify.clone(),
        }
    }
}

impl<C> fmt::Debug for ConcurrencyLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("name", &self.shared.counters.name)
            .field("stats", &self.shared.stats())
            .field("adaptive", &self.shared.adaptive)
            .finish_non_exhaustive()
    }
}

impl ConcurrencyLimitLayer {
    /// At most `limit` calls at once; the others wait, first come first
    /// served, without a bound of their own. A limit above
    /// [`MAX_LIMIT`](crate::MAX_LIMIT) (2^31 − 1) saturates there.
    ///
    /// # Panics
    ///
    /// If `limit` is 0 (nothing could ever run): a constant in the code.
    /// For a value read at run time use [`try_new`](Self::try_new).
    pub fn new(limit: usize) -> Self {
        assert!(
            limit != 0,
            "ConcurrencyLimitLayer::new: limit is 0, nothing could ever run"
        );
        let limit = limit.min(crate::MAX_LIMIT as usize);
        match Self::builder(limit).build() {
            Ok(layer) => layer,
            Err(e) => unreachable!("a limit in 1..=MAX_LIMIT with the default policy: {e}"),
        }
    }

    /// Like [`new`](Self::new), for a value read at run time: 0 or a limit
    /// above [`MAX_LIMIT`](crate::MAX_LIMIT) is a [`ConfigError`] naming
    /// the field `limit` and the value.
    pub fn try_new(limit: usize) -> Result<Self, ConfigError> {
        Self::builder(limit).build()
    }

    /// Starts a builder: `builder(8)` for a fixed limit, or
    /// `builder(VegasConfig::default())` (or an [`AimdConfig`](crate::AimdConfig),
    /// a [`Gradient2Config`](crate::Gradient2Config)) for an adaptive one.
    pub fn builder(limit: impl Into<Limit>) -> LimitBuilder {
        LimitBuilder {
            name: LayerName::default(),
            limit: limit.into(),
            algorithm: None,
            wait: WaitPolicy::default(),
            window: Some(SampleWindow::default()),
            classify: ErrorClassify,
        }
    }

    /// Starts a builder with your own adaptive algorithm.
    pub fn with_algorithm(algorithm: impl LimitAlgorithm) -> LimitBuilder {
        LimitBuilder {
            name: LayerName::default(),
            limit: Limit::Fixed(1),
            algorithm: Some(Box::new(algorithm)),
            wait: WaitPolicy::default(),
            window: Some(SampleWindow::default()),
            classify: ErrorClassify,
        }
    }

    /// Builds a layer from plain configuration (see [`LimitConfig`]).
    pub fn from_config(config: &LimitConfig) -> Result<Self, ConfigError> {
        Self::builder(config.limit.clone())
            .wait_policy(config.wait.clone())
            .sample_window(config.sample_window.clone())
            .build()
    }
}

impl<C> ConcurrencyLimitLayer<C> {
    /// Names the layer: the `layer` label of its metrics and the `layer`
    /// field of its tracing events (default `"default"`); the same as
    /// [`LimitBuilder::name`].
    ///
    /// The name belongs to the state every clone shares, and the metric
    /// handles are registered under it (with the `metrics` recorder
    /// installed then) when the layer makes its first service: name the
    /// layer where it is made, before it is cloned or wraps a service. A layer whose state is already shared
    /// keeps its name (a `warn` event says so).
    ///
    /// ```
    /// use rampart_limit::ConcurrencyLimitLayer;
    /// let layer = ConcurrencyLimitLayer::new(8).name("payments");
    /// assert_eq!(layer.layer_name(), "payments");
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        let name = name.into();
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.counters.rename(name);
        } else {
            tracing::warn!(
                layer = %self.shared.counters.name,
                new_name = %name,
                "ConcurrencyLimitLayer::name on a layer already cloned or in use: name kept"
            );
        }
        self
    }

    /// The layer's name (see [`name`](Self::name)).
    pub fn layer_name(&self) -> &str {
        self.shared.counters.name.as_str()
    }

    /// In flight, waiting, the current limit, and what was refused so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The current limit (changes over time for an adaptive limit).
    pub fn limit(&self) -> usize {
        crate::error::count(self.shared.sem.limit())
    }
}

impl<S, C: Clone> Layer<S> for ConcurrencyLimitLayer<C> {
    type Service = ConcurrencyLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        // The first service registers the handles, under the name the
        // layer ends up with (building and naming it register nothing).
        let sem = &self.shared.sem;
        self.shared.counters.register_metrics(|| sem.limit());
        ConcurrencyLimit::from_parts(inner, Arc::clone(&self.shared), self.classify.clone())
    }
}

/// Builds a [`ConcurrencyLimitLayer`]; every setting is checked by
/// [`build`](Self::build).
pub struct LimitBuilder<C = ErrorClassify> {
    name: LayerName,
    limit: Limit,
    algorithm: Option<Box<dyn LimitAlgorithm>>,
    wait: WaitPolicy,
    window: Option<SampleWindow>,
    classify: C,
}

impl<C> fmt::Debug for LimitBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitBuilder")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .field("algorithm", &self.algorithm)
            .field("wait", &self.wait)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl<C> LimitBuilder<C> {
    /// Names the layer: the `layer` label of its metrics and the `layer`
    /// field of its tracing events (default `"default"`). Name each layer
    /// of a stack after what it protects (`"payments"`), never after
    /// request data.
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// Callers wait for a permit, first come first served (the default).
    pub fn wait(mut self) -> Self {
        self.wait.mode = Mode::Wait;
        self
    }

    /// Callers that find the limit reached fail at once with
    /// [`ErrorKind::Overloaded`](rampart_core::ErrorKind::Overloaded).
    pub fn shed(mut self) -> Self {
        self.wait.mode = Mode::Shed;
        self
    }

    /// The longest a caller waits before failing with `Overloaded`.
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.wait.max_wait = Some(max);
        self
    }

    /// The most callers that may wait; more fail at once with `Overloaded`.
    pub fn max_waiting(mut self, max: usize) -> Self {
        self.wait.max_waiting = Some(max);
        self
    }

    /// The hint of when to try again carried by `Overloaded` errors (and so
    /// the `Retry-After` of a 503); `None` for no hint. Default 1 s; a
    /// longer hint than [`MAX_RETRY_AFTER`](crate::MAX_RETRY_AFTER) (one
    /// day, e.g. `Duration::MAX`) saturates there.
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.wait.retry_after = after;
        self
    }

    /// Replaces the whole wait policy.
    pub fn wait_policy(mut self, wait: WaitPolicy) -> Self {
        self.wait = wait;
        self
    }

    /// How an adaptive limit batches calls into samples (see
    /// [`SampleWindow`]); `None` makes every call a sample. Default:
    /// [`SampleWindow::default`] (Netflix's `WindowedLimit`). Not used by a
    /// fixed limit.
    pub fn sample_window(mut self, window: Option<SampleWindow>) -> Self {
        self.window = window;
        self
    }

    /// How results are judged for an adaptive limit: a result judged
    /// [`Retryable`](rampart_core::Outcome::Retryable) is a drop (it shrinks
    /// the limit), [`Success`](rampart_core::Outcome::Success) a latency
    /// sample, [`Fatal`](rampart_core::Outcome::Fatal) ignored. The default,
    /// [`ErrorClassify`], makes every error except a final one (deadline
    /// passed, cancelled) a drop.
    ///
    /// With [`HttpClassify`](rampart_core::classify::HttpClassify), only the
    /// idempotent methods' 503s are retryable by default; to count every
    /// method's 503 as a drop use `HttpClassify::new().retry_any_method()`.
    /// Not used by a fixed limit.
    pub fn classify<C2>(self, classify: C2) -> LimitBuilder<C2> {
        LimitBuilder {
            name: self.name,
            limit: self.limit,
            algorithm: self.algorithm,
            wait: self.wait,
            window: self.window,
            classify,
        }
    }

    /// Checks the settings and builds the layer.
    /// Every refusal is a [`ConfigError`] naming the field and the value.
    pub fn build(self) -> Result<ConcurrencyLimitLayer<C>, ConfigError> {
        let policy = self.wait.check()?;
        if let Some(w) = &self.window {
            w.check()?;
        }
        let algorithm = match self.algorithm {
            Some(a) => Err(a),
            None => self.limit.check()?,
        };
        let (limit, adaptive) = match algorithm {
            Ok(fixed) => (fixed, None),
            Err(a) => {
                let adaptive = Adaptive::new(a, self.window);
                (adaptive.initial_limit(), Some(adaptive))
            }
        };
        Ok(ConcurrencyLimitLayer {
            shared: Arc::new(Shared {
                sem: Sem::new(limit),
                adaptive,
                policy,
                counters: Counters::new(self.name),
            }),
            classify: self.classify,
        })
    }
}
