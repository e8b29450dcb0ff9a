//! The metric handles of the timeout and deadline layers
//! (`rampart_core::telemetry`), registered once when a layer is built (or
//! renamed) and shared, behind one pointer, by the services it makes.
//!
//! Without the `metrics` feature [`Metrics`] and [`Fire`] are zero-sized:
//! the services and futures keep the size they have without metrics, and
//! the tracing events carry no `layer` field (the name is not kept).
//!
//! With it, a service holds one pointer more, and a response future one
//! counter handle (a clone of the `metrics` handle: a reference count with
//! a recorder installed, a copy of `None` without one) plus, only when debug
//! events are enabled at call time, a pointer to the name for the event its
//! timer may emit.

use rampart_core::ErrorKind;
#[cfg(feature = "metrics")]
use rampart_core::telemetry::Counter;
use rampart_core::telemetry::LayerName;
#[cfg(feature = "metrics")]
use std::sync::Arc;

/// `rampart.timeout.fired`: calls a [`TimeoutLayer`](crate::TimeoutLayer)
/// failed with `Timeout`.
#[cfg(feature = "metrics")]
const TIMEOUT_FIRED: &str = "rampart.timeout.fired";
/// `rampart.deadline.exceeded`: calls failed with `DeadlineExceeded` because
/// the deadline passed while they ran or waited for readiness.
#[cfg(feature = "metrics")]
const DEADLINE_EXCEEDED: &str = "rampart.deadline.exceeded";
/// `rampart.deadline.expired_on_arrival`: requests whose deadline had
/// already passed, failed without calling the inner service.
#[cfg(feature = "metrics")]
const EXPIRED_ON_ARRIVAL: &str = "rampart.deadline.expired_on_arrival";
/// `rampart.deadline.header.malformed`: requests whose deadline header
/// could not be used (ignored or rejected).
#[cfg(feature = "metrics")]
const HEADER_MALFORMED: &str = "rampart.deadline.header.malformed";

/// Emits a tracing event with `layer = <name>` when the `metrics` feature
/// keeps the name, without it otherwise.
macro_rules! event {
    ($level:ident, $metrics:expr, $($rest:tt)+) => {{
        #[cfg(feature = "metrics")]
        {
            tracing::$level!(layer = %$metrics.name(), $($rest)+);
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = &$metrics;
            tracing::$level!($($rest)+);
        }
    }};
}
pub(crate) use event;

/// Which series a layer registers.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Kind {
    /// `TimeoutLayer`: fired, exceeded.
    Timeout,
    /// `DeadlineLayer`: exceeded, expired on arrival, and malformed headers
    /// when it reads them.
    Deadline { headers: bool },
    /// `PropagateDeadlineLayer`: expired on arrival (nothing sent).
    Propagate,
}

/// The handles of one layer, shared by its services (one pointer with the
/// `metrics` feature, zero-sized without).
#[derive(Clone)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    inner: Arc<Inner>,
}

#[cfg(feature = "metrics")]
struct Inner {
    name: LayerName,
    kind: Kind,
    timeout_fired: Counter,
    deadline_exceeded: Counter,
    expired_on_arrival: Counter,
    header_malformed: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

#[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
impl Metrics {
    /// Registers the series of a layer of `kind` named `name` with the
    /// recorder installed now.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(name: &LayerName, kind: Kind) -> Metrics {
        #[cfg(feature = "metrics")]
        {
            let register = |yes: bool, metric| {
                if yes {
                    Counter::new(metric, name)
                } else {
                    Counter::default()
                }
            };
            let (timeout, deadline, headers) = match kind {
                Kind::Timeout => (true, false, false),
                Kind::Deadline { headers } => (false, true, headers),
                Kind::Propagate => (false, false, false),
            };
            Metrics {
                inner: Arc::new(Inner {
                    name: name.clone(),
                    kind,
                    timeout_fired: register(timeout, TIMEOUT_FIRED),
                    deadline_exceeded: register(timeout || deadline, DEADLINE_EXCEEDED),
                    expired_on_arrival: register(!timeout, EXPIRED_ON_ARRIVAL),
                    header_malformed: register(headers, HEADER_MALFORMED),
                }),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Metrics {}
    }

    /// The handles of the same kind of layer under another name,
    /// registered with the recorder installed now.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn renamed(&self, name: &LayerName) -> Metrics {
        #[cfg(feature = "metrics")]
        return Metrics::new(name, self.inner.kind);
        #[cfg(not(feature = "metrics"))]
        Metrics {}
    }

    /// The layer's name (for the `layer` field of tracing events).
    #[cfg(feature = "metrics")]
    pub(crate) fn name(&self) -> &LayerName {
        &self.inner.name
    }

    #[cfg(feature = "metrics")]
    fn counter(&self, kind: ErrorKind) -> &Counter {
        if kind == ErrorKind::Timeout {
            &self.inner.timeout_fired
        } else {
            &self.inner.deadline_exceeded
        }
    }

    /// A call failed with `kind` (`Timeout` or `DeadlineExceeded`) without
    /// reaching the inner service: its wait for readiness used up the time.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn expired(&self, kind: ErrorKind) {
        #[cfg(feature = "metrics")]
        self.counter(kind).increment(1);
    }

    /// A request whose deadline had already passed, not sent.
    #[inline]
    pub(crate) fn expired_on_arrival(&self) {
        #[cfg(feature = "metrics")]
        self.inner.expired_on_arrival.increment(1);
    }

    /// A malformed deadline header.
    #[inline]
    pub(crate) fn header_malformed(&self) {
        #[cfg(feature = "metrics")]
        self.inner.header_malformed.increment(1);
    }

    /// What a response future failing with `kind` records when its timer
    /// fires.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn fire(&self, kind: ErrorKind) -> Fire {
        Fire {
            #[cfg(feature = "metrics")]
            counter: self.counter(kind).clone(),
            #[cfg(feature = "metrics")]
            traced: tracing::enabled!(tracing::Level::DEBUG).then(|| self.clone()),
        }
    }
}

/// Carried by a response future for the moment its timer fires: the
/// counter of its error kind and, when debug events were enabled at call
/// time, the layer (for the event's `layer` field). Zero-sized without the
/// `metrics` feature.
pub(crate) struct Fire {
    #[cfg(feature = "metrics")]
    counter: Counter,
    #[cfg(feature = "metrics")]
    traced: Option<Metrics>,
}

#[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
impl Fire {
    /// The timer fired: the call fails with `kind`.
    pub(crate) fn fired(&self, kind: ErrorKind) {
        #[cfg(feature = "metrics")]
        {
            self.counter.increment(1);
            tracing::debug!(
                layer = self
                    .traced
                    .as_ref()
                    .map(|m| tracing::field::display(m.name())),
                ?kind,
                "timer fired, dropping the inner call"
            );
        }
        #[cfg(not(feature = "metrics"))]
        tracing::debug!(?kind, "timer fired, dropping the inner call");
    }
}

impl std::fmt::Debug for Fire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fire")
    }
}
