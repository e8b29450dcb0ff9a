//! Plain-data configuration ([`FanOutConfig`], [`Mode`]), deserializable
//! with the `serde` feature.

use std::num::NonZeroUsize;
use std::time::Duration;

/// When a group is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Mode {
    /// Wait for every request; errors are values (asyncio's
    /// `gather(..., return_exceptions=True)`). The default.
    #[default]
    All,
    /// Wait for every request, but the first error cancels the rest and
    /// fails the group ([`Failure::Unreachable`](crate::Failure::Unreachable)).
    FailFast,
    /// The first success wins and cancels the rest; the group fails once
    /// every request failed.
    FirstOk,
    /// Done once this many requests succeed (the rest are cancelled); fails
    /// once that many successes are no longer possible.
    Quorum(NonZeroUsize),
}

impl Mode {
    /// How many successes the group needs out of `n` requests (`None`: it
    /// needs none, every request is awaited).
    pub(crate) fn need(self, n: usize) -> Option<usize> {
        match self {
            Mode::All => None,
            Mode::FailFast => Some(n),
            Mode::FirstOk => Some(1),
            Mode::Quorum(k) => Some(k.get()),
        }
    }
}

/// A fan-out's settings. Every value is valid, so
/// [`FanOutLayer::from_config`](crate::FanOutLayer::from_config) cannot
/// fail.
///
/// With the `serde` feature (missing fields take their defaults, unknown
/// fields are refused):
///
/// ```toml
/// mode = { quorum = 2 }   # or "all", "fail_fast", "first_ok"
/// concurrency = 16        # at most 16 in flight; absent: unbounded
/// timeout_ms = 2000       # collective timeout; absent: none
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct FanOutConfig {
    /// When the group is done (default [`Mode::All`]).
    pub mode: Mode,
    /// The most requests in flight at once (default: unbounded; the inner
    /// service's readiness still applies).
    pub concurrency: Option<NonZeroUsize>,
    /// The collective timeout in milliseconds, from the call (default:
    /// none; 0 means already expired: nothing is sent).
    pub timeout_ms: Option<u64>,
}

impl FanOutConfig {
    /// The collective timeout as a `Duration`.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// The checked settings a layer and its futures use (the timeout kept as a
/// `Duration`, so [`wait`](crate::wait) is not rounded to milliseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) concurrency: Option<NonZeroUsize>,
    pub(crate) timeout: Option<Duration>,
}

impl From<&FanOutConfig> for Settings {
    fn from(c: &FanOutConfig) -> Settings {
        Settings {
            mode: c.mode,
            concurrency: c.concurrency,
            timeout: c.timeout(),
        }
    }
}
