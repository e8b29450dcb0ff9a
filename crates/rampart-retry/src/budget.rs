//! A retry budget shared by many `Retry` services: a token bucket over a
//! sliding window.
//!
//! Every first call deposits `ratio` of a token, every retry withdraws one
//! whole token, and `min_per_sec × ttl` tokens are always available on top
//! (the floor, so a low-traffic client can still retry). Deposits and
//! withdrawals expire after `ttl`. Over any window of `ttl`, the retries let
//! through are therefore at most `ratio × calls + min_per_sec × ttl` —
//! exactly, with the ratio kept to parts per million: unlike tower's
//! `TpsBudget`, a ratio whose inverse is not a whole number (0.75, 0.3) is
//! not rounded up to "retry everything", and bad input is a
//! [`ConfigError`], never a panic.
//!
//! ```
//! use rampart_retry::Budget;
//! use std::time::Duration;
//!
//! let budget = Budget::new(0.5, 0, Duration::from_secs(10)).unwrap();
//! for _ in 0..4 {
//!     budget.deposit(); // four first calls
//! }
//! assert!(budget.try_withdraw()); // two retries are allowed…
//! assert!(budget.try_withdraw());
//! assert!(!budget.try_withdraw()); // …and no third
//! assert!(Budget::new(1.5, 0, Duration::from_secs(10)).is_err());
//! ```
//!
//! Deposits are one compare-and-swap on an atomic (no lock); the check and
//! withdrawal of a retry take a short lock so that concurrent retries cannot
//! both take the last token.

use crate::ConfigError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Slots of the sliding window (each covers `ttl / SLOTS`).
const SLOTS: usize = 10;
/// One token in fixed point.
const PPM: u128 = 1_000_000;
/// Each slot is `epoch (24 bits) | count (40 bits)` in one atomic word.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const EPOCH_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

/// The settings of a [`Budget`], e.g. from a config file.
///
/// The default is Finagle's: 20 % of calls may be retried, plus 10 retries
/// per second, over a 10 s window.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct BudgetConfig {
    /// Retries allowed per first call, in `0..=1`.
    pub ratio: f64,
    /// Retries per second allowed whatever the traffic (the floor).
    pub min_per_sec: u32,
    /// How long deposits and withdrawals count (`1 ms..=1 h`).
    pub ttl: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl BudgetConfig {
    /// Validates the settings and builds the budget.
    pub fn build(&self) -> Result<Budget, ConfigError> {
        Budget::new(self.ratio, self.min_per_sec, self.ttl)
    }
}

/// A shared retry budget; clones share the same bucket (hand one clone to
/// every `Retry` service calling the same upstream).
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    ratio_ppm: u128,
    reserve_ppm: u128,
    slot_nanos: u64,
    start: Instant,
    deposits: [AtomicU64; SLOTS],
    withdrawals: [AtomicU64; SLOTS],
    withdraw_lock: Mutex<()>,
    config: BudgetConfig,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("config", &self.inner.config)
            .field("available", &self.available())
            .finish()
    }
}

impl Default for Budget {
    fn default() -> Self {
        BudgetConfig::default()
            .build()
            .expect("the default budget config is valid")
    }
}

impl Budget {
    /// A budget letting `ratio` (in `0..=1`) of calls be retried, plus
    /// `min_per_sec` retries per second, counted over `ttl` (`1 ms..=1 h`).
    pub fn new(ratio: f64, min_per_sec: u32, ttl: Duration) -> Result<Budget, ConfigError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::InvalidRatio(ratio));
        }
        if ttl < Duration::from_millis(1) || ttl > Duration::from_secs(3600) {
            return Err(ConfigError::InvalidTtl(ttl));
        }
        let ttl_nanos = u64::try_from(ttl.as_nanos()).expect("ttl is at most 1 h");
        // `ratio` is in 0..=1, so the product is in 0..=1e6.
        let ratio_ppm = (ratio * 1e6).round() as u128;
        let reserve_ppm = u128::from(min_per_sec) * u128::from(ttl_nanos) / 1_000;
        Ok(Budget {
            inner: Arc::new(Inner {
                ratio_ppm,
                reserve_ppm,
                slot_nanos: (ttl_nanos / SLOTS as u64).max(1),
                start: Instant::now(),
                deposits: Default::default(),
                withdrawals: Default::default(),
                withdraw_lock: Mutex::new(()),
                config: BudgetConfig {
                    ratio,
                    min_per_sec,
                    ttl,
                },
            }),
        })
    }

    /// The settings this budget was built with.
    pub fn config(&self) -> BudgetConfig {
        self.inner.config
    }

    /// Records a first call (adds `ratio` of a token). Lock-free.
    pub fn deposit(&self) {
        let epoch = self.inner.epoch();
        bump(&self.inner.deposits[slot(epoch)], epoch);
    }

    /// Takes one token for a retry if the budget has one; `false` means the
    /// retry must not happen (fail fast, never wait).
    pub fn try_withdraw(&self) -> bool {
        let inner = &*self.inner;
        let _guard = inner
            .withdraw_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let epoch = inner.epoch();
        let (d, w) = inner.window(epoch);
        if (w + 1) * PPM > d * inner.ratio_ppm + inner.reserve_ppm {
            return false;
        }
        bump(&inner.withdrawals[slot(epoch)], epoch);
        true
    }

    /// Whole retries the budget would allow right now.
    pub fn available(&self) -> u64 {
        let inner = &*self.inner;
        let (d, w) = inner.window(inner.epoch());
        let tokens = (d * inner.ratio_ppm + inner.reserve_ppm) / PPM;
        u64::try_from(tokens.saturating_sub(w)).unwrap_or(u64::MAX)
    }
}

impl Inner {
    fn epoch(&self) -> u64 {
        let since = Instant::now().saturating_duration_since(self.start);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX) / self.slot_nanos
    }

    /// Deposits and withdrawals in the window ending at `epoch`.
    fn window(&self, epoch: u64) -> (u128, u128) {
        let mut d = 0;
        let mut w = 0;
        for back in 0..SLOTS as u64 {
            let Some(e) = epoch.checked_sub(back) else {
                break;
            };
            d += u128::from(count_at(&self.deposits[slot(e)], e));
            w += u128::from(count_at(&self.withdrawals[slot(e)], e));
        }
        (d, w)
    }
}

fn slot(epoch: u64) -> usize {
    (epoch % SLOTS as u64) as usize
}

fn tag(epoch: u64) -> u64 {
    (epoch & EPOCH_MASK) << COUNT_BITS
}

/// The count stored in `cell` if it belongs to `epoch`, else 0 (expired).
fn count_at(cell: &AtomicU64, epoch: u64) -> u64 {
    let v = cell.load(Ordering::Acquire);
    if v & !COUNT_MASK == tag(epoch) {
        v & COUNT_MASK
    } else {
        0
    }
}

/// Adds one to `cell` for `epoch`, restarting it if it held an older epoch.
fn bump(cell: &AtomicU64, epoch: u64) {
    let t = tag(epoch);
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        if v & !COUNT_MASK != t {
            Some(t | 1)
        } else if v & COUNT_MASK == COUNT_MASK {
            None // saturated: stop counting rather than wrap
        } else {
            Some(v + 1)
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &Budget) -> u64 {
        let mut n = 0;
        while b.try_withdraw() {
            n += 1;
            assert!(n < 10_000_000, "budget never ran out");
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_with_non_integral_inverse_is_not_rounded_up() {
        // tower's TpsBudget turns 0.75 into "withdraw 1 per deposit of 1":
        // 100 % retries. Here 1000 calls at 0.75 give exactly 750.
        for (ratio, want) in [(0.75, 750), (0.3, 300), (0.2, 200), (1.0, 1000), (0.0, 0)] {
            let b = Budget::new(ratio, 0, Duration::from_secs(10)).unwrap();
            for _ in 0..1000 {
                b.deposit();
            }
            assert_eq!(b.available(), want, "ratio {ratio}");
            assert_eq!(drain(&b), want, "ratio {ratio}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn floor_allows_min_per_sec_times_ttl_without_traffic() {
        let b = Budget::new(0.1, 5, Duration::from_secs(4)).unwrap();
        assert_eq!(drain(&b), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_expire_after_ttl() {
        let b = Budget::new(0.5, 1, Duration::from_secs(10)).unwrap();
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(drain(&b), 60); // 50 from calls + 10 floor
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.try_withdraw(), "still inside the window");
        tokio::time::advance(Duration::from_secs(6)).await;
        // Everything from the first second expired: only the floor is back.
        assert_eq!(drain(&b), 10);
    }

    #[test]
    fn bad_input_is_a_typed_error_not_a_panic() {
        let ttl = Duration::from_secs(1);
        for r in [-0.1, 1.0001, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                Budget::new(r, 0, ttl),
                Err(ConfigError::InvalidRatio(_))
            ));
        }
        for t in [Duration::ZERO, Duration::from_secs(7200), Duration::MAX] {
            assert_eq!(
                Budget::new(0.2, 0, t).unwrap_err(),
                ConfigError::InvalidTtl(t)
            );
        }
        assert!(Budget::new(0.2, u32::MAX, Duration::from_secs(3600)).is_ok());
    }

    #[test]
    fn clones_share_one_bucket_across_threads() {
        // Real time (no runtime): everything happens well inside one window.
        let b = Budget::new(0.25, 0, Duration::from_secs(3600)).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let b = b.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        b.deposit();
                    }
                });
            }
        });
        let taken: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let b = b.clone();
                    s.spawn(move || drain(&b))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 1000);
    }
}
