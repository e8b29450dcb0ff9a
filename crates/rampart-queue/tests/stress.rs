//! Randomized and cancel-at-every-poll runs: every request gets exactly one
//! outcome, capacity and the worker count are never exceeded, no slot leaks.

use rampart_core::{CancellationToken, Context, Error, ErrorKind};
use rampart_queue::{Panicked, Queue, QueueLayer};
use rampart_testkit::{MockReply, MockService, cancel_at_every_poll};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use tower::{Layer, Service, ServiceExt};

const CAPACITY: usize = 16;
const WORKERS: usize = 4;

/// What happened to each request id inside the inner service.
#[derive(Default)]
struct Ledger {
    /// Times each id was called (must end ≤ 1).
    called: Vec<AtomicUsize>,
    /// Times each id's future completed (Ok or panic) or was dropped.
    ended: Vec<AtomicUsize>,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    finished: AtomicUsize,
    panicked: AtomicUsize,
    dropped: AtomicUsize,
}

/// The inner service: yields `id % 4` times, panics for ids the plan marks,
/// answers its id. Checks the queue's bounds on every call.
#[derive(Clone)]
struct Inner {
    ledger: Arc<Ledger>,
    panics: Arc<Vec<bool>>,
    stats: Arc<Mutex<Option<Queue<usize, usize>>>>,
}

struct Call {
    ledger: Arc<Ledger>,
    id: usize,
    yields: usize,
    panic: bool,
    ended: bool,
}

impl Future for Call {
    type Output = Result<usize, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        if self.yields > 0 {
            self.yields -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ended = true;
        self.ledger.ended[self.id].fetch_add(1, SeqCst);
        self.ledger.in_flight.fetch_sub(1, SeqCst);
        if self.panic {
            self.ledger.panicked.fetch_add(1, SeqCst);
            panic!("planned panic {}", self.id);
        }
        self.ledger.finished.fetch_add(1, SeqCst);
        Poll::Ready(Ok(self.id))
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.ended {
            self.ledger.ended[self.id].fetch_add(1, SeqCst);
            self.ledger.in_flight.fetch_sub(1, SeqCst);
            self.ledger.dropped.fetch_add(1, SeqCst);
        }
    }
}

impl Service<usize> for Inner {
    type Response = usize;
    type Error = Error;
    type Future = Call;
    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, id: usize) -> Call {
        let l = &self.ledger;
        l.called[id].fetch_add(1, SeqCst);
        let now = l.in_flight.fetch_add(1, SeqCst) + 1;
        l.peak_in_flight.fetch_max(now, SeqCst);
        if let Some(q) = &*self.stats.lock().unwrap() {
            let s = q.stats();
            assert!(s.queued <= CAPACITY, "queued {} > capacity", s.queued);
            assert!(s.running <= WORKERS, "running {} > workers", s.running);
        }
        Call {
            ledger: Arc::clone(&self.ledger),
            id,
            yields: id % 4,
            panic: self.panics[id],
            ended: false,
        }
    }
}

/// How a caller behaves with one request.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Awaits the outcome.
    Wait,
    /// Drops its response future after this many polls.
    LeaveAfter(usize),
    /// Runs in a context whose token is cancelled after this many yields.
    CancelAfter(usize),
}

struct PollAtMost<F> {
    fut: Pin<Box<F>>,
    left: usize,
}

impl<F: Future> Future for PollAtMost<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        match self.fut.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_run_of_100_000_requests_gives_each_exactly_one_outcome() {
    const N: usize = 100_000;
    const CALLERS: usize = 64;
    let mut rng = SmallRng::seed_from_u64(0x5eed_0015);
    let panics: Vec<bool> = (0..N).map(|_| rng.random_ratio(1, 100)).collect();
    let plans: Vec<Plan> = (0..N)
        .map(|_| match rng.random_range(0..100) {
            0..=79 => Plan::Wait,
            80..=89 => Plan::LeaveAfter(rng.random_range(0..4)),
            _ => Plan::CancelAfter(rng.random_range(0..4)),
        })
        .collect();
    let ledger = Arc::new(Ledger {
        called: (0..N).map(|_| AtomicUsize::new(0)).collect(),
        ended: (0..N).map(|_| AtomicUsize::new(0)).collect(),
        ..Ledger::default()
    });
    let slot = Arc::new(Mutex::new(None));
    let inner = Inner {
        ledger: Arc::clone(&ledger),
        panics: Arc::new(panics.clone()),
        stats: Arc::clone(&slot),
    };
    let svc: Queue<usize, usize> = QueueLayer::new(CAPACITY, WORKERS).layer(inner);
    *slot.lock().unwrap() = Some(svc.clone());
    let plans = Arc::new(plans);
    let panics = Arc::new(panics);

    // outcome per id: 0 none yet; one increment per resolved caller future.
    let outcomes: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
    let after_close: Arc<Vec<AtomicBool>> =
        Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let svc = svc.clone();
        let plans = Arc::clone(&plans);
        let panics = Arc::clone(&panics);
        let outcomes = Arc::clone(&outcomes);
        let after_close = Arc::clone(&after_close);
        callers.push(tokio::spawn(async move {
            let mut id = c;
            while id < N {
                if id == N / 2 {
                    // Close in the middle of the run.
                    svc.close();
                }
                after_close[id].store(svc.is_closed(), SeqCst);
                let fut = svc.clone().oneshot(id);
                let result = match plans[id] {
                    Plan::Wait => Some(fut.await),
                    Plan::LeaveAfter(k) => {
                        PollAtMost {
                            fut: Box::pin(fut),
                            left: k,
                        }
                        .await
                    }
                    Plan::CancelAfter(k) => {
                        let token = CancellationToken::new();
                        let t2 = token.clone();
                        tokio::spawn(async move {
                            for _ in 0..k {
                                tokio::task::yield_now().await;
                            }
                            t2.cancel();
                        });
                        Some(Context::new().with_cancellation(token).scope(fut).await)
                    }
                };
                if let Some(r) = result {
                    outcomes[id].fetch_add(1, SeqCst);
                    match r {
                        Ok(v) => {
                            assert_eq!(v, id, "a caller got another request's answer");
                            assert!(!panics[id]);
                        }
                        Err(e) => match e.kind() {
                            ErrorKind::Inner => {
                                assert!(panics[id], "only planned panics fail: {e}");
                                assert!(e.find_source::<Panicked>().is_some());
                            }
                            ErrorKind::Closed => {}
                            ErrorKind::Cancelled => {
                                assert!(matches!(plans[id], Plan::CancelAfter(_)));
                            }
                            k => panic!("unexpected {k:?}: {e}"),
                        },
                    }
                }
                id += CALLERS;
            }
        }));
    }
    for c in callers {
        tokio::time::timeout(std::time::Duration::from_secs(120), c)
            .await
            .expect("no caller hangs: every request gets an outcome")
            .unwrap();
    }
    tokio::time::timeout(std::time::Duration::from_secs(30), svc.stopped())
        .await
        .expect("every worker exits after close");
    let s = svc.stats();
    assert_eq!(s.live_workers, 0);
    assert_eq!((s.queued, s.running), (0, 0));
    assert!(ledger.peak_in_flight.load(SeqCst) <= WORKERS);

    let mut ran = 0;
    for id in 0..N {
        let called = ledger.called[id].load(SeqCst);
        assert!(called <= 1, "request {id} ran {called} times");
        assert_eq!(
            ledger.ended[id].load(SeqCst),
            called,
            "request {id} still running"
        );
        ran += called;
        let outcome = outcomes[id].load(SeqCst);
        assert!(outcome <= 1, "request {id} answered {outcome} times");
        if matches!(plans[id], Plan::Wait | Plan::CancelAfter(_)) {
            assert_eq!(outcome, 1, "request {id} lost");
        }
        if after_close[id].load(SeqCst) {
            assert_eq!(called, 0, "request {id} was accepted after close");
        }
    }
    let finished = ledger.finished.load(SeqCst);
    let panicked = ledger.panicked.load(SeqCst);
    let dropped = ledger.dropped.load(SeqCst);
    assert_eq!(ran, finished + panicked + dropped);
    assert_eq!(s.completed as usize, finished);
    assert_eq!(s.panicked as usize, panicked);
    assert_eq!(s.abandoned as usize, dropped);
    assert!(s.skipped > 0, "some abandoned work was skipped");
    assert!(ran > N / 4 && ran < N / 2 + CALLERS, "ran {ran}");
}

#[tokio::test(start_paused = true)]
async fn cancel_at_every_poll_leaks_no_slot() {
    let mock = MockService::new(|n: u32| MockReply::ok(n).after_yield().after_yield());
    let svc: Queue<u32, u32> = Queue::new(mock.clone(), 2, 1);
    let check_svc = svc.clone();
    let drops = cancel_at_every_poll(
        || svc.clone().oneshot(1),
        || {
            let s = check_svc.stats();
            if s.queued + s.running > 1 {
                return Err(format!("{} queued + {} running", s.queued, s.running));
            }
            Ok(())
        },
    )
    .await
    .unwrap();
    assert!(drops >= 2, "{drops}");
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let s = svc.stats();
    assert_eq!(
        (s.queued, s.running),
        (0, 0),
        "no slot held after the harness"
    );
    assert_eq!(mock.inflight(), 0);
    assert_eq!(
        s.completed + s.skipped + s.abandoned,
        drops as u64,
        "each run ended one way: {s:?}"
    );
    // Every slot is usable again: the worker busy, the queue full.
    let gate = rampart_testkit::Gate::new();
    let g = gate.clone();
    mock.push(MockReply::ok(10).after_gate(&g));
    let calls: Vec<_> = (10..13)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let s = svc.stats();
    assert_eq!((s.running, s.queued), (1, 2));
    gate.open();
    for (i, c) in (10..).zip(calls) {
        assert_eq!(c.await.unwrap().unwrap(), i);
    }
}
