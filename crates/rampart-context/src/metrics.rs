//! The metric handles of this crate's layers (see the crate docs' "Metrics"
//! section). Registered when a layer wraps a service (`Layer::layer`),
//! under the name the layer has then: building and naming a layer register
//! nothing. Zero-sized no-ops without the `metrics` feature.

use rampart_core::telemetry::{Counter, LayerName};
use std::sync::Arc;

/// [`RequestIdLayer`](crate::RequestIdLayer)'s handles (no-ops by
/// default: a layer's, before it wraps a service).
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestIdMetrics {
    /// No incoming id: a new one was generated.
    pub(crate) generated: Counter,
    /// A valid incoming id was kept.
    pub(crate) accepted: Counter,
    /// An incoming id was refused (invalid, hostile, repeated, or incoming
    /// ids are not accepted) and replaced by a generated one.
    pub(crate) refused: Counter,
}

impl RequestIdMetrics {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn new(name: &LayerName) -> Self {
        RequestIdMetrics {
            generated: Counter::new("rampart.request_id.generated", name),
            accepted: Counter::new("rampart.request_id.accepted", name),
            refused: Counter::new("rampart.request_id.refused", name),
        }
    }
}

/// [`PropagateContextLayer`](crate::PropagateContextLayer)'s handles
/// (no-ops by default: a layer's, before it wraps a service).
#[derive(Clone, Debug, Default)]
pub(crate) struct PropagateMetrics {
    /// Calls not sent: the context's deadline had passed.
    pub(crate) expired: Counter,
    /// Calls made with no context to propagate (sent untouched).
    pub(crate) missing: Counter,
}

impl PropagateMetrics {
    pub(crate) fn new(name: &LayerName) -> Self {
        PropagateMetrics {
            expired: Counter::new("rampart.context.deadline.expired", name),
            missing: Counter::new("rampart.context.missing", name),
        }
    }
}

/// A layer's name and metric handles, shared by its clones: nothing at all
/// (`None`) for an unnamed layer built without the `metrics` feature, so
/// cloning the layer per request copies a null pointer.
pub(crate) struct Telemetry<M>(Option<Arc<Named<M>>>);

struct Named<M> {
    name: LayerName,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    metrics: M,
}

impl<M> Clone for Telemetry<M> {
    fn clone(&self) -> Self {
        Telemetry(self.0.clone())
    }
}

impl<M> std::fmt::Debug for Telemetry<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl<M: Default> Telemetry<M> {
    /// A layer named `name`, its handles not registered (no-ops) until
    /// [`registered`](Self::registered) makes a service's.
    pub(crate) fn new(name: LayerName) -> Self {
        if !rampart_core::telemetry::ENABLED && !name.is_named() {
            return Telemetry(None);
        }
        Telemetry(Some(Arc::new(Named {
            name,
            metrics: M::default(),
        })))
    }
}

impl<M> Telemetry<M> {
    /// A service's telemetry (`Layer::layer`): the same name, with handles
    /// `make` registers now, under that name. Without the `metrics`
    /// feature, the same (nothing is registered).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn registered(&self, make: impl FnOnce(&LayerName) -> M) -> Self {
        #[cfg(feature = "metrics")]
        if let Some(named) = &self.0 {
            return Telemetry(Some(Arc::new(Named {
                name: named.name.clone(),
                metrics: make(&named.name),
            })));
        }
        self.clone()
    }

    /// The layer's name (`"default"` when it has none).
    pub(crate) fn name(&self) -> &str {
        self.0
            .as_ref()
            .map_or(rampart_core::telemetry::UNNAMED, |n| n.name.as_str())
    }

    /// Records with the handles (nothing without the `metrics` feature).
    #[inline]
    pub(crate) fn record(&self, f: impl FnOnce(&M)) {
        #[cfg(feature = "metrics")]
        if let Some(n) = &self.0 {
            f(&n.metrics);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (self, f);
    }
}
