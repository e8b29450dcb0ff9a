//! When to arm the timer of a call whose inner future returned `Pending`:
//! at once, or after giving it one more scheduler turn.
//!
//! Arming a tokio timer (register in the wheel, deregister on completion,
//! under the driver's lock) is most of what a timeout costs. A call that is
//! pending for a single turn (an inner future that yields once, a response
//! another task hands over in the same tick) needs no timer at all if the
//! task is polled once more before arming: the deadline is fixed at the
//! first `Pending`, so the timeout still fires exactly on time. But a call
//! that waits on the network gains nothing from that extra poll and pays
//! for it (a spurious poll and a scheduler turn).
//!
//! So each worker thread keeps a small saturating score of how often the
//! extra turn paid off there: a deferred call that completed within its
//! turn adds one, one still pending takes two. Calls are deferred while the
//! score is at [`THRESHOLD`] or above; below it, the timer is armed at once
//! and one pending call in [`PROBE_EVERY`] is deferred anyway, so the score
//! follows a workload that changes. No shared state: a thread-local `Cell`.

use std::cell::Cell;

/// The score at and above which calls are deferred.
const THRESHOLD: u8 = 8;
/// The highest score.
const MAX: u8 = 16;
/// Below the threshold, one pending call in this many is deferred.
const PROBE_EVERY: u8 = 16;

struct Score {
    score: Cell<u8>,
    tick: Cell<u8>,
}

thread_local! {
    static SCORE: Score = const {
        Score {
            score: Cell::new(THRESHOLD - 1),
            tick: Cell::new(0),
        }
    };
}

/// Whether a call that just returned `Pending` gets one more scheduler
/// turn before its timer is armed.
#[inline]
pub(crate) fn defer() -> bool {
    SCORE
        .try_with(|s| {
            if s.score.get() >= THRESHOLD {
                return true;
            }
            let tick = s.tick.get().wrapping_add(1);
            s.tick.set(tick);
            tick % PROBE_EVERY == 0
        })
        .unwrap_or(false)
}

/// A deferred call completed within its extra turn.
#[inline]
pub(crate) fn paid_off() {
    let _ = SCORE.try_with(|s| s.score.set((s.score.get() + 1).min(MAX)));
}

/// A deferred call was still pending after its extra turn.
#[inline]
pub(crate) fn wasted() {
    let _ = SCORE.try_with(|s| s.score.set(s.score.get().saturating_sub(2)));
}

/// The current thread's score (tests).
#[cfg(test)]
pub(crate) fn score() -> u8 {
    SCORE.with(|s| s.score.get())
}

/// Sets the current thread's score (tests).
#[cfg(test)]
pub(crate) fn set_score(score: u8) {
    SCORE.with(|s| {
        s.score.set(score.min(MAX));
        s.tick.set(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_follows_outcomes_and_probes_below_the_threshold() {
        set_score(THRESHOLD);
        assert!(defer(), "at the threshold every call is deferred");
        wasted();
        assert_eq!(score(), THRESHOLD - 2);
        let deferred = (0..u32::from(PROBE_EVERY) * 4).filter(|_| defer()).count();
        assert_eq!(
            deferred, 4,
            "below the threshold one call in PROBE_EVERY is deferred"
        );
        paid_off();
        paid_off();
        assert!(defer());
        for _ in 0..100 {
            paid_off();
        }
        assert_eq!(score(), MAX, "the score saturates");
        for _ in 0..100 {
            wasted();
        }
        assert_eq!(score(), 0);
    }
}
