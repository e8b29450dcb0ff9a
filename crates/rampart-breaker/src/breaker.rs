//! [`Breaker`]: a circuit with its clock, name and events.

use crate::circuit::{Admit, Circuit, Transition, Verdict};
use crate::config::Settings;
use crate::error::CircuitOpen;
use crate::stats::{State, Stats};
use rampart_core::Error;
use std::time::Duration;
use tokio::time::Instant;

/// A circuit and the instant its clock counts from.
#[derive(Debug)]
pub(crate) struct Breaker {
    pub(crate) circuit: Circuit,
    epoch: Instant,
}

impl Breaker {
    pub(crate) fn new(settings: Settings) -> Breaker {
        Breaker {
            circuit: Circuit::new(settings),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the breaker was made (rounded down).
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.circuit.settings.name.as_deref()
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
        tracing::trace!(circuit = self.name(), %state, ?after, "circuit breaker: call refused");
        Error::overloaded(after).with_source(CircuitOpen {
            state,
            retry_after: after,
            name: self.circuit.settings.name.clone(),
        })
    }

    pub(crate) fn record_call(&self, g: u64, verdict: Verdict, slow: bool) {
        if let Some(t) = self.circuit.record_call(g, verdict, slow, || self.now_ms()) {
            self.event(t);
        }
    }

    pub(crate) fn record_probe(&self, g: u64, verdict: Verdict) {
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

    /// A tracing event for a transition: `warn` when the circuit opens,
    /// `info` when it closes, `debug` otherwise.
    pub(crate) fn event(&self, t: Transition) {
        let name = self.name();
        let (from, to) = (t.from, t.to);
        match to {
            State::Open | State::ForcedOpen => {
                let retry_after = self.circuit.retry_after(self.now_ms());
                tracing::warn!(circuit = name, %from, %to, ?retry_after, "circuit breaker opened");
            }
            State::Closed => tracing::info!(circuit = name, %from, %to, "circuit breaker closed"),
            State::HalfOpen | State::ForcedClosed => {
                tracing::debug!(circuit = name, %from, %to, "circuit breaker state changed");
            }
        }
    }
}
