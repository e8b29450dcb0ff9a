//! KeyedLockLayer: mutual exclusion per key, parallelism across keys, FIFO,
//! a key map that empties, waiters that leave cleanly, holders that release
//! on drop and panic, the request's cancellation and deadline.

use futures_util::future::join_all;
use rampart_core::{CancellationToken, Context, ErrorKind};
use rampart_sync::KeyedLockLayer;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

type Req = (u32, u32); // (key, call id)

/// An inner service that records the order calls start in, and finishes a
/// call only when the gate gives it a permit.
#[derive(Clone)]
struct Recorder {
    started: Arc<Mutex<Vec<u32>>>,
    gate: Arc<Semaphore>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            started: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Recorder {
    fn started(&self) -> Vec<u32> {
        self.started.lock().unwrap().clone()
    }

    fn service(
        &self,
    ) -> impl Service<Req, Response = u32, Error = std::io::Error, Future: Send> + Clone + Send + use<>
    {
        let me = self.clone();
        service_fn(move |(_, id): Req| {
            let me = me.clone();
            async move {
                me.started.lock().unwrap().push(id);
                me.gate.acquire().await.unwrap().forget();
                Ok(id)
            }
        })
    }
}

fn by_key() -> KeyedLockLayer<fn(&Req) -> u32> {
    KeyedLockLayer::new(|r: &Req| r.0)
}

/// Polls `fut` once, without blocking.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await
}

/// Lets every ready task run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_calls_never_overlap_and_other_keys_overlap_on_a_multi_thread_runtime() {
    const KEYS: u32 = 4;
    let in_flight: Arc<Vec<AtomicUsize>> =
        Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let violations = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let peak_total = Arc::new(AtomicUsize::new(0));
    let (f, v, t, p) = (
        in_flight.clone(),
        violations.clone(),
        total.clone(),
        peak_total.clone(),
    );
    let inner = service_fn(move |(key, _): Req| {
        let (f, v, t, p) = (f.clone(), v.clone(), t.clone(), p.clone());
        async move {
            if f[key as usize].fetch_add(1, Ordering::SeqCst) != 0 {
                v.fetch_add(1, Ordering::SeqCst);
            }
            let now = t.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            std::thread::sleep(Duration::from_micros(50));
            t.fetch_sub(1, Ordering::SeqCst);
            f[key as usize].fetch_sub(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(key)
        }
    });
    let lock = by_key();
    let svc = lock.layer(inner);
    let tasks: Vec<_> = (0..400u32)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot((i % KEYS, i)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "two same-key calls ran at once"
    );
    assert!(
        peak_total.load(Ordering::SeqCst) > 1,
        "calls with different keys never ran in parallel"
    );
    assert_eq!(lock.stats().keys, 0);
    assert_eq!(lock.stats().waiting, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_modify_write_with_an_await_inside_loses_no_update() {
    // The article's counter: two workers increment it five times each.
    let value = Arc::new(AtomicUsize::new(0));
    let v = value.clone();
    let inner = service_fn(move |_: &'static str| {
        let v = v.clone();
        async move {
            let read = v.load(Ordering::SeqCst);
            tokio::task::yield_now().await;
            v.store(read + 1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(read + 1)
        }
    });
    let svc = KeyedLockLayer::new(|_: &&'static str| "counter").layer(inner);
    let worker = |svc: rampart_sync::KeyedLock<_, _>| async move {
        for _ in 0..5 {
            svc.clone().oneshot("counter").await.unwrap();
        }
    };
    tokio::join!(worker(svc.clone()), worker(svc.clone()));
    assert_eq!(value.load(Ordering::SeqCst), 10);
}

#[tokio::test(start_paused = true)]
async fn a_held_key_does_not_block_another_key() {
    let rec = Recorder::default();
    let mut svc = by_key().layer(rec.service());
    let mut held = Box::pin(svc.ready().await.unwrap().call((1, 1)));
    assert!(poll_once(&mut held).await.is_pending());
    let mut other = Box::pin(svc.ready().await.unwrap().call((2, 2)));
    assert!(poll_once(&mut other).await.is_pending());
    assert_eq!(
        rec.started(),
        vec![1, 2],
        "key 2 started while key 1 was held"
    );
    rec.gate.add_permits(2);
    assert_eq!(other.await.unwrap(), 2);
    assert_eq!(held.await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_the_order_of_their_calls_not_of_their_polls() {
    let rec = Recorder::default();
    let lock = by_key();
    let mut svc = lock.layer(rec.service());
    let mut futs = Vec::new();
    for id in 0..6 {
        futs.push(Box::pin(svc.ready().await.unwrap().call((7, id))));
    }
    // Polled last-first: the line is the order of `call`.
    for f in futs.iter_mut().rev() {
        assert!(poll_once(f).await.is_pending());
    }
    assert_eq!(lock.stats().keys, 1);
    assert_eq!(lock.stats().waiting, 5);
    let all = tokio::spawn(join_all(futs));
    rec.gate.add_permits(6);
    let out: Vec<u32> = all.await.unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!(out, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(rec.started(), vec![0, 1, 2, 3, 4, 5]);
    let s = lock.stats();
    assert_eq!((s.keys, s.waiting, s.waited, s.gave_up), (0, 0, 5, 0));
}

#[tokio::test]
async fn key_map_empties_after_a_burst_of_100_000_distinct_keys() {
    let lock = KeyedLockLayer::new(|r: &u32| *r);
    let mut svc = lock.layer(service_fn(|r: u32| async move {
        tokio::task::yield_now().await;
        Ok::<_, std::io::Error>(r)
    }));
    let mut futs = Vec::with_capacity(100_000);
    for i in 0..100_000u32 {
        futs.push(svc.ready().await.unwrap().call(i));
    }
    // Every key is held at once, none waits.
    let s = lock.stats();
    assert_eq!((s.keys, s.waiting), (100_000, 0));
    let out = join_all(futs).await;
    assert!(out.iter().all(Result::is_ok));
    let s = lock.stats();
    assert_eq!((s.keys, s.waiting, s.waited), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_gives_up_leaves_without_disturbing_the_others() {
    let rec = Recorder::default();
    let lock = by_key();
    let mut svc = lock.layer(rec.service());
    let mut futs: Vec<_> = Vec::new();
    for id in 0..4 {
        let mut f = Box::pin(svc.ready().await.unwrap().call((1, id)));
        assert!(poll_once(&mut f).await.is_pending());
        futs.push(Some(f));
    }
    futs[2] = None; // gives up
    assert_eq!(lock.stats().waiting, 2);
    rec.gate.add_permits(3);
    let rest = join_all(futs.into_iter().flatten()).await;
    let out: Vec<u32> = rest.into_iter().map(Result::unwrap).collect();
    assert_eq!(out, vec![0, 1, 3]);
    assert_eq!(rec.started(), vec![0, 1, 3]);
    let s = lock.stats();
    assert_eq!((s.keys, s.waiting, s.gave_up), (0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_dropped_just_after_being_handed_the_key_passes_it_on() {
    let rec = Recorder::default();
    let lock = by_key();
    let mut svc = lock.layer(rec.service());
    let mut holder = Box::pin(svc.ready().await.unwrap().call((1, 0)));
    let mut granted = Box::pin(svc.ready().await.unwrap().call((1, 1)));
    let mut next = Box::pin(svc.ready().await.unwrap().call((1, 2)));
    assert!(poll_once(&mut holder).await.is_pending());
    rec.gate.add_permits(1);
    assert_eq!(holder.await.unwrap(), 0); // hands the key to `granted`...
    drop(granted); // ...which leaves before it ever runs
    rec.gate.add_permits(1);
    assert_eq!(next.as_mut().await.unwrap(), 2);
    assert_eq!(rec.started(), vec![0, 2]);

    // The same with nobody behind: the key leaves the map, a new call
    // takes it at once.
    let mut holder = Box::pin(svc.ready().await.unwrap().call((1, 3)));
    granted = Box::pin(svc.ready().await.unwrap().call((1, 4)));
    assert!(poll_once(&mut holder).await.is_pending());
    rec.gate.add_permits(1);
    holder.await.unwrap();
    drop(granted);
    assert_eq!(lock.stats().keys, 0);
    let mut fresh = Box::pin(svc.ready().await.unwrap().call((1, 5)));
    assert!(poll_once(&mut fresh).await.is_pending());
    assert_eq!(rec.started(), vec![0, 2, 3, 5]);
    rec.gate.add_permits(1);
    fresh.await.unwrap();
    assert_eq!(lock.stats().keys, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_holder_releases_the_key() {
    let rec = Recorder::default();
    let lock = by_key();
    let mut svc = lock.layer(rec.service());
    let mut holder = Box::pin(svc.ready().await.unwrap().call((1, 0)));
    assert!(poll_once(&mut holder).await.is_pending());
    let mut waiter = Box::pin(svc.ready().await.unwrap().call((1, 1)));
    assert!(poll_once(&mut waiter).await.is_pending());
    drop(holder);
    rec.gate.add_permits(1);
    assert_eq!(waiter.await.unwrap(), 1);
    assert_eq!(lock.stats().keys, 0);
}

#[tokio::test]
async fn a_panicking_holder_releases_the_key() {
    let lock = KeyedLockLayer::new(|_: &bool| ());
    let svc = lock.layer(service_fn(|panic: bool| async move {
        tokio::task::yield_now().await;
        assert!(!panic, "inner service panicked");
        Ok::<_, std::io::Error>(())
    }));
    let panicking = tokio::spawn(svc.clone().oneshot(true));
    let after = tokio::spawn(svc.clone().oneshot(false));
    assert!(panicking.await.unwrap_err().is_panic());
    after.await.unwrap().unwrap();
    assert_eq!(lock.stats().keys, 0);
}

#[tokio::test]
async fn a_panic_in_the_inner_call_itself_releases_the_key() {
    #[derive(Clone)]
    struct PanicsInCall;
    impl Service<bool> for PanicsInCall {
        type Response = ();
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<(), std::io::Error>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, panic: bool) -> Self::Future {
            assert!(!panic, "call panicked");
            std::future::ready(Ok(()))
        }
    }
    let lock = KeyedLockLayer::new(|_: &bool| ());
    let svc = lock.layer(PanicsInCall);
    assert!(
        tokio::spawn(svc.clone().oneshot(true))
            .await
            .unwrap_err()
            .is_panic()
    );
    assert_eq!(lock.stats().keys, 0);
    svc.oneshot(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiter_wakes_on_its_cancellation_token_with_cancelled() {
    let rec = Recorder::default();
    let lock = by_key();
    let mut svc = lock.layer(rec.service());
    let mut holder = Box::pin(svc.ready().await.unwrap().call((1, 0)));
    assert!(poll_once(&mut holder).await.is_pending());
    let token = CancellationToken::new();
    let ctx = Context::new().with_cancellation(token.clone());
    let waiter = svc.ready().await.unwrap().call((1, 1));
    let waiting = tokio::spawn(ctx.scope(waiter));
    settle().await;
    assert_eq!(lock.stats().waiting, 1);
    let before = Instant::now();
    token.cancel();
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(before.elapsed(), Duration::ZERO);
    assert_eq!(lock.stats().waiting, 0);
    rec.gate.add_permits(1);
    holder.await.unwrap();
    assert_eq!(rec.started(), vec![0], "the cancelled call never ran");
    assert_eq!(lock.stats().keys, 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_never_waits_past_its_deadline() {
    let rec = Recorder::default();
    let lock = by_key();
    let mut svc = lock.layer(rec.service());
    let mut holder = Box::pin(svc.ready().await.unwrap().call((1, 0)));
    assert!(poll_once(&mut holder).await.is_pending());
    let start = Instant::now();
    let ctx = Context::new().with_deadline(start + Duration::from_millis(250));
    let err = ctx
        .scope(svc.ready().await.unwrap().call((1, 1)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_millis(250));

    // A deadline already passed: refused at once.
    let ctx = Context::new().with_deadline(Instant::now());
    let err = ctx
        .scope(svc.ready().await.unwrap().call((1, 2)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(lock.stats().gave_up, 2);
    rec.gate.add_permits(1);
    holder.await.unwrap();
    assert_eq!(rec.started(), vec![0]);
    assert_eq!(lock.stats().keys, 0);
}

#[tokio::test(start_paused = true)]
async fn a_free_key_is_taken_even_with_an_expired_deadline_context() {
    // Nothing to wait for: the lock adds no deadline check of its own.
    let lock = by_key();
    let rec = Recorder::default();
    rec.gate.add_permits(1);
    let svc = lock.layer(rec.service());
    let ctx = Context::new().with_deadline(Instant::now());
    assert_eq!(ctx.scope(svc.oneshot((1, 9))).await.unwrap(), 9);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_waiter_at_every_poll_leaves_the_map_empty() {
    let lock = KeyedLockLayer::new(|_: &u32| ());
    let svc = lock.layer(service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, std::io::Error>(n)
    }));
    let polls = rampart_testkit::cancel_at_every_poll(
        || {
            let (a, b) = (svc.clone(), svc.clone());
            async move { tokio::join!(a.oneshot(1), b.oneshot(2)) }
        },
        || match lock.stats() {
            s if s.keys == 0 && s.waiting == 0 => Ok(()),
            s => Err(format!("left behind: {s:?}")),
        },
    )
    .await
    .unwrap();
    assert!(polls >= 2);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_come_back_as_inner() {
    let svc = by_key().layer(service_fn(|_: Req| async {
        Err::<u32, _>(std::io::Error::other("boom"))
    }));
    let err = svc.oneshot((1, 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Inner);
    assert!(err.find_source::<std::io::Error>().is_some());
}

#[test]
fn clones_of_the_layer_share_one_map() {
    let lock = by_key();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let rec = Recorder::default();
        let mut a = lock.clone().layer(rec.service());
        let mut b = lock.layer(rec.service());
        let mut first = Box::pin(a.ready().await.unwrap().call((3, 0)));
        assert!(poll_once(&mut first).await.is_pending());
        let mut second = Box::pin(b.ready().await.unwrap().call((3, 1)));
        assert!(poll_once(&mut second).await.is_pending());
        assert_eq!(rec.started(), vec![0]);
        let s = lock.stats();
        assert_eq!((s.keys, s.waiting), (1, 1));
        rec.gate.add_permits(2);
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(rec.started(), vec![0, 1]);
    });
}

/// Decrements its counter when dropped.
struct Out<'a>(&'a AtomicUsize);

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A small seeded generator (xorshift64*), so the stress test repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_abandoning_at_random_points_never_break_exclusion_or_leave_keys() {
    const KEYS: u64 = 3;
    let in_flight: Arc<Vec<AtomicUsize>> =
        Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let violations = Arc::new(AtomicUsize::new(0));
    let (f, v) = (in_flight.clone(), violations.clone());
    let inner = service_fn(move |key: u64| {
        let (f, v) = (f.clone(), v.clone());
        async move {
            if f[key as usize].fetch_add(1, Ordering::SeqCst) != 0 {
                v.fetch_add(1, Ordering::SeqCst);
            }
            // Released on drop too: an abandoned holder counts as done.
            let _out = Out(&f[key as usize]);
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            Ok::<_, std::io::Error>(key)
        }
    });
    let lock = KeyedLockLayer::new(|k: &u64| *k);
    let svc = lock.layer(inner);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let tasks: Vec<_> = (0..3000)
        .map(|_| {
            let key = rng.below(KEYS);
            let patience = rng.below(12); // yields before giving up; 0..3: often while waiting
            let give_up = rng.below(3) == 0;
            let svc = svc.clone();
            tokio::spawn(async move {
                let call = svc.oneshot(key);
                if give_up {
                    tokio::select! {
                        biased;
                        r = call => r.map(|_| ()),
                        () = async { for _ in 0..patience { tokio::task::yield_now().await } } => Ok(()),
                    }
                } else {
                    call.await.map(|_| ())
                }
            })
        })
        .collect();
    let all = async {
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("no caller was left waiting forever");
    assert_eq!(violations.load(Ordering::SeqCst), 0);
    let s = lock.stats();
    assert_eq!((s.keys, s.waiting), (0, 0));
    assert!(s.gave_up > 0, "the test never abandoned a waiter");
}

#[tokio::test]
#[should_panic(expected = "keyed lock ResponseFuture polled after completion")]
async fn polling_after_completion_panics() {
    let mut svc = by_key().layer(service_fn(|(_, id): Req| async move {
        Ok::<_, std::io::Error>(id)
    }));
    let mut fut = Box::pin(svc.ready().await.unwrap().call((1, 1)));
    assert!(matches!(poll_once(&mut fut).await, Poll::Ready(Ok(1))));
    let _ = poll_once(&mut fut).await;
}
