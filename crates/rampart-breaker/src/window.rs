//! Lock-free sliding windows of call outcomes: the last `n` calls, or the
//! calls of the last duration in ten buckets.

use crate::sync::{AtomicU64, Ordering};

/// Calls, failures and slow calls in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) total: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// One judged call: bit 0 present, bit 1 failure, bit 2 slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample(u8);

impl Sample {
    pub(crate) fn new(failure: bool, slow: bool) -> Sample {
        Sample(1 | (u8::from(failure) << 1) | (u8::from(slow) << 2))
    }
}

/// Count-window fields: 21 bits each (a window holds at most 100 000 calls,
/// plus one in flight per concurrent recorder).
const F: u32 = 21;
const MASK: u64 = (1 << F) - 1;

fn packed(s: u8) -> u64 {
    u64::from(s & 1) | (u64::from((s >> 1) & 1) << F) | (u64::from((s >> 2) & 1) << (2 * F))
}

fn unpack(c: u64) -> Counts {
    Counts {
        total: c & MASK,
        failures: (c >> F) & MASK,
        slow: (c >> (2 * F)) & MASK,
    }
}

/// The last `n` calls: a ring of slots and packed counts.
///
/// A recorder adds its sample to the counts *before* it swaps the sample
/// into its slot, and subtracts the sample it swapped out after: so every
/// sample is added before anyone can subtract it, and no field of the
/// counts ever goes below zero, whatever the interleaving.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU64]>,
    cursor: AtomicU64,
    counts: AtomicU64,
}

impl CountWindow {
    pub(crate) fn new(n: usize) -> CountWindow {
        CountWindow {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            cursor: AtomicU64::new(0),
            counts: AtomicU64::new(0),
        }
    }

    /// Records `s`; the counts after it, or `None` when they did not change
    /// (the slot already held the same outcome).
    pub(crate) fn record(&self, s: Sample) -> Option<Counts> {
        let i = (self.cursor.fetch_add(1, Ordering::Relaxed) % self.slots.len() as u64) as usize;
        let slot = &self.slots[i];
        let v = u64::from(s.0);
        if slot.load(Ordering::Relaxed) == v {
            return None;
        }
        self.counts.fetch_add(packed(s.0), Ordering::Relaxed);
        let old = slot.swap(v, Ordering::AcqRel);
        let d = packed(old as u8);
        let after = self.counts.fetch_sub(d, Ordering::Relaxed) - d;
        Some(unpack(after))
    }

    pub(crate) fn counts(&self) -> Counts {
        unpack(self.counts.load(Ordering::Relaxed))
    }

    /// Empties the window (racing recorders may leave a call or two in it).
    pub(crate) fn reset(&self) {
        for slot in &*self.slots {
            let old = slot.swap(0, Ordering::AcqRel);
            if old != 0 {
                self.counts.fetch_sub(packed(old as u8), Ordering::Relaxed);
            }
        }
    }
}

/// Buckets of a time window.
pub(crate) const BUCKETS: u64 = 10;
/// Time-bucket fields: 16 bits each (saturating), tag in the top 16.
const B: u32 = 16;
const BMASK: u64 = (1 << B) - 1;

/// The calls of the last duration: [`BUCKETS`] buckets, each tagged with
/// the index of the time slice it counts, modulo 2^16 (16-bit tag; a
/// bucket untouched for a multiple of 65 536 slices is counted again for
/// up to ten slices), with 16-bit saturating fields (at most 65 535 calls
/// per slice are counted). `Window::Time`'s docs state both limits.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[AtomicU64]>,
    /// Milliseconds per bucket.
    bucket_ms: u64,
}

impl TimeWindow {
    pub(crate) fn new(window_ms: u64) -> TimeWindow {
        TimeWindow {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            bucket_ms: (window_ms / BUCKETS).max(1),
        }
    }

    fn slice(&self, now_ms: u64) -> u64 {
        now_ms / self.bucket_ms
    }

    /// Records `s` at `now_ms`; the window's counts after it.
    pub(crate) fn record(&self, s: Sample, now_ms: u64) -> Counts {
        let slice = self.slice(now_ms);
        let tag = (slice & BMASK) << (3 * B);
        let b = &self.buckets[(slice % BUCKETS) as usize];
        let add = u64::from(s.0 & 1)
            | (u64::from((s.0 >> 1) & 1) << B)
            | (u64::from((s.0 >> 2) & 1) << (2 * B));
        let mut cur = b.load(Ordering::Relaxed);
        loop {
            let new = if cur & (BMASK << (3 * B)) == tag && cur != 0 {
                if cur & BMASK == BMASK {
                    break; // saturated: this slice has seen 65 535 calls
                }
                cur + add
            } else {
                tag | add
            };
            match b.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.counts(now_ms)
    }

    /// The counts of the slices within the window at `now_ms`.
    pub(crate) fn counts(&self, now_ms: u64) -> Counts {
        let slice = self.slice(now_ms);
        let mut c = Counts::default();
        for b in &*self.buckets {
            let v = b.load(Ordering::Relaxed);
            if v == 0 {
                continue;
            }
            let tag = v >> (3 * B);
            let age = (slice & BMASK).wrapping_sub(tag) & BMASK;
            if age < BUCKETS {
                c.total += v & BMASK;
                c.failures += (v >> B) & BMASK;
                c.slow += (v >> (2 * B)) & BMASK;
            }
        }
        c
    }

    pub(crate) fn reset(&self) {
        for b in &*self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(rampart_loom)))]
mod tests {
    use super::*;

    #[test]
    fn count_window_forgets_the_oldest_call() {
        let w = CountWindow::new(3);
        let fail = Sample::new(true, false);
        let ok = Sample::new(false, false);
        assert_eq!(w.record(fail).unwrap().failures, 1);
        w.record(fail);
        let c = w.record(ok).unwrap();
        assert_eq!((c.total, c.failures), (3, 2));
        let c = w.record(ok).unwrap(); // replaces the first failure
        assert_eq!((c.total, c.failures), (3, 1));
        assert_eq!(w.record(Sample::new(true, true)).unwrap().slow, 1);
        w.reset();
        assert_eq!(w.counts(), Counts::default());
    }

    #[test]
    fn count_window_same_outcome_in_a_slot_changes_nothing() {
        let w = CountWindow::new(1);
        let ok = Sample::new(false, false);
        assert!(w.record(ok).is_some());
        assert!(w.record(ok).is_none());
        assert_eq!(w.counts().total, 1);
    }

    #[test]
    fn time_window_drops_slices_older_than_the_window() {
        let w = TimeWindow::new(1_000); // 100 ms slices
        let fail = Sample::new(true, false);
        w.record(fail, 0);
        w.record(fail, 50);
        assert_eq!(w.record(Sample::new(false, false), 950).total, 3);
        // At 1 000 ms the slice [0, 100) has left the window.
        let c = w.counts(1_000);
        assert_eq!((c.total, c.failures), (1, 0));
        // A bucket reused for a new slice starts from zero.
        let c = w.record(fail, 1_010);
        assert_eq!((c.total, c.failures), (2, 1));
        assert_eq!(w.counts(100_000).total, 0);
    }

    /// The documented saturation limit: a bucket counts 65 535 calls, the
    /// rest of its slice is not counted.
    #[test]
    fn time_window_bucket_saturates_at_65_535_calls() {
        let w = TimeWindow::new(10_000); // 1 s slices
        for _ in 0..65_535 {
            w.record(Sample::new(false, false), 0);
        }
        let c = w.record(Sample::new(true, false), 0);
        assert_eq!((c.total, c.failures), (65_535, 0));
        assert_eq!(w.record(Sample::new(true, false), 1_000).failures, 1);
    }

    /// The documented tag wrap: a bucket untouched for 65 536 slices is
    /// counted again for the ten slices that follow, then not.
    #[test]
    fn time_window_idle_bucket_reappears_after_65_536_slices() {
        let w = TimeWindow::new(10_000); // 1 s slices
        w.record(Sample::new(true, false), 0);
        assert_eq!(w.counts(10_000).total, 0);
        assert_eq!(w.counts(65_535_000).total, 0);
        assert_eq!(w.counts(65_536_000).total, 1);
        assert_eq!(w.counts(65_545_000).total, 1);
        assert_eq!(w.counts(65_546_000).total, 0);
    }
}
