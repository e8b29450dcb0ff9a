//! [`FanOutError`]: a group that failed, with what it gathered.

use crate::outcome::Gathered;
use rampart_core::{BoxError, Error};
use std::fmt;

/// Why a fan-out group failed as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// The mode's goal can no longer be met: fail-fast saw an error,
    /// first-ok saw every request fail, a quorum became impossible (or was
    /// larger than the number of requests).
    Unreachable,
    /// The collective timeout passed before the group finished.
    Timeout,
    /// The caller's [`Context`](rampart_core::Context) deadline passed
    /// before the group finished.
    DeadlineExceeded,
    /// The caller's cancellation token fired before the group finished.
    Cancelled,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::Unreachable => "its goal became unreachable",
            Failure::Timeout => "the collective timeout passed",
            Failure::DeadlineExceeded => "the request deadline passed",
            Failure::Cancelled => "the caller cancelled",
        })
    }
}

/// A fan-out group that failed: why, and every request's outcome so far
/// (the unfinished ones cancelled and reported as not done).
///
/// Into a rampart [`Error`] with `Error::from`: `Timeout`,
/// `DeadlineExceeded` and `Cancelled` keep their kinds; `Unreachable`
/// becomes the first error that arrived (a rampart error comes back out as
/// it was, others become [`ErrorKind::Inner`](rampart_core::ErrorKind::Inner)),
/// or [`ErrorKind::InvalidRequest`](rampart_core::ErrorKind::InvalidRequest)
/// when no request failed (a quorum larger than the batch, first-ok over
/// an empty batch).
pub struct FanOutError<T, E> {
    failure: Failure,
    gathered: Gathered<T, E>,
}

impl<T, E> FanOutError<T, E> {
    pub(crate) fn new(failure: Failure, gathered: Gathered<T, E>) -> FanOutError<T, E> {
        FanOutError { failure, gathered }
    }

    /// Why the group failed.
    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// The outcomes, in input order.
    pub fn gathered(&self) -> &Gathered<T, E> {
        &self.gathered
    }

    /// The outcomes, in input order.
    pub fn into_gathered(self) -> Gathered<T, E> {
        self.gathered
    }
}

impl<T, E: Into<BoxError>> From<FanOutError<T, E>> for Error {
    fn from(e: FanOutError<T, E>) -> Error {
        match e.failure {
            Failure::Timeout => Error::timeout(),
            Failure::DeadlineExceeded => Error::deadline_exceeded(),
            Failure::Cancelled => Error::cancelled(),
            Failure::Unreachable => {
                let mut g = e.gathered;
                match g.take_first_error() {
                    Some(first) => Error::from_inner(first),
                    None => Error::invalid_request(),
                }
            }
        }
    }
}

impl<T, E> fmt::Display for FanOutError<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.gathered;
        write!(
            f,
            "fan-out failed, {}: {} succeeded, {} failed, {} not done",
            self.failure,
            g.succeeded(),
            g.failed(),
            g.not_done()
        )
    }
}

impl<T: fmt::Debug, E: fmt::Debug> fmt::Debug for FanOutError<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOutError")
            .field("failure", &self.failure)
            .field("gathered", &self.gathered)
            .finish()
    }
}

impl<T: fmt::Debug, E: fmt::Debug> std::error::Error for FanOutError<T, E> {}
