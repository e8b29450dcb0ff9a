//! CoalesceLayer: one inner call per key in flight, shared by every waiter;
//! survives its leader, dropped with its last waiter, woken by the result
//! only; shared errors, panics, time to live, cancellation and deadlines.

use futures_util::future::join_all;
use rampart_core::{CancellationToken, Context, Error, ErrorKind, RequestId};
use rampart_sync::{CoalesceLayer, SharedError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// What the inner service saw.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    completed: AtomicUsize,
    dropped: AtomicUsize,
}

/// Counts its drops (a call's future dropped before completing counts).
struct DropFlag(Arc<Seen>, bool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// An inner service answering `format!("v{key}")` once the gate lets it.
fn gated(
    seen: &Arc<Seen>,
    gate: &Arc<Semaphore>,
) -> impl Service<u32, Response = String, Error = std::io::Error, Future: Send + 'static> + Clone + use<>
{
    let (seen, gate) = (seen.clone(), gate.clone());
    service_fn(move |key: u32| {
        seen.calls.fetch_add(1, Ordering::SeqCst);
        let (seen, gate) = (seen.clone(), gate.clone());
        async move {
            let mut flag = DropFlag(seen.clone(), false);
            gate.acquire().await.unwrap().forget();
            seen.completed.fetch_add(1, Ordering::SeqCst);
            flag.1 = true;
            Ok(format!("v{key}"))
        }
    })
}

fn by_value() -> CoalesceLayer<fn(&u32) -> u32> {
    CoalesceLayer::new(|k: &u32| *k)
}

/// Polls `fut` once, without blocking.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Counts the polls of the future it wraps.
struct CountPolls<F> {
    fut: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.fut.as_mut().poll(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_same_key_calls_reach_the_inner_service_once() {
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let coalesce = by_value();
    let svc = coalesce.layer(gated(&seen, &gate));
    let tasks: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(svc.clone().oneshot(42)))
        .collect();
    while coalesce.stats().waiting < 1000 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "v42");
    }
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    let s = coalesce.stats();
    assert_eq!(
        (s.calls, s.coalesced, s.in_flight, s.waiting),
        (1, 999, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn different_keys_make_different_calls_and_a_finished_call_is_not_reused() {
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(10)));
    let svc = by_value().layer(gated(&seen, &gate));
    let (a, b) = tokio::join!(svc.clone().oneshot(1), svc.clone().oneshot(2));
    assert_eq!((a.unwrap(), b.unwrap()), ("v1".into(), "v2".into()));
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "v1");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);
    assert_eq!(svc.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_leader_cancelled_mid_call_leaves_the_call_running_for_the_followers() {
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let mut svc = by_value().layer(gated(&seen, &gate));
    let mut leader = Box::pin(svc.ready().await.unwrap().call(5));
    assert!(poll_once(&mut leader).await.is_pending());
    let followers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(svc.clone().oneshot(5)))
        .collect();
    settle().await;
    drop(leader);
    settle().await;
    assert_eq!(
        seen.dropped.load(Ordering::SeqCst),
        0,
        "the call died with its leader"
    );
    gate.add_permits(1);
    for f in followers {
        assert_eq!(f.await.unwrap().unwrap(), "v5");
    }
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    assert_eq!(seen.completed.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_call_is_dropped_when_every_waiter_has_gone() {
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let coalesce = by_value();
    let mut svc = coalesce.layer(gated(&seen, &gate));
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let mut w = Box::pin(svc.ready().await.unwrap().call(9));
        assert!(poll_once(&mut w).await.is_pending());
        waiters.push(w);
    }
    settle().await;
    let last = waiters.pop().unwrap();
    drop(waiters);
    settle().await;
    assert_eq!(
        seen.dropped.load(Ordering::SeqCst),
        0,
        "dropped while a waiter remained"
    );
    drop(last);
    settle().await;
    assert_eq!(
        seen.dropped.load(Ordering::SeqCst),
        1,
        "the call outlived its waiters"
    );
    let s = coalesce.stats();
    assert_eq!((s.in_flight, s.waiting, s.abandoned), (0, 0, 1));
    // The key is free again: a new request makes a new call.
    gate.add_permits(1);
    assert_eq!(svc.oneshot(9).await.unwrap(), "v9");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lone_first_caller_dropped_mid_call_drops_the_call_at_once() {
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let coalesce = by_value();
    let mut svc = coalesce.layer(gated(&seen, &gate));
    let mut only = Box::pin(svc.ready().await.unwrap().call(3));
    assert!(poll_once(&mut only).await.is_pending());
    drop(only);
    assert_eq!(seen.dropped.load(Ordering::SeqCst), 1);
    let s = coalesce.stats();
    assert_eq!((s.in_flight, s.waiting, s.abandoned), (0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_polled_a_constant_number_of_times_however_often_the_call_wakes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let inner = service_fn(move |k: u32| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            // Wakes up 10 000 times, then sleeps 200 ms, before answering.
            for _ in 0..10_000 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, std::io::Error>(k)
        }
    });
    let mut svc = by_value().layer(inner);
    let polls: Vec<_> = (0..100).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut tasks = Vec::new();
    for p in &polls {
        let fut = svc.ready().await.unwrap().call(1);
        tasks.push(tokio::spawn(CountPolls {
            fut: Box::pin(fut),
            polls: p.clone(),
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The first caller drives the call in its own task, polled as often as
    // the call needs (as it would be without the layer); every other
    // caller is polled once, then woken once by the result.
    let polls: Vec<usize> = polls.iter().map(|p| p.load(Ordering::SeqCst)).collect();
    assert!(
        polls[0] > 10_000,
        "the first caller drove the call: {}",
        polls[0]
    );
    let max = polls[1..].iter().max().unwrap();
    assert!(*max <= 2, "a waiter was polled {max} times");
}

#[tokio::test(start_paused = true)]
async fn an_error_is_shared_with_every_waiter() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let inner = service_fn(move |k: u32| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::task::yield_now().await;
            match k {
                1 => Err::<u32, Error>(Error::from_inner(std::io::Error::other("disk on fire"))),
                _ => Err(Error::overloaded(Some(Duration::from_secs(3)))),
            }
        }
    });
    let svc = by_value().layer(inner);
    let out = join_all((0..10).map(|_| svc.clone().oneshot(1))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for r in out {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Inner);
        assert_eq!(
            e.find_source::<std::io::Error>().unwrap().to_string(),
            "disk on fire"
        );
        assert!(e.find_source::<SharedError>().is_some());
        assert_eq!(e.to_string(), "inner service error: disk on fire");
    }
    // A rampart error keeps its kind and retry-after for every waiter.
    let out = join_all((0..3).map(|_| svc.clone().oneshot(2))).await;
    for r in out {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_call_fails_its_waiters_instead_of_leaving_them_hanging() {
    let coalesce = by_value();
    let svc = coalesce.layer(service_fn(|k: u32| async move {
        tokio::task::yield_now().await;
        assert!(k != 0, "inner service panicked");
        Ok::<_, std::io::Error>(k)
    }));
    let out = join_all((0..4).map(|_| svc.clone().oneshot(0))).await;
    for r in out {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Inner);
    }
    assert_eq!(coalesce.stats().in_flight, 0);
    assert_eq!(svc.oneshot(3).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_inner_call_that_panics_leaves_no_caller_waiting_or_call_in_flight() {
    let coalesce = by_value();
    let mut svc = coalesce.layer(service_fn(|k: u32| {
        assert!(k != 0, "inner service's call panicked");
        async move { Ok::<_, std::io::Error>(k) }
    }));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(svc.call(0));
    }));
    assert!(caught.is_err());
    let s = coalesce.stats();
    assert_eq!((s.waiting, s.in_flight, s.abandoned), (0, 0, 0));
    // The key is free again: a later call is not stuck behind the failed one.
    assert_eq!(svc.clone().oneshot(3).await.unwrap(), 3);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(svc.call(0));
    }));
    assert!(caught.is_err());
    assert_eq!(coalesce.stats().waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn a_success_is_kept_for_the_time_to_live_and_no_longer() {
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(100)));
    let coalesce = CoalesceLayer::time_to_live(|k: &u32| *k, Duration::from_secs(1));
    let svc = coalesce.layer(gated(&seen, &gate));
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "v1");
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "v1");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    assert_eq!(coalesce.stats().cached, 1);
    tokio::time::advance(Duration::from_millis(2)).await;
    settle().await;
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "v1");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_not_kept_for_the_time_to_live() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let coalesce = CoalesceLayer::time_to_live(|k: &u32| *k, Duration::from_secs(60));
    let svc = coalesce.layer(service_fn(move |_: u32| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Err::<u32, _>(std::io::Error::other("no")) }
    }));
    assert!(svc.clone().oneshot(1).await.is_err());
    assert!(svc.clone().oneshot(1).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_with_cancelled_and_the_others_keep_waiting() {
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let mut svc = by_value().layer(gated(&seen, &gate));
    let token = CancellationToken::new();
    let leader = tokio::spawn(
        Context::new()
            .with_cancellation(token.clone())
            .scope(svc.ready().await.unwrap().call(4)),
    );
    let follower = tokio::spawn(svc.clone().oneshot(4));
    settle().await;
    let before = Instant::now();
    token.cancel();
    assert_eq!(
        leader.await.unwrap().unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    assert_eq!(before.elapsed(), Duration::ZERO);
    gate.add_permits(1);
    assert_eq!(follower.await.unwrap().unwrap(), "v4");
    assert_eq!(seen.dropped.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_never_waits_past_its_deadline() {
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let svc = by_value().layer(gated(&seen, &gate));
    let start = Instant::now();
    let err = Context::new()
        .with_timeout(Duration::from_millis(300))
        .scope(svc.clone().oneshot(8))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    settle().await;
    // Its only waiter gone, the call was dropped.
    assert_eq!(seen.dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_shared_call_keeps_the_leaders_request_id_but_not_its_cancellation() {
    let inner = service_fn(|_: u32| async {
        let ctx = Context::current().expect("a context");
        Ok::<_, std::io::Error>((
            ctx.request_id().map(|id| id.as_str().to_owned()),
            ctx.cancellation().is_some(),
            ctx.deadline().is_some(),
        ))
    });
    let svc = by_value().layer(inner);
    let ctx = Context::new()
        .with_request_id(RequestId::parse(b"req-7").unwrap())
        .with_cancellation(CancellationToken::new())
        .with_timeout(Duration::from_secs(5));
    let seen = ctx.scope_call(|| svc.clone().oneshot(1)).await.unwrap();
    assert_eq!(seen, (Some("req-7".to_owned()), false, false));
}

#[tokio::test(start_paused = true)]
async fn cancelling_at_every_poll_leaves_nothing_in_flight() {
    let coalesce = by_value();
    let svc = coalesce.layer(service_fn(|k: u32| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, std::io::Error>(k)
    }));
    let polls = rampart_testkit::cancel_at_every_poll(
        || {
            let (a, b) = (svc.clone(), svc.clone());
            async move { tokio::join!(a.oneshot(1), b.oneshot(1)) }
        },
        || match coalesce.stats() {
            s if s.waiting == 0 => Ok(()),
            s => Err(format!("left behind: {s:?}")),
        },
    )
    .await
    .unwrap();
    assert!(polls >= 1);
    settle().await;
    assert_eq!(coalesce.stats().in_flight, 0);
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
async fn callers_abandoning_at_random_points_never_hang_or_get_a_wrong_answer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let coalesce = CoalesceLayer::new(|k: &u64| *k);
    let svc = coalesce.layer(service_fn(move |k: u64| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            Ok::<_, std::io::Error>(k * 10)
        }
    }));
    let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
    let tasks: Vec<_> = (0..3000)
        .map(|_| {
            let key = rng.below(4);
            let patience = rng.below(8);
            let give_up = rng.below(3) == 0;
            let svc = svc.clone();
            tokio::spawn(async move {
                let call = svc.oneshot(key);
                if give_up {
                    tokio::select! {
                        biased;
                        r = call => Some(r.map(|v| (key, v))),
                        () = async { for _ in 0..patience { tokio::task::yield_now().await } } => None,
                    }
                } else {
                    Some(call.await.map(|v| (key, v)))
                }
            })
        })
        .collect();
    let all = async {
        for t in tasks {
            if let Some(r) = t.await.unwrap() {
                let (key, v) = r.unwrap();
                assert_eq!(v, key * 10);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("no caller was left waiting forever");
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let s = coalesce.stats();
    assert_eq!((s.in_flight, s.waiting), (0, 0));
    assert!(s.coalesced > 0, "nothing was coalesced");
    assert!(calls.load(Ordering::SeqCst) < 3000);
}

#[tokio::test]
async fn polling_again_after_giving_up_gives_the_same_error() {
    let mut svc = by_value().layer(service_fn(|k: u32| async move {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(k)
    }));
    let mut fut = Box::pin(svc.ready().await.unwrap().call(1));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let expired = Context::new().with_deadline(Instant::now());
    let first = expired.sync_scope(|| fut.as_mut().poll(&mut cx));
    assert!(matches!(first, Poll::Ready(Err(ref e)) if e.kind() == ErrorKind::DeadlineExceeded));
    let again = fut.as_mut().poll(&mut cx);
    assert!(matches!(again, Poll::Ready(Err(ref e)) if e.kind() == ErrorKind::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn one_layer_serves_services_of_different_key_and_response_types() {
    let coalesce = CoalesceLayer::new(|k: &u32| *k);
    let numbers = coalesce.layer(service_fn(|k: u32| async move {
        Ok::<_, std::io::Error>(k + 1)
    }));
    let words = coalesce.layer(service_fn(|k: u32| async move {
        Ok::<_, std::io::Error>(format!("#{k}"))
    }));
    assert_eq!(numbers.oneshot(1).await.unwrap(), 2);
    assert_eq!(words.oneshot(1).await.unwrap(), "#1");
    assert_eq!(coalesce.stats().calls, 2);
}
