//! Metric handles for rampart's layers, on the [`metrics`] facade.
//!
//! Every rampart layer records what it does through these three handle
//! types, labelled `layer = <the name given to the layer>` (`"default"` when
//! it has none), never by request data. The application installs the
//! exporter it wants (Prometheus, OpenTelemetry, statsd …) as the `metrics`
//! recorder; rampart depends on the facade only.
//!
//! **Cost.** Without the `metrics` feature each handle is a zero-sized type
//! whose methods are empty: nothing is recorded and nothing is paid. With it,
//! a layer registers its handles once, when it makes its first service
//! ([`Layer::layer`](https://docs.rs/tower-layer/latest/tower_layer/trait.Layer.html#tymethod.layer)),
//! under the name it has then, and each event is one call through the
//! handle (a branch on "no recorder" when none is installed). Building a
//! layer and naming it (`X::new().name("payments")`) registers nothing, so
//! the recorder only ever sees the name the layer ends up with (see
//! [`Registered`]).
//!
//! **Install the recorder before building the stack** (before the layers
//! wrap their services): handles are taken from the recorder installed when
//! a layer makes its first service, as with any pre-registered `metrics`
//! handle. A stack built before a recorder exists records nothing.
//!
//! ```
//! use rampart_core::telemetry::{Counter, LayerName};
//!
//! let name = LayerName::new("payments");
//! let shed = Counter::new("rampart.limit.shed", &name);
//! shed.increment(1); // no recorder installed: nothing recorded
//! assert_eq!(name.as_str(), "payments");
//! ```
//!
//! The full table of metric names, units and labels is in the `rampart`
//! facade's `guide` module.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// The label key every rampart metric carries: the layer's name.
pub const LAYER_LABEL: &str = "layer";

/// The label value of a layer that was given no name.
pub const UNNAMED: &str = "default";

/// The name a layer reports its metrics and tracing events under
/// (`.name("payments")` on the layer or its builder).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LayerName(Cow<'static, str>);

impl LayerName {
    /// A name for a layer.
    pub fn new(name: impl Into<Cow<'static, str>>) -> LayerName {
        LayerName(name.into())
    }

    /// The name as a string (`"default"` for an unnamed layer).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the layer was given a name.
    pub fn is_named(&self) -> bool {
        self.0 != UNNAMED
    }
}

impl Default for LayerName {
    fn default() -> Self {
        LayerName(Cow::Borrowed(UNNAMED))
    }
}

impl fmt::Debug for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&'static str> for LayerName {
    fn from(s: &'static str) -> Self {
        LayerName::new(s)
    }
}

impl From<String> for LayerName {
    fn from(s: String) -> Self {
        LayerName::new(s)
    }
}

#[cfg(feature = "metrics")]
fn labels(layer: &LayerName, extra: &[(&'static str, &'static str)]) -> Vec<metrics::Label> {
    let mut v = Vec::with_capacity(1 + extra.len());
    v.push(metrics::Label::new(LAYER_LABEL, layer.0.clone()));
    v.extend(extra.iter().map(|&(k, val)| metrics::Label::new(k, val)));
    v
}

#[cfg(feature = "metrics")]
fn key(
    name: &'static str,
    layer: &LayerName,
    extra: &[(&'static str, &'static str)],
) -> metrics::Key {
    metrics::Key::from_parts(name, labels(layer, extra))
}

#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// A monotonic counter (`metrics::Counter` with the `metrics` feature, a
/// zero-sized no-op without it).
#[derive(Clone)]
pub struct Counter {
    #[cfg(feature = "metrics")]
    inner: metrics::Counter,
}

impl Counter {
    /// Registers the counter `name{layer=…}` with the installed recorder.
    #[inline]
    pub fn new(name: &'static str, layer: &LayerName) -> Counter {
        Counter::with_labels(name, layer, &[])
    }

    /// Registers the counter `name{layer=…, extra…}`: `extra` are fixed
    /// labels (such as `reason = "deadline"`), never request data.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn with_labels(
        name: &'static str,
        layer: &LayerName,
        extra: &[(&'static str, &'static str)],
    ) -> Counter {
        Counter {
            #[cfg(feature = "metrics")]
            inner: metrics::with_recorder(|r| {
                r.register_counter(&key(name, layer, extra), &METADATA)
            }),
        }
    }

    /// Adds `n`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn increment(&self, n: u64) {
        #[cfg(feature = "metrics")]
        self.inner.increment(n);
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Counter")
    }
}

/// A gauge: a value that goes up and down (in flight, waiting, a current
/// limit). A no-op without the `metrics` feature.
#[derive(Clone)]
pub struct Gauge {
    #[cfg(feature = "metrics")]
    inner: metrics::Gauge,
}

impl Gauge {
    /// Registers the gauge `name{layer=…}` with the installed recorder.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn new(name: &'static str, layer: &LayerName) -> Gauge {
        Gauge {
            #[cfg(feature = "metrics")]
            inner: metrics::with_recorder(|r| r.register_gauge(&key(name, layer, &[]), &METADATA)),
        }
    }

    /// Adds `v`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn increment(&self, v: f64) {
        #[cfg(feature = "metrics")]
        self.inner.increment(v);
    }

    /// Subtracts `v`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn decrement(&self, v: f64) {
        #[cfg(feature = "metrics")]
        self.inner.decrement(v);
    }

    /// Sets the value to `v`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn set(&self, v: f64) {
        #[cfg(feature = "metrics")]
        self.inner.set(v);
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gauge")
    }
}

/// A histogram of values (durations are recorded in seconds). A no-op
/// without the `metrics` feature.
#[derive(Clone)]
pub struct Histogram {
    #[cfg(feature = "metrics")]
    inner: metrics::Histogram,
}

impl Histogram {
    /// Registers the histogram `name{layer=…}` with the installed recorder.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn new(name: &'static str, layer: &LayerName) -> Histogram {
        Histogram {
            #[cfg(feature = "metrics")]
            inner: metrics::with_recorder(|r| {
                r.register_histogram(&key(name, layer, &[]), &METADATA)
            }),
        }
    }

    /// Records `v`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn record(&self, v: f64) {
        #[cfg(feature = "metrics")]
        self.inner.record(v);
    }

    /// Records a duration, in seconds.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn record_duration(&self, d: Duration) {
        #[cfg(feature = "metrics")]
        self.inner.record(d.as_secs_f64());
    }

    /// Whether values recorded through this handle reach a recorder: false
    /// for a handle registered while no recorder was installed (and always
    /// without the `metrics` feature), whose records are dropped. A layer
    /// asks once, when it registers its handles, and skips the work that
    /// only serves the histogram (such as reading the clock to time a
    /// wait) when nothing listens; what a live handle records is not
    /// changed.
    ///
    /// The `metrics` handles do not expose this; it is found by recording
    /// a value zero times ([`metrics::Histogram::record_many`] with a count
    /// of 0): a `metrics` 0.24 handle converts the value it is given only
    /// when a recorder is behind it. The answer errs only towards
    /// "recording":
    /// - the probe is first put to a handle known to be live (one of our
    ///   own, with no recorder behind it); a `metrics` version whose live
    ///   handles do not convert the value then (say, one that returns
    ///   early on a count of 0) makes every handle count as recording, so
    ///   no sample is ever lost to this check;
    /// - a `metrics` version that converted the value for no-op handles
    ///   too makes them count as recording: the layer then does the work
    ///   for nothing, as it did before it asked;
    /// - with the trait's default `record_many` (metrics-util's recorders,
    ///   metrics-exporter-prometheus) a count of 0 records nothing; a
    ///   recorder that overrides `HistogramFn::record_many` sees one call
    ///   with value 0.0 and count 0 when the layer is built;
    /// - a recorder behind a fan-out of no-op recorders counts as
    ///   recording.
    ///
    /// ```
    /// use rampart_core::telemetry::{Histogram, LayerName};
    ///
    /// let h = Histogram::new("rampart.demo.duration", &LayerName::default());
    /// assert!(!h.is_recording()); // no recorder installed
    /// ```
    #[must_use]
    pub fn is_recording(&self) -> bool {
        #[cfg(feature = "metrics")]
        {
            /// Notes that the handle asked for its value.
            struct Probe<'a>(&'a std::cell::Cell<bool>);
            impl metrics::IntoF64 for Probe<'_> {
                fn into_f64(self) -> f64 {
                    self.0.set(true);
                    0.0
                }
            }
            /// A live handle that keeps nothing.
            struct Sink;
            impl metrics::HistogramFn for Sink {
                fn record(&self, _: f64) {}
            }
            fn asks(h: &metrics::Histogram) -> bool {
                let asked = std::cell::Cell::new(false);
                h.record_many(Probe(&asked), 0);
                asked.get()
            }
            // Only when a live handle is seen to ask does not asking mean
            // no recorder.
            let live = metrics::Histogram::from_arc(std::sync::Arc::new(Sink));
            !asks(&live) || asks(&self.inner)
        }
        #[cfg(not(feature = "metrics"))]
        false
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Histogram")
    }
}

macro_rules! noop_default {
    ($($t:ident),*) => {$(
        impl Default for $t {
            /// A handle that records nothing.
            fn default() -> Self {
                $t {
                    #[cfg(feature = "metrics")]
                    inner: metrics::$t::noop(),
                }
            }
        }
    )*};
}
noop_default!(Counter, Gauge, Histogram);

/// A layer's metric handles, registered at most once: when the layer makes
/// its first service, under the name it has then.
///
/// A layer keeps one of these in the state its clones and services share.
/// Building the layer and naming it register nothing; `Layer::layer` calls
/// [`register`](Self::register) (the first call registers, later ones and
/// racing ones find the handles made), and the call path reads them with
/// [`get`](Self::get): one load and a branch, no lock. Without the
/// `metrics` feature it holds nothing and [`get`](Self::get) is always
/// `None`, so the recording code compiles away.
///
/// ```
/// use rampart_core::telemetry::{Counter, LayerName, Registered};
///
/// let handles: Registered<Counter> = Registered::new();
/// assert!(handles.get().is_none()); // built, not registered
/// let name = LayerName::new("payments");
/// handles.register(|| Counter::new("rampart.demo.count", &name));
/// if let Some(c) = handles.get() {
///     c.increment(1);
/// }
/// ```
pub struct Registered<M> {
    #[cfg(feature = "metrics")]
    cell: std::sync::OnceLock<M>,
    #[cfg(not(feature = "metrics"))]
    _handles: std::marker::PhantomData<fn() -> M>,
}

impl<M> Registered<M> {
    /// Nothing registered yet.
    #[must_use]
    pub const fn new() -> Registered<M> {
        Registered {
            #[cfg(feature = "metrics")]
            cell: std::sync::OnceLock::new(),
            #[cfg(not(feature = "metrics"))]
            _handles: std::marker::PhantomData,
        }
    }

    /// Registers the handles with `make` (with the recorder installed now),
    /// unless they were registered already. Without the `metrics` feature
    /// `make` is not called.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn register(&self, make: impl FnOnce() -> M) {
        #[cfg(feature = "metrics")]
        self.cell.get_or_init(make);
    }

    /// The handles, once registered (never without the `metrics` feature).
    #[inline]
    #[must_use]
    pub fn get(&self) -> Option<&M> {
        #[cfg(feature = "metrics")]
        return self.cell.get();
        #[cfg(not(feature = "metrics"))]
        None
    }

    /// Whether the handles have been registered.
    #[must_use]
    pub fn is_registered(&self) -> bool {
        self.get().is_some()
    }
}

impl<M> Default for Registered<M> {
    fn default() -> Self {
        Registered::new()
    }
}

impl<M> Clone for Registered<M> {
    /// Nothing registered: a clone is a new layer's state (renamed or
    /// reconfigured), which registers its own handles when it makes a
    /// service.
    fn clone(&self) -> Self {
        Registered::new()
    }
}

impl<M> fmt::Debug for Registered<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_registered() {
            "Registered"
        } else {
            "Unregistered"
        })
    }
}

/// Whether this build records metrics (the `metrics` feature of
/// `rampart-core`, which every rampart crate's `metrics` feature enables).
pub const ENABLED: bool = cfg!(feature = "metrics");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unnamed_layer_reports_as_default() {
        assert_eq!(LayerName::default().as_str(), UNNAMED);
        assert!(!LayerName::default().is_named());
        assert!(LayerName::from("payments").is_named());
    }

    #[test]
    fn handles_without_a_recorder_do_nothing_and_do_not_panic() {
        let name = LayerName::from("x");
        Counter::new("rampart.test.count", &name).increment(1);
        let g = Gauge::new("rampart.test.gauge", &name);
        g.increment(1.0);
        g.decrement(1.0);
        g.set(3.0);
        Histogram::new("rampart.test.hist", &name).record_duration(Duration::from_millis(5));
    }

    #[test]
    fn a_histogram_registered_without_a_recorder_is_not_recording() {
        let h = Histogram::new("rampart.test.hist", &LayerName::default());
        assert!(!h.is_recording());
        assert!(!Histogram::default().is_recording());
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn a_histogram_with_a_recorder_is_recording_and_asking_records_nothing() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let h = metrics::with_local_recorder(&recorder, || {
            Histogram::new("rampart.test.hist", &LayerName::from("payments"))
        });
        assert!(h.is_recording());
        assert!(h.is_recording(), "asking twice records nothing either");
        let values: Vec<_> = snap.snapshot().into_vec();
        assert_eq!(values.len(), 1, "the histogram is registered");
        for (_, _, _, v) in values {
            match v {
                DebugValue::Histogram(xs) => assert!(xs.is_empty(), "recorded {xs:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        h.record(1.5);
        let recorded: Vec<_> = snap
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(_, _, _, v)| v)
            .collect();
        assert!(
            matches!(&recorded[..], [DebugValue::Histogram(xs)] if xs.len() == 1),
            "{recorded:?}"
        );
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn handles_record_under_the_layer_label_with_the_recorder_of_their_construction() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let name = LayerName::from("payments");
        let (c, g, h) = metrics::with_local_recorder(&recorder, || {
            (
                Counter::with_labels("rampart.test.count", &name, &[("reason", "deadline")]),
                Gauge::new("rampart.test.gauge", &name),
                Histogram::new("rampart.test.hist", &name),
            )
        });
        c.increment(2);
        g.increment(3.0);
        g.decrement(1.0);
        h.record_duration(Duration::from_millis(250));
        let mut seen = 0;
        for (ck, _, _, v) in snap.snapshot().into_vec() {
            let (_, key) = ck.into_parts();
            let labels: Vec<_> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            assert!(
                labels.contains(&("layer".to_owned(), "payments".to_owned())),
                "{labels:?}"
            );
            match (key.name(), v) {
                ("rampart.test.count", DebugValue::Counter(n)) => {
                    assert_eq!(n, 2);
                    assert!(labels.contains(&("reason".to_owned(), "deadline".to_owned())));
                }
                ("rampart.test.gauge", DebugValue::Gauge(x)) => {
                    assert!((x.into_inner() - 2.0).abs() < f64::EPSILON);
                }
                ("rampart.test.hist", DebugValue::Histogram(xs)) => {
                    assert_eq!(
                        xs.iter().map(|x| x.into_inner()).collect::<Vec<_>>(),
                        [0.25]
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
            seen += 1;
        }
        assert_eq!(seen, 3);
    }
}
