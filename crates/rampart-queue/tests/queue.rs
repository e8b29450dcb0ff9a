//! Behaviour of the queue through its public API.

use rampart_core::{CancellationToken, Context, Error, ErrorKind, RequestId};
use rampart_queue::{Panicked, Queue, QueueConfig, QueueLayer, WhenFull};
use rampart_testkit::{Gate, MockReply, MockService, ReadyMode};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

type Q = Queue<u32, u32>;

/// Lets spawned tasks (the workers) run until nothing is ready.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A queue whose inner service waits on `gate` before answering `n`.
fn gated(gate: &Gate, capacity: usize, workers: usize) -> (Q, MockService<u32, u32>) {
    let g = gate.clone();
    let mock = MockService::new(move |n: u32| MockReply::ok(n).after_gate(&g));
    (Queue::new(mock.clone(), capacity, workers), mock)
}

/// A queue of one place and one worker whose callers wait at most 50 ms
/// for space, in front of a service that waits on `gate`.
fn gated_one_place_waiting_50ms(gate: &Gate) -> (Q, MockService<u32, u32>) {
    let g = gate.clone();
    let mock = MockService::new(move |n: u32| MockReply::ok(n).after_gate(&g));
    let svc = QueueLayer::builder()
        .capacity(1)
        .workers(1)
        .max_wait(Duration::from_millis(50))
        .build()
        .unwrap()
        .layer(mock.clone());
    (svc, mock)
}

#[tokio::test]
async fn answers_through_the_workers_with_the_inner_response() {
    let svc = ServiceBuilder::new()
        .layer(QueueLayer::new(5, 2))
        .service(service_fn(|n: u32| async move {
            Ok::<_, std::io::Error>(n * 2)
        }));
    for i in 0..20 {
        assert_eq!(svc.clone().oneshot(i).await.unwrap(), i * 2);
    }
    let s = svc.stats();
    assert_eq!(s.completed, 20);
    assert_eq!(
        (s.queued, s.running, s.workers, s.live_workers),
        (0, 0, 2, 2)
    );
}

#[tokio::test]
async fn inner_errors_come_back_as_inner_errors_and_rampart_errors_unchanged() {
    let svc: Queue<u32, ()> = Queue::new(
        service_fn(|n: u32| async move {
            match n {
                0 => Err(Error::overloaded(None)),
                _ => Err(Error::from_inner(std::io::Error::other("boom"))),
            }
        }),
        4,
        1,
    );
    let e: Error = svc.clone().oneshot(0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    let e = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Inner);
    assert_eq!(svc.stats().failed, 2);
}

/// Not `Clone`: the workers share it.
struct Counter {
    calls: u32,
}

impl Service<u32> for Counter {
    type Response = u32;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<u32, Self::Error>>;
    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, n: u32) -> Self::Future {
        self.calls += 1;
        std::future::ready(Ok(n + self.calls * 1000))
    }
}

#[tokio::test]
async fn a_service_that_is_not_clone_is_shared_by_the_workers() {
    let svc = QueueLayer::new(4, 3)
        .shared_service()
        .layer(Counter { calls: 0 });
    let mut seen = Vec::new();
    for i in 0..3 {
        seen.push(svc.clone().oneshot(i).await.unwrap());
    }
    assert_eq!(seen, vec![1000, 2001, 3002]);
    let one = Queue::new_shared(Counter { calls: 0 }, 1, 1);
    assert_eq!(one.clone().oneshot(5).await.unwrap(), 1005);
}

#[tokio::test]
async fn shed_mode_refuses_with_overloaded_when_full_and_never_exceeds_capacity() {
    let gate = Gate::new();
    let g = gate.clone();
    let mock = MockService::new(move |n: u32| MockReply::ok(n).after_gate(&g));
    let svc: Q = QueueLayer::builder()
        .capacity(2)
        .workers(1)
        .shed()
        .retry_after(Some(Duration::from_secs(3)))
        .build()
        .unwrap()
        .layer(mock.clone());
    // One running, two queued.
    let mut calls = Vec::new();
    for i in 0..3 {
        calls.push(tokio::spawn(svc.clone().oneshot(i)));
        settle().await;
    }
    let s = svc.stats();
    assert_eq!((s.running, s.queued), (1, 2));
    let e = svc.clone().oneshot(9).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(svc.stats().shed, 1);
    gate.open();
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), i as u32);
    }
    assert_eq!(mock.calls(), 3);
}

#[tokio::test]
async fn wait_mode_waits_for_space_then_runs() {
    let gate = Gate::new();
    let (svc, mock) = gated(&gate, 1, 1);
    let a = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    let b = tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    let c = tokio::spawn(svc.clone().oneshot(3));
    settle().await;
    assert!(!c.is_finished());
    assert_eq!(svc.stats().queued, 1);
    gate.open();
    assert_eq!(a.await.unwrap().unwrap(), 1);
    assert_eq!(b.await.unwrap().unwrap(), 2);
    assert_eq!(c.await.unwrap().unwrap(), 3);
    assert_eq!(mock.calls(), 3);
}

/// Fills a 1-worker, capacity-1 queue whose inner waits on the gate.
async fn full_queue(gate: &Gate) -> (Q, MockService<u32, u32>) {
    let (svc, mock) = gated(gate, 1, 1);
    tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    assert_eq!(svc.stats().queued, 1);
    (svc, mock)
}

#[tokio::test(start_paused = true)]
async fn the_wait_for_space_ends_at_the_request_deadline() {
    let gate = Gate::new();
    let (svc, _mock) = full_queue(&gate).await;
    let start = Instant::now();
    let ctx = Context::new().with_timeout(Duration::from_millis(300));
    let e = ctx.scope(svc.clone().oneshot(3)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn the_wait_for_space_wakes_on_the_cancellation_token() {
    let gate = Gate::new();
    let (svc, mock) = full_queue(&gate).await;
    let token = CancellationToken::new();
    let ctx = Context::new().with_cancellation(token.clone());
    let call = tokio::spawn(ctx.scope(svc.clone().oneshot(3)));
    settle().await;
    assert!(!call.is_finished());
    token.cancel();
    settle().await;
    assert!(call.is_finished(), "a cancelled waiter resolves at once");
    assert_eq!(
        call.await.unwrap().unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    gate.open();
    settle().await;
    assert_eq!(mock.calls(), 2, "the cancelled request never ran");
}

#[tokio::test(start_paused = true)]
async fn max_wait_sheds_a_waiting_call_with_overloaded() {
    let gate = Gate::new();
    let (svc, _) = gated_one_place_waiting_50ms(&gate);
    tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    let start = Instant::now();
    let e = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(svc.stats().shed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_queued_or_running_call_wakes_on_cancellation_and_deadline() {
    let gate = Gate::new();
    let (svc, mock) = gated(&gate, 4, 1);
    let token = CancellationToken::new();
    let running = tokio::spawn(
        Context::new()
            .with_cancellation(token.clone())
            .scope(svc.clone().oneshot(1)),
    );
    settle().await;
    assert_eq!(svc.stats().running, 1);
    token.cancel();
    settle().await;
    assert_eq!(
        running.await.unwrap().unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    assert_eq!(mock.dropped(), 1, "the running call was dropped");
    assert_eq!(svc.stats().abandoned, 1);

    let start = Instant::now();
    let e = Context::new()
        .with_timeout(Duration::from_millis(70))
        .scope(svc.clone().oneshot(2))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_millis(70));
}

#[tokio::test]
async fn work_whose_caller_left_is_skipped_and_never_reaches_the_inner_service() {
    let gate = Gate::new();
    let (svc, mock) = gated(&gate, 4, 1);
    let first = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    // Queued behind the first, then abandoned.
    let mut s = svc.clone();
    let fut = s.call(2);
    drop(fut);
    let left = tokio::spawn(svc.clone().oneshot(3));
    settle().await;
    left.abort();
    settle().await;
    gate.open();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(svc.clone().oneshot(4).await.unwrap(), 4);
    assert_eq!(mock.calls(), 2, "only 1 and 4 ran");
    assert_eq!(svc.stats().skipped, 2);
}

#[tokio::test(start_paused = true)]
async fn work_past_its_deadline_when_a_worker_takes_it_is_skipped() {
    let gate = Gate::new();
    let (svc, mock) = gated(&gate, 4, 1);
    let detached_caller = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.clone().oneshot(1).await })
    };
    settle().await;
    // Queued with a 10 ms deadline; the worker is busy for 20 ms.
    let late = tokio::spawn(
        Context::new()
            .with_timeout(Duration::from_millis(10))
            .scope(svc.clone().oneshot(2)),
    );
    settle().await;
    advance(Duration::from_millis(20)).await;
    assert_eq!(
        late.await.unwrap().unwrap_err().kind(),
        ErrorKind::DeadlineExceeded
    );
    gate.open();
    assert_eq!(detached_caller.await.unwrap().unwrap(), 1);
    settle().await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(svc.stats().skipped, 1);
}

#[tokio::test]
async fn a_running_call_is_dropped_when_its_caller_leaves() {
    let gate = Gate::new();
    let (svc, mock) = gated(&gate, 4, 1);
    let caller = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    assert_eq!(mock.inflight(), 1);
    caller.abort();
    settle().await;
    assert_eq!(mock.dropped(), 1);
    assert_eq!(svc.stats().running, 0);
    assert_eq!(svc.stats().abandoned, 1);
}

#[tokio::test]
async fn a_caller_leaving_while_the_inner_service_is_not_ready_is_never_called() {
    let ready = Gate::new();
    let mock = MockService::<u32, u32>::new(MockReply::ok);
    mock.set_ready(ReadyMode::Gated(ready.clone()));
    let svc: Q = Queue::new(mock.clone(), 4, 1);
    let mut s = svc.clone();
    ServiceExt::<u32>::ready(&mut s).await.unwrap();
    let fut = s.call(1);
    // The worker took the job and waits for the inner service's readiness.
    settle().await;
    assert_eq!(svc.stats().running, 1);
    // The caller leaves, and the inner service becomes ready, before the
    // worker runs again: it must not call the inner service for nobody.
    drop(fut);
    ready.open();
    settle().await;
    assert_eq!(
        mock.calls(),
        0,
        "the abandoned request never reached the inner service"
    );
    assert_eq!(svc.stats().abandoned, 1);
    assert_eq!(svc.stats().running, 0);
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn detach_lets_work_finish_after_its_caller_left() {
    let gate = Gate::new();
    let g = gate.clone();
    let mock = MockService::new(move |n: u32| MockReply::ok(n).after_gate(&g));
    let svc: Q = QueueLayer::new(4, 1).detach().layer(mock.clone());
    let caller = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    let mut s = svc.clone();
    drop(s.call(2)); // queued, caller gone at once
    caller.abort();
    settle().await;
    gate.open();
    settle().await;
    assert_eq!(mock.completed(), 2, "both ran to completion");
    assert_eq!(mock.dropped(), 0);
}

#[tokio::test]
async fn a_panicking_call_fails_alone_and_the_worker_keeps_serving() {
    let mock = MockService::new(|n: u32| {
        if n == 13 {
            MockReply::panic("unlucky")
        } else {
            MockReply::ok(n)
        }
    });
    let svc = Queue::new(mock, 4, 1);
    let sync_panic = Queue::new(
        service_fn(|n: u32| {
            assert!(n != 7, "panicked in call");
            std::future::ready(Ok::<_, Error>(n))
        }),
        4,
        1,
    );
    for round in 0..3 {
        assert_eq!(svc.clone().oneshot(round).await.unwrap(), round);
        let e = svc.clone().oneshot(13).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Inner);
        assert_eq!(e.find_source::<Panicked>().unwrap().message(), "unlucky");
        let e = sync_panic.clone().oneshot(7).await.unwrap_err();
        assert!(
            e.find_source::<Panicked>()
                .unwrap()
                .message()
                .contains("panicked in call")
        );
        assert_eq!(sync_panic.clone().oneshot(8).await.unwrap(), 8);
    }
    assert_eq!(svc.stats().panicked, 3);
    assert_eq!(svc.stats().live_workers, 1);
}

#[tokio::test]
async fn a_poll_ready_error_fails_the_call_it_was_for_not_the_queue() {
    let mock = MockService::new(MockReply::ok);
    mock.set_ready(ReadyMode::Fail(rampart_testkit::MockError::new(
        "not ready",
    )));
    let svc = Queue::new(mock.clone(), 4, 1);
    let e = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Inner);
    assert_eq!(svc.stats().failed, 1);
    mock.set_ready(ReadyMode::Ready);
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
}

#[tokio::test]
async fn close_refuses_new_work_finishes_the_queued_and_stops_every_worker() {
    let gate = Gate::new();
    let (svc, mock) = gated(&gate, 8, 3);
    let calls: Vec<_> = (0..6)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    settle().await;
    assert!(svc.close());
    assert!(!svc.close(), "closing twice is a no-op");
    assert!(svc.is_closed());
    let e = svc.clone().oneshot(99).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    assert_eq!(svc.try_submit(98).unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(svc.submit(97).await.unwrap_err().kind(), ErrorKind::Closed);
    gate.open();
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), i as u32);
    }
    svc.stopped().await;
    assert_eq!(svc.stats().live_workers, 0);
    assert_eq!(mock.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn drain_drops_the_rest_with_closed_at_its_deadline_and_stops_every_worker() {
    let gate = Gate::new();
    let (svc, mock) = gated(&gate, 8, 2);
    let calls: Vec<_> = (0..5)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    settle().await;
    let report = svc.drain(Duration::from_millis(100)).await;
    assert!(!report.in_time);
    assert_eq!(report.running_dropped, 2);
    assert_eq!(report.queued_dropped, 3);
    assert_eq!(report.took, Duration::from_millis(100));
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap_err().kind(), ErrorKind::Closed);
    }
    assert_eq!(svc.stats().live_workers, 0);
    assert_eq!(mock.dropped(), 2);
    assert_eq!(mock.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn drain_in_time_lets_everything_finish() {
    let mock = MockService::new(|n: u32| MockReply::ok(n).after(Duration::from_millis(10)));
    let svc = Queue::new(mock, 8, 2);
    let calls: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    settle().await;
    let report = svc.drain(Duration::from_secs(1)).await;
    assert!(report.in_time);
    assert_eq!(report.took, Duration::from_millis(20));
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), i as u32);
    }
}

#[tokio::test]
async fn dropping_every_handle_stops_the_workers() {
    // The inner service's clones are dropped with the workers.
    let weak = {
        let (svc, inner) = {
            let inner = Arc::new(());
            let i2 = Arc::clone(&inner);
            (
                Queue::new(
                    service_fn(move |n: u32| {
                        let _ = &i2;
                        std::future::ready(Ok::<_, Error>(n))
                    }),
                    4,
                    3,
                ),
                inner,
            )
        };
        assert_eq!(Arc::strong_count(&inner), 4);
        assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
        drop(svc);
        Arc::downgrade(&inner)
    };
    settle().await;
    assert_eq!(weak.strong_count(), 0, "every worker and its clone is gone");
}

#[tokio::test]
async fn submit_runs_fire_and_forget_jobs_and_try_submit_sheds_when_full() {
    let gate = Gate::new();
    let (svc, mock) = gated(&gate, 2, 1);
    svc.submit(1).await.unwrap();
    settle().await;
    svc.submit(2).await.unwrap();
    svc.try_submit(3).unwrap();
    assert_eq!(svc.try_submit(4).unwrap_err().kind(), ErrorKind::Overloaded);
    gate.open();
    svc.close();
    svc.stopped().await;
    assert_eq!(mock.completed(), 3);
    assert_eq!(svc.stats().shed, 1);
}

#[tokio::test]
async fn the_callers_context_is_in_scope_inside_the_worker() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let svc = Queue::new(
        service_fn(move |n: u32| {
            let at_call = Context::current().and_then(|c| c.request_id().cloned());
            let s2 = Arc::clone(&s2);
            async move {
                tokio::task::yield_now().await;
                let at_poll = Context::current().and_then(|c| c.request_id().cloned());
                s2.lock().unwrap().push((n, at_call, at_poll));
                Ok::<_, Error>(n)
            }
        }),
        4,
        2,
    );
    let id = RequestId::parse(b"req-7").unwrap();
    Context::new()
        .with_request_id(id.clone())
        .scope(svc.clone().oneshot(7))
        .await
        .unwrap();
    svc.clone().oneshot(8).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], (7, Some(id.clone()), Some(id)));
    assert_eq!(seen[1], (8, None, None));
}

#[tokio::test]
async fn workers_never_run_more_calls_than_there_are_workers() {
    let gate = Gate::new();
    let (svc, mock) = gated(&gate, 64, 3);
    let calls: Vec<_> = (0..40)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    settle().await;
    assert_eq!(mock.inflight(), 3);
    assert_eq!(svc.stats().queued, 37);
    gate.open();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(mock.peak_inflight(), 3);
}

#[test]
fn builder_refuses_zero_values_naming_the_field() {
    let e = QueueLayer::<u32>::builder()
        .capacity(0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "capacity");
    let e = QueueLayer::<u32>::builder().workers(0).build().unwrap_err();
    assert_eq!(e.field(), "workers");
    assert!(e.to_string().contains("workers = 0"), "{e}");
    let e = QueueLayer::<u32>::builder()
        .capacity(rampart_queue::MAX_CAPACITY + 1)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "capacity");
    assert!(e.to_string().contains("65537"), "{e}");
    let e = QueueLayer::<u32>::builder()
        .max_wait(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_wait");
    let cfg = QueueConfig {
        capacity: 3,
        workers: 2,
        when_full: WhenFull::Shed,
        ..QueueConfig::default()
    };
    assert_eq!(
        QueueLayer::<u32>::from_config(cfg.clone())
            .unwrap()
            .config(),
        &cfg
    );
}

#[tokio::test]
async fn zero_counts_as_one_and_a_huge_capacity_as_the_maximum_in_the_simple_constructor() {
    let svc: Q = QueueLayer::new(0, 0).layer(MockService::new(MockReply::ok));
    let s = svc.stats();
    assert_eq!((s.capacity, s.workers), (1, 1));
    assert_eq!(svc.clone().oneshot(3).await.unwrap(), 3);
    let huge: Q = QueueLayer::new(usize::MAX, 1).layer(MockService::new(MockReply::ok));
    assert_eq!(huge.stats().capacity, rampart_queue::MAX_CAPACITY);
}

#[test]
#[should_panic(expected = "a Queue must be built inside a Tokio runtime")]
fn building_outside_a_runtime_panics() {
    let _: Q = Queue::new(MockService::new(MockReply::ok), 1, 1);
}

#[tokio::test]
async fn the_response_future_is_send_and_counts_calls() {
    fn is_send<T: Send>(_: &T) {}
    let svc: Q = Queue::new(MockService::new(MockReply::ok), 1, 1);
    let fut = svc.clone().oneshot(1);
    is_send(&fut);
    assert_eq!(fut.await.unwrap(), 1);
    assert_eq!(svc.stats().completed, 1);
}

#[tokio::test]
async fn callers_waiting_for_space_are_served_first_come_first_served() {
    let gate = Gate::new();
    let order = Arc::new(Mutex::new(Vec::new()));
    let (g, o) = (gate.clone(), Arc::clone(&order));
    let mock = MockService::new(move |n: u32| {
        o.lock().unwrap().push(n);
        MockReply::ok(n).after_gate(&g)
    });
    let svc: Q = Queue::new(mock, 1, 1);
    let mut calls = Vec::new();
    for i in 0..8 {
        calls.push(tokio::spawn(svc.clone().oneshot(i)));
        settle().await;
    }
    // 0 running, 1 queued, 2..8 waiting for space in arrival order.
    gate.open();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
}

#[test]
fn workers_dropped_unpolled_with_their_runtime_stop_counting_as_live() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // The worker tasks are spawned but never polled: the runtime is dropped
    // right after the queue is built.
    let svc: Q = rt.block_on(async {
        Queue::new(service_fn(|n: u32| async move { Ok::<_, Error>(n) }), 4, 2)
    });
    drop(rt);
    let s = svc.stats();
    assert_eq!((s.workers, s.live_workers), (2, 0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), svc.stopped())
            .await
            .expect("stopped() resolves once no worker is live");
    });
}

/// Counts the polls of the future it wraps.
struct Polls<F> {
    fut: std::pin::Pin<Box<F>>,
    polls: Arc<std::sync::atomic::AtomicUsize>,
}

impl<F: std::future::Future> std::future::Future for Polls<F> {
    type Output = F::Output;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        self.polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.fut.as_mut().poll(cx)
    }
}

#[tokio::test]
async fn a_caller_waiting_for_space_gets_its_place_without_being_woken() {
    let gate = Gate::new();
    let (svc, mock) = full_queue(&gate).await;
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let waiter = tokio::spawn(Polls {
        fut: Box::pin(svc.clone().oneshot(3)),
        polls: Arc::clone(&polls),
    });
    settle().await;
    assert_eq!(svc.stats().waiting, 1);
    assert_eq!(polls.load(std::sync::atomic::Ordering::Relaxed), 1);
    // The running call ends: the worker takes 2 and moves 3 into the
    // place 2 freed, without waking its caller.
    gate.open();
    assert_eq!(waiter.await.unwrap().unwrap(), 3);
    assert_eq!(
        polls.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "polled once to wait, once for the answer"
    );
    assert_eq!(mock.calls(), 3);
    assert_eq!(svc.stats().waiting, 0);
}

#[tokio::test]
async fn callers_that_leave_while_waiting_for_space_are_never_run_and_close_fails_the_rest() {
    let gate = Gate::new();
    let (svc, mock) = full_queue(&gate).await;
    let leaving: Vec<_> = (10..20)
        .map(|n| tokio::spawn(svc.clone().oneshot(n)))
        .collect();
    let staying = tokio::spawn(svc.clone().oneshot(3));
    settle().await;
    assert_eq!(svc.stats().waiting, 11);
    for h in leaving {
        h.abort();
    }
    settle().await;
    assert_eq!(svc.stats().waiting, 1, "the callers that left are gone");
    let last = tokio::spawn(svc.clone().oneshot(4));
    settle().await;
    assert_eq!(svc.stats().waiting, 2);
    svc.close();
    assert_eq!(svc.stats().waiting, 0);
    assert_eq!(last.await.unwrap().unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        staying.await.unwrap().unwrap_err().kind(),
        ErrorKind::Closed
    );
    gate.open();
    svc.stopped().await;
    assert_eq!(mock.calls(), 2, "only the running and the queued call ran");
    assert_eq!(svc.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn a_submission_waiting_for_space_resolves_when_placed_and_is_withdrawn_when_it_gives_up() {
    let gate = Gate::new();
    let (svc, mock) = gated_one_place_waiting_50ms(&gate);
    tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    svc.submit(2).await.unwrap();
    settle().await;
    // Full: 1 running, 2 queued. A submission past max_wait is shed.
    let start = Instant::now();
    let e = svc.submit(3).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overloaded);
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    // One past its deadline ends with it.
    let ctx = Context::new().with_timeout(Duration::from_millis(20));
    let e = ctx.scope(svc.submit(4)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    // One dropped while waiting is withdrawn.
    let dropped = tokio::spawn({
        let svc = svc.clone();
        async move { svc.submit(5).await }
    });
    settle().await;
    assert_eq!(svc.stats().waiting, 1);
    dropped.abort();
    settle().await;
    assert_eq!(svc.stats().waiting, 0);
    // One that waits gets its place when the worker frees one.
    let placed = tokio::spawn({
        let svc = svc.clone();
        async move { svc.submit(6).await }
    });
    settle().await;
    assert!(!placed.is_finished());
    gate.open();
    placed.await.unwrap().unwrap();
    settle().await;
    assert_eq!(mock.calls(), 3, "1, 2 and 6 ran; 3, 4 and 5 never did");
    assert_eq!(svc.stats().shed, 1);
}
