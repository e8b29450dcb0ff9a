//! Attempts, backoff timing, deadlines, max_elapsed, cancellation safety —
//! on a paused clock with scripted mock services.

use proptest::prelude::*;
use rampart_core::{Context, ErrorKind};
use rampart_retry::{Backoff, Jitter, OnExhausted, RetryLayer, RetryStats};
use rampart_testkit::{MockError, MockReply, MockService, cancel_at_every_poll};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// A mock that always fails and records when each attempt arrived.
fn failing_recorder() -> (MockService<u32, u32>, Arc<Mutex<Vec<Instant>>>) {
    let svc = MockService::new(|_req: u32| MockReply::err("boom"));
    let times = Arc::new(Mutex::new(Vec::new()));
    let t = times.clone();
    svc.on_call(move |_| t.lock().unwrap().push(Instant::now()));
    (svc, times)
}

fn ceil_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap())
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn max_attempts_counts_the_first_call() {
    let (svc, _) = failing_recorder();
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(MS * 10))
        .stats()
        .build()
        .unwrap();
    let err = layer.layer(svc.clone()).oneshot(1).await.unwrap_err();
    assert_eq!(svc.calls(), 3);
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted);
    assert_eq!(err.attempts(), Some(3));
    assert_eq!(err.find_source::<MockError>().unwrap().message(), "boom");
    assert_eq!(
        layer.stats(),
        Some(RetryStats {
            calls: 1,
            retries: 2,
            budget_rejections: 0,
            exhausted: 1
        })
    );
}

#[tokio::test(start_paused = true)]
async fn on_exhausted_last_error_returns_the_inner_error() {
    let (svc, _) = failing_recorder();
    let err = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::none())
        .on_exhausted(OnExhausted::LastError)
        .build()
        .unwrap()
        .layer(svc.clone())
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Inner);
    assert_eq!(err.to_string(), "inner service error: boom");
    assert_eq!(svc.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn success_after_failures_returns_the_response() {
    let svc = MockService::scripted([MockReply::err("a"), MockReply::err("b"), MockReply::ok(42)]);
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::exponential(MS * 100).jitter(Jitter::None))
        .stats()
        .build()
        .unwrap();
    let started = Instant::now();
    assert_eq!(layer.layer(svc.clone()).oneshot(0u8).await.unwrap(), 42);
    assert_eq!(started.elapsed(), MS * 300);
    let stats = layer.stats().unwrap();
    assert_eq!((stats.calls, stats.retries, stats.exhausted), (1, 2, 0));
    // Off unless asked for: nothing shared, nothing counted.
    let plain = RetryLayer::builder().build().unwrap();
    assert_eq!(plain.stats(), None);
    assert_eq!(plain.layer(svc).stats(), None);
}

#[tokio::test(start_paused = true)]
async fn final_errors_are_not_retried() {
    // A deadline that passed downstream is final: retrying cannot help.
    let svc = MockService::<u8, u8>::new(|_| MockReply::ok(0));
    let inner =
        tower::service_fn(|_: u8| async { Err::<u8, _>(rampart_core::Error::deadline_exceeded()) });
    let err = RetryLayer::builder()
        .build()
        .unwrap()
        .layer(inner)
        .oneshot(0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    drop(svc);
}

// Exact delay sequences through the service: the k-th request that starts
// retrying on this (test) thread draws from `Backoff::delays(seed + k)`.
#[tokio::test(start_paused = true)]
async fn delays_between_attempts_follow_the_seeded_sequence_for_every_jitter_mode() {
    let mut k = 0;
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::Grpc,
    ] {
        let backoff = Backoff::exponential(MS * 100)
            .multiplier(2.0)
            .max_delay(MS * 1000)
            .jitter(jitter);
        let (svc, times) = failing_recorder();
        let layer = RetryLayer::builder()
            .max_attempts(7)
            .backoff(backoff)
            .seed(99)
            .build()
            .unwrap();
        let retry = layer.layer(svc);
        for _ in 0..2 {
            times.lock().unwrap().clear();
            retry.clone().oneshot(1).await.unwrap_err();
            // tokio's timer has a 1 ms resolution: a sleep ends on the next
            // millisecond tick.
            let want: Vec<_> = backoff.delays(99 + k).take(6).map(ceil_ms).collect();
            assert_eq!(gaps(&times.lock().unwrap()), want, "{jitter:?} request {k}");
            k += 1;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn never_sleeps_past_the_context_deadline() {
    let (svc, times) = failing_recorder();
    let retry = RetryLayer::builder()
        .max_attempts(10)
        .backoff(Backoff::constant(MS * 1000))
        .build()
        .unwrap()
        .layer(svc.clone());
    let started = Instant::now();
    let ctx = Context::new().with_deadline(started + MS * 2500);
    let err = ctx.scope(retry.oneshot(1)).await.unwrap_err();
    // Attempts at 0 s, 1 s, 2 s; a 4th would start at 3 s > 2.5 s: the third
    // failure is returned at once, at 2 s, not after sleeping.
    assert_eq!(started.elapsed(), MS * 2000);
    assert_eq!(svc.calls(), 3);
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted);
    assert_eq!(err.attempts(), Some(3));
    assert_eq!(gaps(&times.lock().unwrap()), [MS * 1000, MS * 1000]);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_would_start_exactly_at_the_deadline_is_not_made() {
    let (svc, _) = failing_recorder();
    let retry = RetryLayer::builder()
        .backoff(Backoff::constant(MS * 500))
        .build()
        .unwrap()
        .layer(svc.clone());
    let ctx = Context::new().with_deadline(Instant::now() + MS * 500);
    ctx.scope(retry.oneshot(1)).await.unwrap_err();
    assert_eq!(svc.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_context_stops_retrying() {
    let (svc, _) = failing_recorder();
    let token = tokio_util::sync::CancellationToken::new();
    token.cancel();
    let retry = RetryLayer::builder()
        .backoff(Backoff::none())
        .build()
        .unwrap()
        .layer(svc.clone());
    Context::new()
        .with_cancellation(token)
        .scope(retry.oneshot(1))
        .await
        .unwrap_err();
    assert_eq!(svc.calls(), 1);
}

// Issue 14: a 10 s backoff cancelled at 1 s used to send the next attempt
// at 10 s and end as "retries exhausted". It must end at 1 s, as Cancelled,
// with no second attempt.
#[tokio::test(start_paused = true)]
async fn cancelling_during_the_backoff_sleep_resolves_to_cancelled_at_once() {
    let (svc, _) = failing_recorder();
    let token = tokio_util::sync::CancellationToken::new();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_secs(10)))
        .stats()
        .build()
        .unwrap();
    let call = Context::new()
        .with_cancellation(token.clone())
        .scope(retry.layer(svc.clone()).oneshot(1));
    let canceller = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        token.cancel();
    };
    let started = Instant::now();
    let (res, ()) = tokio::join!(call, canceller);
    assert_eq!(res.unwrap_err().kind(), ErrorKind::Cancelled);
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(svc.calls(), 1, "no attempt after the cancellation");
    let stats = retry.stats().unwrap();
    assert_eq!((stats.retries, stats.exhausted), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_bounds_the_total_sleep() {
    let (svc, times) = failing_recorder();
    let retry = RetryLayer::builder()
        .max_attempts(100)
        .max_elapsed(MS * 1000)
        .backoff(Backoff::exponential(MS * 100).jitter(Jitter::None))
        .build()
        .unwrap()
        .layer(svc.clone());
    let started = Instant::now();
    retry.oneshot(1).await.unwrap_err();
    // 100 + 200 + 400 = 700 ms; the next (800 ms) would end at 1.5 s.
    assert_eq!(started.elapsed(), MS * 700);
    assert_eq!(svc.calls(), 4);
    assert_eq!(times.lock().unwrap().len(), 4);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, rng_seed: proptest::test_runner::RngSeed::Fixed(15), ..ProptestConfig::default() })]
    #[test]
    fn total_sleep_never_exceeds_max_elapsed(
        base_ms in 0u64..500,
        extra_ms in 0u64..5_000,
        multiplier in 1.0f64..4.0,
        jitter in prop_oneof![
            Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal),
            Just(Jitter::Decorrelated), Just(Jitter::Grpc),
        ],
        max_elapsed_ms in 1u64..10_000,
        seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let cap = Duration::from_millis(base_ms + extra_ms);
        let max_elapsed = Duration::from_millis(max_elapsed_ms);
        let (elapsed, delays) = rt.block_on(async {
            let (svc, times) = failing_recorder();
            let retry = RetryLayer::builder()
                .max_attempts(50)
                .max_elapsed(max_elapsed)
                .backoff(
                    Backoff::exponential(Duration::from_millis(base_ms))
                        .multiplier(multiplier)
                        .max_delay(cap)
                        .jitter(jitter),
                )
                .seed(seed)
                .build()
                .unwrap()
                .layer(svc);
            let started = Instant::now();
            retry.oneshot(1).await.unwrap_err();
            let t = times.lock().unwrap().clone();
            (started.elapsed(), gaps(&t))
        });
        prop_assert!(elapsed <= max_elapsed, "{elapsed:?} > {max_elapsed:?}");
        for d in delays {
            prop_assert!(d <= cap, "{d:?} > cap {cap:?}");
        }
    }
}

#[test]
fn zero_delay_retries_never_touch_the_timer() {
    // A runtime without a time driver panics on any sleep: a zero backoff
    // must retry at once, in the same poll.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let svc =
            MockService::scripted([MockReply::err("a"), MockReply::err("b"), MockReply::ok(1)]);
        let out = RetryLayer::builder()
            .backoff(Backoff::none())
            .build()
            .unwrap()
            .layer(svc.clone())
            .oneshot(0u8)
            .await
            .unwrap();
        assert_eq!((out, svc.calls()), (1, 3));
    });
}

/// A request that counts its live copies (`Arc::strong_count`).
#[derive(Clone)]
struct Tracked(#[allow(dead_code)] Arc<()>);

#[tokio::test(start_paused = true)]
async fn dropping_the_future_during_backoff_leaks_nothing() {
    let svc = MockService::new(|_: Tracked| MockReply::<u8>::err("down"));
    let retry = RetryLayer::builder()
        .backoff(Backoff::constant(Duration::from_secs(10)))
        .build()
        .unwrap()
        .layer(svc.clone());
    let marker = Arc::new(());
    let mut fut = Box::pin(retry.oneshot(Tracked(marker.clone())));
    // First attempt fails at once; the future is now sleeping.
    let polled = tokio::time::timeout(MS * 5, fut.as_mut()).await;
    assert!(polled.is_err(), "still backing off");
    assert_eq!(svc.calls(), 1);
    assert_eq!(svc.inflight(), 0);
    assert!(
        Arc::strong_count(&marker) > 1,
        "the request is kept for the retry"
    );
    drop(fut);
    assert_eq!(
        Arc::strong_count(&marker),
        1,
        "every copy of the request dropped"
    );
    // Nothing fires later either.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(svc.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelling_at_every_poll_leaves_no_call_or_request_behind() {
    let svc = MockService::new(|req: (Tracked, Arc<AtomicU32>)| {
        if req.1.fetch_add(1, Ordering::SeqCst) == 0 {
            MockReply::err("first fails").after_yield()
        } else {
            MockReply::ok(7).after(MS * 3).after_yield()
        }
    });
    let retry = RetryLayer::builder()
        .backoff(Backoff::constant(MS * 50))
        .build()
        .unwrap()
        .layer(svc.clone());
    let marker = Arc::new(());
    let drops = cancel_at_every_poll(
        || {
            retry
                .clone()
                .oneshot((Tracked(marker.clone()), Arc::new(AtomicU32::new(0))))
        },
        || {
            if svc.inflight() != 0 {
                return Err(format!("{} calls in flight", svc.inflight()));
            }
            match Arc::strong_count(&marker) {
                1 => Ok(()),
                n => Err(format!("{} request copies alive", n - 1)),
            }
        },
    )
    .await
    .unwrap();
    assert!(drops >= 4, "exercised {drops} drop points");
}

#[tokio::test(start_paused = true)]
async fn poll_ready_error_on_a_retry_is_returned() {
    let svc = MockService::<u8, u8>::scripted([MockReply::err("first")]);
    let s2 = svc.clone();
    let retry = RetryLayer::builder()
        .backoff(Backoff::constant(MS * 10))
        .build()
        .unwrap()
        .layer(svc.clone());
    let fut = retry.oneshot(1);
    let (res, ()) = tokio::join!(fut, async move {
        tokio::task::yield_now().await;
        s2.set_ready(rampart_testkit::ReadyMode::Fail(MockError::new(
            "not ready",
        )));
    });
    let err = res.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Inner);
    assert!(err.to_string().contains("not ready"));
}

#[tokio::test(start_paused = true)]
async fn exhausted_error_keeps_the_last_retry_after_hint() {
    // A local limit shed the call (never sent, retryable) with a hint.
    let inner = tower::service_fn(|_: u8| async {
        Err::<u8, _>(rampart_core::Error::overloaded(Some(Duration::from_secs(
            3,
        ))))
    });
    let err = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::none())
        .build()
        .unwrap()
        .layer(inner)
        .oneshot(0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted);
    // The hint replaced the backoff: the retry waited 3 s.
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    let last = err.find_source::<rampart_core::Error>().unwrap();
    assert_eq!(last.kind(), ErrorKind::Overloaded);
}
