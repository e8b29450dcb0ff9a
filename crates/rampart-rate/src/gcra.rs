//! The generic cell rate algorithm, as a pure step on one number: the
//! *theoretical arrival time* (TAT) of the next request.
//!
//! All times are nanoseconds since the store's epoch. A request at `now`
//! would move the TAT to `max(tat, now) + interval`; it is admitted without
//! waiting while that new TAT is at most `span` (= burst × interval) ahead of
//! `now`, and admitted after a wait of the excess when that wait is at most
//! `max_wait`. A refused request leaves the TAT unchanged.

/// The outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Admitted after `wait` ns; the TAT becomes `tat`.
    Admit { tat: u64, wait: u64 },
    /// Refused; the same request would be admitted without waiting after
    /// `retry_after` ns.
    Reject { retry_after: u64 },
}

/// One GCRA decision. Saturating: no input overflows.
#[inline]
pub(crate) fn step(tat: u64, now: u64, interval: u64, span: u64, max_wait: u64) -> Step {
    let new_tat = tat.max(now).saturating_add(interval);
    let wait = (new_tat - now).saturating_sub(span);
    if wait <= max_wait {
        Step::Admit { tat: new_tat, wait }
    } else {
        Step::Reject { retry_after: wait }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: u64 = 100;

    #[test]
    fn a_full_bucket_admits_the_burst_then_refuses_for_one_interval() {
        let mut tat = 0;
        for _ in 0..3 {
            match step(tat, 1_000, T, 3 * T, 0) {
                Step::Admit { tat: t, wait: 0 } => tat = t,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            step(tat, 1_000, T, 3 * T, 0),
            Step::Reject { retry_after: T }
        );
        assert!(matches!(
            step(tat, 1_000 + T, T, 3 * T, 0),
            Step::Admit { wait: 0, .. }
        ));
    }

    #[test]
    fn waiting_is_admitted_up_to_max_wait_and_reserves_the_slot() {
        let tat = 1_000 + 3 * T;
        assert_eq!(
            step(tat, 1_000, T, 3 * T, T),
            Step::Admit {
                tat: tat + T,
                wait: T
            }
        );
        assert_eq!(
            step(tat + T, 1_000, T, 3 * T, T),
            Step::Reject { retry_after: 2 * T }
        );
    }

    proptest! {
        /// Over any run from a full bucket, the number admitted by time `t`
        /// is exactly `burst + floor(t / interval)` when requests come
        /// faster than the rate, and each refusal's retry_after is the real
        /// wait: retrying then is admitted.
        #[test]
        fn admitted_count_is_rate_times_t_plus_burst(
            interval in 1u64..1_000,
            burst in 1u64..20,
            gaps in proptest::collection::vec(0u64..50, 1..400),
        ) {
            let span = interval * burst;
            let (mut tat, mut now, mut admitted) = (0u64, 0u64, 0u64);
            for gap in gaps {
                now += gap;
                match step(tat, now, interval, span, 0) {
                    Step::Admit { tat: t, wait } => {
                        prop_assert_eq!(wait, 0);
                        tat = t;
                        admitted += 1;
                    }
                    Step::Reject { retry_after } => {
                        let later = step(tat, now + retry_after, interval, span, 0);
                        let ok = matches!(later, Step::Admit { wait: 0, .. });
                        prop_assert!(ok, "retrying after retry_after is admitted");
                        if retry_after > 0 {
                            let sooner = step(tat, now + retry_after - 1, interval, span, 0);
                            let refused = matches!(sooner, Step::Reject { .. });
                            prop_assert!(refused, "retrying sooner is refused");
                        }
                    }
                }
                prop_assert!(admitted <= burst + now / interval);
            }
        }

        /// Saturating arithmetic: extreme inputs decide without panicking.
        #[test]
        fn extreme_inputs_never_panic(
            tat: u64, now: u64, interval: u64, span: u64, max_wait: u64,
        ) {
            let _ = step(tat, now, interval, span, max_wait);
        }
    }

    #[test]
    fn a_steady_flood_is_admitted_at_exactly_the_rate() {
        // One request every nanosecond for 10 intervals: burst + 10 admitted.
        let (interval, burst) = (T, 4);
        let mut tat = 0;
        let mut admitted = 0;
        for now in 0..=10 * T {
            if let Step::Admit { tat: t, .. } = step(tat, now, interval, burst * interval, 0) {
                tat = t;
                admitted += 1;
            }
        }
        assert_eq!(admitted, burst + 10);
    }
}
