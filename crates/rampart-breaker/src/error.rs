//! [`CircuitOpen`]: the source of the error a refused call gets.

use crate::State;
use std::fmt;
use std::time::Duration;

/// Why a call was refused without reaching the service: the circuit was
/// open (or half-open with every probe slot taken, or forced open).
///
/// It is the [`source`](std::error::Error::source) of the
/// [`ErrorKind::Overloaded`](rampart_core::ErrorKind::Overloaded) error the
/// caller gets, whose `retry_after` is the time until the next probe (so
/// rampart's error mapping answers `503` + `Retry-After`, or gRPC
/// `UNAVAILABLE`). Find it with
/// [`Error::find_source`](rampart_core::Error::find_source):
///
/// ```
/// # use rampart_breaker::CircuitOpen;
/// # fn check(e: &rampart_core::Error) {
/// if let Some(open) = e.find_source::<CircuitOpen>() {
///     println!("circuit {}: retry in {:?}", open.state(), open.retry_after());
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    pub(crate) state: State,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) name: Option<std::sync::Arc<str>>,
}

impl CircuitOpen {
    /// The state that refused the call: open, half-open or forced open.
    pub fn state(&self) -> State {
        self.state
    }

    /// The time until the next probe may go (`None` when forced open).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The circuit's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "circuit {n:?} is {}", self.state)?,
            None => write!(f, "circuit is {}", self.state)?,
        }
        if let Some(d) = self.retry_after {
            write!(f, "; next probe in {} ms", d.as_millis())?;
        }
        Ok(())
    }
}

impl std::error::Error for CircuitOpen {}
