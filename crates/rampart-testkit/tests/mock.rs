//! MockService: scripted replies and counters, on a paused clock.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rampart_testkit::{Gate, MockError, MockReply, MockService, ReadyMode};
use tower::{Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn scripted_replies_in_order_then_exhausted() {
    let svc = MockService::<u32, u32>::scripted([
        MockReply::ok(1),
        MockReply::err("boom"),
        MockReply::ok(3).after(10 * MS),
    ]);
    assert_eq!(svc.script_remaining(), 3);
    assert_eq!(svc.clone().oneshot(0).await, Ok(1));
    assert_eq!(svc.clone().oneshot(0).await, Err(MockError::new("boom")));
    let t0 = tokio::time::Instant::now();
    assert_eq!(svc.clone().oneshot(0).await, Ok(3));
    assert_eq!(t0.elapsed(), 10 * MS);
    let err = svc.clone().oneshot(0).await.unwrap_err();
    assert_eq!(err.message(), "mock script exhausted");
    assert_eq!(svc.calls(), 4);
    assert_eq!(svc.completed(), 4);
    assert_eq!(svc.dropped(), 0);
}

#[tokio::test(start_paused = true)]
async fn responder_sees_requests_when_script_is_empty() {
    let svc = MockService::new(|req: http::Request<String>| {
        let body = req.into_body();
        MockReply::ok(http::Response::new(format!("echo {body}")))
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    svc.on_call(move |req: &http::Request<String>| {
        seen2
            .lock()
            .unwrap()
            .push(req.headers().get("x-id").cloned());
    });
    svc.push(MockReply::ok(http::Response::new("scripted".to_owned())));

    let req = |id: &'static str| {
        http::Request::builder()
            .header("x-id", id)
            .body("hi".to_owned())
            .unwrap()
    };
    let r1 = svc.clone().oneshot(req("1")).await.unwrap();
    let r2 = svc.clone().oneshot(req("2")).await.unwrap();
    assert_eq!(r1.body(), "scripted");
    assert_eq!(r2.body(), "echo hi");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn counts_inflight_peak_and_drops() {
    let svc = MockService::<(), ()>::new(|()| MockReply::ok(()).after(100 * MS));
    let mut s = svc.clone();
    let f1 = s.call(());
    let f2 = s.call(());
    let f3 = s.call(());
    assert_eq!(svc.calls(), 3);
    assert_eq!(svc.inflight(), 3);
    assert_eq!(svc.peak_inflight(), 3);

    drop(f3); // never polled: still a drop before completion
    assert_eq!(svc.dropped(), 1);
    assert_eq!(svc.inflight(), 2);

    let (a, b) = tokio::join!(f1, f2);
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(svc.inflight(), 0);
    assert_eq!(svc.completed(), 2);
    assert_eq!(svc.peak_inflight(), 3);
}

#[tokio::test(start_paused = true)]
async fn timeout_drops_the_inner_future() {
    let svc = MockService::<(), ()>::new(|()| MockReply::ok(()).after(Duration::from_secs(30)));
    let res = tokio::time::timeout(Duration::from_secs(1), svc.clone().oneshot(())).await;
    assert!(res.is_err());
    assert_eq!(svc.dropped(), 1);
    assert_eq!(svc.completed(), 0);
    assert_eq!(svc.inflight(), 0);

    let never = MockService::<(), ()>::new(|()| MockReply::pending());
    let res = tokio::time::timeout(Duration::from_secs(1), never.clone().oneshot(())).await;
    assert!(res.is_err());
    assert_eq!(never.dropped(), 1);
}

#[tokio::test(start_paused = true)]
async fn bounded_concurrency_is_visible_in_peak() {
    // Drive 10 calls through a hand-made "at most 3 at a time" loop.
    let svc = MockService::<u32, u32>::new(|n| MockReply::ok(n).after(10 * MS));
    let sem = Arc::new(tokio::sync::Semaphore::new(3));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let sem = Arc::clone(&sem);
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            svc.oneshot(i).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), Ok(i as u32));
    }
    assert_eq!(svc.calls(), 10);
    assert_eq!(svc.peak_inflight(), 3);
}

#[tokio::test(start_paused = true)]
async fn yield_once_takes_exactly_one_extra_poll() {
    let mut svc = MockService::<(), u8>::scripted([MockReply::ok(5).after_yield()]);
    let mut fut = svc.call(());
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(std::pin::Pin::new(&mut fut).poll(&mut cx).is_pending());
    assert_eq!(
        std::pin::Pin::new(&mut fut).poll(&mut cx),
        Poll::Ready(Ok(5))
    );
}

#[tokio::test(start_paused = true)]
async fn gated_reply_waits_for_the_gate() {
    let gate = Gate::new();
    let svc = MockService::<(), u8>::new({
        let gate = gate.clone();
        move |()| MockReply::ok(1).after_gate(&gate)
    });
    let calls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(svc.clone().oneshot(())))
        .collect();
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(svc.inflight(), 4);
    assert_eq!(svc.peak_inflight(), 4);
    gate.open();
    for c in calls {
        assert_eq!(c.await.unwrap(), Ok(1));
    }
    assert_eq!(svc.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_gated_then_released_and_failing() {
    let svc = MockService::<(), ()>::new(|()| MockReply::ok(()));
    let gate = Gate::new();
    svc.set_ready(ReadyMode::Gated(gate.clone()));

    let mut waiting = svc.clone();
    let ready = tokio::spawn(async move { waiting.ready().await.map(|_| ()) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!ready.is_finished());
    gate.open();
    assert_eq!(ready.await.unwrap(), Ok(()));

    // Switching modes wakes a task waiting on the old gate.
    let gate2 = Gate::new();
    svc.set_ready(ReadyMode::Gated(gate2));
    let mut waiting = svc.clone();
    let ready = tokio::spawn(async move { waiting.ready().await.map(|_| ()) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!ready.is_finished());
    svc.set_ready(ReadyMode::Fail(MockError::new("not today")));
    assert_eq!(ready.await.unwrap(), Err(MockError::new("not today")));

    svc.set_ready(ReadyMode::Ready);
    assert!(svc.clone().ready().await.is_ok());
    assert!(svc.ready_polls() >= 4);
}

#[tokio::test(start_paused = true)]
async fn panic_reply_panics_the_caller() {
    let svc = MockService::<(), ()>::scripted([MockReply::panic("kaboom")]);
    let res = tokio::spawn(svc.clone().oneshot(())).await;
    let err = res.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(svc.inflight(), 0);
    assert_eq!(svc.completed(), 1);
}

#[test]
fn mock_error_is_a_boxable_std_error() {
    fn assert_bounds<E: std::error::Error + Send + Sync + 'static>() {}
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_bounds::<MockError>();
    assert_send_sync::<MockService<http::Request<()>, ()>>();
    let boxed: tower::BoxError = MockError::new("x").into();
    assert!(boxed.downcast_ref::<MockError>().is_some());
}
