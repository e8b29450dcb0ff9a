//! [`Breaker`]: a circuit with its clock, name and events.

use crate::circuit::{Admit, Circuit, Transition, Verdict};
use crate::config::Settings;
use crate::error::CircuitOpen;
use crate::metrics::{Metrics, layer_name};
use crate::stats::{State, Stats};
use rampart_core::Error;
use rampart_core::telemetry::{Registered, UNNAMED};
use std::time::Duration;
use tokio::time::Instant;

/// A circuit, the instant its clock counts from, and its metric handles.
///
/// The circuit owns its share of the `rampart.breaker.state` series (the
/// code of its last reported state, moved only by its own transitions);
/// dropping it takes that share off, so circuits that share a name add up
/// and the series returns to 0 when they are all gone.
#[derive(Debug)]
pub(crate) struct Breaker {
    pub(crate) circuit: Circuit,
    epoch: Instant,
    /// Registered when the layer makes its first service
    /// ([`register_metrics`](Self::register_metrics)); a keyed layer's
    /// circuits are made with the map's.
    metrics: Registered<Metrics>,
}

impl Breaker {
    /// A circuit of its own, its handles (with the state gauge) registered
    /// by [`register_metrics`](Self::register_metrics).
    pub(crate) fn new(settings: Settings) -> Breaker {
        Breaker::with_metrics(settings, Registered::new())
    }

    /// A circuit recording through `metrics` (a keyed layer's circuits
    /// share the map's handles).
    pub(crate) fn with_metrics(settings: Settings, metrics: Registered<Metrics>) -> Breaker {
        Breaker {
            circuit: Circuit::new(settings),
            epoch: Instant::now(),
            metrics,
        }
    }

    /// Registers the circuit's own handles (with the state gauge, its share
    /// the state now) under its name, with the recorder installed now,
    /// unless done already (`Layer::layer`).
    pub(crate) fn register_metrics(&self) {
        self.metrics
            .register(|| Metrics::new(&layer_name(self.name()), Some(self.circuit.stored_state())));
    }

    /// Registers `metrics` as this circuit's handles unless it has some
    /// (a keyed layer's overflow circuit, when the map's are registered).
    pub(crate) fn register_shared(&self, metrics: &Metrics) {
        self.metrics.register(|| metrics.clone());
    }

    /// Milliseconds since the breaker was made (rounded down).
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.circuit.settings.name.as_deref()
    }

    /// The `layer` field of tracing events: the name, or `"default"`.
    fn layer(&self) -> &str {
        self.name().unwrap_or(UNNAMED)
    }

    /// Admits a call, or the error that refuses it.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Admit, Error> {
        match self.circuit.closed() {
            Some(g) => Ok(Admit::Call(g)),
            None => self.admit_slow(),
        }
    }

    #[inline(never)]
    fn admit_slow(&self) -> Result<Admit, Error> {
        let (admit, transition) = self.circuit.admit(|| self.now_ms());
        if let Some(t) = transition {
            self.event(t);
        }
        match admit {
            Admit::Reject(after) => Err(self.rejection(after)),
            a => Ok(a),
        }
    }

    /// The refusal of a call when the circuit refuses every call now
    /// (checked in `poll_ready`, so a caller never waits on the inner
    /// service's readiness behind an open circuit).
    pub(crate) fn refusal(&self) -> Option<Error> {
        if self.circuit.closed().is_some() {
            return None;
        }
        self.circuit
            .refusing(|| self.now_ms())
            .err()
            .map(|after| self.rejection(after))
    }

    fn rejection(&self, after: Option<Duration>) -> Error {
        let state = self.circuit.state(self.now_ms());
        let state = if state == State::Closed {
            State::Open
        } else {
            state
        };
        if let Some(m) = self.metrics.get() {
            m.rejected();
        }
        tracing::debug!(layer = %self.layer(), %state, ?after, "circuit breaker: call refused");
        Error::overloaded(after).with_source(CircuitOpen {
            state,
            retry_after: after,
            name: self.circuit.settings.name.clone(),
        })
    }

    pub(crate) fn record_call(&self, g: u64, verdict: Verdict, slow: bool) {
        if let Some(m) = self.metrics.get() {
            m.call(verdict);
        }
        if let Some(t) = self.circuit.record_call(g, verdict, slow, || self.now_ms()) {
            self.event(t);
        }
    }

    pub(crate) fn record_probe(&self, g: u64, verdict: Verdict) {
        if let Some(m) = self.metrics.get() {
            m.call(verdict);
        }
        if let Some(t) = self.circuit.record_probe(g, verdict, || self.now_ms()) {
            self.event(t);
        }
    }

    pub(crate) fn force(&self, to: State) {
        let t = self.circuit.force(to, self.now_ms());
        self.event(t);
    }

    pub(crate) fn state(&self) -> State {
        self.circuit.state(self.now_ms())
    }

    pub(crate) fn stats(&self) -> Stats {
        self.circuit.stats(self.now_ms())
    }

    /// Records a transition, with a tracing event: `warn` when the circuit
    /// opens, `info` when it closes, `debug` otherwise.
    pub(crate) fn event(&self, t: Transition) {
        let (from, to) = (t.from, t.to);
        if let Some(m) = self.metrics.get() {
            m.transition(from, to);
        }
        let layer = self.layer();
        match to {
            State::Open | State::ForcedOpen => {
                let retry_after = self.circuit.retry_after(self.now_ms());
                tracing::warn!(layer = %layer, %from, %to, ?retry_after, "circuit breaker opened");
            }
            State::Closed => tracing::info!(layer = %layer, %from, %to, "circuit breaker closed"),
            State::HalfOpen | State::ForcedClosed => {
                tracing::debug!(layer = %layer, %from, %to, "circuit breaker state changed");
            }
        }
    }
}

impl Drop for Breaker {
    /// Takes the circuit's share off the state series: no caller is left
    /// to report a transition, so the stored state is the sum of the
    /// deltas it reported.
    fn drop(&mut self) {
        if let Some(m) = self.metrics.get() {
            m.release(self.circuit.stored_state());
        }
    }
}
