//! The fixed limit: shared by clones, FIFO waiting, shedding, giving up,
//! cancellation.

mod common;

use common::{MS, poll_once, until};
use rampart_core::{Context, ErrorKind, HandleErrorsLayer};
use rampart_limit::{AimdConfig, ConcurrencyLimitLayer};
use rampart_testkit::{Gate, MockReply, MockService, cancel_at_every_poll};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inner_never_sees_more_than_limit_concurrent_calls_across_clones() {
    const LIMIT: usize = 4;
    const CALLERS: usize = 64;
    let gate = Gate::new();
    let g = gate.clone();
    let mock = MockService::<u32, u32>::new(move |n| {
        // Phase 1 (n == 0): held on the gate, so the limit is surely reached.
        // Phase 2: a few scheduler round trips each.
        if n == 0 {
            MockReply::ok(n).after_gate(&g)
        } else {
            MockReply::ok(n).after_yield().after_yield().after_yield()
        }
    });
    let layer = ConcurrencyLimitLayer::new(LIMIT);
    // One service per caller, cloned per request, as axum does: the layer
    // is applied once per caller, and all share the layer's limit.
    let run = async {
        let held: Vec<_> = (0..CALLERS)
            .map(|_| {
                let svc = layer.layer(mock.clone());
                tokio::spawn(async move { svc.clone().oneshot(0).await })
            })
            .collect();
        // The callers run on other worker threads, which a loaded machine
        // may not schedule for a while: wait as long as the outer timeout
        // allows rather than for a fixed number of yields.
        while !(mock.inflight() == LIMIT && layer.stats().waiting == CALLERS - LIMIT) {
            tokio::time::sleep(MS).await;
        }
        assert_eq!(layer.stats().in_flight, LIMIT);
        gate.open();
        let stress: Vec<_> = (0..CALLERS)
            .map(|_| {
                let svc = layer.layer(mock.clone());
                tokio::spawn(async move {
                    for i in 1..=50 {
                        svc.clone().oneshot(i).await.unwrap();
                    }
                })
            })
            .collect();
        for h in held {
            h.await.unwrap().unwrap();
        }
        for h in stress {
            h.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("bounded");
    assert_eq!(mock.peak_inflight(), LIMIT, "never above the limit");
    assert_eq!(mock.calls(), CALLERS * 51);
    let s = layer.stats();
    assert_eq!((s.in_flight, s.waiting, s.shed), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served_and_cancelled_ones_skipped() {
    let gate = Gate::new();
    let g = gate.clone();
    let mock = MockService::<u32, u32>::new(move |n| MockReply::ok(n).after_gate(&g));
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = Arc::clone(&order);
    mock.on_call(move |n| o.lock().unwrap().push(*n));
    let layer = ConcurrencyLimitLayer::new(1);
    let svc = layer.layer(mock.clone());

    let mut handles = Vec::new();
    for i in 0..10u32 {
        handles.push(tokio::spawn(svc.clone().oneshot(i)));
        let queued = i as usize; // the first takes the permit
        until(|| layer.stats().waiting == queued, "the caller is in line").await;
    }
    // Two callers give up while waiting.
    handles[3].abort();
    handles[7].abort();
    until(|| layer.stats().waiting == 7, "the aborted callers left").await;
    gate.open();
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.await;
        if i == 3 || i == 7 {
            assert!(r.unwrap_err().is_cancelled());
        } else {
            assert_eq!(r.unwrap().unwrap(), i as u32);
        }
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 4, 5, 6, 8, 9]);
    assert_eq!(layer.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn shed_mode_never_waits_and_says_when_to_come_back() {
    let gate = Gate::new();
    let mock = MockService::<u32, u32>::new({
        let g = gate.clone();
        move |n| MockReply::ok(n).after_gate(&g)
    });
    let layer = ConcurrencyLimitLayer::builder(2)
        .shed()
        .retry_after(Some(Duration::from_secs(3)))
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    let held = [
        tokio::spawn(svc.clone().oneshot(1)),
        tokio::spawn(svc.clone().oneshot(2)),
    ];
    until(|| mock.inflight() == 2, "both permits taken").await;
    for _ in 0..100 {
        let mut fut = std::pin::pin!(svc.clone().oneshot(9));
        // Decided on the first poll: no waiting, no timer.
        let std::task::Poll::Ready(r) = poll_once(fut.as_mut()) else {
            panic!("a shed call must not wait");
        };
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }
    let s = layer.stats();
    assert_eq!((s.shed, s.waiting, s.in_flight), (100, 0, 2));
    assert_eq!(mock.calls(), 2, "shed calls never reach the inner service");
    gate.open();
    for h in held {
        h.await.unwrap().unwrap();
    }
    assert_eq!(svc.clone().oneshot(3).await.unwrap(), 3, "admitted again");
}

#[tokio::test(start_paused = true)]
async fn shed_becomes_503_with_retry_after_through_core_error_mapping() {
    let gate = Gate::new();
    let mock = MockService::<http::Request<()>, http::Response<String>>::new({
        let g = gate.clone();
        move |_| MockReply::ok(http::Response::new("ok".into())).after_gate(&g)
    });
    let layer = ConcurrencyLimitLayer::builder(1).shed().build().unwrap();
    let svc = HandleErrorsLayer::new().layer(layer.layer(mock.clone()));
    let held = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    until(|| mock.inflight() == 1, "permit taken").await;
    let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    gate.open();
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn max_wait_and_max_waiting_bound_the_line() {
    let mock = MockService::<u32, u32>::new(|n| MockReply::ok(n).after(Duration::from_secs(10)));
    let layer = ConcurrencyLimitLayer::builder(1)
        .max_wait(100 * MS)
        .max_waiting(2)
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    let held = tokio::spawn(svc.clone().oneshot(0));
    until(|| mock.inflight() == 1, "permit taken").await;
    let t0 = Instant::now();
    let a = tokio::spawn(svc.clone().oneshot(1));
    let b = tokio::spawn(svc.clone().oneshot(2));
    until(|| layer.stats().waiting == 2, "two in line").await;
    let third = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(
        third.kind(),
        ErrorKind::Overloaded,
        "line full: refused at once"
    );
    assert_eq!(t0.elapsed(), Duration::ZERO);
    for h in [a, b] {
        let e = h.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    }
    assert_eq!(t0.elapsed(), 100 * MS, "gave up after the max wait");
    let s = layer.stats();
    assert_eq!((s.shed, s.expired, s.waiting), (1, 2, 0));
    assert_eq!(held.await.unwrap().unwrap(), 0);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_gives_up_at_its_request_deadline() {
    let mock = MockService::<u32, u32>::new(|n| MockReply::ok(n).after(Duration::from_secs(10)));
    let layer = ConcurrencyLimitLayer::builder(1)
        .max_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    let _held = tokio::spawn(svc.clone().oneshot(0));
    until(|| mock.inflight() == 1, "permit taken").await;
    let t0 = Instant::now();
    let e = Context::new()
        .with_timeout(250 * MS)
        .scope(svc.clone().oneshot(1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(
        t0.elapsed(),
        250 * MS,
        "the earlier of deadline and max wait"
    );
    // Already past its deadline: refused without joining the line.
    let late = Context::new().with_deadline(Instant::now());
    let e = late.scope(svc.clone().oneshot(2)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(layer.stats().expired, 2);
    assert_eq!(layer.stats().waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_around_the_layer_bounds_the_wait_for_a_permit() {
    let mock = MockService::<u32, u32>::new(|n| MockReply::ok(n).after(Duration::from_secs(10)));
    let layer = ConcurrencyLimitLayer::new(1);
    let svc = layer.layer(mock.clone());
    let _held = tokio::spawn(svc.clone().oneshot(0));
    until(|| mock.inflight() == 1, "permit taken").await;
    let r = tokio::time::timeout(50 * MS, svc.clone().oneshot(1)).await;
    assert!(r.is_err(), "timed out while waiting");
    assert_eq!(layer.stats().waiting, 0, "the waiter left no trace");
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiters_and_dropped_response_futures_release_or_forfeit_permits() {
    let adaptive = AimdConfig {
        initial_limit: 1,
        min_limit: 1,
        max_limit: 1,
        ..AimdConfig::default()
    };
    let layers = [
        ConcurrencyLimitLayer::new(1),
        ConcurrencyLimitLayer::builder(1)
            .max_wait(Duration::from_secs(1))
            .build()
            .unwrap(),
        ConcurrencyLimitLayer::builder(adaptive)
            .sample_window(None)
            .build()
            .unwrap(),
    ];
    for layer in layers {
        let mock = MockService::<u32, u32>::new(|n| {
            if n == 0 {
                MockReply::ok(n).after(5 * MS)
            } else {
                MockReply::ok(n).after_yield().after(MS)
            }
        });
        let svc = layer.layer(mock.clone());
        let drops = cancel_at_every_poll(
            || {
                // One call holds the only permit, the other waits for it,
                // is handed it, and runs: every state is a drop point.
                let holder = svc.clone().oneshot(0);
                let waiter = svc.clone().oneshot(1);
                async move {
                    let (a, b) = tokio::join!(holder, waiter);
                    (a.unwrap(), b.unwrap())
                }
            },
            || {
                let s = layer.stats();
                match (s.in_flight, s.waiting, mock.inflight()) {
                    (0, 0, 0) => Ok(()),
                    other => Err(format!("in flight / waiting / inner: {other:?}")),
                }
            },
        )
        .await
        .unwrap();
        assert!(drops >= 4, "{drops} drop points");
        // The permit still works after all that.
        assert_eq!(svc.clone().oneshot(7).await.unwrap(), 7);
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_service_gives_its_permit_back() {
    let mock = MockService::<u32, u32>::new(|n| {
        if n == 0 {
            MockReply::panic("inner blew up")
        } else {
            MockReply::ok(n)
        }
    });
    let layer = ConcurrencyLimitLayer::new(1);
    let svc = layer.layer(mock.clone());
    let r = tokio::spawn(svc.clone().oneshot(0)).await;
    assert!(r.unwrap_err().is_panic());
    assert_eq!(layer.stats().in_flight, 0);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_articles_semaphore_three_at_once_ten_requests() {
    let mock = MockService::<u32, u32>::new(|n| MockReply::ok(n).after(500 * MS));
    let layer = ConcurrencyLimitLayer::new(3);
    let svc = layer.layer(mock.clone());
    let t0 = Instant::now();
    let handles: Vec<_> = (0..10)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().unwrap(), i as u32);
    }
    assert_eq!(mock.peak_inflight(), 3);
    assert_eq!(t0.elapsed(), 2000 * MS, "4 waves of 0.5 s");
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_as_rampart_errors() {
    let mock = MockService::<u32, u32>::new(|_| MockReply::err("nope"));
    let svc = ConcurrencyLimitLayer::new(1).layer(mock);
    let e = svc.oneshot(1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Inner);
    assert_eq!(e.to_string(), "inner service error: nope");
}

#[test]
fn invalid_limits_are_config_errors_naming_the_field_and_value() {
    use rampart_limit::ConfigError;
    let e: ConfigError = ConcurrencyLimitLayer::try_new(0).unwrap_err();
    assert_eq!((e.field(), e.value()), ("limit", "0"));
    assert!(e.to_string().contains("limit = 0"), "{e}");
    let huge = rampart_limit::MAX_LIMIT as usize + 1;
    let e = ConcurrencyLimitLayer::try_new(huge).unwrap_err();
    assert_eq!((e.field(), e.value()), ("limit", huge.to_string().as_str()));
    let e = ConcurrencyLimitLayer::builder(1)
        .max_waiting(0)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.value()), ("max_waiting", "0"));
    assert_eq!(ConcurrencyLimitLayer::try_new(7).unwrap().limit(), 7);
    // The simple constructor saturates what it cannot hold.
    assert_eq!(
        ConcurrencyLimitLayer::new(usize::MAX).limit(),
        rampart_limit::MAX_LIMIT as usize
    );
}

#[test]
#[should_panic(expected = "ConcurrencyLimitLayer::new: limit is 0")]
fn a_zero_limit_panics_in_the_simple_constructor() {
    let _ = ConcurrencyLimitLayer::new(0);
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_hint_saturates_instead_of_panicking_at_shed() {
    let mock = MockService::<u32, u32>::new(|n| MockReply::ok(n).after(100 * MS));
    let layer = ConcurrencyLimitLayer::builder(1)
        .shed()
        .retry_after(Some(Duration::MAX))
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    let held = tokio::spawn(svc.clone().oneshot(0));
    until(|| mock.inflight() == 1, "permit taken").await;
    let e = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert_eq!(e.retry_after(), Some(rampart_limit::MAX_RETRY_AFTER));
    let res = e.to_http_response::<()>();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "86400");
    held.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn wraps_a_service_that_is_not_clone() {
    // BoxService is not Clone: the permit is taken in poll_ready, so the
    // layer never needs a second handle on the inner service.
    let mock = MockService::<u32, u32>::new(|n| MockReply::ok(n * 2).after(100 * MS));
    let layer = ConcurrencyLimitLayer::new(1);
    let mut svc = layer.layer(tower::util::BoxService::new(mock.clone()));
    let first = svc.ready().await.unwrap().call(1);
    assert_eq!(layer.stats().in_flight, 1);
    // The permit is out: the same handle now waits in poll_ready.
    let mut ready = std::pin::pin!(svc.ready());
    assert!(poll_once(ready.as_mut()).is_pending());
    assert_eq!(layer.stats().waiting, 1);
    assert_eq!(first.await.unwrap(), 2);
    let svc = ready.await.unwrap();
    assert_eq!(svc.call(2).await.unwrap(), 4);
    assert_eq!(layer.stats().in_flight, 0);
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_resolves_to_cancelled_the_moment_its_token_fires() {
    let mock = MockService::<u32, u32>::new(|n| MockReply::ok(n).after(Duration::from_secs(10)));
    let layer = ConcurrencyLimitLayer::builder(1)
        .max_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = layer.layer(mock.clone());
    let _held = tokio::spawn(svc.clone().oneshot(0));
    until(|| mock.inflight() == 1, "permit taken").await;
    let token = rampart_core::CancellationToken::new();
    let waiting = tokio::spawn(
        Context::new()
            .with_cancellation(token.clone())
            .scope(svc.clone().oneshot(1)),
    );
    until(|| layer.stats().waiting == 1, "in line").await;
    let t0 = Instant::now();
    token.cancel();
    let e = waiting.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_eq!(t0.elapsed(), Duration::ZERO, "at once, not at the max wait");
    assert_eq!(layer.stats().waiting, 0, "left the line");
    // Already cancelled: refused without joining the line.
    token.cancel();
    let e = Context::new()
        .with_cancellation(token)
        .scope(svc.clone().oneshot(2))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_shedding_limit_refuses_in_call_and_stays_usable() {
    let mock = MockService::<u32, u32>::new(|n| MockReply::ok(n).after(100 * MS));
    let layer = ConcurrencyLimitLayer::builder(1).shed().build().unwrap();
    let mut svc = layer.layer(mock.clone());
    let first = svc.ready().await.unwrap().call(1);
    // poll_ready answers Ready at once; the call fails without reaching the
    // inner service.
    let e = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert_eq!(mock.calls(), 1);
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
}

#[test]
fn the_response_future_does_not_hold_the_request() {
    // The wait for a permit happens in `poll_ready`, so the response future
    // is the inner future plus the permit: a large request is not carried.
    type Big = [u8; 1024];
    type Inner = tower::util::ServiceFn<fn(Big) -> std::future::Ready<Result<u8, std::io::Error>>>;
    type Limited = rampart_limit::ConcurrencyLimit<Inner>;
    let future = std::mem::size_of::<<Limited as Service<Big>>::Future>();
    let inner = std::mem::size_of::<std::future::Ready<Result<u8, std::io::Error>>>();
    assert!(
        future <= inner + 4 * std::mem::size_of::<usize>(),
        "response future {future} bytes, inner future {inner} bytes"
    );
}
