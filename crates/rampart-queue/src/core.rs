//! The queue proper: the jobs waiting for a worker (at most `capacity`)
//! and, behind them, the callers waiting for space, first come first
//! served, all under one lock.
//!
//! A caller that finds the queue full leaves its job here as a *waiter*
//! and goes on waiting for its answer, as a queued caller does: when a
//! worker takes a job off the queue, it moves the first waiter's job into
//! the place it freed, under the same lock (the caller is not woken to do
//! it). So a waiting caller costs about what a queued one does: no task
//! wake and no poll of its stack to get its place.
//!
//! A waiter that gives up (its `max_wait`, deadline or cancellation, or its
//! future dropped) takes its job back by its ticket ([`Core::leave`]),
//! unless a worker has already moved it into the queue; exactly one of the
//! two happens, under the lock. A left waiter's entry is emptied at once
//! (its job is dropped by the one who left) and the emptied entries are
//! compacted away when they outnumber the live ones, so memory stays
//! bounded by the live waiters.
//!
//! Model-checked with loom (`RUSTFLAGS="--cfg rampart_loom" cargo test
//! --release -p rampart-queue --lib loom`).

use std::collections::VecDeque;
use std::task::Waker;
use tokio::sync::oneshot;

/// A caller waiting for space.
pub(crate) struct Waiter<J> {
    /// Its position among every waiter the queue ever had (increasing from
    /// front to back).
    ticket: u64,
    /// `None` once the waiter left (an emptied entry, compacted later).
    job: Option<J>,
    /// A fire-and-forget submitter, told when its job got its place.
    placed: Option<oneshot::Sender<()>>,
}

/// Why a job was not queued at once.
pub(crate) enum Refused<J> {
    /// The queue is full (or callers already wait for space): the job is
    /// handed back, to wait ([`Core::wait`]) or to be shed.
    Full(J),
    /// The queue is closed.
    Closed(J),
}

/// What a worker got from [`Core::take`].
pub(crate) struct Taken<J> {
    /// The job at the front of the queue.
    pub(crate) job: J,
    /// Whether a waiter's job was moved into the place it freed.
    pub(crate) promoted: bool,
    /// An idle worker to wake for that job (outside the lock).
    pub(crate) wake: Option<Waker>,
    /// A submitter to tell that its job got its place (outside the lock).
    pub(crate) placed: Option<oneshot::Sender<()>>,
}

/// The queue and its waiters.
pub(crate) struct Core<J> {
    queued: VecDeque<J>,
    capacity: usize,
    waiting: VecDeque<Waiter<J>>,
    /// Waiters in `waiting` that have not left.
    live_waiters: usize,
    next_ticket: u64,
    closed: bool,
    /// The wakers of idle workers, by worker id: a worker that finds the
    /// queue empty leaves its waker here under the lock, and the next job
    /// queued takes one and wakes it (none while every worker is busy: a
    /// busy worker looks at the queue again before it goes idle).
    idle_wakers: Vec<Option<Waker>>,
    /// The ids whose waker is set, most recently idle last.
    idle: Vec<usize>,
}

impl<J> Core<J> {
    /// An empty, open queue of `capacity` places (allocated now), for
    /// `workers` workers.
    pub(crate) fn new(capacity: usize, workers: usize) -> Self {
        Core {
            queued: VecDeque::with_capacity(capacity),
            capacity,
            waiting: VecDeque::new(),
            live_waiters: 0,
            next_ticket: 0,
            closed: false,
            idle_wakers: vec![None; workers],
            idle: Vec::with_capacity(workers),
        }
    }

    /// Worker `id` found the queue empty (and open): it waits for work,
    /// woken through `waker` by the next job queued.
    pub(crate) fn set_idle(&mut self, id: usize, waker: &Waker) {
        match &mut self.idle_wakers[id] {
            // Cloned only if it would not wake the same task.
            Some(w) => w.clone_from(waker),
            none => {
                *none = Some(waker.clone());
                self.idle.push(id);
            }
        }
    }

    /// Worker `id` took a job: no longer idle (if it was polled before a
    /// job woke it).
    pub(crate) fn set_busy(&mut self, id: usize) {
        if self.idle_wakers[id].take().is_some() {
            self.idle.retain(|&i| i != id);
        }
    }

    /// A job was queued: the waker of an idle worker to wake for it (it
    /// counts as busy from now on), if any.
    #[inline]
    fn hand_to_idle(&mut self) -> Option<Waker> {
        while let Some(id) = self.idle.pop() {
            if let Some(w) = self.idle_wakers[id].take() {
                return Some(w);
            }
        }
        None
    }

    /// Jobs in the queue (never more than the capacity).
    pub(crate) fn len(&self) -> usize {
        self.queued.len()
    }

    /// Callers waiting for space.
    pub(crate) fn waiting(&self) -> usize {
        self.live_waiters
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Queues `job` if there is a place and nobody waits for one (a new
    /// job never passes a waiting caller); then the waker of an idle
    /// worker to wake for it, if one is idle.
    #[inline]
    pub(crate) fn push(&mut self, job: J) -> Result<Option<Waker>, Refused<J>> {
        if self.closed {
            return Err(Refused::Closed(job));
        }
        if self.live_waiters > 0 || self.queued.len() >= self.capacity {
            return Err(Refused::Full(job));
        }
        self.queued.push_back(job);
        Ok(self.hand_to_idle())
    }

    /// Puts `job` behind the callers already waiting for space (after
    /// [`push`](Self::push) refused it with `Full`, under the same lock
    /// hold); returns its ticket. `placed` is told when the job gets its
    /// place (fire-and-forget submitters).
    pub(crate) fn wait(&mut self, job: J, placed: Option<oneshot::Sender<()>>) -> u64 {
        debug_assert!(!self.closed);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiting.push_back(Waiter {
            ticket,
            job: Some(job),
            placed,
        });
        self.live_waiters += 1;
        ticket
    }

    /// Takes the job at the front of the queue (calling `now` once it has
    /// one: the time it was taken), and moves the first waiter (if any)
    /// into the place it freed, calling `placed` on that job with the same
    /// time (the start of its wait in the queue).
    #[inline]
    pub(crate) fn take<S: Copy>(
        &mut self,
        now: impl FnOnce() -> S,
        placed: impl FnOnce(&mut J, S),
    ) -> Option<(Taken<J>, S)> {
        let job = self.queued.pop_front()?;
        let now = now();
        let mut taken = Taken {
            job,
            promoted: false,
            wake: None,
            placed: None,
        };
        if self.live_waiters > 0 {
            while let Some(w) = self.waiting.pop_front() {
                if let Some(mut next) = w.job {
                    self.live_waiters -= 1;
                    placed(&mut next, now);
                    self.queued.push_back(next);
                    taken.promoted = true;
                    taken.wake = self.hand_to_idle();
                    taken.placed = w.placed;
                    break;
                }
            }
            self.trim();
        }
        Some((taken, now))
    }

    /// The waiter of `ticket` gives up: its job, if it still waits for
    /// space (`None` once a worker moved it into the queue, or the queue
    /// was closed).
    pub(crate) fn leave(&mut self, ticket: u64) -> Option<J> {
        let i = self
            .waiting
            .binary_search_by_key(&ticket, |w| w.ticket)
            .ok()?;
        let job = self.waiting[i].job.take()?;
        self.waiting[i].placed = None;
        self.live_waiters -= 1;
        self.trim();
        Some(job)
    }

    /// Drops emptied entries at the ends, and compacts when they outnumber
    /// the live waiters.
    fn trim(&mut self) {
        while self.waiting.front().is_some_and(|w| w.job.is_none()) {
            self.waiting.pop_front();
        }
        while self.waiting.back().is_some_and(|w| w.job.is_none()) {
            self.waiting.pop_back();
        }
        if self.waiting.len() > 2 * self.live_waiters + 16 {
            self.waiting.retain(|w| w.job.is_some());
        }
    }

    /// Closes the queue: nothing is queued from now on; the callers
    /// waiting for space are handed back (to fail with `Closed`), and the
    /// idle workers' wakers (to wake: they stop once the queue is empty).
    /// Returns whether it was open.
    pub(crate) fn close(&mut self) -> (bool, Vec<J>, Vec<Waker>) {
        let was_open = !self.closed;
        self.closed = true;
        self.live_waiters = 0;
        let left = self.waiting.drain(..).filter_map(|w| w.job).collect();
        self.idle.clear();
        let idle = self
            .idle_wakers
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        (was_open, left, idle)
    }

    /// Takes every queued job (a drain deadline fails them).
    pub(crate) fn take_all(&mut self) -> Vec<J> {
        self.queued.drain(..).collect()
    }
}

#[cfg(all(test, not(rampart_loom)))]
mod tests {
    use super::*;

    fn core(cap: usize) -> Core<u32> {
        Core::new(cap, 2)
    }

    #[test]
    fn a_full_queue_hands_the_job_back_and_never_holds_more_than_its_capacity() {
        let mut c = core(2);
        assert!(c.push(1).is_ok());
        assert!(c.push(2).is_ok());
        assert!(matches!(c.push(3), Err(Refused::Full(3))));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn waiters_get_the_freed_places_in_arrival_order_and_new_jobs_do_not_pass_them() {
        let mut c = core(1);
        c.push(0).ok().unwrap();
        let Err(Refused::Full(j)) = c.push(1) else {
            panic!("full")
        };
        c.wait(j, None);
        let Err(Refused::Full(j)) = c.push(2) else {
            panic!("full")
        };
        c.wait(j, None);
        let mut order = Vec::new();
        while let Some(t) = c.take(|| (), |_, ()| {}).map(|t| t.0) {
            order.push(t.job);
            assert!(c.len() <= 1);
            // A newcomer waits behind the waiters still there.
            if c.waiting() > 0 {
                assert!(matches!(c.push(9), Err(Refused::Full(9))));
            }
        }
        assert_eq!(order, [0, 1, 2]);
    }

    #[test]
    fn a_waiter_that_leaves_gets_its_job_back_once_and_is_skipped() {
        let mut c = core(1);
        c.push(0).ok().unwrap();
        let a = c.wait(1, None);
        let b = c.wait(2, None);
        assert_eq!(c.leave(a), Some(1));
        assert_eq!(c.leave(a), None);
        assert_eq!(c.waiting(), 1);
        let t = c.take(|| 10, |j, n| *j += n).map(|t| t.0).unwrap();
        assert_eq!((t.job, t.promoted), (0, true));
        assert_eq!(c.leave(b), None, "b was moved into the queue");
        assert_eq!(
            c.take(|| (), |_, ()| {}).map(|t| t.0).unwrap().job,
            12,
            "stamped when placed"
        );
        assert!(c.take(|| (), |_, ()| {}).map(|t| t.0).is_none());
    }

    #[test]
    fn emptied_entries_are_compacted_so_memory_follows_the_live_waiters() {
        let mut c = core(1);
        c.push(0).ok().unwrap();
        let first = c.wait(1, None);
        let tickets: Vec<u64> = (0..1000).map(|i| c.wait(i, None)).collect();
        for t in tickets {
            assert!(c.leave(t).is_some());
        }
        assert_eq!(c.waiting(), 1);
        assert!(c.waiting.len() <= 18, "{} entries kept", c.waiting.len());
        assert_eq!(c.leave(first), Some(1));
        assert!(c.waiting.is_empty());
    }

    #[test]
    fn a_job_wakes_one_idle_worker_and_none_while_all_are_busy() {
        let mut c = core(4);
        assert!(c.push(0).ok().unwrap().is_none(), "no worker idle");
        let w = Waker::noop().clone();
        c.set_idle(0, &w);
        c.set_idle(0, &w);
        c.set_idle(1, &w);
        assert!(c.push(1).ok().unwrap().is_some());
        assert!(c.push(2).ok().unwrap().is_some());
        assert!(
            c.push(3).ok().unwrap().is_none(),
            "both idle workers were taken"
        );
        // A worker polled and given a job before a wake is busy again.
        c.set_idle(1, &w);
        c.set_busy(1);
        let t = c.wait(4, None);
        let (taken, ()) = c.take(|| (), |_, ()| {}).unwrap();
        assert!(taken.promoted && taken.wake.is_none());
        assert_eq!(c.leave(t), None);
        c.set_idle(0, &w);
        assert_eq!(c.close().2.len(), 1, "close wakes the idle worker");
    }

    #[test]
    fn close_refuses_new_jobs_and_hands_back_the_waiters() {
        let mut c = core(1);
        c.push(0).ok().unwrap();
        let a = c.wait(1, None);
        let (was_open, left, _) = c.close();
        assert!(was_open);
        assert_eq!(left, [1]);
        assert_eq!(c.leave(a), None);
        assert!(matches!(c.push(2), Err(Refused::Closed(2))));
        assert_eq!(c.take_all(), [0]);
        assert!(!c.close().0);
    }
}

#[cfg(all(test, rampart_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, Mutex};
    use loom::thread;

    /// A worker takes the front job while the first waiter gives up: the
    /// waiter's job is either moved into the queue (and its `leave` finds
    /// nothing) or handed back to it (and the worker moves nothing), never
    /// both, never neither; the capacity holds throughout.
    #[test]
    fn loom_a_waiter_leaving_while_a_worker_frees_a_place_is_placed_or_handed_back_once() {
        loom::model(|| {
            let core = Arc::new(Mutex::new(Core::new(1, 1)));
            let ticket = {
                let mut c = core.lock();
                c.push(0u32).ok().unwrap();
                let Err(Refused::Full(j)) = c.push(1) else {
                    panic!("full")
                };
                c.wait(j, None)
            };
            let w = Arc::clone(&core);
            let worker = thread::spawn(move || {
                let t = w.lock().take(|| (), |_, ()| {}).map(|t| t.0).unwrap();
                assert_eq!(t.job, 0);
                t.promoted
            });
            let back = core.lock().leave(ticket);
            let promoted = worker.join().unwrap();
            let mut c = core.lock();
            assert!(c.len() <= 1);
            match back {
                Some(j) => {
                    assert_eq!(j, 1);
                    assert!(!promoted);
                    assert!(c.take(|| (), |_, ()| {}).map(|t| t.0).is_none());
                }
                None => {
                    assert!(promoted);
                    assert_eq!(c.take(|| (), |_, ()| {}).map(|t| t.0).unwrap().job, 1);
                }
            }
            assert_eq!(c.waiting(), 0);
        });
    }

    /// A worker that finds the queue empty waits with its waker in the
    /// queue while a caller queues a job: the worker is woken (or sees the
    /// job at once) and takes it; no wake-up is lost.
    #[test]
    fn loom_a_job_queued_while_a_worker_goes_idle_reaches_it() {
        loom::model(|| {
            let core = Arc::new(Mutex::new(Core::new(1, 1)));
            let c = Arc::clone(&core);
            let caller = thread::spawn(move || {
                let wake = c.lock().push(7u32).ok().unwrap();
                if let Some(w) = wake {
                    w.wake();
                }
            });
            let got = loom::future::block_on(std::future::poll_fn(|cx| {
                let mut c = core.lock();
                match c.take(|| (), |_, ()| {}) {
                    Some((t, ())) => {
                        c.set_busy(0);
                        std::task::Poll::Ready(t.job)
                    }
                    None => {
                        c.set_idle(0, cx.waker());
                        std::task::Poll::Pending
                    }
                }
            }));
            caller.join().unwrap();
            assert_eq!(got, 7);
        });
    }

    /// Two callers race for the one free place while a worker frees
    /// another: both get a place in the end (one queued at once, or moved
    /// in when the worker frees one), the capacity is never exceeded, and
    /// the jobs come out once each.
    #[test]
    fn loom_callers_racing_for_places_are_each_queued_once_within_capacity() {
        loom::model(|| {
            let core = Arc::new(Mutex::new(Core::new(1, 1)));
            core.lock().push(0u32).ok().unwrap();
            let callers: Vec<_> = [1u32, 2]
                .into_iter()
                .map(|n| {
                    let c = Arc::clone(&core);
                    thread::spawn(move || {
                        let mut c = c.lock();
                        match c.push(n) {
                            Ok(_) => {}
                            Err(Refused::Full(j)) => {
                                c.wait(j, None);
                            }
                            Err(Refused::Closed(_)) => unreachable!(),
                        }
                        assert!(c.len() <= 1);
                    })
                })
                .collect();
            let w = Arc::clone(&core);
            let worker = thread::spawn(move || {
                let mut got = Vec::new();
                if let Some(t) = w.lock().take(|| (), |_, ()| {}).map(|t| t.0) {
                    got.push(t.job);
                }
                got
            });
            for c in callers {
                c.join().unwrap();
            }
            let mut got = worker.join().unwrap();
            let mut c = core.lock();
            while let Some(t) = c.take(|| (), |_, ()| {}).map(|t| t.0) {
                got.push(t.job);
            }
            got.sort_unstable();
            assert_eq!(got, [0, 1, 2]);
            assert_eq!(c.waiting(), 0);
        });
    }
}
