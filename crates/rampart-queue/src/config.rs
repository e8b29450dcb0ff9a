//! Plain-data configuration ([`QueueConfig`], [`WhenFull`]); deserializes
//! with the `serde` feature.

use rampart_core::ConfigError;
use std::time::Duration;

/// The default hint given to shed callers: try again in 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The largest `capacity` (the queue's slots are allocated when it is
/// built): 65 536.
pub const MAX_CAPACITY: usize = 1 << 16;

/// What a call does when the queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum WhenFull {
    /// Wait for space (backpressure, the default), bounded by
    /// [`QueueConfig::max_wait`], the request's deadline and its
    /// cancellation token.
    #[default]
    Wait,
    /// Fail at once with [`ErrorKind::Overloaded`](rampart_core::ErrorKind::Overloaded)
    /// (503 + `Retry-After` through rampart's error mapping).
    Shed,
}

/// Everything a queue is configured with.
///
/// Build one with [`QueueLayer::builder`](crate::QueueLayer::builder), or
/// deserialize it (feature `serde`) and check it with
/// [`QueueConfig::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct QueueConfig {
    /// The most requests waiting for a worker (the article's `maxsize`).
    /// From 1 to [`MAX_CAPACITY`] (default 1024).
    pub capacity: usize,
    /// Number of workers, i.e. calls run at once. At least 1 (default 1).
    pub workers: usize,
    /// Wait for space or shed when the queue is full (default: wait).
    pub when_full: WhenFull,
    /// The longest a call waits for space before it fails with
    /// `Overloaded` (default: no bound of its own; the request's deadline
    /// and cancellation still bound it).
    pub max_wait: Option<Duration>,
    /// The `retry_after` hint of an `Overloaded` error (default 1 s).
    pub retry_after: Option<Duration>,
    /// Accepted work runs to completion even when its caller leaves
    /// (fire-and-forget); by default work whose caller left is skipped
    /// before it starts and dropped while it runs.
    pub detach: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 1024,
            workers: 1,
            when_full: WhenFull::Wait,
            max_wait: None,
            retry_after: Some(DEFAULT_RETRY_AFTER),
            detach: false,
        }
    }
}

impl QueueConfig {
    /// Checks the values: `capacity` from 1 to [`MAX_CAPACITY`], `workers`
    /// at least 1, `max_wait` not zero.
    ///
    /// ```
    /// use rampart_queue::QueueConfig;
    ///
    /// let bad = QueueConfig { workers: 0, ..QueueConfig::default() };
    /// let e = bad.check().unwrap_err();
    /// assert_eq!(e.field(), "workers");
    /// ```
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(ConfigError::new(
                "capacity",
                self.capacity,
                "from 1 to 65536 (the most requests waiting for a worker)",
            ));
        }
        if self.workers == 0 {
            return Err(ConfigError::new(
                "workers",
                self.workers,
                "at least 1 (the number of calls run at once)",
            ));
        }
        if self.max_wait.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "max_wait",
                self.max_wait,
                "a positive duration, or none (use WhenFull::Shed not to wait)",
            ));
        }
        Ok(())
    }
}
