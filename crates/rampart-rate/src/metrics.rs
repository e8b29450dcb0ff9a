//! The limiter's metric handles (`rampart_core::telemetry`), registered
//! once when the layer's shared state is built; zero-sized no-ops without
//! the `metrics` feature.

use rampart_core::telemetry::{Counter, Histogram, LayerName};

/// `rampart.rate.admitted`: requests the store admitted (at once or after
/// a wait).
pub(crate) const ADMITTED: &str = "rampart.rate.admitted";
/// `rampart.rate.rejected`: requests refused.
pub(crate) const REJECTED: &str = "rampart.rate.rejected";
/// `rampart.rate.wait.duration`: seconds an admitted request waited.
pub(crate) const WAIT: &str = "rampart.rate.wait.duration";
/// `rampart.rate.keys`: keys a keyed store holds.
pub(crate) const KEYS: &str = "rampart.rate.keys";

/// The handles of one layer.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) admitted: Counter,
    pub(crate) rejected: Counter,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    wait: Histogram,
}

impl Metrics {
    pub(crate) fn new(name: &LayerName) -> Metrics {
        Metrics {
            admitted: Counter::new(ADMITTED, name),
            rejected: Counter::new(REJECTED, name),
            wait: Histogram::new(WAIT, name),
        }
    }
}

/// Records the time since it was made into `rampart.rate.wait.duration`
/// when dropped. Empty without the `metrics` feature.
pub(crate) struct WaitTimer {
    #[cfg(feature = "metrics")]
    hist: Histogram,
    #[cfg(feature = "metrics")]
    start: tokio::time::Instant,
}

impl WaitTimer {
    /// Times a wait that starts now, in `metrics`' histogram (none: not
    /// registered, nothing recorded); the time is recorded when the timer
    /// is dropped (the wait ended, was cancelled, or its caller left).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(metrics: Option<&Metrics>) -> WaitTimer {
        WaitTimer {
            #[cfg(feature = "metrics")]
            hist: metrics.map(|m| m.wait.clone()).unwrap_or_default(),
            #[cfg(feature = "metrics")]
            start: tokio::time::Instant::now(),
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for WaitTimer {
    fn drop(&mut self) {
        self.hist.record_duration(self.start.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the `metrics` feature the layer's state and a wait carry no
    /// handles: nothing is added to their size.
    #[test]
    fn the_handles_are_zero_sized_without_the_feature() {
        if !rampart_core::telemetry::ENABLED {
            assert_eq!(std::mem::size_of::<Metrics>(), 0);
        }
        #[cfg(not(feature = "metrics"))]
        assert_eq!(std::mem::size_of::<WaitTimer>(), 0);
    }
}
