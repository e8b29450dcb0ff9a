//! `TimeoutLayer`: fires exactly on time, drops the inner call, bounds the
//! wait for readiness and permits (paused clock).

mod common;
use common::{ms, within_an_hour};
use rampart_core::{Error, ErrorKind};
use rampart_testkit::{Gate, MockReply, MockService, ReadyMode, cancel_at_every_poll};
use rampart_timeout::{ConfigError, TimeoutLayer};
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// Polls `fut` once, in the current task.
async fn poll_once<F: Future>(mut fut: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await
}

fn timeout(d: Duration) -> TimeoutLayer {
    TimeoutLayer::new(d)
}

#[tokio::test(start_paused = true)]
async fn fires_exactly_at_the_deadline() {
    let svc = MockService::<(), ()>::scripted([MockReply::pending()]);
    let start = Instant::now();
    let err = within_an_hour(timeout(ms(2000)).layer(svc).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), ms(2000));
}

#[tokio::test(start_paused = true)]
async fn a_response_just_before_the_deadline_gets_through() {
    let svc = MockService::<(), u8>::scripted([MockReply::ok(7).after(ms(1999))]);
    let start = Instant::now();
    let res = within_an_hour(timeout(ms(2000)).layer(svc).oneshot(()))
        .await
        .unwrap();
    assert_eq!(res, 7);
    assert_eq!(start.elapsed(), ms(1999));
}

#[tokio::test(start_paused = true)]
async fn does_not_fire_a_tick_early_when_stepped_by_hand() {
    let svc = MockService::<(), ()>::scripted([MockReply::pending()]);
    let mut fut = pin!(timeout(ms(2000)).layer(svc).oneshot(()));
    assert!(
        poll_once(fut.as_mut()).await.is_pending(),
        "the clock started in call"
    );
    tokio::time::advance(ms(1999)).await;
    assert!(
        poll_once(fut.as_mut()).await.is_pending(),
        "1 ms before the deadline"
    );
    tokio::time::advance(ms(1)).await;
    match poll_once(fut.as_mut()).await {
        std::task::Poll::Ready(Err(e)) => assert_eq!(e.kind(), ErrorKind::Timeout),
        other => panic!("expected the timeout at the deadline, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_article_slow_operation_times_out_after_two_seconds() {
    // asyncio.wait_for(slow_operation(), timeout=2.0) where slow_operation
    // sleeps 10 s.
    let slow = service_fn(|()| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, std::convert::Infallible>("done")
    });
    let start = Instant::now();
    let err = within_an_hour(timeout(Duration::from_secs(2)).layer(slow).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn inner_future_is_dropped_the_moment_the_timeout_fires() {
    let mock = MockService::<(), ()>::scripted([MockReply::pending()]);
    let mut svc = timeout(ms(100)).layer(mock.clone());
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let mut fut = pin!(svc.call(()));
    assert_eq!(mock.inflight(), 1);
    let err = fut.as_mut().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    // The response future is still alive, the inner call is already gone.
    assert_eq!(mock.dropped(), 1);
    assert_eq!(mock.inflight(), 0);
    assert_eq!(mock.completed(), 0);
}

#[tokio::test(start_paused = true)]
async fn wait_for_readiness_is_bounded_by_the_timeout() {
    let gate = Gate::new(); // never opened: poll_ready stays Pending
    let mock = MockService::<(), ()>::new(|()| MockReply::ok(()));
    mock.set_ready(ReadyMode::Gated(gate.clone()));
    let start = Instant::now();
    let err = within_an_hour(timeout(ms(500)).layer(mock.clone()).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), ms(500));
    assert_eq!(mock.calls(), 0, "the inner service was never called");
}

#[tokio::test(start_paused = true)]
async fn towers_timeout_does_not_bound_readiness_which_is_why_this_layer_exists() {
    let mock = MockService::<(), ()>::new(|()| MockReply::ok(()));
    mock.set_ready(ReadyMode::Gated(Gate::new()));
    let svc = tower::timeout::TimeoutLayer::new(ms(500)).layer(mock);
    let outer = within_an_hour(tokio::time::timeout(
        Duration::from_secs(60),
        svc.oneshot(()),
    ))
    .await;
    assert!(
        outer.is_err(),
        "tower's Timeout waited in poll_ready for 60 s (tower#648)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_that_becomes_ready_in_time_is_called() {
    let gate = Gate::new();
    let mock = MockService::<(), u8>::new(|()| MockReply::ok(1));
    mock.set_ready(ReadyMode::Gated(gate.clone()));
    let opener = tokio::spawn({
        let gate = gate.clone();
        async move {
            tokio::time::sleep(ms(300)).await;
            gate.open();
        }
    });
    let start = Instant::now();
    let res = within_an_hour(timeout(ms(500)).layer(mock.clone()).oneshot(()))
        .await
        .unwrap();
    assert_eq!(res, 1);
    assert_eq!(start.elapsed(), ms(300));
    assert_eq!(mock.calls(), 1);
    opener.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn wait_for_a_permit_inside_call_is_bounded_and_leaves_the_queue() {
    let permits = Arc::new(Semaphore::new(1));
    let held = permits.clone().acquire_owned().await.unwrap();
    let svc = service_fn({
        let permits = permits.clone();
        move |()| {
            let permits = permits.clone();
            async move {
                let _permit = permits.acquire().await.expect("not closed");
                Ok::<_, std::convert::Infallible>(())
            }
        }
    });
    let start = Instant::now();
    let err = within_an_hour(timeout(ms(250)).layer(svc.clone()).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), ms(250));
    // The waiter that timed out left the queue: once the permit is back, the
    // next call gets it at once.
    drop(held);
    timeout(ms(250)).layer(svc).oneshot(()).await.unwrap();
    assert_eq!(permits.available_permits(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_poll_ready_is_an_inner_error() {
    let mock = MockService::<(), ()>::new(|()| MockReply::ok(()));
    mock.set_ready(ReadyMode::Fail(rampart_testkit::MockError::new("broken")));
    let err = within_an_hour(timeout(ms(100)).layer(mock).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Inner);
    assert_eq!(err.to_string(), "inner service error: broken");
}

#[tokio::test(start_paused = true)]
async fn inner_errors_are_wrapped_once_and_rampart_errors_pass_through() {
    let mock = MockService::<(), ()>::scripted([MockReply::err("boom")]);
    let err = within_an_hour(timeout(ms(100)).layer(mock).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Inner);
    assert!(err.find_source::<rampart_testkit::MockError>().is_some());

    // Nested timeouts: the inner one fires first and its error comes out
    // unnested.
    let mock = MockService::<(), ()>::scripted([MockReply::pending()]);
    let svc = timeout(ms(300)).layer(timeout(ms(100)).layer(mock));
    let err: Error = within_an_hour(svc.oneshot(())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn a_ready_response_needs_no_timer_and_succeeds() {
    // A runtime without a time driver: creating any tokio timer here panics,
    // so this passes only if the ready path never touches the timer.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mock = MockService::<(), u8>::scripted([MockReply::ok(3)]);
    let res = rt
        .block_on(timeout(ms(1)).layer(mock.clone()).oneshot(()))
        .unwrap();
    assert_eq!(res, 3);
    assert_eq!(mock.completed(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_at_every_poll_leaves_nothing_in_flight() {
    let mock = MockService::<(), u8>::new(|()| MockReply::ok(1).after(ms(50)).after_yield());
    let drops = cancel_at_every_poll(
        || timeout(ms(1000)).layer(mock.clone()).oneshot(()),
        || match mock.inflight() {
            0 => Ok(()),
            n => Err(format!("{n} inner calls still in flight")),
        },
    )
    .await
    .unwrap();
    assert!(drops >= 2, "the call was cancelled at {drops} points");

    // Also while waiting for readiness.
    let gate = Gate::new();
    let gated = MockService::<(), u8>::new(|()| MockReply::ok(1));
    gated.set_ready(ReadyMode::Gated(gate.clone()));
    let opener = gate.clone();
    let drops = cancel_at_every_poll(
        || {
            let svc = timeout(ms(1000)).layer(gated.clone());
            let (opener, closer) = (opener.clone(), opener.clone());
            async move {
                let call = svc.oneshot(());
                let open = async move {
                    tokio::time::sleep(ms(10)).await;
                    opener.open();
                };
                let (res, ()) = tokio::join!(call, open);
                closer.close();
                res
            }
        },
        || match gated.inflight() {
            0 => Ok(()),
            n => Err(format!("{n} inner calls still in flight")),
        },
    )
    .await
    .unwrap();
    assert!(drops >= 2);
}

#[test]
fn zero_timeout_is_refused_by_try_new_naming_the_field() {
    let err: ConfigError = TimeoutLayer::try_new(Duration::ZERO).unwrap_err();
    assert_eq!(err.field(), "timeout");
    assert!(err.to_string().contains("timeout"), "{err}");
    let layer = TimeoutLayer::try_new(Duration::MAX).unwrap();
    assert_eq!(layer.timeout(), Duration::MAX);
    assert_eq!(TimeoutLayer::from(ms(5)), TimeoutLayer::new(ms(5)));
}

#[tokio::test(start_paused = true)]
async fn a_zero_timeout_means_already_expired_as_in_tower() {
    // Ready on the first poll: answered (tower polls the inner first too).
    let ready = MockService::<(), u8>::scripted([MockReply::ok(1)]);
    assert_eq!(
        timeout(Duration::ZERO)
            .layer(ready)
            .oneshot(())
            .await
            .unwrap(),
        1
    );
    // Anything else fails at once.
    let start = Instant::now();
    let slow = MockService::<(), u8>::scripted([MockReply::ok(1).after(ms(1))]);
    let err = rampart_timeout::Timeout::new(slow.clone(), Duration::ZERO)
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(slow.inflight(), 0, "the inner call was dropped");
}

#[tokio::test(start_paused = true)]
async fn a_huge_timeout_saturates_instead_of_overflowing() {
    let mock = MockService::<(), u8>::scripted([MockReply::ok(5).after(ms(10))]);
    let res = within_an_hour(TimeoutLayer::new(Duration::MAX).layer(mock).oneshot(())).await;
    assert_eq!(res.unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_passes_backpressure_up_then_the_call_fails_without_reaching_the_inner() {
    let gate = Gate::new();
    let mock = MockService::<(), ()>::new(|()| MockReply::ok(()));
    mock.set_ready(ReadyMode::Gated(gate.clone()));
    let mut svc = timeout(ms(100)).layer(mock.clone());
    let mut ready = pin!(poll_fn(|cx| svc.poll_ready(cx)));
    assert!(
        poll_once(ready.as_mut()).await.is_pending(),
        "Pending while the inner service is not ready (tower's LoadShed sees it)"
    );
    tokio::time::advance(ms(99)).await;
    assert!(poll_once(ready.as_mut()).await.is_pending(), "1 ms early");
    tokio::time::advance(ms(1)).await;
    assert!(matches!(
        poll_once(ready.as_mut()).await,
        std::task::Poll::Ready(Ok(()))
    ));
    let err = svc.call(()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(
        mock.calls(),
        0,
        "the inner service was not ready: never called"
    );

    // The service stays usable: the next caller waits afresh.
    gate.open();
    within_an_hour(svc.ready()).await.unwrap();
    svc.call(()).await.unwrap();
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_wait_for_readiness_and_the_call_share_one_timeout() {
    let gate = Gate::new();
    let mock = MockService::<(), u8>::new(|()| MockReply::ok(1).after(ms(300)));
    mock.set_ready(ReadyMode::Gated(gate.clone()));
    let opener = tokio::spawn({
        let gate = gate.clone();
        async move {
            tokio::time::sleep(ms(300)).await;
            gate.open();
        }
    });
    let start = Instant::now();
    // 300 ms waiting + 300 ms answering > 500 ms.
    let err = within_an_hour(timeout(ms(500)).layer(mock.clone()).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), ms(500));
    assert_eq!(mock.calls(), 1);
    opener.await.unwrap();
}

/// Drives `fut` on the current thread with no tokio context, as
/// `futures::executor::block_on` and `pollster` do.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[test]
fn every_timeout_fires_under_a_block_on_bridge_on_a_worker_thread() {
    // The timer is armed at the first Pending on every call: no call relies
    // on tokio's deferred wake-ups, which a blocking executor never runs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let fired = rt.block_on(async {
        // Unconstrained: tokio's cooperative budget (128 timer polls per
        // task poll) would otherwise stall any timer, tower's included,
        // after ~128 calls in one poll of the bridging task.
        let bridge = tokio::spawn(tokio::task::unconstrained(async {
            let layer = timeout(ms(1));
            let never = service_fn(|()| std::future::pending::<Result<(), std::io::Error>>());
            let mut fired = 0_u32;
            for _ in 0..1000 {
                let err = block_on(layer.layer(never).oneshot(())).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Timeout);
                fired += 1;
            }
            fired
        }));
        tokio::time::timeout(Duration::from_secs(60), bridge).await
    });
    let Ok(joined) = fired else {
        rt.shutdown_background();
        panic!("a call under block_on hung: its timer was never armed");
    };
    let fired = joined.unwrap();
    assert_eq!(fired, 1000);
}

#[test]
fn work_done_in_the_first_poll_counts_against_the_timeout() {
    // 50 ms of synchronous work before the first Pending under a 10 ms
    // timeout: the deadline (fixed in call) has passed when the timer is
    // armed, so it fires on that very poll, at 50 ms, not 10 ms later.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let busy = service_fn(|()| {
            let mut worked = false;
            poll_fn(move |_| {
                if !worked {
                    worked = true;
                    std::thread::sleep(ms(50)); // the work, not a wait
                }
                std::task::Poll::<Result<(), std::io::Error>>::Pending
            })
        });
        let start = std::time::Instant::now();
        let mut fut = pin!(timeout(ms(10)).layer(busy).oneshot(()));
        match poll_once(fut.as_mut()).await {
            std::task::Poll::Ready(Err(e)) => assert_eq!(e.kind(), ErrorKind::Timeout),
            other => panic!("expected the timeout on the first poll, got {other:?}"),
        }
        assert!(start.elapsed() >= ms(50));
    });
}

#[tokio::test(start_paused = true)]
async fn a_call_first_polled_late_fires_at_its_call_time_deadline() {
    let never = service_fn(|()| std::future::pending::<Result<(), std::io::Error>>());
    let mut svc = timeout(ms(10)).layer(never);
    let start = Instant::now();
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let mut fut = pin!(svc.call(()));
    tokio::time::advance(ms(100)).await;
    match poll_once(fut.as_mut()).await {
        std::task::Poll::Ready(Err(e)) => assert_eq!(e.kind(), ErrorKind::Timeout),
        other => panic!("expected the timeout on the first poll, got {other:?}"),
    }
    assert_eq!(start.elapsed(), ms(100), "fired at 100 ms, not 110 ms");
}

#[tokio::test(start_paused = true)]
async fn a_shorter_context_deadline_wins_and_reports_deadline_exceeded() {
    let never = service_fn(|()| std::future::pending::<Result<(), std::io::Error>>());
    let start = Instant::now();
    let ctx = rampart_core::Context::new().with_deadline(start + ms(30));
    let err = within_an_hour(ctx.scope(timeout(ms(1000)).layer(never).oneshot(())))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), ms(30));
    // A later context deadline leaves the timeout in charge.
    let ctx = rampart_core::Context::new().with_deadline(start + ms(5000));
    let err = within_an_hour(ctx.scope(timeout(ms(100)).layer(never).oneshot(())))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), ms(130));
}

#[tokio::test(start_paused = true)]
async fn wraps_a_box_service_and_bounds_a_never_ready_one() {
    let ready =
        tower::util::BoxService::new(MockService::<u32, u32>::new(|n| MockReply::ok(n + 1)));
    assert_eq!(timeout(ms(100)).layer(ready).oneshot(1).await.unwrap(), 2);

    let mock = MockService::<u32, u32>::new(|n| MockReply::ok(n + 1));
    mock.set_ready(ReadyMode::Gated(Gate::new())); // never opened
    let start = Instant::now();
    let never = tower::util::BoxService::new(mock.clone());
    let err = within_an_hour(timeout(ms(100)).layer(never).oneshot(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(mock.calls(), 0);
}
