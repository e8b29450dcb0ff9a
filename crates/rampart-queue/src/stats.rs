//! [`Stats`] and [`Drained`]: what a queue reports.

use std::time::Duration;

/// A snapshot of a queue's state and counters ([`Queue::stats`](crate::Queue::stats)).
///
/// Counters are totals since the queue was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The most requests that can wait for a worker.
    pub capacity: usize,
    /// Workers the queue was built with.
    pub workers: usize,
    /// Workers still running (0 once the queue is closed and drained).
    pub live_workers: usize,
    /// Requests waiting for a worker now (never more than `capacity`).
    pub queued: usize,
    /// Callers waiting for space now (the queue was full when they came;
    /// each gets the next place freed, first come first served).
    pub waiting: usize,
    /// Calls running now (never more than `workers`).
    pub running: usize,
    /// Calls the inner service finished (with a response or an error).
    pub completed: u64,
    /// Of `completed`, those that ended with an error (from `poll_ready` or
    /// the call).
    pub failed: u64,
    /// Requests refused with `Overloaded`: the queue was full (shed mode),
    /// or stayed full for `max_wait`.
    pub shed: u64,
    /// Requests taken from the queue but not run: the caller had left, or
    /// the request was cancelled or past its deadline.
    pub skipped: u64,
    /// Calls whose inner service panicked (each failed alone).
    pub panicked: u64,
    /// Running calls dropped because their caller left.
    pub abandoned: u64,
}

/// What [`Queue::drain`](crate::Queue::drain) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Every queued and running request finished before the drain deadline.
    pub in_time: bool,
    /// Queued requests failed with `Closed` at the drain deadline.
    pub queued_dropped: usize,
    /// Running calls dropped at the drain deadline (their callers get
    /// `Closed`).
    pub running_dropped: usize,
    /// How long the drain took.
    pub took: Duration,
}
