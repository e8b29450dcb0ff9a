//! [`RetryLayer`] and its builder.

use crate::policy::{OnExhausted, Policy, RetryConfig};
use crate::replay::{CloneRequest, ReplayHttp};
use crate::service::Shared;
use crate::{Backoff, Budget, ConfigError, Retry, RetryStats};
use http::HeaderName;
use rampart_core::classify::{ErrorClassify, HttpOrGrpcClassify};
use rampart_core::telemetry::LayerName;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// Retries failed calls of the wrapped service; see the [crate docs](crate).
///
/// `C` is the [`Classify`](rampart_core::Classify) deciding what is
/// retryable; `R` the [`Replay`](crate::Replay) strategy keeping the
/// request for another attempt. Clones (and the services they make) share
/// the budget and the stats counters, if any, and the whole configuration
/// sits behind one shared pointer: cloning the layer or a service it made
/// copies no configuration.
#[derive(Debug)]
pub struct RetryLayer<C = ErrorClassify, R = CloneRequest> {
    shared: Arc<Shared<C, R>>,
}

impl<C, R> Clone for RetryLayer<C, R> {
    fn clone(&self) -> Self {
        RetryLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl RetryLayer {
    /// A builder for plain services: any `Req: Clone` is cloned for each
    /// attempt, and errors are classified by [`ErrorClassify`] (every error
    /// retryable except deadline passed, cancelled, closed, retries
    /// exhausted).
    pub fn builder() -> RetryBuilder<ErrorClassify, CloneRequest> {
        RetryBuilder {
            config: RetryConfig::default(),
            budget: None,
            name: LayerName::default(),
            classify: ErrorClassify,
            replay: CloneRequest,
        }
    }

    /// A builder for HTTP and gRPC clients: results are classified by
    /// [`HttpOrGrpcClassify`] (idempotent methods, 408/429/502/503/504,
    /// `Retry-After`, gRPC codes and pushback), and `http::Request<B>`
    /// bodies of any type are replayed from a 64 KiB buffer
    /// ([`ReplayHttp`]).
    pub fn http() -> RetryBuilder<HttpOrGrpcClassify, ReplayHttp> {
        RetryBuilder {
            config: RetryConfig::default(),
            budget: None,
            name: LayerName::default(),
            classify: HttpOrGrpcClassify::default(),
            replay: ReplayHttp::default(),
        }
    }
}

#[cfg(feature = "tonic")]
impl RetryLayer {
    /// A builder for a tonic client: wrap a tonic `Channel` (or any
    /// `Service<http::Request<tonic::body::Body>>`) and hand the result to a
    /// generated client. Results are classified by
    /// [`GrpcClassify`](rampart_core::classify::GrpcClassify) (UNAVAILABLE
    /// retried, RESOURCE_EXHAUSTED only with a pushback,
    /// `grpc-retry-pushback-ms` honoured), and request bodies are replayed
    /// from a 64 KiB buffer and handed to the channel as
    /// `tonic::body::Body` ([`ReplayTonic`](crate::ReplayTonic)), the only
    /// body a `Channel` takes; [`RetryLayer::http`] would hand it a
    /// [`ReplayBody`](crate::ReplayBody). Feature `tonic`.
    ///
    /// ```no_run
    /// use rampart_retry::RetryLayer;
    /// use tonic::transport::Channel;
    /// use tonic_health::pb::HealthCheckRequest;
    /// use tonic_health::pb::health_client::HealthClient;
    /// use tower::ServiceBuilder;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let retry = RetryLayer::tonic().max_attempts(3).build()?;
    /// let channel = Channel::from_static("http://127.0.0.1:50051").connect_lazy();
    /// let svc = ServiceBuilder::new().layer(retry).service(channel);
    /// let mut health = HealthClient::new(svc);
    /// let status = health.check(HealthCheckRequest { service: String::new() }).await?;
    /// # drop(status); Ok(()) }
    /// ```
    pub fn tonic() -> RetryBuilder<rampart_core::classify::GrpcClassify, crate::ReplayTonic> {
        RetryBuilder {
            config: RetryConfig::default(),
            budget: None,
            name: LayerName::default(),
            classify: rampart_core::classify::GrpcClassify::default(),
            replay: crate::ReplayTonic::default(),
        }
    }
}

impl Default for RetryLayer {
    /// [`RetryLayer::builder`]'s defaults: 3 attempts, 100 ms doubling to
    /// 10 s with full jitter, no budget.
    fn default() -> Self {
        RetryLayer {
            shared: Arc::new(Shared {
                classify: ErrorClassify,
                replay: CloneRequest,
                policy: Policy::default(),
            }),
        }
    }
}

impl<C, R> RetryLayer<C, R> {
    /// The counters of every service this layer (and its clones) made, when
    /// enabled with [`RetryBuilder::stats`]; `None` otherwise.
    pub fn stats(&self) -> Option<RetryStats> {
        self.shared.policy.counters.as_ref().map(|c| c.snapshot())
    }

    /// The retry budget, if any.
    pub fn budget(&self) -> Option<&Budget> {
        self.shared.policy.budget.as_ref()
    }

    /// The layer's name: the `layer` label of its metrics and the `layer`
    /// field of its tracing events (`"default"` unless set with
    /// [`name`](Self::name)).
    pub fn layer_name(&self) -> &LayerName {
        &self.shared.policy.name
    }
}

impl<C: Clone, R: Clone> RetryLayer<C, R> {
    /// Names the layer: its metrics are labelled `layer = <name>` and its
    /// tracing events carry `layer = <name>` (see
    /// [`RetryBuilder::name`]). With the `metrics` feature, the metric
    /// handles are registered when the layer makes its first service, under
    /// the name it has then: naming a layer registers nothing.
    ///
    /// Name the layer before making services with it: services already
    /// made keep the old name. Stats counters ([`RetryBuilder::stats`]) and
    /// the budget stay shared with the clones of the unnamed layer, if any.
    ///
    /// ```
    /// use rampart_retry::RetryLayer;
    ///
    /// let layer = RetryLayer::default().name("payments");
    /// assert_eq!(layer.layer_name().as_str(), "payments");
    /// ```
    pub fn name(self, name: impl Into<LayerName>) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.shared);
        shared.policy.rename(name.into());
        RetryLayer {
            shared: Arc::new(shared),
        }
    }
}

impl<S, C, R> Layer<S> for RetryLayer<C, R> {
    type Service = Retry<S, C, R>;

    fn layer(&self, inner: S) -> Retry<S, C, R> {
        self.shared.policy.register_metrics();
        Retry::new(inner, Arc::clone(&self.shared))
    }
}

/// Configures a [`RetryLayer`]; [`build`](Self::build) validates.
#[derive(Clone, Debug)]
#[must_use = "call .build() to get the layer"]
pub struct RetryBuilder<C, R> {
    config: RetryConfig,
    budget: Option<Budget>,
    name: LayerName,
    classify: C,
    replay: R,
}

impl<C, R> RetryBuilder<C, R> {
    /// Attempts in all, the first call included (default 3; at least 1:
    /// zero is refused by [`build`](Self::build)).
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// No retry is started, nor slept towards, later than `max` after the
    /// first call.
    pub fn max_elapsed(mut self, max: Duration) -> Self {
        self.config.max_elapsed = Some(max);
        self
    }

    /// The delays between attempts (default: 100 ms doubling to 10 s, full
    /// jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// A retry budget, possibly shared with other layers (clone it).
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Names the layer (default `"default"`): the `layer` label of the
    /// metrics it records with the `metrics` feature
    /// (`rampart.retry.attempts{layer="payments"}` …) and the `layer` field
    /// of its tracing events. A name is for telling layers apart (one per
    /// upstream), never request data.
    ///
    /// ```
    /// use rampart_retry::RetryLayer;
    ///
    /// let layer = RetryLayer::http().name("payments").build()?;
    /// assert_eq!(layer.layer_name().as_str(), "payments");
    /// # Ok::<(), rampart_retry::ConfigError>(())
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// What to return when giving up on an error.
    pub fn on_exhausted(mut self, on: OnExhausted) -> Self {
        self.config.on_exhausted = on;
        self
    }

    /// Counts calls, retries, budget rejections and give-ups, readable with
    /// [`RetryLayer::stats`] and [`Retry::stats`]. Off by default: it costs
    /// an atomic increment per call and a reference count per service clone
    /// and per call.
    pub fn stats(mut self) -> Self {
        self.config.stats = true;
        self
    }

    /// Seeds the jitter, for repeatable delays (see [`RetryConfig::seed`]).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Replaces every setting of [`RetryConfig`] (e.g. read from a file).
    pub fn config(mut self, config: RetryConfig) -> Self {
        self.config = config;
        self
    }

    /// The classification of results: an HTTP/gRPC classifier, or a closure
    /// through [`classify_fn`](rampart_core::classify::classify_fn).
    pub fn classify<C2>(self, classify: C2) -> RetryBuilder<C2, R> {
        RetryBuilder {
            config: self.config,
            budget: self.budget,
            name: self.name,
            classify,
            replay: self.replay,
        }
    }

    /// How requests are kept for another attempt.
    pub fn replay<R2>(self, replay: R2) -> RetryBuilder<C, R2> {
        RetryBuilder {
            config: self.config,
            budget: self.budget,
            name: self.name,
            classify: self.classify,
            replay,
        }
    }

    /// Clones `Req: Clone` requests instead of replaying bodies (e.g. for
    /// `http::Request<()>` or `http::Request<Full<Bytes>>`).
    pub fn clone_requests(self) -> RetryBuilder<C, CloneRequest> {
        self.replay(CloneRequest)
    }

    /// Validates and builds the layer. A [`ConfigError`] names the field:
    /// `max_attempts` (zero), `max_elapsed` (zero), `backoff.multiplier`
    /// (below 1 or not finite), `backoff.max_delay` (below the base delay),
    /// `budget.ratio` / `budget.ttl` (a budget config out of range).
    ///
    /// Build the layer before the `ServiceBuilder` chain, so the chain
    /// itself has no `?`:
    ///
    /// ```
    /// use rampart_retry::RetryLayer;
    /// use tower::ServiceBuilder;
    ///
    /// # fn main() -> Result<(), rampart_core::ConfigError> {
    /// let retry = RetryLayer::builder().max_attempts(4).build()?;
    /// let svc = ServiceBuilder::new()
    ///     .layer(retry)
    ///     .service(tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
    /// # drop(svc);
    /// let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
    /// assert_eq!(err.field(), "max_attempts");
    /// # Ok(()) }
    /// ```
    pub fn build(self) -> Result<RetryLayer<C, R>, ConfigError> {
        Ok(RetryLayer {
            shared: Arc::new(Shared {
                policy: Policy::new(&self.config, self.budget, self.name)?,
                classify: self.classify,
                replay: self.replay,
            }),
        })
    }
}

impl<C> RetryBuilder<C, ReplayHttp> {
    /// The most body bytes kept for a replay (default 64 KiB); a longer
    /// body is sent once and the request is not retried.
    pub fn max_replay_bytes(mut self, max: usize) -> Self {
        self.replay = self.replay.max_bytes(max);
        self
    }

    /// Sets `name: <attempt>` on each retry (2, 3, …), e.g.
    /// `x-retry-attempt`.
    pub fn attempt_header(mut self, name: HeaderName) -> Self {
        self.replay = self.replay.attempt_header(name);
        self
    }
}

#[cfg(feature = "tonic")]
impl<C> RetryBuilder<C, crate::ReplayTonic> {
    /// The most body bytes kept for a replay (default 64 KiB); a longer
    /// body is sent once and the request is not retried.
    pub fn max_replay_bytes(mut self, max: usize) -> Self {
        self.replay = self.replay.max_bytes(max);
        self
    }

    /// Sets `name: <attempt>` on each retry (2, 3, …), e.g.
    /// `x-retry-attempt`.
    pub fn attempt_header(mut self, name: HeaderName) -> Self {
        self.replay = self.replay.attempt_header(name);
        self
    }
}
