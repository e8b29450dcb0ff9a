//! The metric handles of [`FanOutLayer`](crate::FanOutLayer) (see the crate
//! docs' "Metrics" section). Registered when the layer wraps a service
//! (`Layer::layer`), under the name the layer has then (building and naming
//! a layer register nothing); zero-sized no-ops without the `metrics`
//! feature.

use crate::outcome::Reason;
use rampart_core::telemetry::{Counter, Histogram, LayerName};
use std::sync::Arc;

/// The handles (no-ops by default: a layer's, before it wraps a service).
#[derive(Debug, Default)]
pub(crate) struct FanOutMetrics {
    /// Calls sent to the inner service.
    pub(crate) calls: Counter,
    /// Requests whose outcome is an error.
    pub(crate) failed: Counter,
    /// Requests whose call panicked (in the inner service's `poll_ready`,
    /// `call` or future).
    pub(crate) panicked: Counter,
    /// Calls in flight when their group stopped, by why it stopped.
    cancelled: [Counter; 5],
    /// How long each group took, from its call to its result.
    pub(crate) duration: Histogram,
}

/// Why the calls in flight were dropped: the `reason` label.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DropReason {
    /// The group's result was decided without them.
    Decided,
    /// The collective timeout passed.
    Timeout,
    /// The caller's deadline passed.
    Deadline,
    /// The caller's token fired.
    Cancelled,
    /// The caller dropped the group's future.
    CallerDropped,
}

const REASONS: [&str; 5] = [
    "decided",
    "timeout",
    "deadline",
    "cancelled",
    "caller_dropped",
];

impl DropReason {
    pub(crate) fn from_reason(reason: Reason) -> DropReason {
        match reason {
            Reason::Timeout => DropReason::Timeout,
            Reason::DeadlineExceeded => DropReason::Deadline,
            Reason::Cancelled => DropReason::Cancelled,
            _ => DropReason::Decided,
        }
    }
}

impl FanOutMetrics {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn new(name: &LayerName) -> Self {
        FanOutMetrics {
            calls: Counter::new("rampart.fanout.calls", name),
            failed: Counter::new("rampart.fanout.failed", name),
            panicked: Counter::new("rampart.fanout.panicked", name),
            cancelled: REASONS.map(|reason| {
                Counter::with_labels("rampart.fanout.cancelled", name, &[("reason", reason)])
            }),
            duration: Histogram::new("rampart.fanout.duration", name),
        }
    }

    /// `n` calls in flight were dropped.
    pub(crate) fn cancelled(&self, why: DropReason, n: usize) {
        if n > 0 {
            self.cancelled[why as usize].increment(n as u64);
        }
    }
}

/// The layer's name and metric handles, shared by its clones and their
/// groups: nothing at all (`None`) for an unnamed layer without the
/// `metrics` feature, and for [`gather`](crate::gather) and
/// [`wait`](crate::wait), which have no name and record nothing.
#[derive(Clone, Default)]
pub(crate) struct Telemetry(Option<Arc<Named>>);

#[derive(Debug)]
struct Named {
    name: LayerName,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    metrics: FanOutMetrics,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq for Telemetry {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Telemetry {}

impl Telemetry {
    /// A layer named `name`, its handles not registered (no-ops) until
    /// [`registered`](Self::registered) makes a service's.
    pub(crate) fn new(name: LayerName) -> Self {
        if !rampart_core::telemetry::ENABLED && !name.is_named() {
            return Telemetry(None);
        }
        Telemetry(Some(Arc::new(Named {
            name,
            metrics: FanOutMetrics::default(),
        })))
    }

    /// A service's telemetry (`Layer::layer`): the same name, with the
    /// handles registered now under it. Without the `metrics` feature, the
    /// same (nothing is registered).
    pub(crate) fn registered(&self) -> Self {
        #[cfg(feature = "metrics")]
        if let Some(named) = &self.0 {
            return Telemetry(Some(Arc::new(Named {
                name: named.name.clone(),
                metrics: FanOutMetrics::new(&named.name),
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

    /// The handles, if this group records (never without the `metrics`
    /// feature).
    #[cfg(feature = "metrics")]
    #[inline]
    pub(crate) fn metrics(&self) -> Option<&FanOutMetrics> {
        self.0.as_deref().map(|n| &n.metrics)
    }

    /// The handles: none without the `metrics` feature.
    #[cfg(not(feature = "metrics"))]
    #[inline]
    #[allow(clippy::unused_self)]
    pub(crate) fn metrics(&self) -> Option<&FanOutMetrics> {
        None
    }
}
