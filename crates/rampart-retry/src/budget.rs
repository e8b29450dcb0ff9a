//! A retry budget shared by many `Retry` services: a token bucket over a
//! sliding window.
//!
//! Every first call deposits `ratio` of a token, every retry withdraws one
//! whole token, and `min_per_sec × ttl` tokens are always available on top
//! (the floor, so a low-traffic client can still retry). Deposits and
//! withdrawals expire after `ttl`.
//!
//! **The bound.** For every window of length `ttl` (any start, not aligned
//! to anything), the retries let through in it are at most
//! `min_per_sec × ttl + ratio × D`, where `D` is the number of first calls
//! made in the `ttl` before the last of those retries. A retry is let
//! through only if, counting it, that holds: withdrawals are counted over at
//! least the last `ttl` (a little more, rounded out to whole slots of
//! `ttl / 10`) and deposits over at most the last `ttl` (a little less,
//! rounded in), so slot granularity can only make the budget stricter,
//! never looser. The ratio is kept to parts per million: unlike tower's
//! `TpsBudget`, a ratio whose inverse is not a whole number (0.75, 0.3) is
//! not rounded up to "retry everything". Slots carry their full 64-bit
//! epoch, so nothing wraps: an old slot never counts again, however long the
//! process runs. Bad input is a [`ConfigError`] from [`Budget::try_new`].
//!
//! ```
//! use rampart_retry::Budget;
//! use std::time::Duration;
//!
//! let budget = Budget::new(0.5, 0, Duration::from_secs(10));
//! for _ in 0..4 {
//!     budget.deposit(); // four first calls
//! }
//! assert!(budget.try_withdraw()); // two retries are allowed…
//! assert!(budget.try_withdraw());
//! assert!(!budget.try_withdraw()); // …and no third
//! assert!(Budget::try_new(1.5, 0, Duration::from_secs(10)).is_err());
//! ```
//!
//! Deposits and withdrawals take one short lock on the budget's state (a
//! `std::sync::Mutex` around a ring of slots; no allocation), so concurrent
//! retries cannot both take the last token. Services without a budget pay
//! nothing.

use crate::ConfigError;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Slots per `ttl` (each covers `ttl / SLOTS`, rounded down).
const SLOTS: u64 = 10;
/// Slots kept: enough to cover `ttl` and one partial slot whatever the
/// rounding of the slot length.
const RING: usize = SLOTS as usize + 2;
/// One token in fixed point.
const PPM: u128 = 1_000_000;
/// The shortest and longest `ttl` accepted.
const MIN_TTL: Duration = Duration::from_millis(1);
const MAX_TTL: Duration = Duration::from_secs(3600);

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
    pub min_per_sec: usize,
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
    /// Validates the settings and builds the budget (see
    /// [`Budget::try_new`]).
    pub fn build(&self) -> Result<Budget, ConfigError> {
        Budget::try_new(self.ratio, self.min_per_sec, self.ttl)
    }
}

/// A shared retry budget; clones share the same bucket (hand one clone to
/// every `Retry` service calling the same upstream).
///
/// The bound it keeps: for every window of length `ttl` (any start), the
/// retries let through in it are at most `min_per_sec × ttl + ratio × D`,
/// where `D` is the number of first calls made in the `ttl` before the last
/// of those retries. Withdrawals are counted over at least the last `ttl`
/// and deposits over at most the last `ttl` (slots of `ttl / 10`), so the
/// rounding to slots only ever makes it stricter; slots carry full 64-bit
/// epochs, so an old slot never counts again, however long the process
/// runs.
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    ratio_ppm: u128,
    reserve_ppm: u128,
    slot_nanos: u64,
    /// Slots counted for withdrawals: they cover at least `ttl`.
    withdraw_slots: u64,
    /// Slots counted for deposits: they cover at most `ttl`.
    deposit_slots: u64,
    start: Instant,
    ring: Mutex<[Slot; RING]>,
    config: BudgetConfig,
}

/// One slot: its full epoch (never wraps) and what happened in it.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    epoch: u64,
    deposits: u64,
    withdrawals: u64,
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
    /// [`BudgetConfig::default`]'s budget.
    fn default() -> Self {
        let c = BudgetConfig::default();
        Budget::new(c.ratio, c.min_per_sec, c.ttl)
    }
}

impl Budget {
    /// A budget letting `ratio` (in `0..=1`) of calls be retried, plus
    /// `min_per_sec` retries per second, counted over `ttl` (`1 ms..=1 h`).
    ///
    /// # Panics
    ///
    /// If `ratio` is not within `0..=1` (NaN included) or `ttl` is not within
    /// `1 ms..=1 h`. Use [`Budget::try_new`] for values read at run time.
    #[track_caller]
    pub fn new(ratio: f64, min_per_sec: usize, ttl: Duration) -> Budget {
        match Budget::try_new(ratio, min_per_sec, ttl) {
            Ok(b) => b,
            Err(e) => panic!("Budget::new: {e}"),
        }
    }

    /// [`Budget::new`], with an error naming the field (`budget.ratio`,
    /// `budget.ttl`) instead of a panic.
    pub fn try_new(ratio: f64, min_per_sec: usize, ttl: Duration) -> Result<Budget, ConfigError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::new(
                "budget.ratio",
                ratio,
                "a number within 0..=1",
            ));
        }
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(ConfigError::new(
                "budget.ttl",
                ttl,
                "a duration within 1ms..=1h",
            ));
        }
        let ttl_nanos = u64::try_from(ttl.as_nanos()).expect("ttl is at most 1 h");
        // `ratio` is in 0..=1, so the product is in 0..=1e6.
        let ratio_ppm = (ratio * 1e6).round() as u128;
        // min_per_sec × ttl tokens, in millionths (rounded down).
        let reserve_ppm = (min_per_sec as u128) * u128::from(ttl_nanos) / 1_000;
        // At least 100 µs, since ttl ≥ 1 ms.
        let slot_nanos = ttl_nanos / SLOTS;
        let whole = ttl_nanos / slot_nanos; // 10 (or 11 when rounding down left a slot over)
        let withdraw_slots = ttl_nanos.div_ceil(slot_nanos) + 1; // ≥ ttl, plus the current partial slot
        let deposit_slots = whole; // the current partial slot and whole - 1 before: < ttl
        debug_assert!(withdraw_slots as usize <= RING);
        Ok(Budget {
            inner: Arc::new(Inner {
                ratio_ppm,
                reserve_ppm,
                slot_nanos,
                withdraw_slots,
                deposit_slots,
                start: Instant::now(),
                ring: Mutex::new([Slot::default(); RING]),
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

    /// Records a first call (adds `ratio` of a token).
    pub fn deposit(&self) {
        self.inner.deposit_at(Instant::now());
    }

    /// Takes one token for a retry if the budget has one; `false` means the
    /// retry must not happen (fail fast, never wait).
    pub fn try_withdraw(&self) -> bool {
        self.inner.try_withdraw_at(Instant::now())
    }

    /// Whole retries the budget would allow right now.
    pub fn available(&self) -> usize {
        self.inner.available_at(Instant::now())
    }
}

impl Inner {
    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.start);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX) / self.slot_nanos
    }

    fn lock(&self) -> MutexGuard<'_, [Slot; RING]> {
        // The ring is plain counters, valid at every step: a panic elsewhere
        // while it was held cannot leave it torn.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot of `epoch`, restarted if it held an older epoch.
    fn slot(ring: &mut [Slot; RING], epoch: u64) -> &mut Slot {
        let s = &mut ring[(epoch % RING as u64) as usize];
        if s.epoch != epoch {
            *s = Slot {
                epoch,
                ..Slot::default()
            };
        }
        s
    }

    /// Deposits counted (last `deposit_slots` slots) and withdrawals
    /// counted (last `withdraw_slots` slots) at `epoch`.
    fn window(&self, ring: &[Slot; RING], epoch: u64) -> (u128, u128) {
        let (mut d, mut w) = (0u128, 0u128);
        for s in ring {
            // `s.epoch > epoch` only if the clock went back: count it.
            let age = epoch.saturating_sub(s.epoch);
            if age < self.deposit_slots {
                d += u128::from(s.deposits);
            }
            if age < self.withdraw_slots {
                w += u128::from(s.withdrawals);
            }
        }
        (d, w)
    }

    fn deposit_at(&self, now: Instant) {
        let epoch = self.epoch(now);
        let mut ring = self.lock();
        let s = Self::slot(&mut ring, epoch);
        s.deposits = s.deposits.saturating_add(1);
    }

    fn try_withdraw_at(&self, now: Instant) -> bool {
        let epoch = self.epoch(now);
        let mut ring = self.lock();
        let (d, w) = self.window(&ring, epoch);
        if (w + 1) * PPM > d * self.ratio_ppm + self.reserve_ppm {
            return false;
        }
        let s = Self::slot(&mut ring, epoch);
        s.withdrawals += 1; // bounded by the deposits and the reserve
        true
    }

    fn available_at(&self, now: Instant) -> usize {
        let epoch = self.epoch(now);
        let ring = self.lock();
        let (d, w) = self.window(&ring, epoch);
        let tokens = (d * self.ratio_ppm + self.reserve_ppm) / PPM;
        usize::try_from(tokens.saturating_sub(w)).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn drain(b: &Budget) -> usize {
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
            let b = Budget::new(ratio, 0, Duration::from_secs(10));
            for _ in 0..1000 {
                b.deposit();
            }
            assert_eq!(b.available(), want, "ratio {ratio}");
            assert_eq!(drain(&b), want, "ratio {ratio}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn floor_allows_min_per_sec_times_ttl_without_traffic() {
        let b = Budget::new(0.1, 5, Duration::from_secs(4));
        assert_eq!(drain(&b), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_expire_after_ttl() {
        let b = Budget::new(0.5, 1, Duration::from_secs(10));
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

    // The issue's case: 10 retries per 10 s allowed (floor 1/s, no ratio);
    // 10 taken at 0.99 s may not be followed by 10 more at 10.0 s (9.01 s
    // later): the window counts withdrawals over at least the whole ttl.
    #[tokio::test(start_paused = true)]
    async fn no_window_of_length_ttl_sees_more_than_the_floor() {
        let b = Budget::new(0.0, 1, Duration::from_secs(10));
        tokio::time::advance(Duration::from_millis(990)).await;
        assert_eq!(drain(&b), 10);
        tokio::time::advance(Duration::from_millis(9_010)).await; // t = 10.0 s
        assert_eq!(drain(&b), 0, "only 9.01 s after the first ten");
        tokio::time::advance(Duration::from_millis(999)).await; // t = 10.999 s
        assert_eq!(drain(&b), 0, "still within 10 s of 0.99 s");
        tokio::time::advance(Duration::from_millis(1)).await; // t = 11 s: slot of 0.99 s gone
        assert_eq!(drain(&b), 10);
    }

    // A slot written once and then left alone for 5·2^24 slot lengths (what
    // wrapped the old 24-bit epoch tag: 2.3 h at ttl 1 ms) does not count
    // again.
    #[test]
    fn an_old_slot_never_counts_again_after_a_long_idle_time() {
        let b = Budget::new(1.0, 0, Duration::from_millis(1));
        let t0 = b.inner.start;
        let slot = Duration::from_nanos(b.inner.slot_nanos);
        for _ in 0..100 {
            b.inner.deposit_at(t0);
        }
        assert_eq!(b.inner.available_at(t0), 100);
        for k in [1u32 << 24, 5 << 24, 12 << 24, u32::MAX] {
            let later = t0 + slot * k;
            assert_eq!(b.inner.available_at(later), 0, "{k} slots later");
            assert!(!b.inner.try_withdraw_at(later), "{k} slots later");
        }
    }

    #[test]
    fn bad_input_is_a_config_error_naming_the_field_not_a_panic() {
        let ttl = Duration::from_secs(1);
        for r in [-0.1, 1.0001, f64::NAN, f64::INFINITY] {
            let e = Budget::try_new(r, 0, ttl).unwrap_err();
            assert_eq!(e.field(), "budget.ratio", "{r}");
        }
        for t in [Duration::ZERO, Duration::from_secs(7200), Duration::MAX] {
            let e = Budget::try_new(0.2, 0, t).unwrap_err();
            assert_eq!(e.field(), "budget.ttl");
            assert_eq!(e.value(), format!("{t:?}"));
        }
        assert!(Budget::try_new(0.2, usize::MAX, Duration::from_secs(3600)).is_ok());
    }

    #[test]
    #[should_panic(expected = "Budget::new: invalid budget.ratio = 1.5")]
    fn new_panics_on_a_ratio_above_one() {
        let _ = Budget::new(1.5, 0, Duration::from_secs(1));
    }

    #[test]
    #[should_panic(expected = "Budget::new: invalid budget.ttl = 0ns")]
    fn new_panics_on_a_zero_ttl() {
        let _ = Budget::new(0.5, 0, Duration::ZERO);
    }

    #[test]
    fn clones_share_one_bucket_across_threads() {
        // Real time (no runtime): everything happens well inside one window.
        let b = Budget::new(0.25, 0, Duration::from_secs(3600));
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
        let taken: usize = std::thread::scope(|s| {
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

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Deposit,
        Withdraw,
    }

    fn step() -> impl Strategy<Value = (u64, Op)> {
        // Gaps in nanoseconds: mostly short (many events per slot), some
        // across slots and windows, a few enormous (epochs far apart).
        let gap = prop_oneof![
            6 => 0u64..2_000_000,
            3 => 0u64..40_000_000,
            1 => prop_oneof![Just(1u64 << 40), Just(5u64 << 44), 0u64..(1u64 << 50)],
        ];
        let op = prop_oneof![Just(Op::Deposit), Just(Op::Withdraw)];
        (gap, op)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        // Over long simulated runs, every window of length ttl holds at most
        // floor + ratio × (first calls in the ttl before its last retry), and
        // the budget is never stricter than slot rounding explains.
        #[test]
        fn retries_in_any_window_of_ttl_stay_within_the_bound(
            ratio_ppm in prop_oneof![Just(0u64), Just(200_000), Just(750_000), Just(1_000_000), 0u64..=1_000_000],
            min_per_sec in 0usize..50,
            ttl_us in prop_oneof![Just(1_000u64), Just(10_000), 1_000u64..50_000],
            steps in proptest::collection::vec(step(), 1..3000),
        ) {
            let ttl = Duration::from_micros(ttl_us);
            let ratio = ratio_ppm as f64 / 1e6;
            let b = Budget::new(ratio, min_per_sec, ttl);
            let inner = &*b.inner;
            prop_assert_eq!(inner.ratio_ppm, u128::from(ratio_ppm));
            let ttl_ns = u128::from(ttl_us) * 1000;
            let slot_ns = u128::from(inner.slot_nanos);
            let mut deposits: VecDeque<u128> = VecDeque::new();
            let mut withdrawals: VecDeque<u128> = VecDeque::new();
            let mut t: u128 = 0;
            let count = |log: &VecDeque<u128>, from: u128, to: u128| {
                log.iter().filter(|&&x| x > from && x <= to).count() as u128
            };
            for (gap, op) in steps {
                t += u128::from(gap);
                let now = inner.start + Duration::from_nanos(u64::try_from(t).unwrap());
                // Forget what is older than any window looked at below.
                let horizon = t.saturating_sub(ttl_ns + 2 * slot_ns);
                while deposits.front().is_some_and(|&x| x < horizon) { deposits.pop_front(); }
                while withdrawals.front().is_some_and(|&x| x < horizon) { withdrawals.pop_front(); }
                match op {
                    Op::Deposit => {
                        inner.deposit_at(now);
                        deposits.push_back(t);
                    }
                    Op::Withdraw => {
                        let from = t.saturating_sub(ttl_ns);
                        let d = count(&deposits, from, t);
                        if inner.try_withdraw_at(now) {
                            withdrawals.push_back(t);
                            // Every window of length ttl ending at this retry
                            // (the windows with this retry as their last).
                            let w = withdrawals.iter().filter(|&&x| t < x + ttl_ns).count() as u128;
                            prop_assert!(
                                w * PPM <= d * inner.ratio_ppm + inner.reserve_ppm,
                                "t={t}: {w} retries in (t - ttl, t] with {d} calls"
                            );
                        } else {
                            // Refused: even the loosest reading of the window
                            // (withdrawals over ttl + 2 slots, deposits over
                            // ttl - 1 slot) has no token left.
                            let w = count(&withdrawals, t.saturating_sub(ttl_ns + 2 * slot_ns), t);
                            let d_min = count(&deposits, t.saturating_sub(ttl_ns - slot_ns), t);
                            prop_assert!(
                                (w + 1) * PPM > d_min * inner.ratio_ppm + inner.reserve_ppm,
                                "t={t}: refused with {w} retries and {d_min} calls"
                            );
                        }
                    }
                }
            }
        }
    }
}
