//! [`QueueLayer`] and its builder.

use crate::config::{MAX_CAPACITY, QueueConfig, WhenFull};
use crate::queue::Queue;
use rampart_core::telemetry::LayerName;
use rampart_core::{BoxError, ConfigError};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// Marker of a [`QueueLayer`] whose workers each get their own clone of the
/// inner service (which must be `Clone`). The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct PerWorker;

/// Marker of a [`QueueLayer`] whose workers share one inner service, which
/// need not be `Clone` ([`QueueLayer::shared_service`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SharedService;

/// A bounded queue with N workers in front of a service: builds a
/// [`Queue`].
///
/// Callers' requests wait in a queue of `capacity`; `workers` workers take
/// them in order and drive each call to completion, then hand the result to
/// its caller. When the queue is full a call waits for space (bounded by
/// `max_wait`, the request's deadline and its cancellation token) or is shed
/// with `Overloaded`. Work whose caller left, or whose deadline passed,
/// before a worker takes it is skipped; a call whose caller leaves while it
/// runs is dropped (unless `detach`). A panicking call fails alone.
///
/// Each [`layer`](Layer::layer) call builds a new queue and spawns its
/// workers on the current Tokio runtime (it panics outside one). `Req` is
/// the request type, usually inferred.
pub struct QueueLayer<Req, M = PerWorker> {
    config: QueueConfig,
    name: LayerName,
    _marker: PhantomData<fn(Req) -> M>,
}

impl<Req, M> Clone for QueueLayer<Req, M> {
    fn clone(&self) -> Self {
        QueueLayer {
            config: self.config.clone(),
            name: self.name.clone(),
            _marker: PhantomData,
        }
    }
}

impl<Req, M> fmt::Debug for QueueLayer<Req, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueLayer")
            .field("config", &self.config)
            .field("name", &self.name)
            .finish()
    }
}

impl<Req> QueueLayer<Req> {
    /// A queue of `capacity` requests in front of `workers` workers, waiting
    /// for space when full. A zero `capacity` or `workers` counts as 1, a
    /// `capacity` over [`MAX_CAPACITY`](crate::MAX_CAPACITY) as that maximum;
    /// use [`QueueLayer::builder`] to have them refused instead.
    pub fn new(capacity: usize, workers: usize) -> Self {
        QueueLayer {
            config: QueueConfig {
                capacity: capacity.clamp(1, MAX_CAPACITY),
                workers: workers.max(1),
                ..QueueConfig::default()
            },
            name: LayerName::default(),
            _marker: PhantomData,
        }
    }

    /// A builder for every setting; `build()` checks them.
    pub fn builder() -> QueueBuilder<Req> {
        QueueBuilder {
            config: QueueConfig::default(),
            name: LayerName::default(),
            _marker: PhantomData,
        }
    }

    /// A layer from a configuration (e.g. deserialized), checked.
    pub fn from_config(config: QueueConfig) -> Result<Self, ConfigError> {
        config.check()?;
        Ok(QueueLayer {
            config,
            name: LayerName::default(),
            _marker: PhantomData,
        })
    }
}

impl<Req, M> QueueLayer<Req, M> {
    /// The configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Names the layer: the `layer` label of its metrics and the `layer`
    /// field of its tracing events (default `"default"`); the same as
    /// [`QueueBuilder::name`]. Name each queue after what it protects
    /// (`"emails"`), never after request data.
    ///
    /// Each queue this layer builds registers its metric handles, with the
    /// `metrics` recorder installed then, when [`layer`](Layer::layer)
    /// builds it; queues of the same name add up in the same series.
    ///
    /// ```
    /// use rampart_queue::QueueLayer;
    /// let layer = QueueLayer::<u32>::new(16, 2).name("emails");
    /// assert_eq!(layer.layer_name(), "emails");
    /// ```
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// The layer's name (see [`name`](Self::name)).
    pub fn layer_name(&self) -> &str {
        self.name.as_str()
    }

    /// Sheds (`Overloaded`) instead of waiting when the queue is full.
    pub fn shed(mut self) -> Self {
        self.config.when_full = WhenFull::Shed;
        self
    }

    /// Lets accepted work run to completion even when its caller leaves.
    pub fn detach(mut self) -> Self {
        self.config.detach = true;
        self
    }

    /// The workers share one inner service, which need not be `Clone`:
    /// `poll_ready` and `call` run under a lock held only for those two;
    /// the calls' futures still run concurrently, one per worker.
    pub fn shared_service(self) -> QueueLayer<Req, SharedService> {
        QueueLayer {
            config: self.config,
            name: self.name,
            _marker: PhantomData,
        }
    }
}

impl<Req, S> Layer<S> for QueueLayer<Req, PerWorker>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    type Service = Queue<Req, S::Response>;

    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    fn layer(&self, inner: S) -> Self::Service {
        Queue::per_worker(inner, &self.config, self.name.clone())
    }
}

impl<Req, S> Layer<S> for QueueLayer<Req, SharedService>
where
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    type Service = Queue<Req, S::Response>;

    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    fn layer(&self, inner: S) -> Self::Service {
        Queue::shared(inner, &self.config, self.name.clone())
    }
}

/// Builds a [`QueueLayer`]; [`build`](QueueBuilder::build) checks the
/// values.
pub struct QueueBuilder<Req> {
    config: QueueConfig,
    name: LayerName,
    _marker: PhantomData<fn(Req)>,
}

impl<Req> fmt::Debug for QueueBuilder<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("config", &self.config)
            .field("name", &self.name)
            .finish()
    }
}

impl<Req> QueueBuilder<Req> {
    /// Names the layer: the `layer` label of its metrics and the `layer`
    /// field of its tracing events (default `"default"`). Name each queue
    /// after what it protects (`"emails"`), never after request data.
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// The most requests waiting for a worker (1 to [`MAX_CAPACITY`](crate::MAX_CAPACITY); default 1024).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity;
        self
    }

    /// Number of workers, i.e. calls run at once (at least 1; default 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers;
        self
    }

    /// Shed with `Overloaded` when full, instead of waiting.
    pub fn shed(mut self) -> Self {
        self.config.when_full = WhenFull::Shed;
        self
    }

    /// Wait or shed when full.
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.config.when_full = when_full;
        self
    }

    /// The longest a call waits for space before `Overloaded` (not zero).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = Some(max_wait);
        self
    }

    /// The `retry_after` hint of `Overloaded` errors (`None`: no hint).
    pub fn retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.config.retry_after = retry_after;
        self
    }

    /// Accepted work runs to completion even when its caller leaves.
    pub fn detach(mut self, detach: bool) -> Self {
        self.config.detach = detach;
        self
    }

    /// Checks the values: `capacity` and `workers` at least 1, `max_wait`
    /// not zero.
    pub fn build(self) -> Result<QueueLayer<Req>, ConfigError> {
        Ok(QueueLayer::from_config(self.config)?.name(self.name))
    }
}
