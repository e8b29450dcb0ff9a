//! The circuit: a lock-free state machine in one atomic word, a tagged
//! deadline word, and the window of the closed state.
//!
//! State word: phase (3 bits) | trips in a row (8 bits) | generation
//! (21 bits) | probes admitted (16 bits) | probes succeeded (16 bits).
//! Every transition is one compare-and-swap that bumps the generation; a
//! result is recorded only if the generation it was admitted under is
//! still current, so a late answer from an old phase changes nothing.
//!
//! Deadline word: milliseconds since the circuit was made (43 bits) |
//! generation (21 bits). Written by the winner of a transition right after
//! its swap; a reader that finds an older generation there knows the phase
//! has only just begun (so its deadline is still ahead).

use crate::config::{Settings, TripModel, Window};
use crate::stats::{State, Stats};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::window::{CountWindow, Counts, Sample, TimeWindow};
use std::time::Duration;

const PHASE_MASK: u64 = 0b111;
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;

const TRIPS_SHIFT: u32 = 3;
const TRIPS_MASK: u64 = 0xff;
const GEN_SHIFT: u32 = 11;
const GEN_MASK: u64 = (1 << 21) - 1;
const ADMITTED_SHIFT: u32 = 32;
const SUCC_SHIFT: u32 = 48;
const COUNT_MASK: u64 = 0xffff;

fn phase(s: u64) -> u64 {
    s & PHASE_MASK
}
fn trips(s: u64) -> u32 {
    ((s >> TRIPS_SHIFT) & TRIPS_MASK) as u32
}
fn generation(s: u64) -> u64 {
    (s >> GEN_SHIFT) & GEN_MASK
}
fn admitted(s: u64) -> u64 {
    (s >> ADMITTED_SHIFT) & COUNT_MASK
}
fn succeeded(s: u64) -> u64 {
    (s >> SUCC_SHIFT) & COUNT_MASK
}
/// A new state word for `phase` after `s`: next generation, no probes.
fn next(s: u64, phase: u64, trips: u32) -> u64 {
    let generation = (generation(s) + 1) & GEN_MASK;
    phase | (u64::from(trips.min(TRIPS_MASK as u32)) << TRIPS_SHIFT) | (generation << GEN_SHIFT)
}

/// What a call may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go ahead; record the result under this generation (closed state).
    Call(u64),
    /// Go ahead as a probe of this half-open generation.
    Probe(u64),
    /// Refused; the next probe may go after this long (`None` when forced
    /// open).
    Reject(Option<Duration>),
    /// Go ahead and record nothing (forced closed).
    Pass,
}

/// What a result was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    Failure,
    /// Not a sign of the backend's health (a 429, a cancelled call).
    Ignored,
}

#[derive(Debug)]
enum Tracker {
    Count(CountWindow),
    Time(TimeWindow),
    Consecutive(AtomicU32),
}

/// One circuit.
#[derive(Debug)]
pub(crate) struct Circuit {
    state: AtomicU64,
    deadline: AtomicU64,
    tracker: Tracker,
    pub(crate) settings: Settings,
    rejected: AtomicU64,
    opened: AtomicU64,
}

/// The outcome of a transition attempt, for events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: State,
    pub(crate) to: State,
}

impl Circuit {
    pub(crate) fn new(settings: Settings) -> Circuit {
        let tracker = match settings.model {
            TripModel::FailureRatio {
                window: Window::Calls(n),
                ..
            } => Tracker::Count(CountWindow::new(n)),
            TripModel::FailureRatio {
                window: Window::Time(d),
                ..
            } => Tracker::Time(TimeWindow::new(
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            )),
            TripModel::ConsecutiveFailures(_) => Tracker::Consecutive(AtomicU32::new(0)),
        };
        Circuit {
            state: AtomicU64::new(CLOSED),
            deadline: AtomicU64::new(0),
            tracker,
            settings,
            rejected: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        }
    }

    /// The deadline of the phase of `s`, if written yet.
    fn deadline_of(&self, s: u64) -> Option<u64> {
        let d = self.deadline.load(Ordering::Acquire);
        (d & GEN_MASK == generation(s)).then_some(d >> 21)
    }

    /// Writes the deadline of the phase of `s`, but only while that phase
    /// is still current: a writer preempted after its transition must not
    /// overwrite the deadline of a later phase (the circuit would then wait
    /// for a deadline that never comes). Within one phase the deadline only
    /// moves later.
    fn set_deadline(&self, s: u64, at_ms: u64) {
        let g = generation(s);
        let new = (at_ms << 21) | g;
        let mut d = self.deadline.load(Ordering::Acquire);
        loop {
            if generation(self.state.load(Ordering::Acquire)) != g
                || (d & GEN_MASK == g && d >> 21 >= at_ms)
            {
                return;
            }
            match self
                .deadline
                .compare_exchange_weak(d, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now_d) => d = now_d,
            }
        }
    }

    fn break_ms(&self, trips: u32) -> u64 {
        ceil_ms(self.settings.breaks.after(trips))
    }

    /// The generation of a closed circuit (the hot path: one load).
    #[inline]
    pub(crate) fn closed(&self) -> Option<u64> {
        let s = self.state.load(Ordering::Acquire);
        (phase(s) == CLOSED).then(|| generation(s))
    }

    /// `Err(time until the next probe)` when the circuit refuses every call
    /// now (open and the break not over: `Some`; forced open: `None`), and
    /// counts the refusal; `Ok` otherwise.
    pub(crate) fn refusing(&self, now: impl Fn() -> u64) -> Result<(), Option<Duration>> {
        let s = self.state.load(Ordering::Acquire);
        let after = match phase(s) {
            FORCED_OPEN => None,
            OPEN => {
                let t = now();
                let d = self
                    .deadline_of(s)
                    .unwrap_or_else(|| t + self.break_ms(trips(s)));
                if t >= d {
                    return Ok(());
                }
                Some(Duration::from_millis(d - t))
            }
            _ => return Ok(()),
        };
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Err(after)
    }

    /// May a call go ahead? `now` gives milliseconds since the circuit was
    /// made; it is only called when the circuit is not closed.
    pub(crate) fn admit(&self, now: impl Fn() -> u64) -> (Admit, Option<Transition>) {
        let mut s = self.state.load(Ordering::Acquire);
        let mut transition = None;
        loop {
            match phase(s) {
                CLOSED => return (Admit::Call(generation(s)), transition),
                FORCED_CLOSED => return (Admit::Pass, transition),
                FORCED_OPEN => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return (Admit::Reject(None), transition);
                }
                OPEN => {
                    let t = now();
                    match self.deadline_of(s) {
                        Some(d) if t >= d => {
                            let probe = next(s, HALF_OPEN, trips(s)) | (1 << ADMITTED_SHIFT);
                            match self.state.compare_exchange(
                                s,
                                probe,
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            ) {
                                Ok(_) => {
                                    self.set_deadline(
                                        probe,
                                        t.saturating_add(ceil_ms(self.settings.probe_timeout)),
                                    );
                                    return (
                                        Admit::Probe(generation(probe)),
                                        Some(Transition {
                                            from: State::Open,
                                            to: State::HalfOpen,
                                        }),
                                    );
                                }
                                Err(now_s) => s = now_s,
                            }
                        }
                        d => {
                            // Not yet written: the circuit has only just opened.
                            let d = d.unwrap_or_else(|| t + self.break_ms(trips(s)));
                            self.rejected.fetch_add(1, Ordering::Relaxed);
                            return (
                                Admit::Reject(Some(Duration::from_millis(d.saturating_sub(t)))),
                                transition,
                            );
                        }
                    }
                }
                _ => {
                    // Half-open.
                    if (admitted(s) as usize) < self.settings.probes {
                        match self.state.compare_exchange(
                            s,
                            s + (1 << ADMITTED_SHIFT),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => {
                                // The probe timeout runs from the latest
                                // admission: a probe let in after another
                                // gave its slot back gets its whole time.
                                self.set_deadline(
                                    s,
                                    now().saturating_add(ceil_ms(self.settings.probe_timeout)),
                                );
                                return (Admit::Probe(generation(s)), transition);
                            }
                            Err(now_s) => {
                                s = now_s;
                                continue;
                            }
                        }
                    }
                    let t = now();
                    match self.deadline_of(s) {
                        Some(d) if t >= d => {
                            // A probe is stuck: it counts as failed.
                            if let Some(tr) = self.reopen(s, t) {
                                transition = Some(tr);
                            }
                            s = self.state.load(Ordering::Acquire);
                        }
                        d => {
                            let d = d.unwrap_or(t + ceil_ms(self.settings.probe_timeout));
                            self.rejected.fetch_add(1, Ordering::Relaxed);
                            return (
                                Admit::Reject(Some(Duration::from_millis(d.saturating_sub(t)))),
                                transition,
                            );
                        }
                    }
                }
            }
        }
    }

    /// Half-open `s` → open with a longer break; `None` if someone else
    /// moved first.
    fn reopen(&self, s: u64, now_ms: u64) -> Option<Transition> {
        let t = trips(s).saturating_add(1);
        let open = next(s, OPEN, t);
        self.state
            .compare_exchange(s, open, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        self.set_deadline(open, now_ms.saturating_add(self.break_ms(t)));
        self.opened.fetch_add(1, Ordering::Relaxed);
        Some(Transition {
            from: State::HalfOpen,
            to: State::Open,
        })
    }

    /// Records the result of a call admitted as [`Admit::Call`] under
    /// generation `g`. `now` is only called for a time window or a trip.
    pub(crate) fn record_call(
        &self,
        g: u64,
        verdict: Verdict,
        slow: bool,
        now: impl Fn() -> u64,
    ) -> Option<Transition> {
        if verdict == Verdict::Ignored {
            return None;
        }
        let s = self.state.load(Ordering::Acquire);
        if phase(s) != CLOSED || generation(s) != g {
            // An answer from before a transition.
            return None;
        }
        let failure = verdict == Verdict::Failure;
        let trip = match &self.tracker {
            Tracker::Consecutive(n) => {
                if failure {
                    let TripModel::ConsecutiveFailures(limit) = self.settings.model else {
                        unreachable!("a consecutive tracker has a consecutive model")
                    };
                    n.fetch_add(1, Ordering::Relaxed).saturating_add(1) as usize >= limit
                } else {
                    if n.load(Ordering::Relaxed) != 0 {
                        n.store(0, Ordering::Relaxed);
                    }
                    false
                }
            }
            Tracker::Count(w) => match w.record(Sample::new(failure, slow)) {
                Some(c) => self.over_threshold(c),
                None => false,
            },
            Tracker::Time(w) => self.over_threshold(w.record(Sample::new(failure, slow), now())),
        };
        if !trip {
            return None;
        }
        let s = self.state.load(Ordering::Acquire);
        if phase(s) != CLOSED || generation(s) != g {
            return None;
        }
        let open = next(s, OPEN, 1);
        self.state
            .compare_exchange(s, open, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        self.set_deadline(open, now().saturating_add(self.break_ms(1)));
        self.opened.fetch_add(1, Ordering::Relaxed);
        Some(Transition {
            from: State::Closed,
            to: State::Open,
        })
    }

    fn over_threshold(&self, c: Counts) -> bool {
        let TripModel::FailureRatio {
            ratio, min_calls, ..
        } = self.settings.model
        else {
            return false;
        };
        if c.total < min_calls as u64 || c.total == 0 {
            return false;
        }
        let total = c.total as f64;
        c.failures as f64 >= ratio * total
            || self
                .settings
                .slow
                .is_some_and(|s| c.slow as f64 >= s.ratio * total)
    }

    /// Records the result of a probe of half-open generation `g`
    /// (`Verdict::Ignored` also when the probe was dropped unfinished).
    pub(crate) fn record_probe(
        &self,
        g: u64,
        verdict: Verdict,
        now: impl Fn() -> u64,
    ) -> Option<Transition> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if phase(s) != HALF_OPEN || generation(s) != g {
                return None;
            }
            let (new, transition) = match verdict {
                Verdict::Failure => return self.reopen(s, now()),
                Verdict::Ignored => (s - (1 << ADMITTED_SHIFT), None),
                Verdict::Success if succeeded(s) as usize + 1 >= self.settings.probes => (
                    next(s, CLOSED, 0),
                    Some(Transition {
                        from: State::HalfOpen,
                        to: State::Closed,
                    }),
                ),
                Verdict::Success => (s + (1 << SUCC_SHIFT), None),
            };
            if transition.is_some() {
                // Empty the window before closing: a call of the new closed
                // generation may record as soon as the swap lands, and must
                // not see the failures that opened the circuit. (Calls of
                // the old closed generation record nothing while half-open.)
                self.reset_tracker();
            }
            match self
                .state
                .compare_exchange(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return transition,
                Err(now_s) => s = now_s,
            }
        }
    }

    fn reset_tracker(&self) {
        match &self.tracker {
            Tracker::Count(w) => w.reset(),
            Tracker::Time(w) => w.reset(),
            Tracker::Consecutive(n) => n.store(0, Ordering::Relaxed),
        }
    }

    /// Moves to `to` whatever the phase (handle: force open, force closed,
    /// reset); the window is emptied.
    pub(crate) fn force(&self, to: State, now_ms: u64) -> Transition {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let new = match to {
                State::Open => next(s, OPEN, 1),
                State::ForcedOpen => next(s, FORCED_OPEN, 0),
                State::ForcedClosed => next(s, FORCED_CLOSED, 0),
                State::Closed | State::HalfOpen => next(s, CLOSED, 0),
            };
            match self
                .state
                .compare_exchange(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if to == State::Open {
                        self.set_deadline(new, now_ms.saturating_add(self.break_ms(1)));
                        self.opened.fetch_add(1, Ordering::Relaxed);
                    }
                    self.reset_tracker();
                    return Transition {
                        from: state_of(s),
                        to: state_of(new),
                    };
                }
                Err(now_s) => s = now_s,
            }
        }
    }

    /// The state now (an open circuit whose break is over reads half-open:
    /// the next call will probe).
    pub(crate) fn state(&self, now_ms: u64) -> State {
        let s = self.state.load(Ordering::Acquire);
        match phase(s) {
            OPEN if self.deadline_of(s).is_some_and(|d| now_ms >= d) => State::HalfOpen,
            _ => state_of(s),
        }
    }

    /// Time until the next probe may go, when open.
    pub(crate) fn retry_after(&self, now_ms: u64) -> Option<Duration> {
        let s = self.state.load(Ordering::Acquire);
        if phase(s) != OPEN {
            return None;
        }
        self.deadline_of(s)
            .map(|d| Duration::from_millis(d.saturating_sub(now_ms)))
    }

    pub(crate) fn stats(&self, now_ms: u64) -> Stats {
        let s = self.state.load(Ordering::Acquire);
        let window = match &self.tracker {
            Tracker::Count(w) => w.counts(),
            Tracker::Time(w) => w.counts(now_ms),
            Tracker::Consecutive(n) => Counts {
                total: 0,
                failures: u64::from(n.load(Ordering::Relaxed)),
                slow: 0,
            },
        };
        Stats {
            state: self.state(now_ms),
            calls_in_window: window.total,
            failures_in_window: window.failures,
            slow_in_window: window.slow,
            consecutive_trips: trips(s),
            probes_in_flight: if phase(s) == HALF_OPEN {
                (admitted(s) - succeeded(s).min(admitted(s))) as usize
            } else {
                0
            },
            rejected: self.rejected.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            retry_after: self.retry_after(now_ms),
        }
    }

    /// True when the phase is closed (for the keyed map's eviction).
    pub(crate) fn is_closed(&self) -> bool {
        phase(self.state.load(Ordering::Acquire)) == CLOSED
    }

    /// The state as the last swap stored it: the end of the chain of
    /// reported transitions (an open circuit whose break has passed is
    /// still open here until a call moves it to half-open and reports it).
    pub(crate) fn stored_state(&self) -> State {
        state_of(self.state.load(Ordering::Acquire))
    }

    #[cfg(all(test, rampart_loom))]
    pub(crate) fn raw(&self) -> u64 {
        self.state.load(Ordering::Acquire)
    }
}

fn state_of(s: u64) -> State {
    match phase(s) {
        CLOSED => State::Closed,
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        FORCED_OPEN => State::ForcedOpen,
        _ => State::ForcedClosed,
    }
}

/// Whole milliseconds, rounded up (a deadline is never early).
pub(crate) fn ceil_ms(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX >> 21)
}

#[cfg(all(test, rampart_loom))]
mod loom_tests {
    use super::*;
    use crate::config::BreakDuration;
    use loom::sync::Arc;
    use loom::thread;

    fn circuit(model: TripModel, probes: usize) -> Arc<Circuit> {
        Arc::new(Circuit::new(
            Settings {
                model,
                probes,
                breaks: BreakDuration::constant(Duration::from_millis(10)),
                ..Settings::default()
            }
            .check()
            .unwrap(),
        ))
    }

    /// Two callers race for the only probe of a circuit whose break is
    /// over: exactly one probes, the other is refused.
    #[test]
    fn loom_half_open_admits_exactly_the_probe_limit() {
        loom::model(|| {
            let c = circuit(TripModel::ConsecutiveFailures(1), 1);
            c.force(State::Open, 0);
            let spawn = |c: Arc<Circuit>| thread::spawn(move || c.admit(|| 10).0);
            let (a, b) = (spawn(c.clone()), spawn(c.clone()));
            let got = [a.join().unwrap(), b.join().unwrap()];
            let probes = got.iter().filter(|a| matches!(a, Admit::Probe(_))).count();
            assert_eq!(probes, 1, "{got:?}");
            assert_eq!(admitted(c.raw()), 1);
        });
    }

    /// Concurrent recorders in a one-slot count window: the counts stay
    /// exact and never go below zero (a negative field would show as a
    /// huge one).
    #[test]
    fn loom_count_window_counts_stay_exact() {
        loom::model(|| {
            let w = Arc::new(CountWindow::new(1));
            let spawn = |w: Arc<CountWindow>, s| {
                thread::spawn(move || {
                    let c = w.record(s);
                    if let Some(c) = c {
                        assert!(c.total <= 3 && c.failures <= 3, "{c:?}");
                    }
                })
            };
            let a = spawn(w.clone(), Sample::new(true, false));
            let b = spawn(w.clone(), Sample::new(false, false));
            a.join().unwrap();
            b.join().unwrap();
            let c = w.counts();
            assert_eq!(c.total, 1);
            assert!(c.failures <= 1);
        });
    }

    /// Two failures and a success racing on a closed circuit that trips
    /// after two failures: at most one transition to open, its deadline
    /// tagged with its generation; a probe result of the old generation
    /// changes nothing.
    #[test]
    fn loom_one_trip_per_generation_and_stale_results_ignored() {
        loom::model(|| {
            let c = circuit(TripModel::ConsecutiveFailures(2), 1);
            let g = generation(c.raw());
            let spawn = |c: Arc<Circuit>, v| {
                thread::spawn(move || c.record_call(g, v, false, || 5).is_some())
            };
            let a = spawn(c.clone(), Verdict::Failure);
            let b = spawn(c.clone(), Verdict::Failure);
            let trips = usize::from(a.join().unwrap()) + usize::from(b.join().unwrap());
            assert_eq!(trips, 1);
            let s = c.raw();
            assert_eq!(phase(s), OPEN);
            assert_eq!(generation(s), g + 1);
            assert_eq!(c.deadline_of(s), Some(15));
            assert!(c.record_probe(g, Verdict::Success, || 5).is_none());
            assert_eq!(c.raw(), s);
        });
    }

    /// A probe that fails and reopens the circuit races another caller:
    /// one probe in all, the circuit ends open with its deadline tagged
    /// with the final generation, and a caller that reads the new state
    /// before its deadline is written is refused, not let through.
    #[test]
    fn loom_failed_probe_reopens_while_another_caller_arrives() {
        loom::model(|| {
            let c = circuit(TripModel::ConsecutiveFailures(1), 1);
            c.force(State::Open, 0);
            let a = {
                let c = c.clone();
                thread::spawn(move || match c.admit(|| 10).0 {
                    Admit::Probe(g) => {
                        c.record_probe(g, Verdict::Failure, || 10);
                        true
                    }
                    _ => false,
                })
            };
            let b = {
                let c = c.clone();
                thread::spawn(move || matches!(c.admit(|| 10).0, Admit::Probe(_)))
            };
            let probes = usize::from(a.join().unwrap()) + usize::from(b.join().unwrap());
            assert_eq!(probes, 1);
            let s = c.raw();
            if phase(s) == OPEN {
                assert_eq!(c.deadline_of(s), Some(20));
            } else {
                // B took the probe and has not answered yet.
                assert_eq!(phase(s), HALF_OPEN);
            }
        });
    }

    /// With two probes, the winner of open -> half-open is slow to write
    /// its probe deadline while the second probe fails and reopens: the
    /// open circuit must keep its own deadline (else it never probes
    /// again).
    #[test]
    fn loom_reopen_racing_a_slow_half_open_deadline_write_keeps_the_open_deadline() {
        loom::model(|| {
            let c = circuit(TripModel::ConsecutiveFailures(1), 2);
            c.force(State::Open, 0);
            let a = {
                let c = c.clone();
                thread::spawn(move || {
                    let _ = c.admit(|| 10).0;
                })
            };
            let b = {
                let c = c.clone();
                thread::spawn(move || {
                    if let Admit::Probe(g) = c.admit(|| 10).0 {
                        c.record_probe(g, Verdict::Failure, || 10);
                    }
                })
            };
            a.join().unwrap();
            b.join().unwrap();
            let s = c.raw();
            if phase(s) == OPEN {
                assert!(
                    c.deadline_of(s).is_some(),
                    "open with no deadline: stuck open forever"
                );
            }
        });
    }

    /// Racing probes and callers: every transition is reported exactly
    /// once, by the caller whose swap made it, with the states of that
    /// swap, so the state gauge (moved by `code(to) - code(from)` per
    /// report, in any order) ends at the circuit's final stored state: the
    /// share a dropped breaker takes off.
    #[test]
    fn loom_reported_transitions_telescope_to_the_final_state() {
        use crate::metrics::code;
        loom::model(|| {
            let c = circuit(TripModel::ConsecutiveFailures(1), 1);
            let mut gauge = 0.0;
            let t = c.force(State::Open, 0);
            gauge += code(t.to) - code(t.from);
            let spawn = |c: Arc<Circuit>, v: Verdict| {
                thread::spawn(move || {
                    let mut delta = 0.0;
                    let mut add = |t: Option<Transition>| {
                        if let Some(t) = t {
                            delta += code(t.to) - code(t.from);
                        }
                    };
                    let (admit, t) = c.admit(|| 10);
                    add(t);
                    match admit {
                        Admit::Probe(g) => add(c.record_probe(g, v, || 10)),
                        Admit::Call(g) => add(c.record_call(g, v, false, || 10)),
                        _ => {}
                    }
                    delta
                })
            };
            let a = spawn(c.clone(), Verdict::Success);
            let b = spawn(c.clone(), Verdict::Failure);
            gauge += a.join().unwrap() + b.join().unwrap();
            // What a dropped `Breaker` takes off the series.
            let last = code(c.stored_state());
            assert!((gauge - last).abs() < f64::EPSILON, "{gauge} != {last}");
        });
    }

    /// A successful probe closes the circuit while a call of the new
    /// closed generation fails: the window of the old closed phase must be
    /// gone before that call can record, so one failure does not re-trip a
    /// circuit that trips after two.
    #[test]
    fn loom_close_empties_the_window_before_new_calls_record() {
        loom::model(|| {
            let c = circuit(TripModel::ConsecutiveFailures(2), 1);
            let g = generation(c.raw());
            c.record_call(g, Verdict::Failure, false, || 0);
            assert!(c.record_call(g, Verdict::Failure, false, || 0).is_some());
            let Admit::Probe(p) = c.admit(|| 100).0 else {
                panic!("the break is over: a probe")
            };
            let a = {
                let c = c.clone();
                thread::spawn(move || {
                    c.record_probe(p, Verdict::Success, || 100);
                })
            };
            let b = {
                let c = c.clone();
                thread::spawn(move || match c.admit(|| 100).0 {
                    Admit::Call(g) => c.record_call(g, Verdict::Failure, false, || 100).is_some(),
                    _ => false,
                })
            };
            a.join().unwrap();
            let tripped = b.join().unwrap();
            assert!(
                !tripped,
                "one failure after a close re-tripped a 2-failure circuit"
            );
        });
    }
}
