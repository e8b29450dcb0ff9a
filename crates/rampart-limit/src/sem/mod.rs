//! A resizable FIFO semaphore whose uncontended path is one CAS on one
//! atomic word: no lock, no allocation.
//!
//! The word packs the limit (high 32 bits), the permits in use (31 bits) and
//! a "somebody is waiting" flag (bit 0). The flag is only changed under the
//! queue lock, and while it is set neither fast path succeeds, so:
//! - arrivals never overtake queued waiters (FIFO), and
//! - a release either sees the flag and hands its permit to the head waiter
//!   under the lock, or happened before the flag was set, in which case the
//!   would-be waiter sees the freed permit when it retries under the lock.
//!
//! Shrinking the limit needs no care beyond the comparison: in-use permits
//! above the new limit are simply not handed on when they come back.

mod queue;

pub(crate) use queue::Slot;
use queue::{Granted, Queue};
// Atomics and the lock come from loom under `--cfg rampart_loom` (model
// checks in `loom_tests` below), else from std.
#[cfg(rampart_loom)]
use loom::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};
use std::sync::PoisonError;
#[cfg(not(rampart_loom))]
use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};
use std::task::{Context, Poll, Waker};

/// The largest limit (in-flight counts use 31 bits).
pub const MAX_LIMIT: u32 = (1 << 31) - 1;

const WAITERS: u64 = 1;
const ONE: u64 = 1 << 1;
const LOW: u64 = 0xFFFF_FFFF;

fn in_use(s: u64) -> u32 {
    ((s & LOW) >> 1) as u32
}

fn limit_of(s: u64) -> u32 {
    (s >> 32) as u32
}

fn has_room(s: u64) -> bool {
    in_use(s) < limit_of(s)
}

/// The result of [`Sem::acquire_or_queue`].
#[derive(Debug)]
pub(crate) enum Admit {
    /// A permit, and the number of permits in use counting it.
    Acquired(u32),
    /// Queued; poll the slot with [`Sem::poll_slot`].
    Queued(Slot),
    /// No permit, and the queue is at its maximum length.
    Full,
}

/// Up to this many wakers are woken per lock hold when the limit grows.
const WAKE_BATCH: usize = 8;

#[derive(Debug)]
pub(crate) struct Sem {
    state: AtomicU64,
    /// One past the number of the last waiter granted a permit: a waiter
    /// still holding its ticket was granted one iff its number is below.
    granted: AtomicU64,
    queue: Mutex<Queue>,
}

impl Sem {
    /// A semaphore with `limit` permits (at most [`MAX_LIMIT`]).
    pub(crate) fn new(limit: u32) -> Sem {
        Sem {
            state: AtomicU64::new(u64::from(limit.min(MAX_LIMIT)) << 32),
            granted: AtomicU64::new(0),
            queue: Mutex::new(Queue::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; recover anyway.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a permit if one is free and nobody is waiting; returns the
    /// number of permits in use counting it.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<u32> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & WAITERS != 0 || !has_room(s) {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s + ONE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(in_use(s) + 1),
                Err(actual) => s = actual,
            }
        }
    }

    /// The slow path: under the lock, takes a free permit or joins the
    /// queue (to be woken with `waker`) unless `max_waiting` waiters are
    /// already in line.
    pub(crate) fn acquire_or_queue(&self, max_waiting: usize, waker: &Waker) -> Admit {
        let mut q = self.lock();
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & WAITERS != 0 {
                break;
            }
            if has_room(s) {
                match self.state.compare_exchange_weak(
                    s,
                    s + ONE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Admit::Acquired(in_use(s) + 1),
                    Err(actual) => s = actual,
                }
                continue;
            }
            if q.len() >= max_waiting {
                return Admit::Full;
            }
            match self.state.compare_exchange_weak(
                s,
                s | WAITERS,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        if q.len() >= max_waiting {
            return Admit::Full;
        }
        if let Some(slot) = q.push_back(waker) {
            return Admit::Queued(slot);
        }
        if q.is_empty() {
            self.state.fetch_and(!WAITERS, Ordering::AcqRel);
        }
        Admit::Full
    }

    /// Gives a permit back: to the head waiter if there is one and the
    /// limit allows, otherwise to the pool.
    #[inline]
    pub(crate) fn release(&self) {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & WAITERS != 0 {
                let waker = self.release_locked(&mut self.lock());
                if let Some(w) = waker {
                    w.wake();
                }
                return;
            }
            match self
                .state
                .compare_exchange_weak(s, s - ONE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => s = actual,
            }
        }
    }

    fn release_locked(&self, q: &mut Queue) -> Option<Waker> {
        let s = self.state.load(Ordering::Acquire);
        // With the flag set the word only changes under this lock.
        if s & WAITERS != 0 && in_use(s) <= limit_of(s) {
            if let Some(granted) = q.grant_front() {
                if q.is_empty() {
                    self.state.fetch_and(!WAITERS, Ordering::AcqRel);
                }
                return self.publish(granted);
            }
            // Unreachable (the flag implies a waiter); keep the count right.
            self.state.fetch_and(!WAITERS, Ordering::AcqRel);
        }
        self.state.fetch_sub(ONE, Ordering::AcqRel);
        None
    }

    /// Records that `granted` (the head waiter, just taken out of line)
    /// owns a permit now; returns its waker.
    fn publish(&self, granted: Granted) -> Option<Waker> {
        self.granted.store(granted.seq + 1, Ordering::Release);
        granted.waker
    }

    fn is_granted(&self, slot: Slot) -> bool {
        self.granted.load(Ordering::Acquire) > slot.seq
    }

    /// `Ready(in_use)` once the waiter in `slot` has been granted a permit
    /// (the caller owns it from then on). A granted waiter finds out
    /// without taking the lock.
    pub(crate) fn poll_slot(&self, slot: Slot, cx: &mut Context<'_>) -> Poll<u32> {
        if !self.is_granted(slot) {
            let mut q = self.lock();
            if !self.is_granted(slot) {
                q.set_waker(slot, cx.waker());
                return Poll::Pending;
            }
        }
        Poll::Ready(in_use(self.state.load(Ordering::Acquire)))
    }

    /// Withdraws the waiter in `slot`; a permit it was granted but never
    /// picked up goes to the next waiter.
    pub(crate) fn cancel(&self, slot: Slot) {
        let waker = {
            let mut q = self.lock();
            if self.is_granted(slot) {
                self.release_locked(&mut q)
            } else {
                q.remove(slot);
                if q.is_empty() {
                    self.state.fetch_and(!WAITERS, Ordering::AcqRel);
                }
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Changes the limit (clamped to [`MAX_LIMIT`]); waiters that now fit
    /// are granted permits at once. Permits in use above a smaller limit
    /// are retired as they come back.
    pub(crate) fn set_limit(&self, limit: u32) {
        let limit = u64::from(limit.min(MAX_LIMIT));
        let mut q = self.lock();
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let next = (limit << 32) | (s & LOW);
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        loop {
            let mut wakers: [Option<Waker>; WAKE_BATCH] = Default::default();
            let mut n = 0;
            while n < WAKE_BATCH {
                let s = self.state.load(Ordering::Acquire);
                if s & WAITERS == 0 || !has_room(s) {
                    break;
                }
                let Some(granted) = q.grant_front() else {
                    self.state.fetch_and(!WAITERS, Ordering::AcqRel);
                    break;
                };
                self.state.fetch_add(ONE, Ordering::AcqRel);
                wakers[n] = self.publish(granted);
                n += 1;
                if q.is_empty() {
                    self.state.fetch_and(!WAITERS, Ordering::AcqRel);
                }
            }
            drop(q);
            wakers.into_iter().flatten().for_each(Waker::wake);
            if n < WAKE_BATCH {
                return;
            }
            q = self.lock();
        }
    }

    /// Permits in use.
    pub(crate) fn in_flight(&self) -> u32 {
        in_use(self.state.load(Ordering::Acquire))
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> u32 {
        limit_of(self.state.load(Ordering::Acquire))
    }

    /// Waiters in line.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(all(test, not(rampart_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    fn cx_poll(sem: &Sem, slot: Slot) -> Poll<u32> {
        let w = Waker::from(Arc::new(Noop));
        sem.poll_slot(slot, &mut Context::from_waker(&w))
    }

    fn join(sem: &Sem, max_waiting: usize) -> Admit {
        sem.acquire_or_queue(max_waiting, &Waker::from(Arc::new(Noop)))
    }

    fn queued(a: Admit) -> Slot {
        match a {
            Admit::Queued(s) => s,
            other => panic!("expected to queue, got {other:?}"),
        }
    }

    #[test]
    fn fast_path_counts_and_refuses_when_full() {
        let sem = Sem::new(2);
        assert_eq!(sem.try_acquire(), Some(1));
        assert_eq!(sem.try_acquire(), Some(2));
        assert_eq!(sem.try_acquire(), None);
        sem.release();
        assert_eq!(sem.in_flight(), 1);
        assert_eq!(sem.try_acquire(), Some(2));
    }

    #[test]
    fn waiters_block_the_fast_path_and_get_handed_permits_in_order() {
        let sem = Sem::new(1);
        assert_eq!(sem.try_acquire(), Some(1));
        let a = queued(join(&sem, usize::MAX));
        let b = queued(join(&sem, usize::MAX));
        sem.release();
        assert_eq!(sem.try_acquire(), None, "no barging past waiters");
        assert_eq!(cx_poll(&sem, b), Poll::Pending);
        assert_eq!(cx_poll(&sem, a), Poll::Ready(1));
        sem.release();
        assert_eq!(cx_poll(&sem, b), Poll::Ready(1));
        sem.release();
        assert_eq!(sem.in_flight(), 0);
        assert_eq!(sem.try_acquire(), Some(1), "flag cleared with the queue");
    }

    #[test]
    fn queue_length_is_capped() {
        let sem = Sem::new(1);
        sem.try_acquire();
        assert!(matches!(join(&sem, 0), Admit::Full));
        let _a = queued(join(&sem, 1));
        assert!(matches!(join(&sem, 1), Admit::Full));
        assert_eq!(sem.waiting(), 1);
    }

    #[test]
    fn cancelled_grant_passes_to_the_next_waiter() {
        let sem = Sem::new(1);
        sem.try_acquire();
        let a = queued(join(&sem, usize::MAX));
        let b = queued(join(&sem, usize::MAX));
        sem.release(); // granted to a
        sem.cancel(a); // a leaves without picking it up
        assert_eq!(cx_poll(&sem, b), Poll::Ready(1));
        sem.release();
        assert_eq!(sem.in_flight(), 0);
        assert_eq!(sem.waiting(), 0);
    }

    #[test]
    fn resizing_grants_waiters_and_retires_excess_permits() {
        let sem = Sem::new(2);
        sem.try_acquire();
        sem.try_acquire();
        let slots: Vec<_> = (0..20).map(|_| queued(join(&sem, usize::MAX))).collect();
        sem.set_limit(12); // more than one wake batch
        let granted = slots
            .iter()
            .filter(|s| cx_poll(&sem, **s).is_ready())
            .count();
        assert_eq!(granted, 10);
        assert_eq!(sem.in_flight(), 12);
        sem.set_limit(3);
        for _ in 0..9 {
            sem.release(); // retired, not handed on
        }
        assert_eq!(sem.in_flight(), 3);
        assert_eq!(sem.waiting(), 10);
        sem.release();
        assert_eq!(sem.in_flight(), 3, "handed to a waiter at the new limit");
    }

    /// Random operations against a model of a FIFO semaphore with handoff.
    #[test]
    fn matches_a_model_under_random_operations() {
        use std::collections::VecDeque;
        let mut rng = 0x1234_5678_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut limit = 3u32;
        let sem = Sem::new(limit);
        let (mut in_use, mut held) = (0u32, 0u32);
        // Waiters in line, and those granted a permit not picked up yet.
        let mut line: VecDeque<Slot> = VecDeque::new();
        let mut granted: Vec<Slot> = Vec::new();
        let hand_on =
            |in_use: &mut u32, line: &mut VecDeque<Slot>, granted: &mut Vec<Slot>, limit: u32| {
                if !line.is_empty() && *in_use <= limit {
                    granted.push(line.pop_front().unwrap());
                } else {
                    *in_use -= 1;
                }
            };
        for step in 0..20_000 {
            match next(6) {
                0 => match join(&sem, 4) {
                    Admit::Acquired(n) => {
                        assert!(line.is_empty() && in_use < limit, "step {step}");
                        in_use += 1;
                        held += 1;
                        assert_eq!(n, in_use);
                    }
                    Admit::Queued(slot) => {
                        assert!(!line.is_empty() || in_use >= limit, "step {step}");
                        line.push_back(slot);
                    }
                    Admit::Full => assert_eq!(line.len(), 4, "step {step}"),
                },
                1 if held > 0 => {
                    held -= 1;
                    sem.release();
                    hand_on(&mut in_use, &mut line, &mut granted, limit);
                }
                2 if !line.is_empty() => {
                    let slot = line.remove(next(line.len() as u64) as usize).unwrap();
                    sem.cancel(slot);
                }
                3 if !granted.is_empty() => {
                    let slot = granted.swap_remove(next(granted.len() as u64) as usize);
                    sem.cancel(slot); // granted but never picked up
                    hand_on(&mut in_use, &mut line, &mut granted, limit);
                }
                4 => {
                    for slot in std::mem::take(&mut granted) {
                        assert!(cx_poll(&sem, slot).is_ready(), "step {step}");
                        held += 1;
                    }
                    for slot in &line {
                        assert!(cx_poll(&sem, *slot).is_pending(), "step {step}");
                    }
                }
                5 => {
                    limit = 1 + next(5) as u32;
                    sem.set_limit(limit);
                    while !line.is_empty() && in_use < limit {
                        granted.push(line.pop_front().unwrap());
                        in_use += 1;
                    }
                }
                _ => {}
            }
            assert_eq!(sem.in_flight(), in_use, "step {step}");
            assert_eq!(sem.waiting(), line.len(), "step {step}");
            assert_eq!(sem.limit(), limit);
        }
    }
}

/// Loom model checks of the semaphore (issue 21): run with
/// `RUSTFLAGS="--cfg rampart_loom" cargo test --release -p rampart-limit --lib loom`.
/// Waiters are driven by `loom::future::block_on`, whose waker parks the
/// thread: a lost wakeup shows up as a deadlock loom reports.
#[cfg(all(test, rampart_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;
    use std::future::Future;
    use std::pin::Pin;

    /// Takes a permit the way the service does: fast path, else the queue,
    /// then polls the slot; dropped while queued, it cancels.
    struct Acquire {
        sem: Arc<Sem>,
        slot: Option<Slot>,
        done: bool,
    }

    impl Acquire {
        fn new(sem: &Arc<Sem>) -> Acquire {
            Acquire {
                sem: Arc::clone(sem),
                slot: None,
                done: false,
            }
        }

        /// A waiter already in line at `slot`.
        fn queued(sem: &Arc<Sem>, slot: Slot) -> Acquire {
            Acquire {
                sem: Arc::clone(sem),
                slot: Some(slot),
                done: false,
            }
        }
    }

    impl Future for Acquire {
        type Output = u32;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            let this = &mut *self;
            assert!(!this.done, "polled after completion");
            let res = match this.slot {
                Some(slot) => this.sem.poll_slot(slot, cx),
                None => match this.sem.try_acquire() {
                    Some(n) => Poll::Ready(n),
                    None => match this.sem.acquire_or_queue(usize::MAX, cx.waker()) {
                        Admit::Acquired(n) => Poll::Ready(n),
                        Admit::Queued(slot) => {
                            this.slot = Some(slot);
                            Poll::Pending
                        }
                        Admit::Full => unreachable!("the queue is unbounded here"),
                    },
                },
            };
            if res.is_ready() {
                this.done = true;
            }
            res
        }
    }

    impl Drop for Acquire {
        fn drop(&mut self) {
            if let (Some(slot), false) = (self.slot, self.done) {
                self.sem.cancel(slot);
            }
        }
    }

    fn noop_waker() -> Waker {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        Waker::from(std::sync::Arc::new(Noop))
    }

    /// Queues a waiter from the model's main thread (with a waker that does
    /// nothing: the waiter's own thread registers its real one when it polls).
    fn queue(sem: &Sem) -> Slot {
        match sem.acquire_or_queue(usize::MAX, &noop_waker()) {
            Admit::Queued(slot) => slot,
            other => panic!("expected to queue, got {other:?}"),
        }
    }

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(3);
        }
        b.check(f);
    }

    fn assert_idle(sem: &Sem, limit: u32) {
        assert_eq!(sem.in_flight(), 0, "a permit leaked or was doubled");
        assert_eq!(sem.waiting(), 0);
        assert_eq!(sem.limit(), limit);
        // The waiters flag is clear: the fast path works again, up to the limit.
        for n in 1..=limit {
            assert_eq!(sem.try_acquire(), Some(n));
        }
        assert_eq!(sem.try_acquire(), None);
    }

    /// A release racing a waiter joining the queue: the waiter is always
    /// granted (never parked forever), and every permit comes back.
    #[test]
    fn loom_release_racing_acquire_never_loses_the_wakeup() {
        model(|| {
            let sem = Arc::new(Sem::new(1));
            assert_eq!(sem.try_acquire(), Some(1));
            let waiter = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || {
                    let n = loom::future::block_on(Acquire::new(&sem));
                    assert_eq!(n, 1, "one permit in use: the waiter's");
                    sem.release();
                })
            };
            let releaser = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.release())
            };
            releaser.join().unwrap();
            waiter.join().unwrap();
            assert_idle(&sem, 1);
        });
    }

    /// A waiter granted the permit (or about to be) is dropped while the
    /// permit is released: the permit goes to the next waiter or back to
    /// the pool, exactly once.
    #[test]
    fn loom_cancelled_grant_is_neither_leaked_nor_doubled() {
        model(|| {
            let sem = Arc::new(Sem::new(1));
            assert_eq!(sem.try_acquire(), Some(1));
            let first = queue(&sem);
            let second = queue(&sem);
            let releaser = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.release())
            };
            let canceller = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || drop(Acquire::queued(&sem, first)))
            };
            let next = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || {
                    let n = loom::future::block_on(Acquire::queued(&sem, second));
                    assert_eq!(n, 1, "the only permit in use is this one");
                    sem.release();
                })
            };
            releaser.join().unwrap();
            canceller.join().unwrap();
            next.join().unwrap();
            assert_idle(&sem, 1);
        });
    }

    /// The same race with nobody behind the cancelled waiter: the permit
    /// returns to the pool.
    #[test]
    fn loom_cancelled_last_waiter_returns_the_permit() {
        model(|| {
            let sem = Arc::new(Sem::new(1));
            assert_eq!(sem.try_acquire(), Some(1));
            let only = queue(&sem);
            let releaser = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.release())
            };
            let canceller = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || drop(Acquire::queued(&sem, only)))
            };
            releaser.join().unwrap();
            canceller.join().unwrap();
            assert_idle(&sem, 1);
        });
    }

    /// Two queued waiters are served in arrival order, and a newcomer on
    /// the fast path never overtakes them.
    #[test]
    fn loom_waiters_are_handed_permits_in_fifo_order() {
        model(|| {
            let sem = Arc::new(Sem::new(1));
            assert_eq!(sem.try_acquire(), Some(1));
            let first = queue(&sem);
            let second = queue(&sem);
            let order = Arc::new(Mutex::new(Vec::new()));
            let spawn_waiter = |slot: Slot, name: &'static str| {
                let sem = Arc::clone(&sem);
                let order = Arc::clone(&order);
                thread::spawn(move || {
                    loom::future::block_on(Acquire::queued(&sem, slot));
                    order.lock().unwrap().push(name);
                    sem.release();
                })
            };
            let a = spawn_waiter(first, "first");
            let b = spawn_waiter(second, "second");
            let releaser = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.release())
            };
            // A newcomer gets in only once both waiters have been served.
            if sem.try_acquire().is_some() {
                assert_eq!(order.lock().unwrap().len(), 2, "barged past waiters");
                sem.release();
            }
            a.join().unwrap();
            b.join().unwrap();
            releaser.join().unwrap();
            assert_eq!(*order.lock().unwrap(), ["first", "second"]);
            assert_idle(&sem, 1);
        });
    }

    /// Growing the limit while a waiter is queued and a permit is released:
    /// the waiter is granted once (by whichever comes first) and the count
    /// ends at zero.
    #[test]
    fn loom_growing_the_limit_grants_the_waiter_once() {
        model(|| {
            let sem = Arc::new(Sem::new(1));
            assert_eq!(sem.try_acquire(), Some(1));
            let waiter = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || {
                    let n = loom::future::block_on(Acquire::new(&sem));
                    assert!((1..=2).contains(&n), "in use {n} over the limit");
                    sem.release();
                })
            };
            let resizer = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.set_limit(2))
            };
            let releaser = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.release())
            };
            releaser.join().unwrap();
            waiter.join().unwrap();
            resizer.join().unwrap();
            assert_idle(&sem, 2);
        });
    }

    /// Growing the limit alone (no permit comes back) wakes a waiter that
    /// is queued or queueing at the same time.
    #[test]
    fn loom_growing_the_limit_alone_wakes_a_waiter() {
        model(|| {
            let sem = Arc::new(Sem::new(1));
            assert_eq!(sem.try_acquire(), Some(1));
            let waiter = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || {
                    let n = loom::future::block_on(Acquire::new(&sem));
                    assert_eq!(n, 2, "the held permit and the waiter's");
                    sem.release();
                })
            };
            let resizer = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.set_limit(2))
            };
            resizer.join().unwrap();
            waiter.join().unwrap();
            sem.release();
            assert_idle(&sem, 2);
        });
    }

    /// A newcomer on the fast path does not overtake a queued waiter in
    /// the window where the limit has grown but the waiter is not yet
    /// granted.
    #[test]
    fn loom_newcomer_never_overtakes_a_waiter_when_the_limit_grows() {
        model(|| {
            let sem = Arc::new(Sem::new(1));
            assert_eq!(sem.try_acquire(), Some(1));
            let first = queue(&sem);
            let waiter = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || {
                    loom::future::block_on(Acquire::queued(&sem, first));
                    sem.release();
                })
            };
            let resizer = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.set_limit(2))
            };
            let newcomer = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || {
                    if sem.try_acquire().is_some() {
                        assert!(sem.is_granted(first), "barged past the waiter");
                        sem.release();
                    }
                })
            };
            newcomer.join().unwrap();
            resizer.join().unwrap();
            waiter.join().unwrap();
            sem.release();
            assert_idle(&sem, 2);
        });
    }

    /// Once the limit has shrunk, a permit coming back above the new limit
    /// is retired, not handed to a waiter queueing at the same time.
    #[test]
    fn loom_release_above_a_shrunk_limit_retires_the_permit() {
        model(|| {
            let sem = Arc::new(Sem::new(2));
            assert_eq!(sem.try_acquire(), Some(1));
            assert_eq!(sem.try_acquire(), Some(2));
            sem.set_limit(1);
            let waiter = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || {
                    let n = loom::future::block_on(Acquire::new(&sem));
                    assert_eq!(n, 1, "granted within the new limit");
                    sem.release();
                })
            };
            let releaser = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.release())
            };
            releaser.join().unwrap();
            assert_eq!(sem.in_flight(), 1, "retired, not handed on");
            sem.release();
            waiter.join().unwrap();
            assert_idle(&sem, 1);
        });
    }

    /// Shrinking the limit while a waiter is queued and a permit comes
    /// back: the permit is retired or handed on, never both, and the
    /// waiter is granted by the next release at the latest.
    #[test]
    fn loom_shrinking_the_limit_retires_or_hands_on_each_permit_once() {
        model(|| {
            let sem = Arc::new(Sem::new(2));
            assert_eq!(sem.try_acquire(), Some(1));
            assert_eq!(sem.try_acquire(), Some(2));
            let waiter = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || {
                    let n = loom::future::block_on(Acquire::new(&sem));
                    assert!(n <= 2, "in use {n} over the old limit");
                    sem.release();
                })
            };
            let resizer = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.set_limit(1))
            };
            let releaser = {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.release())
            };
            releaser.join().unwrap();
            resizer.join().unwrap();
            sem.release();
            waiter.join().unwrap();
            assert_idle(&sem, 1);
        });
    }
}
