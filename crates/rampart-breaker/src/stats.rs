//! [`State`] and [`Stats`]: what a circuit is doing.

use std::fmt;
use std::time::Duration;

/// The state of a circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls go through; results are judged and counted.
    Closed,
    /// Calls are refused at once until the break is over.
    Open,
    /// A few probes go through; their results close or reopen the circuit.
    /// (An open circuit whose break is over also reads half-open: its next
    /// call probes.)
    HalfOpen,
    /// Held open by [`CircuitBreakerHandle::force_open`](crate::CircuitBreakerHandle::force_open)
    /// until reset: every call is refused.
    ForcedOpen,
    /// Held closed by [`CircuitBreakerHandle::force_closed`](crate::CircuitBreakerHandle::force_closed)
    /// until reset: every call goes through and nothing is counted.
    ForcedClosed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::ForcedOpen => "forced open",
            State::ForcedClosed => "forced closed",
        })
    }
}

/// A snapshot of a circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The state now.
    pub state: State,
    /// Judged calls in the window (0 for the consecutive-failures model).
    pub calls_in_window: u64,
    /// Failures in the window (for the consecutive-failures model: failures
    /// in a row so far).
    pub failures_in_window: u64,
    /// Slow calls in the window.
    pub slow_in_window: u64,
    /// Trips since the circuit was last closed (grows the break).
    pub consecutive_trips: u32,
    /// Probes admitted and not finished (half-open only).
    pub probes_in_flight: usize,
    /// Calls refused so far (open, half-open full, forced open).
    pub rejected: u64,
    /// Times the circuit opened so far (trips and reopenings).
    pub opened: u64,
    /// When open: the time until the next probe may go.
    pub retry_after: Option<Duration>,
}
