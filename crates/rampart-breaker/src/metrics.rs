//! The circuit's metric handles (`rampart_core::telemetry`), registered
//! once, when the layer owning the circuit (or a keyed layer's map) makes
//! its first service, under the name it has then; zero-sized no-ops
//! without the `metrics` feature.

use crate::circuit::Verdict;
use crate::stats::State;
use rampart_core::telemetry::{Counter, Gauge, LayerName};

/// `rampart.breaker.state`: 0 closed, 1 half-open, 2 open.
pub(crate) const STATE: &str = "rampart.breaker.state";
/// `rampart.breaker.transitions{to = open | half_open | closed}`.
pub(crate) const TRANSITIONS: &str = "rampart.breaker.transitions";
/// `rampart.breaker.rejected`: calls refused without reaching the service.
pub(crate) const REJECTED: &str = "rampart.breaker.rejected";
/// `rampart.breaker.calls{outcome = success | failure}`: judged results.
pub(crate) const CALLS: &str = "rampart.breaker.calls";
/// `rampart.breaker.keys`: circuits a keyed layer tracks.
pub(crate) const KEYS: &str = "rampart.breaker.keys";

/// The handles one circuit records through. The circuits of a keyed layer
/// share one set (cloned handles of the same series), without the state
/// gauge: several circuits under one name have no single state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics {
    state: Gauge,
    to_open: Counter,
    to_half_open: Counter,
    to_closed: Counter,
    rejected: Counter,
    successes: Counter,
    failures: Counter,
}

impl Metrics {
    /// Registers the handles of a circuit named `name`, with the state
    /// gauge when the circuit's state now is given: the circuit's share of
    /// the state series is that state's code (0 for a closed circuit: the
    /// series is touched but not moved; other circuits of the same name
    /// keep theirs).
    pub(crate) fn new(name: &LayerName, state: Option<State>) -> Metrics {
        let to = |s: &'static str| Counter::with_labels(TRANSITIONS, name, &[("to", s)]);
        let calls = |s: &'static str| Counter::with_labels(CALLS, name, &[("outcome", s)]);
        let state = if let Some(now) = state {
            let g = Gauge::new(STATE, name);
            g.increment(code(now));
            g
        } else {
            Gauge::default()
        };
        Metrics {
            state,
            to_open: to("open"),
            to_half_open: to("half_open"),
            to_closed: to("closed"),
            rejected: Counter::new(REJECTED, name),
            successes: calls("success"),
            failures: calls("failure"),
        }
    }

    /// A transition `from` → `to` (won by exactly one caller). The state
    /// gauge moves by the difference of the two codes rather than being
    /// set, so transitions recorded out of order by racing threads still
    /// leave it at the final state.
    pub(crate) fn transition(&self, from: State, to: State) {
        if from == to {
            return;
        }
        match to {
            State::Open | State::ForcedOpen => self.to_open.increment(1),
            State::HalfOpen => self.to_half_open.increment(1),
            State::Closed | State::ForcedClosed => self.to_closed.increment(1),
        }
        let delta = code(to) - code(from);
        if delta != 0.0 {
            self.state.increment(delta);
        }
    }

    /// Takes the share of a circuit whose last reported state is `last`
    /// off the state series, when the circuit is dropped.
    pub(crate) fn release(&self, last: State) {
        let share = code(last);
        if share != 0.0 {
            self.state.decrement(share);
        }
    }

    /// A call refused.
    #[inline]
    pub(crate) fn rejected(&self) {
        self.rejected.increment(1);
    }

    /// A result judged (ignored ones are not counted).
    #[inline]
    pub(crate) fn call(&self, v: Verdict) {
        match v {
            Verdict::Success => self.successes.increment(1),
            Verdict::Failure => self.failures.increment(1),
            Verdict::Ignored => {}
        }
    }
}

/// The value of the state gauge: 0 closed (or forced closed), 1
/// half-open, 2 open (or forced open).
pub(crate) fn code(s: State) -> f64 {
    match s {
        State::Closed | State::ForcedClosed => 0.0,
        State::HalfOpen => 1.0,
        State::Open | State::ForcedOpen => 2.0,
    }
}

/// The metrics label of a circuit's optional name (`"default"` without one).
pub(crate) fn layer_name(name: Option<&str>) -> LayerName {
    name.map_or_else(LayerName::default, |n| LayerName::new(n.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the `metrics` feature a circuit carries no handles: nothing
    /// is added to its size.
    #[test]
    fn the_handles_are_zero_sized_without_the_feature() {
        if !rampart_core::telemetry::ENABLED {
            assert_eq!(std::mem::size_of::<Metrics>(), 0);
        }
    }

    #[test]
    fn the_state_gauge_codes_are_closed_0_half_open_1_open_2() {
        let got: Vec<_> = [
            State::Closed,
            State::ForcedClosed,
            State::HalfOpen,
            State::Open,
            State::ForcedOpen,
        ]
        .map(code)
        .to_vec();
        assert_eq!(got, [0.0, 0.0, 1.0, 2.0, 2.0]);
    }
}
