//! [`CancelLayer`]: its configuration (shutdown handle, cleanup hooks).

use crate::hook::{CancelInfo, Hook};
use crate::metrics::CancelMetrics;
use crate::service::Cancel;
use crate::shutdown::Shutdown;
use rampart_core::telemetry::LayerName;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// Runs every request in a cancellation scope of its own, with cleanup
/// hooks and a graceful drain (see the [crate docs](crate)).
///
/// Cheap to clone; clones (and the services they build) share the hooks and
/// the [`Shutdown`].
#[derive(Clone)]
pub struct CancelLayer {
    pub(crate) config: Arc<Config>,
}

pub(crate) struct Config {
    pub(crate) shutdown: Shutdown,
    pub(crate) hooks: Vec<Hook>,
    /// The `layer` label of the metrics and field of the tracing events.
    pub(crate) name: LayerName,
    /// No-ops in a layer's configuration; registered in each service's
    /// (`Layer::layer`).
    pub(crate) metrics: CancelMetrics,
    /// False only for the benches' ablation (`ablation` feature,
    /// `CancelLayer::ablation_never_watch_shutdown`); read only with that
    /// feature.
    pub(crate) watch_shutdown: bool,
}

impl fmt::Debug for CancelLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelLayer")
            .field("shutdown", &self.config.shutdown)
            .field("hooks", &self.config.hooks)
            .field("name", &self.config.name)
            .finish()
    }
}

impl Default for CancelLayer {
    fn default() -> Self {
        CancelLayer::new()
    }
}

impl CancelLayer {
    /// A layer with a [`Shutdown`] of its own (reach it with
    /// [`shutdown`](CancelLayer::shutdown)) and no hooks.
    pub fn new() -> CancelLayer {
        CancelLayer::with_shutdown(&Shutdown::new())
    }

    /// A layer whose requests are drained by `shutdown` (several layers,
    /// e.g. one per router or listener, may share one).
    pub fn with_shutdown(shutdown: &Shutdown) -> CancelLayer {
        CancelLayer {
            config: Arc::new(Config {
                shutdown: shutdown.clone(),
                hooks: Vec::new(),
                name: LayerName::default(),
                metrics: CancelMetrics::default(),
                watch_shutdown: true,
            }),
        }
    }

    /// Names the layer: the `layer` label of its metrics (feature
    /// `metrics`) and the `layer` field of its tracing events (default
    /// `"default"`). Its metric handles are registered when the layer
    /// wraps a service, under the name it has then: naming the layer
    /// registers nothing. The [`Shutdown`] is not renamed (several
    /// layers may share it; see [`Shutdown::named`]).
    ///
    /// ```
    /// use rampart_cancel::CancelLayer;
    /// let layer = CancelLayer::new().name("api");
    /// # drop(layer);
    /// ```
    pub fn name(self, name: impl Into<LayerName>) -> CancelLayer {
        CancelLayer {
            config: Arc::new(Config {
                shutdown: self.config.shutdown.clone(),
                hooks: self.config.hooks.clone(),
                name: name.into(),
                metrics: CancelMetrics::default(),
                watch_shutdown: self.config.watch_shutdown,
            }),
        }
    }

    /// Not for use: a layer whose requests never watch the [`Shutdown`]
    /// ([`Shutdown::cancel_all`] then cancels none of them), for the
    /// benches' ablation (`abl_nowatch` in `benches/cancel.rs`), which
    /// prices the watch.
    #[doc(hidden)]
    #[cfg(feature = "ablation")]
    pub fn ablation_never_watch_shutdown(self) -> CancelLayer {
        CancelLayer {
            config: Arc::new(Config {
                shutdown: self.config.shutdown.clone(),
                hooks: self.config.hooks.clone(),
                name: self.config.name.clone(),
                metrics: CancelMetrics::default(),
                watch_shutdown: false,
            }),
        }
    }

    /// The [`Shutdown`] that drains this layer's requests.
    pub fn shutdown(&self) -> &Shutdown {
        &self.config.shutdown
    }

    fn with_hook(self, hook: Hook) -> CancelLayer {
        let mut hooks = self.config.hooks.clone();
        hooks.push(hook);
        CancelLayer {
            config: Arc::new(Config {
                shutdown: self.config.shutdown.clone(),
                hooks,
                name: self.config.name.clone(),
                metrics: CancelMetrics::default(),
                watch_shutdown: self.config.watch_shutdown,
            }),
        }
    }

    /// Adds a cleanup hook: it runs exactly once for every request that is
    /// cancelled (its token fired, its caller dropped the response future,
    /// or a drain cancelled it), after the inner future was dropped, with
    /// the request's id and the time since the call; never for a request
    /// that completed. Hooks run in the order they were added.
    ///
    /// The hook runs synchronously where the cancellation is noticed (inside
    /// a poll, or inside the drop of the response future), with the
    /// request's [`Context`](rampart_core::Context) current: keep it short
    /// and non-blocking. A panicking hook is caught and logged. For async
    /// cleanup see [`on_cancel_async`](CancelLayer::on_cancel_async).
    pub fn on_cancel<F>(self, hook: F) -> CancelLayer
    where
        F: Fn(&CancelInfo) + Send + Sync + 'static,
    {
        self.with_hook(Hook::Sync(Arc::new(hook)))
    }

    /// Adds an async cleanup hook: `Drop` cannot await, so the future `f`
    /// returns is spawned (on the current tokio runtime) and dropped if it
    /// has not finished within `timeout`. Like
    /// [`on_cancel`](CancelLayer::on_cancel) it starts exactly once per
    /// cancelled request and never for a completed one.
    ///
    /// The cleanup runs in a [`Context`](rampart_core::Context) with the
    /// request's id, the cleanup's `timeout` as its deadline, and no
    /// cancellation token (the request's has fired; calls the cleanup makes
    /// through rampart layers must not fail because of it). A
    /// [`Shutdown::drain`] waits for running cleanups within its grace
    /// period.
    pub fn on_cancel_async<F, Fut>(self, timeout: Duration, f: F) -> CancelLayer
    where
        F: Fn(CancelInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.with_hook(Hook::async_hook(timeout, f))
    }
}

impl<S> Layer<S> for CancelLayer {
    type Service = Cancel<S>;

    fn layer(&self, inner: S) -> Cancel<S> {
        // The service's configuration: the layer's, with the metric handles
        // registered now under the name the layer ends up with (without the
        // `metrics` feature they are no-ops either way: the layer's is
        // shared).
        let config = if rampart_core::telemetry::ENABLED {
            let c = &self.config;
            Arc::new(Config {
                shutdown: c.shutdown.clone(),
                hooks: c.hooks.clone(),
                name: c.name.clone(),
                metrics: CancelMetrics::new(&c.name),
                watch_shutdown: c.watch_shutdown,
            })
        } else {
            self.config.clone()
        };
        Cancel::from_config(inner, config)
    }
}
