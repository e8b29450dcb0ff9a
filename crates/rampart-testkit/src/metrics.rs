//! Capture what rampart layers record on the `metrics` facade, for tests.
//!
//! ```
//! use rampart_testkit::MetricsCapture;
//!
//! let capture = MetricsCapture::new();
//! // Build the layers inside `install`: their handles come from this
//! // capture's recorder, whatever the global recorder is.
//! let counter = capture.install(|| metrics::counter!("rampart.demo.count", "layer" => "x"));
//! counter.increment(3);
//! let snap = capture.snapshot();
//! assert_eq!(snap.counter("rampart.demo.count", "x"), Some(3));
//! ```

use std::collections::HashMap;

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A `metrics` recorder local to one test (`metrics-util`'s debugging
/// recorder), so tests running in parallel do not see each other's values.
pub struct MetricsCapture {
    recorder: DebuggingRecorder,
    snapshotter: Snapshotter,
}

impl Default for MetricsCapture {
    fn default() -> Self {
        MetricsCapture::new()
    }
}

impl std::fmt::Debug for MetricsCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsCapture")
    }
}

impl MetricsCapture {
    /// A fresh, empty capture.
    pub fn new() -> MetricsCapture {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        MetricsCapture {
            recorder,
            snapshotter,
        }
    }

    /// Runs `f` with this capture as the `metrics` recorder: handles
    /// registered inside (a layer being built) record here for good.
    pub fn install<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// What has been recorded since the previous snapshot. metrics-util's
    /// debugging recorder resets as it reads: counters and gauges go back
    /// to zero and histogram values are drained, so take one snapshot at the
    /// end of a run (or add up successive ones).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut values = HashMap::new();
        for (ck, _unit, _desc, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key) = ck.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            values.insert((kind_name(kind), key.name().to_owned(), labels), value);
        }
        MetricsSnapshot { values }
    }
}

fn kind_name(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    }
}

type Labels = Vec<(String, String)>;

/// One snapshot of a [`MetricsCapture`].
#[derive(Debug)]
pub struct MetricsSnapshot {
    values: HashMap<(&'static str, String, Labels), DebugValue>,
}

impl MetricsSnapshot {
    fn get(&self, kind: &'static str, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let mut labels: Labels = labels
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        labels.sort();
        self.values.get(&(kind, name.to_owned(), labels))
    }

    /// The counter `name{layer=<layer>}`, if it was registered.
    pub fn counter(&self, name: &str, layer: &str) -> Option<u64> {
        self.counter_with(name, &[("layer", layer)])
    }

    /// The counter `name{labels…}` (all of its labels, in any order).
    pub fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        match self.get("counter", name, labels)? {
            DebugValue::Counter(v) => Some(*v),
            _ => None,
        }
    }

    /// The gauge `name{layer=<layer>}`, if it was registered.
    pub fn gauge(&self, name: &str, layer: &str) -> Option<f64> {
        match self.get("gauge", name, &[("layer", layer)])? {
            DebugValue::Gauge(v) => Some(v.into_inner()),
            _ => None,
        }
    }

    /// The values recorded by the histogram `name{layer=<layer>}` since the
    /// last snapshot, if it was registered.
    pub fn histogram(&self, name: &str, layer: &str) -> Option<Vec<f64>> {
        match self.get("histogram", name, &[("layer", layer)])? {
            DebugValue::Histogram(v) => Some(v.iter().map(|x| x.into_inner()).collect()),
            _ => None,
        }
    }

    /// Every metric name registered, sorted and deduplicated.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.values.keys().map(|(_, n, _)| n.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}
