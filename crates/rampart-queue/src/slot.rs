//! Answer slots: where a worker leaves a caller's outcome, reused from
//! request to request so that an answer allocates nothing (in place of a
//! `tokio::sync::oneshot`, whose shared state is allocated per request).
//!
//! A slot is an `Arc` shared by two halves: the caller's [`Answer`] (in its
//! response future) and the worker's [`Reply`] (in the job). Its state sits
//! under a `std::sync::Mutex`, held only to read or swap the state and the
//! two wakers (never while user code runs: results are dropped and wakers
//! woken after the lock is released). The half that finishes last hands the
//! slot back to the [`Pool`], reset, for the next request:
//!
//! - the caller, when it takes the answer, or drops its future after the
//!   answer came;
//! - the worker, when it answers (or skips the job) after the caller left.
//!
//! The pool keeps at most `max` idle slots; when it is empty a new slot is
//! allocated (only while the number of requests in flight grows past what
//! it ever was), and a slot handed back to a full pool is freed.
//!
//! Model-checked with loom (`RUSTFLAGS="--cfg rampart_loom" cargo test
//! --release -p rampart-queue --lib loom`).

use crate::sync::{Arc, Mutex};
use rampart_core::Error;
use std::sync::PoisonError;
use std::task::{Context as TaskContext, Poll, Waker};

/// Where a slot stands.
enum State<Res> {
    /// Queued or running (or idle in the pool): the caller's waker once it
    /// polled, the worker's waker once it watches for the caller leaving.
    Waiting {
        caller: Option<Waker>,
        worker: Option<Waker>,
    },
    /// The worker answered; the caller has not taken it yet.
    Answered(Result<Res, Error>),
    /// The caller left before the answer came.
    CallerGone,
}

impl<Res> State<Res> {
    const IDLE: Self = State::Waiting {
        caller: None,
        worker: None,
    };
}

/// One answer slot.
pub(crate) struct Slot<Res> {
    state: Mutex<State<Res>>,
}

impl<Res> Slot<Res> {
    fn new() -> Self {
        Slot {
            state: Mutex::new(State::IDLE),
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, State<Res>> {
        // Nothing panics under the lock; a poisoned one still holds a
        // consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Idle slots, reused.
pub(crate) struct Pool<Res> {
    free: Mutex<Vec<Arc<Slot<Res>>>>,
    max: usize,
}

impl<Res> Pool<Res> {
    /// A pool that keeps at most `max` idle slots (allocated on demand).
    pub(crate) fn new(max: usize) -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
            max,
        }
    }

    /// A fresh pair of halves on one slot: the caller's and the worker's.
    pub(crate) fn pair(pool: &Arc<Self>) -> (Reply<Res>, Answer<Res>) {
        let reused = pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let slot = reused.unwrap_or_else(|| Arc::new(Slot::new()));
        (
            Reply {
                slot: Some(Arc::clone(&slot)),
            },
            Answer {
                slot: Some(slot),
                pool: Arc::clone(pool),
            },
        )
    }

    /// Takes back a slot both halves are done with (its state is idle).
    fn put(&self, slot: Arc<Slot<Res>>) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < self.max {
            free.push(slot);
        }
    }

    /// Idle slots now (loom tests).
    #[cfg(all(test, rampart_loom))]
    pub(crate) fn idle(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The worker's half: answers the caller, tells whether it left.
pub(crate) struct Reply<Res> {
    /// `None` once answered.
    slot: Option<Arc<Slot<Res>>>,
}

impl<Res> Reply<Res> {
    /// True once the caller dropped its response future.
    pub(crate) fn caller_gone(&self) -> bool {
        self.slot
            .as_ref()
            .is_some_and(|s| matches!(*s.lock(), State::CallerGone))
    }

    /// `Ready` once the caller dropped its response future; until then the
    /// task of `cx` is woken when it does.
    pub(crate) fn poll_caller_gone(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Some(slot) = &self.slot else {
            return Poll::Pending;
        };
        let mut state = slot.lock();
        match &mut *state {
            State::CallerGone => Poll::Ready(()),
            State::Waiting { worker, .. } => {
                if !worker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *worker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Answered(_) => Poll::Pending,
        }
    }

    /// Leaves `result` for the caller and wakes it; if the caller left, the
    /// result is dropped and the slot goes back to `pool`.
    pub(crate) fn send(mut self, result: Result<Res, Error>, pool: &Pool<Res>) {
        let slot = self.slot.take().expect("a reply is sent once");
        let mut state = slot.lock();
        match std::mem::replace(&mut *state, State::Answered(result)) {
            State::Waiting { caller, .. } => {
                drop(state);
                drop(slot);
                if let Some(w) = caller {
                    w.wake();
                }
            }
            State::CallerGone => {
                let State::Answered(result) = std::mem::replace(&mut *state, State::IDLE) else {
                    unreachable!("set just above")
                };
                drop(state);
                pool.put(slot);
                drop(result);
            }
            State::Answered(_) => unreachable!("a reply is sent once"),
        }
    }
}

impl<Res> Drop for Reply<Res> {
    /// Dropped unanswered (a drain deadline, or the queue dropped with jobs
    /// in it): the caller gets `Closed`. A slot whose caller left is freed
    /// (not pooled: no pool at hand; this is not the common path).
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut state = slot.lock();
        if let State::Waiting { caller, .. } =
            std::mem::replace(&mut *state, State::Answered(Err(Error::closed())))
        {
            drop(state);
            if let Some(w) = caller {
                w.wake();
            }
        }
    }
}

/// The caller's half: the outcome, once the worker left it.
pub(crate) struct Answer<Res> {
    /// `None` once the answer was taken (the slot is back in the pool).
    slot: Option<Arc<Slot<Res>>>,
    pool: Arc<Pool<Res>>,
}

impl<Res> Answer<Res> {
    /// `Ready` with the outcome once the worker answered; until then the
    /// task of `cx` is woken when it does.
    pub(crate) fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Res, Error>> {
        let slot = self.slot.as_ref().expect("an answer is taken once");
        let mut state = slot.lock();
        match &mut *state {
            State::Waiting { caller, .. } => {
                if !caller.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *caller = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Answered(_) => {
                let State::Answered(result) = std::mem::replace(&mut *state, State::IDLE) else {
                    unreachable!("matched above")
                };
                drop(state);
                let slot = self.slot.take().expect("checked above");
                self.pool.put(slot);
                Poll::Ready(result)
            }
            State::CallerGone => unreachable!("the caller is here"),
        }
    }
}

impl<Res> Drop for Answer<Res> {
    /// The caller leaves: before the answer, the worker is told (and woken
    /// if it watches); after it, the unread answer is dropped and the slot
    /// goes back to the pool.
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut state = slot.lock();
        match std::mem::replace(&mut *state, State::CallerGone) {
            State::Waiting { worker, .. } => {
                drop(state);
                if let Some(w) = worker {
                    w.wake();
                }
            }
            State::Answered(result) => {
                *state = State::IDLE;
                drop(state);
                self.pool.put(slot);
                drop(result);
            }
            State::CallerGone => unreachable!("the caller leaves once"),
        }
    }
}

#[cfg(all(test, rampart_loom))]
mod loom_tests {
    use super::*;
    use loom::future::block_on;
    use loom::thread;
    use std::future::poll_fn;

    fn pool() -> Arc<Pool<u32>> {
        Arc::new(Pool::new(4))
    }

    /// Takes the one pooled slot for a second request: it starts idle (no
    /// caller gone, no answer, no stale waker) and carries that request's
    /// answer, then goes back to the pool.
    fn second_request_on_the_pooled_slot(pool: &Arc<Pool<u32>>) {
        assert_eq!(pool.idle(), 1);
        let (reply, mut answer) = Pool::pair(pool);
        assert_eq!(pool.idle(), 0, "the pooled slot is reused");
        assert!(
            matches!(
                *answer.slot.as_ref().expect("not taken yet").lock(),
                State::Waiting {
                    caller: None,
                    worker: None
                }
            ),
            "a reused slot starts idle"
        );
        assert!(!reply.caller_gone());
        reply.send(Ok(8), pool);
        let got = block_on(poll_fn(|cx| answer.poll(cx)));
        assert_eq!(got.unwrap(), 8);
        drop(answer);
        assert_eq!(pool.idle(), 1);
    }

    /// The worker answers while the caller waits: the caller gets the
    /// answer, and the slot is back in the pool exactly once, idle.
    #[test]
    fn loom_answer_reaches_a_waiting_caller_and_the_slot_is_pooled_once() {
        loom::model(|| {
            let pool = pool();
            let (reply, mut answer) = Pool::pair(&pool);
            let p = Arc::clone(&pool);
            let worker = thread::spawn(move || reply.send(Ok(7), &p));
            let got = block_on(poll_fn(|cx| answer.poll(cx)));
            worker.join().unwrap();
            assert_eq!(got.unwrap(), 7);
            drop(answer);
            second_request_on_the_pooled_slot(&pool);
        });
    }

    /// The caller leaves while the worker answers: whichever comes last
    /// pools the slot, exactly once, idle (a second request on it works).
    #[test]
    fn loom_caller_leaving_during_the_answer_pools_the_slot_once_idle() {
        loom::model(|| {
            let pool = pool();
            let (reply, answer) = Pool::pair(&pool);
            let p = Arc::clone(&pool);
            let worker = thread::spawn(move || reply.send(Ok(7), &p));
            drop(answer);
            worker.join().unwrap();
            second_request_on_the_pooled_slot(&pool);
        });
    }

    /// A worker watching for the caller leaving is woken when it leaves.
    #[test]
    fn loom_worker_watching_sees_the_caller_leave() {
        loom::model(|| {
            let pool = pool();
            let (mut reply, answer) = Pool::pair(&pool);
            let caller = thread::spawn(move || drop(answer));
            block_on(poll_fn(|cx| reply.poll_caller_gone(cx)));
            assert!(reply.caller_gone());
            caller.join().unwrap();
            reply.send(Ok(1), &pool);
            second_request_on_the_pooled_slot(&pool);
        });
    }

    /// A reply dropped unanswered (drain deadline) ends the caller's wait
    /// with `Closed`.
    #[test]
    fn loom_reply_dropped_unanswered_gives_closed() {
        loom::model(|| {
            let pool = pool();
            let (reply, mut answer) = Pool::pair(&pool);
            let worker = thread::spawn(move || drop(reply));
            let got = block_on(poll_fn(|cx| answer.poll(cx)));
            worker.join().unwrap();
            assert_eq!(got.unwrap_err().kind(), rampart_core::ErrorKind::Closed);
            drop(answer);
            second_request_on_the_pooled_slot(&pool);
        });
    }
}
