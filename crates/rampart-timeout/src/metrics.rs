//! The metric handles of the timeout and deadline layers
//! (`rampart_core::telemetry`), registered when a layer wraps a service
//! (`Layer::layer`, under the name the layer has then: building and naming
//! a layer register nothing) and shared, behind one pointer, by that
//! service and its clones.
//!
//! Without the `metrics` feature [`Metrics`] and [`Fire`] are zero-sized:
//! the services and futures keep the size they have without metrics, and
//! the tracing events carry no `layer` field (the name is not kept).
//!
//! With it, a service holds one pointer more (a `Timeout` none: see
//! [`Limit`]), and a timed response future a clone of that pointer
//! ([`Fire`]), for the counter and the event of its timer.

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
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Kind {
    /// `TimeoutLayer`: fired, exceeded; the timeout in nanoseconds rides
    /// along (see [`Limit`]).
    Timeout { limit_ns: u64 },
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
                Kind::Timeout { .. } => (true, false, false),
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

    /// What a response future records when its timer fires: the layer's
    /// handles (a reference count with the `metrics` feature).
    #[inline]
    pub(crate) fn fire(&self) -> Fire {
        Fire {
            #[cfg(feature = "metrics")]
            metrics: self.clone(),
        }
    }

    /// The timeout of a `TimeoutLayer`'s handles (zero for other kinds).
    #[cfg(feature = "metrics")]
    fn limit_ns(&self) -> u64 {
        match self.inner.kind {
            Kind::Timeout { limit_ns } => limit_ns,
            Kind::Deadline { .. } | Kind::Propagate => 0,
        }
    }

    /// A response future's timer fired: its call fails with `kind`.
    #[cfg(feature = "metrics")]
    #[cold]
    #[inline(never)]
    fn fired(&self, kind: ErrorKind) {
        self.counter(kind).increment(1);
        event!(debug, self, ?kind, "timer fired, dropping the inner call");
    }
}

/// What a [`Timeout`](crate::Timeout) service keeps besides its inner
/// service and readiness wait, in one word either way: the timeout in
/// nanoseconds without the `metrics` feature; with it, the layer's shared
/// handles, which carry the timeout too. Keeping the service at two words
/// besides the inner one measured about 45 instructions per request less
/// in `memcpy` calls with the bench harness of 2026-11 (service cloned
/// before the request was built); with the request built first (2026-12-05)
/// a `Duration` here, one word more, measured 9–10 fewer instead (the
/// `from_nanos` division per call). Kept at two words (`tests/size.rs`).
#[derive(Clone)]
pub(crate) struct Limit {
    #[cfg(not(feature = "metrics"))]
    ns: u64,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

#[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
impl Limit {
    /// `metrics` are a `TimeoutLayer`'s, made with `Kind::Timeout` and
    /// the same `ns`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(metrics: &Metrics, ns: u64) -> Limit {
        #[cfg(feature = "metrics")]
        {
            debug_assert_eq!(metrics.limit_ns(), ns);
            Limit {
                metrics: metrics.clone(),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Limit { ns }
    }

    /// The timeout, in nanoseconds.
    #[inline]
    pub(crate) fn ns(&self) -> u64 {
        #[cfg(feature = "metrics")]
        return self.metrics.limit_ns();
        #[cfg(not(feature = "metrics"))]
        self.ns
    }

    /// The layer's handles.
    #[inline]
    pub(crate) fn metrics(&self) -> &Metrics {
        #[cfg(feature = "metrics")]
        return &self.metrics;
        #[cfg(not(feature = "metrics"))]
        &Metrics {}
    }
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", std::time::Duration::from_nanos(self.ns()))
    }
}

/// Carried by a response future for the moment its timer fires: the
/// layer's handles with the `metrics` feature (one pointer), nothing
/// without it.
pub(crate) struct Fire {
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

#[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
impl Fire {
    /// The timer fired: the call fails with `kind`.
    // Inlined: without the feature this is the event alone, and a call
    // here measurably changed the code generated for the ready path
    // (+15 instructions per request under callgrind).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub(crate) fn fired(&self, kind: ErrorKind) {
        #[cfg(feature = "metrics")]
        self.metrics.fired(kind);
        #[cfg(not(feature = "metrics"))]
        tracing::debug!(?kind, "timer fired, dropping the inner call");
    }
}

#[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
impl Fire {
    /// The inner call failed with `DeadlineExceeded` before this layer's
    /// timer fired (a layer inside gave up at the same deadline): counted
    /// as the deadline passing here, without a second event.
    #[inline]
    pub(crate) fn deadline_passed_inside(&self) {
        #[cfg(feature = "metrics")]
        self.metrics
            .counter(ErrorKind::DeadlineExceeded)
            .increment(1);
    }
}

impl std::fmt::Debug for Fire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fire")
    }
}
