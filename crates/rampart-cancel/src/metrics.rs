//! The layer's metric handles (see the crate docs' "Metrics" section).
//! Registered when the layer wraps a service (`Layer::layer`), under the
//! name the layer has then; zero-sized no-ops without the `metrics`
//! feature.

use crate::hook::CancelReason;
use rampart_core::telemetry::{Counter, Gauge, LayerName};

/// No-ops by default: a layer's, before it wraps a service.
#[derive(Clone, Debug, Default)]
pub(crate) struct CancelMetrics {
    /// Admitted requests not finished yet.
    in_flight: Gauge,
    /// Cancelled requests, by reason.
    token: Counter,
    caller_dropped: Counter,
    shutdown: Counter,
    /// Calls refused because the drain had begun.
    refused: Counter,
}

const CANCELLED: &str = "rampart.cancel.cancelled";

impl CancelMetrics {
    pub(crate) fn new(name: &LayerName) -> Self {
        let cancelled = |reason| Counter::with_labels(CANCELLED, name, &[("reason", reason)]);
        CancelMetrics {
            in_flight: Gauge::new("rampart.cancel.in_flight", name),
            token: cancelled("token"),
            caller_dropped: cancelled("caller_dropped"),
            shutdown: cancelled("shutdown"),
            refused: Counter::new("rampart.cancel.refused", name),
        }
    }

    /// A request was admitted: counted in flight until its state
    /// ([`Running`](crate::future::Running)) drops, on every path
    /// (completion, cancellation, drop, panic).
    pub(crate) fn admitted(&self) {
        self.in_flight.increment(1.0);
    }

    /// The request admitted with [`admitted`](Self::admitted) ended.
    pub(crate) fn ended(&self) {
        self.in_flight.decrement(1.0);
    }

    pub(crate) fn cancelled(&self, reason: CancelReason) {
        match reason {
            CancelReason::Token => &self.token,
            CancelReason::CallerDropped => &self.caller_dropped,
            CancelReason::Shutdown => &self.shutdown,
        }
        .increment(1);
    }

    pub(crate) fn refused(&self) {
        self.refused.increment(1);
    }
}
