//! [`CircuitBreakerLayer`], its builder and [`CircuitBreakerHandle`].

use crate::breaker::Breaker;
use crate::classify::BreakerClassify;
use crate::classify::breaker_classify;
use crate::config::{BreakDuration, CircuitBreakerConfig, Settings, SlowCalls, TripModel, Window};
use crate::service::CircuitBreaker;
use crate::stats::{State, Stats};
use rampart_core::ConfigError;
use rampart_core::classify::ErrorClassify;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// A circuit breaker shared by every service this layer makes and every
/// clone of them.
///
/// The circuit lives behind the layer, so the services axum clones for
/// each request all feed and obey one circuit, and one layer applied to
/// several services protects them together. For a circuit per host or
/// route, build one layer per backend or use
/// [`KeyedCircuitBreakerLayer`](crate::KeyedCircuitBreakerLayer).
///
/// - Closed: calls go through; results are judged by a
///   [`Classify`](rampart_core::Classify) ([`Outcome::Retryable`](rampart_core::Outcome::Retryable)
///   is a failure, [`Outcome::Success`](rampart_core::Outcome::Success) a
///   success, [`Outcome::Fatal`](rampart_core::Outcome::Fatal) not counted)
///   and the [`TripModel`] decides when to open.
/// - Open: calls fail at once with
///   [`ErrorKind::Overloaded`](rampart_core::ErrorKind::Overloaded), whose
///   `retry_after` is the time until the next probe and whose source is a
///   [`CircuitOpen`](crate::CircuitOpen); the service is not called.
/// - Half-open, once the break is over: at most `probes` calls go through;
///   the first failing (or slow) probe reopens the circuit with a break
///   grown by the [`BreakDuration`] multiplier, `probes` successes close it.
///   When every probe slot is taken and no probe was admitted for
///   `probe_timeout` (the timeout runs from the latest probe admitted, so a
///   probe let in after another gave its slot back gets its whole time),
///   the next call counts the phase as failed and reopens the circuit, so
///   it never sticks half-open.
///
/// Defaults ([`new`](Self::new)): trips at 50 % failures over the last 100
/// calls once 100 were seen, as resilience4j; breaks 5 s, as Polly v8
/// (resilience4j waits 60 s); 5 probes (Polly sends 1, resilience4j 10),
/// each allowed 10 s.
///
/// ```
/// use rampart_breaker::{CircuitBreakerLayer, State};
/// use std::time::Duration;
///
/// let layer = CircuitBreakerLayer::builder()
///     .consecutive_failures(5)
///     .break_duration(Duration::from_secs(10))
///     .build()?;
/// assert_eq!(layer.handle().state(), State::Closed);
/// # Ok::<(), rampart_core::ConfigError>(())
/// ```
pub struct CircuitBreakerLayer<C = ErrorClassify> {
    breaker: Arc<Breaker>,
    classify: C,
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            breaker: Arc::clone(&self.breaker),
            classify: self.classify.clone(),
        }
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("name", &self.breaker.name())
            .field("stats", &self.breaker.stats())
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerLayer {
    /// A circuit with the defaults, for any service: an `Ok` is a success,
    /// an error a failure unless it is final (the caller cancelled, its
    /// deadline passed). For HTTP or gRPC use [`http`](Self::http).
    pub fn new() -> Self {
        CircuitBreakerLayer {
            breaker: Arc::new(Breaker::new(Settings::default())),
            classify: ErrorClassify,
        }
    }

    /// A circuit with the defaults for HTTP and gRPC, judged by
    /// [`breaker_classify`] (a 503 or UNAVAILABLE is a failure, a 404 is not).
    pub fn http() -> CircuitBreakerLayer<BreakerClassify> {
        CircuitBreakerLayer {
            breaker: Arc::new(Breaker::new(Settings::default())),
            classify: breaker_classify(),
        }
    }

    /// Starts a builder (judging results as [`new`](Self::new) does; change
    /// it with [`classify`](CircuitBreakerBuilder::classify)).
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::new(ErrorClassify)
    }

    /// Builds a layer for any service from plain configuration (see
    /// [`CircuitBreakerConfig`]); for HTTP use
    /// `CircuitBreakerLayer::http_builder().config(&config).build()`.
    pub fn from_config(config: &CircuitBreakerConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config).build()
    }

    /// Starts a builder for HTTP and gRPC, judging results with
    /// [`breaker_classify`].
    pub fn http_builder() -> CircuitBreakerBuilder<BreakerClassify> {
        CircuitBreakerBuilder::new(breaker_classify())
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// A handle on the circuit: state, force open or closed, reset, stats.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            breaker: Arc::clone(&self.breaker),
        }
    }

    /// A snapshot of the circuit.
    pub fn stats(&self) -> Stats {
        self.breaker.stats()
    }

    /// Names the circuit: the `layer` label of its metrics and the `layer`
    /// field of its tracing events, also shown by
    /// [`CircuitOpen::name`](crate::CircuitOpen::name) and the handle.
    /// Unnamed, it reports as `"default"`.
    ///
    /// The layer gets a fresh, closed circuit under the new name (its
    /// metric handles are registered when the layer makes its first
    /// service, with the recorder installed then), so name it as it is
    /// built, before taking a [`handle`](Self::handle) or
    /// layering a service: those keep the circuit they were given.
    /// [`CircuitBreakerBuilder::name`] does the same in the builder.
    ///
    /// ```
    /// use rampart_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::new().name("payments");
    /// assert_eq!(layer.handle().name(), Some("payments"));
    /// ```
    #[must_use]
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        let mut settings = self.breaker.circuit.settings.clone();
        settings.name = Some(Arc::from(name.into().as_ref()));
        self.breaker = Arc::new(Breaker::new(settings));
        self
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.breaker.circuit.settings
    }

    pub(crate) fn classify(&self) -> &C {
        &self.classify
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        // The first service registers the circuit's handles, under the name
        // the layer ends up with (building and naming it register nothing).
        self.breaker.register_metrics();
        CircuitBreaker::from_parts(inner, Arc::clone(&self.breaker), self.classify.clone())
    }
}

/// Controls and observes one circuit; cheap to clone, shared with the layer
/// and every service it made.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    breaker: Arc<Breaker>,
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("name", &self.breaker.name())
            .field("state", &self.breaker.state())
            .finish()
    }
}

impl CircuitBreakerHandle {
    pub(crate) fn new(breaker: Arc<Breaker>) -> Self {
        CircuitBreakerHandle { breaker }
    }

    /// The state now (an open circuit whose break is over reads
    /// [`State::HalfOpen`]: its next call probes).
    pub fn state(&self) -> State {
        self.breaker.state()
    }

    /// Holds the circuit open: every call is refused until
    /// [`reset`](Self::reset) or [`force_closed`](Self::force_closed).
    pub fn force_open(&self) {
        self.breaker.force(State::ForcedOpen);
    }

    /// Holds the circuit closed: every call goes through and nothing is
    /// counted until [`reset`](Self::reset) or [`force_open`](Self::force_open).
    pub fn force_closed(&self) {
        self.breaker.force(State::ForcedClosed);
    }

    /// Closes the circuit with an empty window and the break back at its
    /// base (also ends a forced state).
    pub fn reset(&self) {
        self.breaker.force(State::Closed);
    }

    /// A snapshot of the circuit.
    pub fn stats(&self) -> Stats {
        self.breaker.stats()
    }

    /// The circuit's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.breaker.name()
    }
}

/// Builds a [`CircuitBreakerLayer`]; [`build`](Self::build) checks every
/// setting.
#[derive(Clone)]
pub struct CircuitBreakerBuilder<C = ErrorClassify> {
    ratio: f64,
    window: Window,
    min_calls: usize,
    consecutive: Option<usize>,
    settings: Settings,
    classify: C,
}

impl<C> fmt::Debug for CircuitBreakerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("ratio", &self.ratio)
            .field("window", &self.window)
            .field("min_calls", &self.min_calls)
            .field("consecutive", &self.consecutive)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<C> CircuitBreakerBuilder<C> {
    fn new(classify: C) -> Self {
        let TripModel::FailureRatio {
            ratio,
            window,
            min_calls,
        } = TripModel::default()
        else {
            unreachable!("the default trip model is a failure ratio")
        };
        CircuitBreakerBuilder {
            ratio,
            window,
            min_calls,
            consecutive: None,
            settings: Settings::default(),
            classify,
        }
    }

    /// Trips when the share of failures in the window reaches `ratio`
    /// (`0.0..=1.0`; default 0.5). Chooses the failure-ratio model.
    pub fn failure_ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self.consecutive = None;
        self
    }

    /// The window the ratio is taken over (default the last 100 calls).
    /// Chooses the failure-ratio model.
    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self.consecutive = None;
        self
    }

    /// The fewest calls in the window before the ratio is judged (default
    /// 100; at least 1, at most a count window's size). Chooses the
    /// failure-ratio model.
    pub fn min_calls(mut self, n: usize) -> Self {
        self.min_calls = n;
        self.consecutive = None;
        self
    }

    /// Trips after `n` failures in a row instead of a ratio (at least 1).
    pub fn consecutive_failures(mut self, n: usize) -> Self {
        self.consecutive = Some(n);
        self
    }

    /// Takes every setting from `config` (the classification stays).
    pub fn config(self, config: &CircuitBreakerConfig) -> Self {
        let mut b = self.trip_model(config.trip);
        b.settings.slow = config.slow_calls;
        b.settings.breaks = config.breaks;
        b.settings.probes = config.probes;
        b.settings.probe_timeout = config.probe_timeout;
        b.settings.name = config.name.as_deref().map(Arc::from);
        b
    }

    /// Sets the whole trip model.
    pub fn trip_model(mut self, model: TripModel) -> Self {
        match model {
            TripModel::FailureRatio {
                ratio,
                window,
                min_calls,
            } => {
                self.ratio = ratio;
                self.window = window;
                self.min_calls = min_calls;
                self.consecutive = None;
            }
            TripModel::ConsecutiveFailures(n) => self.consecutive = Some(n),
        }
        self
    }

    /// Also trips when the share of calls taking at least `threshold`
    /// reaches `ratio` (failure-ratio model only); a slow probe fails.
    pub fn slow_calls(mut self, threshold: Duration, ratio: f64) -> Self {
        self.settings.slow = Some(SlowCalls { threshold, ratio });
        self
    }

    /// How long the circuit stays open before probing (default 5 s; more
    /// than zero).
    pub fn break_duration(mut self, d: Duration) -> Self {
        let grown = self.settings.breaks.multiplier > 1.0;
        self.settings.breaks.base = d;
        if !grown {
            self.settings.breaks.max = d;
        }
        self
    }

    /// Grows the break by `multiplier` (at least 1.0) after each trip that
    /// follows a failed probe, up to `max`; a close resets it.
    pub fn break_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.settings.breaks.multiplier = multiplier;
        self.settings.breaks.max = max;
        self
    }

    /// Sets the whole break policy.
    pub fn break_policy(mut self, breaks: BreakDuration) -> Self {
        self.settings.breaks = breaks;
        self
    }

    /// How many probes a half-open circuit admits (at once and in all);
    /// that many successes close it (default 5; 1..=10 000).
    pub fn probes(mut self, n: usize) -> Self {
        self.settings.probes = n;
        self
    }

    /// How long a probe may take before it counts as failed (default 10 s),
    /// counted from the latest probe admitted in the half-open phase.
    pub fn probe_timeout(mut self, d: Duration) -> Self {
        self.settings.probe_timeout = d;
        self
    }

    /// Names the circuit: the `layer` label of its metrics (with the
    /// `metrics` feature) and the `layer` field of its tracing events, also
    /// shown by [`CircuitOpen`](crate::CircuitOpen) and the handle.
    /// Unnamed, it reports as `"default"`.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.settings.name = Some(Arc::from(name.into().as_ref()));
        self
    }

    /// How results are judged: [`Retryable`](rampart_core::Outcome::Retryable)
    /// is a failure, [`Success`](rampart_core::Outcome::Success) a success,
    /// [`Fatal`](rampart_core::Outcome::Fatal) not counted. For HTTP and
    /// gRPC use [`breaker_classify`].
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            ratio: self.ratio,
            window: self.window,
            min_calls: self.min_calls,
            consecutive: self.consecutive,
            settings: self.settings,
            classify,
        }
    }

    /// Checks the settings and builds the layer (its circuit starts closed).
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        let (settings, classify) = self.checked()?;
        Ok(CircuitBreakerLayer {
            breaker: Arc::new(Breaker::new(settings)),
            classify,
        })
    }

    /// The checked settings and the classification, without a circuit.
    pub(crate) fn checked(self) -> Result<(Settings, C), ConfigError> {
        let mut settings = self.settings;
        settings.model = match self.consecutive {
            Some(n) => TripModel::ConsecutiveFailures(n),
            None => TripModel::FailureRatio {
                ratio: self.ratio,
                window: self.window,
                min_calls: self.min_calls,
            },
        };
        Ok((settings.check()?, self.classify))
    }
}
