//! [`Quota`]: how many requests, per how long, and how many at once.

use rampart_core::ConfigError;
use std::num::NonZeroU32;
use std::time::Duration;

/// A rate and a burst: `n` requests per `period`, of which `burst` may come
/// at once after a quiet spell.
///
/// GCRA spaces requests one *interval* (`period / n`) apart and lets a
/// client run `burst` intervals ahead of that schedule. Over any stretch of
/// time `t` from a full bucket, at most `burst + t / interval` requests are
/// admitted, exactly.
///
/// ```
/// use rampart_rate::Quota;
/// use std::num::NonZeroU32;
/// use std::time::Duration;
///
/// let q = Quota::per_second(NonZeroU32::new(5).unwrap());
/// assert_eq!(q.interval(), Duration::from_millis(200));
/// assert_eq!(q.burst().get(), 5);
///
/// // 100 per minute, at most 10 at once.
/// let q = Quota::per_minute(NonZeroU32::new(100).unwrap())
///     .with_burst(NonZeroU32::new(10).unwrap());
/// assert_eq!(q.interval(), Duration::from_millis(600));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(try_from = "QuotaConfig")
)]
pub struct Quota {
    interval: Duration,
    burst: NonZeroU32,
}

impl Quota {
    /// `n` requests per second, `n` at once.
    pub fn per_second(n: NonZeroU32) -> Quota {
        Quota::per(n, Duration::from_secs(1))
    }

    /// `n` requests per minute, `n` at once.
    pub fn per_minute(n: NonZeroU32) -> Quota {
        Quota::per(n, Duration::from_secs(60))
    }

    /// `n` requests per `period`, `n` at once.
    ///
    /// # Panics
    ///
    /// If `period` is zero ("`Quota::per`: period must be greater than
    /// zero"); [`Quota::try_per`] returns a [`ConfigError`] instead.
    pub fn per(n: NonZeroU32, period: Duration) -> Quota {
        assert!(
            !period.is_zero(),
            "`Quota::per`: period must be greater than zero"
        );
        Quota::interval_of(n, period)
    }

    /// `n` requests per `period`, `n` at once; a zero `period` is an error
    /// naming the field `period`.
    pub fn try_per(n: NonZeroU32, period: Duration) -> Result<Quota, ConfigError> {
        if period.is_zero() {
            return Err(ConfigError::new(
                "period",
                period,
                "a period greater than zero",
            ));
        }
        Ok(Quota::interval_of(n, period))
    }

    fn interval_of(n: NonZeroU32, period: Duration) -> Quota {
        // At least one nanosecond apart: GCRA's arithmetic is in whole
        // nanoseconds.
        let interval = (period / n.get()).max(Duration::from_nanos(1));
        Quota { interval, burst: n }
    }

    /// One request every `interval`, one at once.
    ///
    /// # Panics
    ///
    /// If `interval` is zero ("`Quota::every`: interval must be greater than
    /// zero").
    pub fn every(interval: Duration) -> Quota {
        assert!(
            !interval.is_zero(),
            "`Quota::every`: interval must be greater than zero"
        );
        Quota {
            interval,
            burst: NonZeroU32::MIN,
        }
    }

    /// The same rate with `burst` requests allowed at once.
    pub fn with_burst(self, burst: NonZeroU32) -> Quota {
        Quota { burst, ..self }
    }

    /// The time between two requests at the steady rate.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How many requests may come at once.
    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The interval in nanoseconds, capped at [`MAX_SPAN`] (146 years).
    #[inline]
    pub(crate) fn interval_nanos(&self) -> u64 {
        nanos(self.interval).min(MAX_SPAN)
    }

    /// How far ahead of the schedule a client may run: `burst × interval`,
    /// capped at [`MAX_SPAN`].
    #[inline]
    pub(crate) fn span_nanos(&self) -> u64 {
        self.interval_nanos()
            .saturating_mul(u64::from(self.burst.get()))
            .min(MAX_SPAN)
    }
}

/// The longest interval and burst span GCRA works with: a quarter of
/// `u64` nanoseconds (146 years), so the theoretical arrival time never
/// saturates and a "once per forever" quota still refuses the second call.
pub(crate) const MAX_SPAN: u64 = u64::MAX / 4;

/// A duration in whole nanoseconds, saturated to `u64` (584 years).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The serde form of a [`Quota`]: `{ requests, period, burst }`.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaConfig {
    requests: NonZeroU32,
    period: Duration,
    burst: Option<NonZeroU32>,
}

#[cfg(feature = "serde")]
impl TryFrom<QuotaConfig> for Quota {
    type Error = ConfigError;

    fn try_from(c: QuotaConfig) -> Result<Quota, ConfigError> {
        let q = Quota::try_per(c.requests, c.period)?;
        Ok(match c.burst {
            Some(b) => q.with_burst(b),
            None => q,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[test]
    fn per_second_spaces_requests_evenly() {
        let q = Quota::per_second(n(4));
        assert_eq!(q.interval(), Duration::from_millis(250));
        assert_eq!(q.burst(), n(4));
        assert_eq!(q.span_nanos(), 1_000_000_000);
    }

    #[test]
    fn try_per_names_the_zero_period() {
        let e = Quota::try_per(n(1), Duration::ZERO).unwrap_err();
        assert_eq!(e.field(), "period");
        assert!(e.to_string().contains("period"), "{e}");
    }

    #[test]
    #[should_panic(expected = "`Quota::per`: period must be greater than zero")]
    fn per_panics_on_a_zero_period() {
        let _ = Quota::per(n(1), Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "`Quota::every`: interval must be greater than zero")]
    fn every_panics_on_a_zero_interval() {
        let _ = Quota::every(Duration::ZERO);
    }

    #[test]
    fn a_huge_rate_keeps_a_one_nanosecond_interval() {
        let q = Quota::per(n(u32::MAX), Duration::from_nanos(1));
        assert_eq!(q.interval(), Duration::from_nanos(1));
    }

    #[test]
    fn a_huge_interval_is_capped_instead_of_overflowing() {
        let q = Quota::every(Duration::MAX).with_burst(n(u32::MAX));
        assert_eq!(q.span_nanos(), MAX_SPAN);
        assert_eq!(q.interval_nanos(), MAX_SPAN);
    }
}
