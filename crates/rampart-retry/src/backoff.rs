//! Exponential backoff with the cap applied *before* jitter, so no delay
//! ever exceeds the cap.
//!
//! ```
//! use rampart_retry::{Backoff, Jitter};
//! use std::time::Duration;
//!
//! let backoff = Backoff::exponential(Duration::from_secs(1))
//!     .multiplier(2.0)
//!     .max_delay(Duration::from_secs(5))
//!     .jitter(Jitter::None);
//! let delays: Vec<_> = backoff.delays(0).take(4).map(|d| d.as_secs()).collect();
//! assert_eq!(delays, [1, 2, 4, 5]);
//!
//! // Jittered delays stay below the cap too, and a seed makes them repeatable.
//! let full = backoff.jitter(Jitter::Full);
//! assert!(full.delays(7).take(100).all(|d| d <= Duration::from_secs(5)));
//! assert!(full.delays(7).take(10).eq(full.delays(7).take(10)));
//! ```

use crate::ConfigError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// How a computed delay is randomised. Every mode stays within `0..=cap`.
///
/// With `d = min(cap, base × multiplier^(n-1))` for the n-th retry:
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Jitter {
    /// `d` exactly.
    None,
    /// Uniform in `0..=d` (AWS "full jitter"). The default.
    #[default]
    Full,
    /// `d/2` plus uniform in `0..=d/2` (AWS "equal jitter").
    Equal,
    /// Uniform in `base..=min(cap, previous × multiplier)`, starting from
    /// `previous = base` (AWS "decorrelated jitter", capped before the draw).
    Decorrelated,
    /// `d × U(0.8, 1.2)`, then clamped to the cap: the jitter of gRPC's
    /// retry design (A6, since its August 2024 revision) and of its
    /// connection backoff. Use it with
    /// `Backoff::exponential(initial).multiplier(m).max_delay(max)` to get
    /// A6's `initialBackoff`, `backoffMultiplier` and `maxBackoff`.
    Grpc,
}

/// An exponential backoff: `base`, `multiplier` (≥ 1), cap (`max_delay`)
/// and a [`Jitter`] mode.
///
/// The default is 100 ms doubling up to 10 s with [`Jitter::Full`].
/// Construct with [`Backoff::exponential`], [`Backoff::constant`] or
/// [`Backoff::none`]; [`RetryBuilder::build`](crate::RetryBuilder::build)
/// validates it (multiplier ≥ 1, cap ≥ base).
///
/// Durations are kept in nanoseconds (at most about 584 years; longer ones
/// saturate), so a backoff is small and cheap to copy.
#[derive(Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "BackoffConfig"))]
pub struct Backoff {
    base: u64,
    cap: u64,
    multiplier: f64,
    jitter: Jitter,
}

/// The serde form of [`Backoff`]: durations as `serde` writes them.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(default)]
struct BackoffConfig {
    base: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: Jitter,
}

#[cfg(feature = "serde")]
impl Default for BackoffConfig {
    fn default() -> Self {
        let b = Backoff::default();
        BackoffConfig {
            base: b.base(),
            multiplier: b.multiplier,
            max_delay: b.cap(),
            jitter: b.jitter,
        }
    }
}

#[cfg(feature = "serde")]
impl From<BackoffConfig> for Backoff {
    fn from(c: BackoffConfig) -> Backoff {
        Backoff::exponential(c.base)
            .multiplier(c.multiplier)
            .max_delay(c.max_delay)
            .jitter(c.jitter)
    }
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("base", &Duration::from_nanos(self.base))
            .field("multiplier", &self.multiplier)
            .field("max_delay", &Duration::from_nanos(self.cap))
            .field("jitter", &self.jitter)
            .finish()
    }
}

const DEFAULT_CAP: Duration = Duration::from_secs(10);

impl Default for Backoff {
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(100))
    }
}

impl Backoff {
    /// `base`, doubling, capped at 10 s (or at `base` when it is longer),
    /// with full jitter.
    pub fn exponential(base: Duration) -> Backoff {
        Backoff {
            base: nanos(base),
            multiplier: 2.0,
            cap: nanos(DEFAULT_CAP.max(base)),
            jitter: Jitter::Full,
        }
    }

    /// The same delay every time, without jitter.
    pub fn constant(delay: Duration) -> Backoff {
        Backoff {
            base: nanos(delay),
            multiplier: 1.0,
            cap: nanos(delay),
            jitter: Jitter::None,
        }
    }

    /// No delay at all: retries start at once (and never touch the timer).
    pub fn none() -> Backoff {
        Backoff::constant(Duration::ZERO)
    }

    /// The factor between consecutive delays (≥ 1).
    pub fn multiplier(mut self, multiplier: f64) -> Backoff {
        self.multiplier = multiplier;
        self
    }

    /// The cap: no delay is longer, jitter included (must be ≥ base).
    pub fn max_delay(mut self, cap: Duration) -> Backoff {
        self.cap = nanos(cap);
        self
    }

    /// The jitter mode.
    pub fn jitter(mut self, jitter: Jitter) -> Backoff {
        self.jitter = jitter;
        self
    }

    /// The first delay before jitter.
    pub fn base(&self) -> Duration {
        Duration::from_nanos(self.base)
    }

    /// The cap.
    pub fn cap(&self) -> Duration {
        Duration::from_nanos(self.cap)
    }

    /// The jitter mode.
    pub fn jitter_mode(&self) -> Jitter {
        self.jitter
    }

    /// Checks the multiplier (finite, ≥ 1; field `backoff.multiplier`) and
    /// the cap (≥ base; field `backoff.max_delay`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError::new(
                "backoff.multiplier",
                self.multiplier,
                "a finite number >= 1",
            ));
        }
        if self.cap < self.base {
            return Err(ConfigError::new(
                "backoff.max_delay",
                self.cap(),
                format!("at least the base delay {:?}", self.base()),
            ));
        }
        Ok(())
    }

    /// The delays before the 1st, 2nd, … retry, drawn from a [`SmallRng`]
    /// seeded with `seed` (the same seed gives the same sequence). The
    /// iterator never ends.
    pub fn delays(&self, seed: u64) -> Delays {
        Delays {
            backoff: *self,
            retry: 0,
            prev: self.base,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// `min(cap, base × multiplier^(n-1))` in nanoseconds, for `n ≥ 1`.
    fn capped(&self, n: u32) -> u64 {
        if self.base == 0 {
            return 0;
        }
        let exp = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        scale(self.base, self.multiplier.powi(exp), self.cap)
    }
}

/// `min(cap, ns × factor)`; a NaN or infinite product gives the cap.
fn scale(ns: u64, factor: f64, cap: u64) -> u64 {
    let f = ns as f64 * factor;
    if f < cap as f64 { f as u64 } else { cap }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The endless sequence of delays of a [`Backoff`]; see [`Backoff::delays`].
#[derive(Clone, Debug)]
pub struct Delays {
    backoff: Backoff,
    retry: u32,
    prev: u64,
    rng: SmallRng,
}

impl Delays {
    /// Starts the sequence over: the next delay is the first one again (the
    /// random generator goes on). A retry layer calls it when the peer asks
    /// for a delay (`Retry-After`, gRPC pushback), as gRPC's retry design
    /// (A6) restarts its backoff after a pushback.
    pub fn restart(&mut self) {
        self.retry = 0;
        self.prev = self.backoff.base;
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.retry = self.retry.saturating_add(1);
        let b = &self.backoff;
        let cap = b.cap;
        let d = b.capped(self.retry);
        let ns = match b.jitter {
            Jitter::None => d,
            Jitter::Full => self.rng.random_range(0..=d),
            Jitter::Equal => d / 2 + self.rng.random_range(0..=d - d / 2),
            Jitter::Decorrelated => {
                let upper = scale(self.prev, b.multiplier, cap);
                let lower = b.base.min(upper);
                self.prev = self.rng.random_range(lower..=upper);
                self.prev
            }
            Jitter::Grpc => scale(d, self.rng.random_range(0.8..=1.2), cap),
        };
        Some(Duration::from_nanos(ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|n| MS * u32::try_from(*n).unwrap()).collect()
    }

    fn b() -> Backoff {
        Backoff::exponential(MS * 100)
            .multiplier(2.0)
            .max_delay(MS * 1000)
    }

    #[test]
    fn no_jitter_doubles_up_to_the_cap() {
        let got: Vec<_> = b().jitter(Jitter::None).delays(1).take(6).collect();
        assert_eq!(got, ms(&[100, 200, 400, 800, 1000, 1000]));
    }

    #[test]
    fn constant_and_none_are_flat() {
        let c: Vec<_> = Backoff::constant(MS * 30).delays(3).take(3).collect();
        assert_eq!(c, ms(&[30, 30, 30]));
        assert!(Backoff::none().delays(3).take(5).all(|d| d.is_zero()));
    }

    // Each jitter mode, replayed by hand from the same seeded generator: the
    // sequence is exactly the documented formula applied to the draws.
    #[test]
    fn full_jitter_sequence_is_exact_for_a_seed() {
        let mut rng = SmallRng::seed_from_u64(42);
        let want: Vec<_> = [100u64, 200, 400, 800, 1000, 1000]
            .iter()
            .map(|d| Duration::from_nanos(rng.random_range(0..=d * 1_000_000)))
            .collect();
        let got: Vec<_> = b().jitter(Jitter::Full).delays(42).take(6).collect();
        assert_eq!(got, want);
        assert!(got.windows(2).any(|w| w[0] != w[1]), "draws differ");
    }

    #[test]
    fn equal_jitter_sequence_is_exact_for_a_seed() {
        let mut rng = SmallRng::seed_from_u64(42);
        let want: Vec<_> = [100u64, 200, 400, 800, 1000, 1000]
            .iter()
            .map(|d| {
                let d = d * 1_000_000;
                Duration::from_nanos(d / 2 + rng.random_range(0..=d - d / 2))
            })
            .collect();
        let got: Vec<_> = b().jitter(Jitter::Equal).delays(42).take(6).collect();
        assert_eq!(got, want);
        for (g, d) in got.iter().zip(ms(&[100, 200, 400, 800, 1000, 1000])) {
            assert!(*g >= d / 2 && *g <= d, "{g:?} within [{:?}, {d:?}]", d / 2);
        }
    }

    #[test]
    fn decorrelated_jitter_sequence_is_exact_for_a_seed() {
        let mut rng = SmallRng::seed_from_u64(42);
        let (base, cap) = (100_000_000u64, 1_000_000_000u64);
        let mut prev = base;
        let want: Vec<_> = (0..8)
            .map(|_| {
                prev = rng.random_range(base..=(prev * 2).min(cap));
                Duration::from_nanos(prev)
            })
            .collect();
        let got: Vec<_> = b()
            .jitter(Jitter::Decorrelated)
            .delays(42)
            .take(8)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn grpc_jitter_sequence_is_exact_for_a_seed_and_clamped() {
        let mut rng = SmallRng::seed_from_u64(42);
        let want: Vec<_> = [100u64, 200, 400, 800, 1000, 1000]
            .iter()
            .map(|d| {
                let f = (d * 1_000_000) as f64 * rng.random_range(0.8..=1.2);
                Duration::from_nanos(if f < 1e9 { f as u64 } else { 1_000_000_000 })
            })
            .collect();
        let got: Vec<_> = b().jitter(Jitter::Grpc).delays(42).take(6).collect();
        assert_eq!(got, want);
        assert!(
            got[..3]
                .iter()
                .zip(ms(&[100, 200, 400]))
                .all(|(g, d)| { *g >= d.mul_f64(0.8) && *g <= d.mul_f64(1.2) })
        );
    }

    #[test]
    fn validation_rejects_bad_multiplier_and_cap() {
        assert_eq!(b().validate(), Ok(()));
        for m in [0.5, f64::NAN, f64::INFINITY] {
            let e = b().multiplier(m).validate().unwrap_err();
            assert_eq!(e.field(), "backoff.multiplier");
            assert_eq!(e.value(), format!("{m:?}"));
        }
        let e = b().max_delay(MS).validate().unwrap_err();
        assert_eq!(e.field(), "backoff.max_delay");
        assert_eq!(
            e.to_string(),
            "invalid backoff.max_delay = 1ms: expected at least the base delay 100ms"
        );
    }

    #[test]
    fn restart_starts_the_sequence_over() {
        let mut d = b().jitter(Jitter::None).delays(1);
        assert_eq!(d.by_ref().take(3).collect::<Vec<_>>(), ms(&[100, 200, 400]));
        d.restart();
        assert_eq!(d.take(3).collect::<Vec<_>>(), ms(&[100, 200, 400]));
        let mut dec = b().jitter(Jitter::Decorrelated).delays(9);
        let _ = dec.by_ref().take(5).count();
        dec.restart();
        // Decorrelated starts from `previous = base` again: at most base × 2.
        assert!(dec.next().unwrap() <= MS * 200);
    }

    #[test]
    fn long_bases_and_huge_exponents_do_not_overflow() {
        // tower's jitter goes wrong once the base reaches 1 s; here a 1 h base
        // with a 1 day cap and the 10 000th retry are fine.
        let day = Duration::from_secs(86_400);
        let long = Backoff::exponential(Duration::from_secs(3600))
            .max_delay(day)
            .jitter(Jitter::None);
        let mut d = long.delays(0);
        assert_eq!(d.next(), Some(Duration::from_secs(3600)));
        assert_eq!(d.nth(10_000), Some(day));
        let huge = Backoff::exponential(Duration::MAX).max_delay(Duration::MAX);
        assert!(huge.delays(1).take(3).all(|x| x <= Duration::MAX));
    }

    fn jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
            Just(Jitter::Grpc),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(11), ..ProptestConfig::default() })]
        #[test]
        fn every_delay_is_at_most_the_cap(
            base_ms in 0u64..5_000,
            extra_ms in 0u64..60_000,
            multiplier in 1.0f64..10.0,
            jitter in jitter(),
            seed in any::<u64>(),
        ) {
            let cap = Duration::from_millis(base_ms + extra_ms);
            let backoff = Backoff::exponential(Duration::from_millis(base_ms))
                .multiplier(multiplier)
                .max_delay(cap)
                .jitter(jitter);
            prop_assert!(backoff.validate().is_ok());
            for d in backoff.delays(seed).take(64) {
                prop_assert!(d <= cap, "{d:?} > {cap:?}");
            }
        }
    }
}
