//! Answer slots: where a worker leaves a caller's outcome, reused from
//! request to request so that an answer allocates nothing (in place of a
//! `tokio::sync::oneshot`, whose shared state is allocated per request).
//!
//! A slot is an `Arc` shared by two halves: the caller's [`Answer`] (in its
//! response future) and the worker's [`Reply`] (in the job). Its state sits
//! under a `parking_lot` mutex (loom's under `rampart_loom`), held only to
//! read or swap the state and the two wakers (never while user code runs:
//! results are dropped and wakers woken after the lock is released). The half that finishes last hands the
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
//! --release -p rampart-queue --lib loom`; add `--features metrics` for the
//! model of a waiter's slot stamped under the queue's lock).

use crate::metrics::Stamp;
use crate::sync::{Arc, Mutex};
use rampart_core::{Context, Error};
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

/// What a slot holds: the request until a worker takes it, then the
/// answer.
struct Cell<Req, Res> {
    state: State<Res>,
    /// The request and its caller's context, until a worker takes them
    /// (kept here, not in the job, so that the job moved through the queue
    /// is a pointer).
    req: Option<Req>,
    ctx: Option<Context>,
    /// When the job was queued (zero-sized without the `metrics`
    /// feature): kept here, not in the job, for the same reason; read by
    /// the worker that takes the job, under the lock it takes anyway.
    queued: Stamp,
}

impl<Req, Res> Cell<Req, Res> {
    /// The request and context still in the slot, if any (copied out only
    /// when there is one: a worker took them already in the common case).
    #[inline]
    fn take_work(&mut self) -> Option<Work<Req>> {
        (self.req.is_some() || self.ctx.is_some()).then(|| (self.req.take(), self.ctx.take()))
    }
}

impl<Req, Res> std::ops::Deref for Cell<Req, Res> {
    type Target = State<Res>;
    fn deref(&self) -> &State<Res> {
        &self.state
    }
}

impl<Req, Res> std::ops::DerefMut for Cell<Req, Res> {
    fn deref_mut(&mut self) -> &mut State<Res> {
        &mut self.state
    }
}

/// One answer slot.
pub(crate) struct Slot<Req, Res> {
    cell: Mutex<Cell<Req, Res>>,
}

impl<Req, Res> Slot<Req, Res> {
    fn new() -> Self {
        Slot {
            cell: Mutex::new(Cell {
                state: State::IDLE,
                req: None,
                ctx: None,
                queued: Stamp::default(),
            }),
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Cell<Req, Res>> {
        self.cell.lock()
    }
}

/// A request and its context taken out of a slot (dropped by the caller,
/// outside the lock).
type Work<Req> = (Option<Req>, Option<Context>);

/// Idle slots, reused.
pub(crate) struct Pool<Req, Res> {
    free: Mutex<Vec<Arc<Slot<Req, Res>>>>,
    max: usize,
}

impl<Req, Res> Pool<Req, Res> {
    /// A pool that keeps at most `max` idle slots (allocated on demand).
    pub(crate) fn new(max: usize) -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
            max,
        }
    }

    /// A slot holding `req` and `ctx`, from the pool (or new), stamped with
    /// what `queued` returns (called once the slot is at hand, so that a
    /// reading taken there is not kept across the pool's lock and
    /// allocation); its caller counts as gone with `caller_gone` (a job
    /// nobody waits on).
    #[inline]
    fn slot(
        &self,
        req: Req,
        ctx: Option<Context>,
        queued: impl FnOnce() -> Stamp,
        caller_gone: bool,
    ) -> Arc<Slot<Req, Res>> {
        let reused = self.free.lock().pop();
        let slot = reused.unwrap_or_else(|| Arc::new(Slot::new()));
        {
            let queued = queued();
            let mut cell = slot.lock();
            // Pooled slots are idle, request and context taken (reset by
            // the half that pooled it): only the state of a job nobody
            // waits on is set.
            debug_assert!(matches!(
                cell.state,
                State::Waiting {
                    caller: None,
                    worker: None
                }
            ));
            debug_assert!(cell.req.is_none() && cell.ctx.is_none());
            if caller_gone {
                cell.state = State::CallerGone;
            }
            cell.req = Some(req);
            cell.ctx = ctx;
            cell.queued = queued;
        }
        slot
    }

    /// A fresh pair of halves on one slot holding `req` and `ctx`, stamped
    /// with `queued()`: the caller's and the worker's.
    #[inline]
    pub(crate) fn pair(
        pool: &Arc<Self>,
        req: Req,
        ctx: Option<Context>,
        queued: impl FnOnce() -> Stamp,
    ) -> (Reply<Req, Res>, Answer<Req, Res>) {
        let slot = pool.slot(req, ctx, queued, false);
        (
            Reply {
                slot: Some(Arc::clone(&slot)),
                answered: true,
            },
            Answer {
                slot: Some(slot),
                pool: Arc::clone(pool),
            },
        )
    }

    /// The worker's half alone, for a job nobody waits on
    /// (fire-and-forget): its outcome is dropped and the slot pooled.
    pub(crate) fn unanswered(
        &self,
        req: Req,
        ctx: Option<Context>,
        queued: impl FnOnce() -> Stamp,
    ) -> Reply<Req, Res> {
        Reply {
            slot: Some(self.slot(req, ctx, queued, true)),
            answered: false,
        }
    }

    /// Takes back a slot both halves are done with (its state is idle, its
    /// request taken).
    #[inline]
    fn put(&self, slot: Arc<Slot<Req, Res>>) {
        let mut free = self.free.lock();
        if free.len() < self.max {
            free.push(slot);
        }
    }

    /// Idle slots now (loom tests).
    #[cfg(all(test, rampart_loom))]
    pub(crate) fn idle(&self) -> usize {
        self.free.lock().len()
    }
}

/// The worker's half: answers the caller, tells whether it left.
pub(crate) struct Reply<Req, Res> {
    /// `None` once answered.
    slot: Option<Arc<Slot<Req, Res>>>,
    /// False for a fire-and-forget job (nobody waits for its outcome).
    answered: bool,
}

impl<Req, Res> Reply<Req, Res> {
    /// False for a fire-and-forget job.
    pub(crate) fn wants_answer(&self) -> bool {
        self.answered
    }

    /// Moves the caller's context out of the slot into `ctx` (`None`), and
    /// tells whether the caller dropped its response future (never for a
    /// fire-and-forget job) and when the job was queued. The request stays
    /// in the slot until the inner service is called
    /// ([`take_request`](Self::take_request)): moved once, from the slot
    /// into the call.
    #[inline]
    pub(crate) fn take_context_into(&self, ctx: &mut Option<Context>) -> (bool, Stamp) {
        let Some(slot) = &self.slot else {
            return (false, Stamp::default());
        };
        let mut cell = slot.lock();
        debug_assert!(ctx.is_none());
        *ctx = cell.ctx.take();
        (
            self.answered && matches!(cell.state, State::CallerGone),
            cell.queued,
        )
    }

    /// Answers the caller (if it still listens) with `err`, for a job
    /// failed before or instead of its call; the slot goes back to `pool`
    /// if the caller left.
    #[inline]
    pub(crate) fn fail(self, err: Error, pool: &Pool<Req, Res>) {
        self.send(Err(err), pool);
    }

    /// The job is queued again at `now` (a caller that waited for space
    /// got its place): its wait in the queue starts then. Nothing to do
    /// without a clock reading (without the `metrics` feature, or with no
    /// recorder behind the wait histogram).
    #[inline]
    pub(crate) fn restamp(&self, now: Stamp) {
        if now.instant().is_some()
            && let Some(slot) = &self.slot
        {
            slot.lock().queued = now;
        }
    }

    /// The request, moved out of the slot for the call (once: a job not
    /// called leaves it there, dropped when the reply is sent or dropped).
    #[inline]
    pub(crate) fn take_request(&self) -> Req {
        self.slot
            .as_ref()
            .and_then(|slot| slot.lock().req.take())
            .expect("a request is called once, before its reply is sent")
    }

    /// True once the caller dropped its response future (registers no
    /// waker).
    #[inline]
    pub(crate) fn caller_gone(&self) -> bool {
        self.slot
            .as_ref()
            .is_some_and(|s| matches!(s.lock().state, State::CallerGone))
    }

    /// `Ready` once the caller dropped its response future; until then the
    /// task of `cx` is woken when it does.
    #[inline]
    pub(crate) fn poll_caller_gone(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Some(slot) = &self.slot else {
            return Poll::Pending;
        };
        let mut state = slot.lock();
        match &mut state.state {
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
    #[inline]
    pub(crate) fn send(mut self, result: Result<Res, Error>, pool: &Pool<Req, Res>) {
        let slot = self.slot.take().expect("a reply is sent once");
        let caller = {
            let mut cell = slot.lock();
            // A job failed before a worker took it (or before its call)
            // leaves its request to be dropped at the end of this block:
            // outside the lock, before the caller is woken, and in place
            // (`drop(work)` would copy the request); a called job left
            // nothing.
            let _work = cell.take_work();
            match &mut cell.state {
                State::Waiting { caller, worker } => {
                    let caller = caller.take();
                    // The worker's own waker: dropped outside the lock too.
                    let worker = worker.take();
                    // The result is moved once, into the slot.
                    cell.state = State::Answered(result);
                    drop(cell);
                    drop(slot);
                    drop(worker);
                    caller
                }
                State::CallerGone => {
                    cell.state = State::IDLE;
                    drop(cell);
                    pool.put(slot);
                    drop(result);
                    None
                }
                State::Answered(_) => unreachable!("a reply is sent once"),
            }
        };
        if let Some(w) = caller {
            w.wake();
        }
    }
}

impl<Req, Res> Drop for Reply<Req, Res> {
    /// Dropped unanswered (a drain deadline, or the queue dropped with jobs
    /// in it): the caller gets `Closed`. A slot whose caller left is freed
    /// (not pooled: no pool at hand; this is not the common path).
    #[inline]
    fn drop(&mut self) {
        // A sent reply (the common case) has nothing left to do.
        if let Some(slot) = self.slot.take() {
            reply_dropped(slot);
        }
    }
}

/// [`Reply`]'s drop, unanswered.
#[cold]
#[inline(never)]
fn reply_dropped<Req, Res>(slot: Arc<Slot<Req, Res>>) {
    let mut state = slot.lock();
    // A request never called is dropped here, by the worker or the queue
    // that held the reply (also when the caller left: not by whichever
    // side lets go of the slot last), outside the lock and before the
    // caller is woken.
    let work: Work<Req> = (state.req.take(), state.ctx.take());
    let old = std::mem::replace(&mut state.state, State::Answered(Err(Error::closed())));
    drop(state);
    drop(work);
    if let State::Waiting {
        caller: Some(w), ..
    } = old
    {
        w.wake();
    }
}

/// The caller's half: the outcome, once the worker left it.
pub(crate) struct Answer<Req, Res> {
    /// `None` once the answer was taken (the slot is back in the pool).
    slot: Option<Arc<Slot<Req, Res>>>,
    pool: Arc<Pool<Req, Res>>,
}

impl<Req, Res> Answer<Req, Res> {
    /// `Ready` with the outcome once the worker answered; until then the
    /// task of `cx` is woken when it does.
    #[inline]
    pub(crate) fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Res, Error>> {
        let slot = self.slot.as_ref().expect("an answer is taken once");
        let mut state = slot.lock();
        match &mut state.state {
            State::Waiting { caller, .. } => {
                if !caller.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *caller = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Answered(_) => {
                let State::Answered(result) = std::mem::replace(&mut state.state, State::IDLE)
                else {
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

impl<Req, Res> Drop for Answer<Req, Res> {
    /// The caller leaves: before the answer, the worker is told (and woken
    /// if it watches); after it, the unread answer is dropped and the slot
    /// goes back to the pool.
    #[inline]
    fn drop(&mut self) {
        // An answer taken (the common case) has nothing left to do.
        if let Some(slot) = self.slot.take() {
            answer_dropped(slot, &self.pool);
        }
    }
}

/// [`Answer`]'s drop before its answer was taken.
#[cold]
#[inline(never)]
fn answer_dropped<Req, Res>(slot: Arc<Slot<Req, Res>>, pool: &Pool<Req, Res>) {
    let mut state = slot.lock();
    match std::mem::replace(&mut state.state, State::CallerGone) {
        State::Waiting { worker, .. } => {
            drop(state);
            if let Some(w) = worker {
                w.wake();
            }
        }
        State::Answered(result) => {
            state.state = State::IDLE;
            drop(state);
            pool.put(slot);
            drop(result);
        }
        State::CallerGone => unreachable!("the caller leaves once"),
    }
}

#[cfg(all(test, rampart_loom))]
mod loom_tests {
    use super::*;
    use loom::future::block_on;
    use loom::thread;
    use std::future::poll_fn;

    fn pool() -> Arc<Pool<u32, u32>> {
        Arc::new(Pool::new(4))
    }

    /// Takes the one pooled slot for a second request: it starts idle (no
    /// caller gone, no answer, no stale waker) and carries that request's
    /// answer, then goes back to the pool.
    fn second_request_on_the_pooled_slot(pool: &Arc<Pool<u32, u32>>) {
        assert_eq!(pool.idle(), 1);
        let (reply, mut answer) = Pool::pair(pool, 2, None, Stamp::default);
        assert_eq!(pool.idle(), 0, "the pooled slot is reused");
        assert!(
            matches!(
                answer.slot.as_ref().expect("not taken yet").lock().state,
                State::Waiting {
                    caller: None,
                    worker: None
                }
            ),
            "a reused slot starts idle"
        );
        assert!(!reply.caller_gone());
        let mut ctx = None;
        let (gone, _) = reply.take_context_into(&mut ctx);
        assert_eq!(
            (reply.take_request(), gone),
            (2, false),
            "it holds this request"
        );
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
            let (reply, mut answer) = Pool::pair(&pool, 1, None, Stamp::default);
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
            let (reply, answer) = Pool::pair(&pool, 1, None, Stamp::default);
            let p = Arc::clone(&pool);
            let worker = thread::spawn(move || reply.send(Ok(7), &p));
            drop(answer);
            worker.join().unwrap();
            second_request_on_the_pooled_slot(&pool);
        });
    }

    /// A request that records whether it was dropped.
    struct Tracked(Arc<loom::sync::atomic::AtomicBool>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.store(true, loom::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The caller leaves while the worker gives up a request it never
    /// called: the worker drops the request itself, whichever side lets go
    /// of the slot last (not the caller's thread, at its drop).
    #[test]
    fn loom_an_uncalled_request_is_dropped_by_the_worker_that_gives_it_up() {
        loom::model(|| {
            let pool: Arc<Pool<Tracked, u32>> = Arc::new(Pool::new(4));
            let dropped = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let (reply, answer) =
                Pool::pair(&pool, Tracked(Arc::clone(&dropped)), None, Stamp::default);
            let d = Arc::clone(&dropped);
            let worker = thread::spawn(move || {
                drop(reply);
                assert!(
                    d.load(loom::sync::atomic::Ordering::SeqCst),
                    "the worker dropped the request it gave up"
                );
            });
            drop(answer);
            worker.join().unwrap();
        });
    }

    /// A worker frees a place while the caller waiting for it leaves: the
    /// worker moves that caller's job into the queue and stamps its slot
    /// (the slot's lock taken under the queue's: the only nesting of the
    /// two, always in that order) or the caller takes its job back first;
    /// either way nothing deadlocks, and a job moved in carries the
    /// worker's reading.
    #[cfg(feature = "metrics")]
    #[test]
    fn loom_a_waiter_placed_while_its_caller_leaves_is_restamped_under_the_queue_lock() {
        use crate::core::{Core, Refused};
        use crate::metrics::Stamp;
        loom::model(|| {
            let pool = pool();
            let queued = Stamp::reading();
            let core = Arc::new(Mutex::new(Core::new(1, 1)));
            let (first, _first_answer) = Pool::pair(&pool, 0, None, || queued);
            let (second, second_answer) = Pool::pair(&pool, 1, None, || queued);
            let ticket = {
                let mut c = core.lock();
                assert!(c.push(first).is_ok());
                let Err(Refused::Full(j)) = c.push(second) else {
                    panic!("full")
                };
                c.wait(j, None)
            };
            let at = Stamp::reading();
            let w = Arc::clone(&core);
            let worker = thread::spawn(move || {
                let mut c = w.lock();
                let (t, _) = c.take(|| at, |next, now| next.restamp(now)).unwrap();
                drop(c);
                (t.job, t.promoted)
            });
            let caller = thread::spawn(move || drop(second_answer));
            let back = core.lock().leave(ticket);
            let (taken, promoted) = worker.join().unwrap();
            caller.join().unwrap();
            let mut ctx = None;
            assert_eq!(
                taken.take_context_into(&mut ctx).1.instant(),
                queued.instant()
            );
            taken.send(Ok(0), &pool);
            match back {
                Some(job) => {
                    assert!(!promoted);
                    job.send(Err(Error::cancelled()), &pool);
                }
                None => {
                    assert!(promoted);
                    let next = core.lock().take(|| at, |_, _| {}).unwrap().0.job;
                    let (gone, stamp) = next.take_context_into(&mut ctx);
                    assert!(gone, "its caller left");
                    assert_eq!(stamp.instant(), at.instant(), "stamped when placed");
                    next.send(Err(Error::cancelled()), &pool);
                }
            }
        });
    }

    /// A worker watching for the caller leaving is woken when it leaves.
    #[test]
    fn loom_worker_watching_sees_the_caller_leave() {
        loom::model(|| {
            let pool = pool();
            let (mut reply, answer) = Pool::pair(&pool, 1, None, Stamp::default);
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
            let (reply, mut answer) = Pool::pair(&pool, 1, None, Stamp::default);
            let worker = thread::spawn(move || drop(reply));
            let got = block_on(poll_fn(|cx| answer.poll(cx)));
            worker.join().unwrap();
            assert_eq!(got.unwrap_err().kind(), rampart_core::ErrorKind::Closed);
            drop(answer);
            second_request_on_the_pooled_slot(&pool);
        });
    }
}
