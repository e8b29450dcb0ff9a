//! The circuit's settings: trip model, window, slow calls, break duration,
//! probes; their defaults and checks.

use rampart_core::ConfigError;
use std::time::Duration;

/// Default failure ratio that trips the circuit: 50 % (resilience4j's
/// `failureRateThreshold`; Polly v8 uses 0.1).
pub const DEFAULT_FAILURE_RATIO: f64 = 0.5;
/// Default count-based window: the last 100 calls (resilience4j's
/// `slidingWindowSize`).
pub const DEFAULT_WINDOW_CALLS: usize = 100;
/// Default minimum number of calls in the window before the ratio is
/// judged: 100 (resilience4j's `minimumNumberOfCalls` and Polly v8's
/// `MinimumThroughput`).
pub const DEFAULT_MIN_CALLS: usize = 100;
/// Default time the circuit stays open before the first probe: 5 s (Polly
/// v8's `BreakDuration`; resilience4j waits 60 s).
pub const DEFAULT_BREAK: Duration = Duration::from_secs(5);
/// Default number of probes a half-open circuit admits: 5 (between Polly's
/// single probe and resilience4j's 10).
pub const DEFAULT_PROBES: usize = 5;
/// Default time a probe may take before it counts as failed: 10 s.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest count-based window (and minimum number of calls).
pub const MAX_WINDOW_CALLS: usize = 100_000;
/// The largest number of half-open probes.
pub const MAX_PROBES: usize = 10_000;

/// A sliding window of recent calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub enum Window {
    /// The last `n` calls (resilience4j's `COUNT_BASED`).
    Calls(usize),
    /// The calls of the last duration, in ten buckets: the window slides in
    /// steps of a tenth of it (Polly v8's `SamplingDuration`, resilience4j's
    /// `TIME_BASED`). At least 10 ms, at most one day.
    ///
    /// Each bucket is one 64-bit word, which sets two limits. A bucket
    /// spans a *tenth*: the window's whole milliseconds divided by ten,
    /// rounded down.
    ///
    /// - **Saturation**: a bucket counts at most 65 535 calls. Further
    ///   calls in the same tenth are not counted at all (neither success
    ///   nor failure), so above 65 535 calls per tenth the ratio is judged
    ///   on the first 65 535 calls of each tenth, and the window holds at
    ///   most 655 350 calls.
    /// - **Tag wrap**: a bucket is tagged with the index of its tenth
    ///   (time since the circuit was made, in tenths) modulo 65 536. A
    ///   bucket written in tenth `t` and not written since is counted again,
    ///   with its old calls, in tenths `t + 65 536·k … t + 65 536·k + 9`
    ///   (`k ≥ 1`). Any call that lands in that bucket meanwhile replaces
    ///   it, so only a circuit that has seen no call in the bucket for
    ///   65 536 tenths (6 553.6 windows: 18 h 12 min 16 s for a 10 s
    ///   window, 65.5 s for a 10 ms one) is affected, for at most one
    ///   window.
    Time(Duration),
}

/// When a closed circuit trips.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub enum TripModel {
    /// When at least `min_calls` calls are in the window and the share of
    /// failures among them is at least `ratio` (in `0.0..=1.0`; 0 trips at
    /// the first judged window, 1 only when every call failed).
    FailureRatio {
        /// Share of failures that trips, `0.0..=1.0`.
        ratio: f64,
        /// The window the ratio is taken over.
        window: Window,
        /// The fewest calls in the window for the ratio to count (at least 1).
        min_calls: usize,
    },
    /// After `n` failures in a row (at least 1); a success resets the count.
    ConsecutiveFailures(usize),
}

impl Default for TripModel {
    /// 50 % of the last 100 calls, once 100 calls were seen (resilience4j).
    fn default() -> Self {
        TripModel::FailureRatio {
            ratio: DEFAULT_FAILURE_RATIO,
            window: Window::Calls(DEFAULT_WINDOW_CALLS),
            min_calls: DEFAULT_MIN_CALLS,
        }
    }
}

/// Slow calls: a call that takes at least `threshold` is slow; the circuit
/// trips when the share of slow calls in the window reaches `ratio` (with
/// the same minimum number of calls as failures). A slow probe fails.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct SlowCalls {
    /// A call taking at least this long is slow (more than zero).
    pub threshold: Duration,
    /// Share of slow calls that trips, `0.0..=1.0`.
    pub ratio: f64,
}

/// How long the circuit stays open: `base` after the first trip, times
/// `multiplier` after each further trip without a close in between, never
/// more than `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct BreakDuration {
    /// The first break.
    pub base: Duration,
    /// Growth per repeated trip (at least 1.0; 1.0 keeps it constant).
    pub multiplier: f64,
    /// The longest break.
    pub max: Duration,
}

impl BreakDuration {
    /// A constant break.
    pub const fn constant(d: Duration) -> Self {
        BreakDuration {
            base: d,
            multiplier: 1.0,
            max: d,
        }
    }

    /// The break after `trips` trips in a row (1 = the first).
    pub fn after(&self, trips: u32) -> Duration {
        let exp = trips.saturating_sub(1).min(64) as i32;
        let secs = self.base.as_secs_f64() * self.multiplier.powi(exp);
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs).max(self.base.min(self.max))
        } else {
            self.max
        }
    }
}

impl Default for BreakDuration {
    fn default() -> Self {
        BreakDuration::constant(DEFAULT_BREAK)
    }
}

/// Plain configuration of a circuit (deserializes with the `serde`
/// feature; missing fields take their defaults, unknown fields are
/// refused). Checked by [`CircuitBreakerBuilder::config`](crate::CircuitBreakerBuilder::config)
/// and [`build`](crate::CircuitBreakerBuilder::build).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct CircuitBreakerConfig {
    /// When the circuit trips (default: 50 % of the last 100 calls, at
    /// least 100 calls).
    pub trip: TripModel,
    /// Slow calls (default: not judged).
    pub slow_calls: Option<SlowCalls>,
    /// How long the circuit stays open (default 5 s, constant).
    pub breaks: BreakDuration,
    /// Probes admitted when half-open (default 5).
    pub probes: usize,
    /// How long a probe may take (default 10 s).
    pub probe_timeout: Duration,
    /// A name for events and errors.
    pub name: Option<String>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            trip: TripModel::default(),
            slow_calls: None,
            breaks: BreakDuration::default(),
            probes: DEFAULT_PROBES,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            name: None,
        }
    }
}

/// A ratio in `0.0..=1.0` (NaN refused).
fn check_ratio(field: &'static str, value: f64) -> Result<f64, ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(field, value, "a ratio in 0.0..=1.0"))
    }
}

/// The checked settings of one circuit.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) model: TripModel,
    pub(crate) slow: Option<SlowCalls>,
    pub(crate) breaks: BreakDuration,
    pub(crate) probes: usize,
    pub(crate) probe_timeout: Duration,
    pub(crate) name: Option<std::sync::Arc<str>>,
}

impl Settings {
    pub(crate) fn check(self) -> Result<Settings, ConfigError> {
        match self.model {
            TripModel::FailureRatio {
                ratio,
                window,
                min_calls,
            } => {
                check_ratio("failure_ratio", ratio)?;
                if min_calls == 0 || min_calls > MAX_WINDOW_CALLS {
                    return Err(ConfigError::new("min_calls", min_calls, "1..=100000 calls"));
                }
                match window {
                    Window::Calls(n) => {
                        if n == 0 || n > MAX_WINDOW_CALLS {
                            return Err(ConfigError::new("window", window, "Calls(1..=100000)"));
                        }
                        if min_calls > n {
                            return Err(ConfigError::new(
                                "min_calls",
                                min_calls,
                                format!("at most the window's {n} calls (or it never trips)"),
                            ));
                        }
                    }
                    Window::Time(d) => {
                        if d < Duration::from_millis(10) || d > Duration::from_secs(86_400) {
                            return Err(ConfigError::new("window", window, "Time(10 ms..=1 day)"));
                        }
                    }
                }
            }
            TripModel::ConsecutiveFailures(n) => {
                if n == 0 || n > u32::MAX as usize {
                    return Err(ConfigError::new(
                        "consecutive_failures",
                        n,
                        "at least 1 failure",
                    ));
                }
                if self.slow.is_some() {
                    return Err(ConfigError::new(
                        "slow_calls",
                        self.slow,
                        "None with consecutive failures (slow calls are a share of a window)",
                    ));
                }
            }
        }
        if let Some(s) = self.slow {
            check_ratio("slow_call_ratio", s.ratio)?;
            if s.threshold.is_zero() {
                return Err(ConfigError::new(
                    "slow_call_threshold",
                    s.threshold,
                    "more than zero",
                ));
            }
        }
        let b = self.breaks;
        if b.base.is_zero() || b.base > b.max {
            return Err(ConfigError::new(
                "break_duration",
                b.base,
                format!("more than zero and at most the maximum break {:?}", b.max),
            ));
        }
        if b.max > Duration::from_secs(86_400 * 365) {
            return Err(ConfigError::new("max_break", b.max, "at most a year"));
        }
        if !(b.multiplier >= 1.0 && b.multiplier.is_finite()) {
            return Err(ConfigError::new(
                "break_multiplier",
                b.multiplier,
                "a finite number, at least 1.0",
            ));
        }
        if self.probes == 0 || self.probes > MAX_PROBES {
            return Err(ConfigError::new("probes", self.probes, "1..=10000 probes"));
        }
        if self.probe_timeout.is_zero() || self.probe_timeout > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "probe_timeout",
                self.probe_timeout,
                "more than zero, at most a day",
            ));
        }
        Ok(self)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: TripModel::default(),
            slow: None,
            breaks: BreakDuration::default(),
            probes: DEFAULT_PROBES,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            name: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn break_grows_by_the_multiplier_up_to_the_max() {
        let b = BreakDuration {
            base: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(10),
        };
        let got: Vec<_> = (1..=6).map(|t| b.after(t).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.after(u32::MAX), Duration::from_secs(10));
        assert_eq!(BreakDuration::default().after(9), DEFAULT_BREAK);
    }
}
