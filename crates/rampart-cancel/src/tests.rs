use crate::{CancelInfo, CancelLayer, CancelReason, Shutdown};
use rampart_core::{CancellationToken, Context, Error, ErrorKind, RequestId};
use rampart_testkit::{MockReply, MockService, cancel_at_every_poll};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

type Seen = Arc<Mutex<Vec<CancelInfo>>>;

/// A layer whose hook records every call.
fn recording(layer: CancelLayer) -> (CancelLayer, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    (
        layer.on_cancel(move |info| log.lock().unwrap().push(info.clone())),
        seen,
    )
}

fn reasons(seen: &Seen) -> Vec<CancelReason> {
    seen.lock()
        .unwrap()
        .iter()
        .map(CancelInfo::reason)
        .collect()
}

fn id(s: &str) -> RequestId {
    RequestId::parse(s.as_bytes()).unwrap()
}

fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// The current request's token, from inside a handler.
fn current_token() -> CancellationToken {
    Context::current()
        .and_then(|c| c.cancellation().cloned())
        .expect("the handler runs with a token")
}

#[tokio::test(start_paused = true)]
async fn token_fired_drops_the_inner_future_runs_cleanup_once_and_resolves_cancelled() {
    let mock = MockService::<(), ()>::new(|()| MockReply::pending());
    let (layer, seen) = recording(CancelLayer::new());
    let svc = layer.layer(mock.clone());
    let parent = CancellationToken::new();
    let ctx = Context::new()
        .with_request_id(id("req-7"))
        .with_cancellation(parent.clone());
    let call = tokio::spawn(ctx.scope(svc.oneshot(())));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mock.inflight(), 1);
    parent.cancel();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(mock.dropped(), 1, "the inner future was dropped");
    assert_eq!(mock.inflight(), 0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "cleanup ran exactly once");
    assert_eq!(seen[0].reason(), CancelReason::Token);
    assert_eq!(seen[0].request_id().unwrap().as_str(), "req-7");
    assert_eq!(seen[0].elapsed(), Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn normal_completion_runs_no_cleanup_and_leaves_the_token_uncancelled() {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let kept = tokens.clone();
    let (layer, seen) = recording(CancelLayer::new());
    let svc = layer.layer(service_fn(move |n: u64| {
        kept.lock().unwrap().push(current_token());
        async move {
            tokio::time::sleep(Duration::from_millis(n)).await;
            Ok::<_, Error>(n)
        }
    }));
    for n in [0, 5, 50] {
        assert_eq!(svc.clone().oneshot(n).await.unwrap(), n);
    }
    assert!(seen.lock().unwrap().is_empty(), "no cleanup on completion");
    let tokens = tokens.lock().unwrap();
    assert_eq!(tokens.len(), 3);
    assert!(tokens.iter().all(|t| !t.is_cancelled()));
    assert_eq!(layer.shutdown().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn caller_drop_cancels_the_token_and_a_task_spawned_with_the_context_observes_it() {
    let (tx, rx) = tokio::sync::oneshot::channel::<Duration>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let (layer, seen) = recording(CancelLayer::new());
    let svc = layer.layer(service_fn(move |()| {
        let tx = tx.clone();
        async move {
            let started = Instant::now();
            // Background work that outlives nothing: it stops when the
            // request is cancelled.
            rampart_core::spawn(async move {
                let token = current_token();
                token.cancelled().await;
                let _ = tx.lock().unwrap().take().unwrap().send(started.elapsed());
            });
            std::future::pending::<Result<(), Error>>().await
        }
    }));
    let call = tokio::spawn(svc.oneshot(()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    call.abort(); // the caller goes away
    assert!(call.await.unwrap_err().is_cancelled());
    let observed_after = tokio::time::timeout(Duration::from_secs(1), rx)
        .await
        .expect("the spawned task saw the cancellation")
        .unwrap();
    assert_eq!(observed_after, Duration::from_secs(2));
    assert_eq!(reasons(&seen), [CancelReason::CallerDropped]);
}

#[tokio::test]
async fn the_handler_sees_a_child_of_the_caller_token_with_the_caller_id_and_deadline() {
    let svc = CancelLayer::new().layer(service_fn(|()| async {
        let ctx = Context::current().unwrap();
        Ok::<_, Error>((
            ctx.request_id().map(ToString::to_string),
            ctx.deadline(),
            ctx.cancellation().unwrap().clone(),
        ))
    }));
    let parent = CancellationToken::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let outer = Context::new()
        .with_request_id(id("outer"))
        .with_deadline(deadline)
        .with_cancellation(parent.clone());
    let (rid, at, token) = outer.scope(svc.oneshot(())).await.unwrap();
    assert_eq!(rid.as_deref(), Some("outer"));
    assert_eq!(at, Some(deadline));
    assert!(!token.is_cancelled());
    parent.cancel();
    assert!(token.is_cancelled(), "a child of the caller's token");
}

#[tokio::test]
async fn each_request_has_its_own_token_and_cancel_all_fires_every_one_in_flight() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (layer, seen) = recording(CancelLayer::new());
    let svc = layer.layer(service_fn(move |()| {
        let _ = tx.send(current_token());
        std::future::pending::<Result<(), Error>>()
    }));
    let first_call = tokio::spawn(svc.clone().oneshot(()));
    let first = rx.recv().await.unwrap();
    let second_call = tokio::spawn(svc.clone().oneshot(()));
    let second = rx.recv().await.unwrap();
    tokio::task::yield_now().await;
    first.cancel();
    let res = first_call.await.unwrap();
    assert_eq!(
        res.unwrap_err().kind(),
        ErrorKind::Cancelled,
        "its token fired"
    );
    assert!(!second.is_cancelled(), "each request has its own token");
    assert!(!layer.shutdown().is_cancelled());
    layer.shutdown().cancel_all();
    let res = second_call.await.unwrap();
    assert_eq!(res.unwrap_err().kind(), ErrorKind::Cancelled);
    assert!(
        second.is_cancelled(),
        "cancel_all fired the request's token"
    );
    assert!(layer.shutdown().is_cancelled());
    assert_eq!(
        reasons(&seen),
        [CancelReason::Token, CancelReason::Shutdown]
    );
    layer.shutdown().cancelled().await;
}

#[tokio::test]
async fn an_already_cancelled_caller_never_reaches_the_inner_service() {
    let mock = MockService::<(), ()>::new(|()| MockReply::ok(()));
    let (layer, seen) = recording(CancelLayer::new());
    let svc = layer.layer(mock.clone());
    let parent = CancellationToken::new();
    parent.cancel();
    let res = Context::new()
        .with_cancellation(parent)
        .scope(svc.oneshot(()))
        .await;
    assert_eq!(res.unwrap_err().kind(), ErrorKind::Cancelled);
    assert_eq!(mock.calls(), 0);
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing ran: nothing to clean"
    );
    assert_eq!(layer.shutdown().in_flight(), 0);
}

#[tokio::test]
async fn errors_of_the_inner_service_pass_through_typed_and_count_as_completed() {
    let shed = CancelLayer::new().layer(service_fn(|()| async {
        Err::<(), _>(Error::overloaded(None))
    }));
    assert_eq!(
        shed.oneshot(()).await.unwrap_err().kind(),
        ErrorKind::Overloaded
    );
    let (layer, seen) = recording(CancelLayer::new());
    let failing = layer.layer(MockService::<(), ()>::new(|()| MockReply::err("boom")));
    let err = failing.oneshot(()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Inner);
    let source = std::error::Error::source(&err).expect("the inner error is the source");
    assert_eq!(source.to_string(), "boom");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancel_at_every_poll_leaks_nothing_and_cleans_up_once_per_cancellation() {
    let mock = MockService::<(), ()>::new(|()| {
        MockReply::ok(())
            .after_yield()
            .after(Duration::from_millis(10))
            .after_yield()
    });
    let (layer, seen) = recording(CancelLayer::new());
    let shutdown = layer.shutdown().clone();
    let svc = layer.layer(mock.clone());
    let mut runs = 0;
    let drops = cancel_at_every_poll(
        || {
            runs += 1;
            // Called at once (the mock is always ready), so a drop after
            // 0 polls cancels a request too.
            svc.clone().call(())
        },
        || {
            if mock.inflight() != 0 {
                return Err(format!("{} inner calls still in flight", mock.inflight()));
            }
            if shutdown.in_flight() != 0 {
                return Err(format!("{} requests still tracked", shutdown.in_flight()));
            }
            Ok(())
        },
    )
    .await
    .unwrap();
    assert!(drops >= 3, "several suspension points: {drops}");
    // Every run but the last was dropped before completing: one cleanup each.
    assert_eq!(runs, drops + 1);
    let reasons = reasons(&seen);
    assert_eq!(
        reasons.len(),
        drops,
        "exactly one cleanup per cancelled run"
    );
    assert!(reasons.iter().all(|r| *r == CancelReason::CallerDropped));
    assert_eq!(mock.completed(), 1);
}

#[tokio::test(start_paused = true)]
async fn drain_lets_fast_requests_finish_cancels_slow_ones_and_refuses_new_calls() {
    let (layer, seen) = recording(CancelLayer::new());
    let shutdown = layer.shutdown().clone();
    let svc = layer.layer(service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Error>(ms)
    }));
    let calls: Vec<_> = [100, 200, 5_000, 9_000]
        .into_iter()
        .map(|ms| tokio::spawn(svc.clone().oneshot(ms)))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(shutdown.in_flight(), 4);
    let drain = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { shutdown.drain(Duration::from_secs(1)).await }
    });
    tokio::task::yield_now().await;
    assert!(shutdown.is_draining());
    let refused = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Closed);
    let report = drain.await.unwrap();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap().map_err(|e| e.kind()));
    }
    assert_eq!(
        outcomes,
        [
            Ok(100),
            Ok(200),
            Err(ErrorKind::Cancelled),
            Err(ErrorKind::Cancelled)
        ]
    );
    assert_eq!(report.completed(), 2);
    assert_eq!(report.cancelled(), 2);
    assert_eq!(report.unfinished(), 0);
    assert_eq!(report.refused(), 1);
    assert_eq!(report.in_flight_at_start(), 4);
    assert!(report.deadline_hit());
    assert_eq!(report.elapsed(), Duration::from_secs(1));
    assert_eq!(
        reasons(&seen),
        [CancelReason::Shutdown, CancelReason::Shutdown]
    );
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn drain_with_nothing_in_flight_returns_at_once_and_a_zero_deadline_cancels_at_once() {
    let idle = Shutdown::new();
    let report = idle.drain(Duration::from_secs(30)).await;
    assert_eq!(report.in_flight_at_start(), 0);
    assert!(!report.deadline_hit());
    assert_eq!(report.elapsed(), Duration::ZERO);

    let layer = CancelLayer::new();
    let svc = layer.layer(MockService::<(), ()>::new(|()| MockReply::pending()));
    let call = tokio::spawn(svc.oneshot(()));
    tokio::task::yield_now().await;
    let report = layer.shutdown().drain(Duration::ZERO).await;
    assert_eq!(
        call.await.unwrap().unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    assert_eq!((report.completed(), report.cancelled()), (0, 1));
    assert_eq!(report.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_caller_token_is_not_the_server_wide_one_is_still_drained() {
    let (layer, seen) = recording(CancelLayer::new());
    let svc = layer.layer(MockService::<(), ()>::new(|()| MockReply::pending()));
    let caller = CancellationToken::new();
    let call = tokio::spawn(
        Context::new()
            .with_cancellation(caller.clone())
            .scope(svc.oneshot(())),
    );
    tokio::task::yield_now().await;
    let report = layer.shutdown().drain(Duration::from_millis(10)).await;
    assert_eq!(
        call.await.unwrap().unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    assert_eq!(report.cancelled(), 1);
    assert_eq!(reasons(&seen), [CancelReason::Shutdown]);
    assert!(
        !caller.is_cancelled(),
        "the caller's own token is left alone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_future_abandoned_by_its_caller_is_reported_unfinished_and_the_drain_does_not_hang() {
    let layer = CancelLayer::new();
    let svc = layer.layer(MockService::<(), ()>::new(|()| MockReply::pending()));
    let mut held = pin!(svc.oneshot(()));
    assert!(poll_once(held.as_mut()).is_pending());
    let report = layer
        .shutdown()
        .drain_with_grace(Duration::from_secs(1), Duration::from_secs(2))
        .await;
    assert_eq!(report.unfinished(), 1);
    assert_eq!(report.elapsed(), Duration::from_secs(3));
    // Polled again, it resolves at once; dropped, it is no longer in flight.
    let Poll::Ready(Err(e)) = poll_once(held.as_mut()) else {
        panic!("cancelled");
    };
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_eq!(layer.shutdown().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_hook_is_contained_and_the_next_hook_still_runs() {
    let (layer, seen) = recording(CancelLayer::new().on_cancel(|_| panic!("hook bug")));
    let svc = layer.layer(MockService::<(), ()>::new(|()| MockReply::pending()));
    let mut call = Box::pin(svc.oneshot(()));
    assert!(poll_once(call.as_mut()).is_pending());
    drop(call);
    assert_eq!(reasons(&seen), [CancelReason::CallerDropped]);
}

#[tokio::test(start_paused = true)]
async fn async_cleanup_is_spawned_with_the_request_id_bounded_by_its_timeout_and_awaited_by_drain()
{
    let done = Arc::new(Mutex::new(Vec::new()));
    let log = done.clone();
    let layer = CancelLayer::new().on_cancel_async(Duration::from_secs(2), move |info| {
        let log = log.clone();
        async move {
            let ctx = Context::current().expect("the cleanup runs in a context");
            assert!(ctx.cancellation().is_none(), "no cancelled token");
            let secs = info.request_id().map_or(0, |id| id.as_str().len() as u64);
            tokio::time::sleep(Duration::from_secs(secs)).await;
            log.lock()
                .unwrap()
                .push(ctx.request_id().unwrap().to_string());
        }
    });
    let svc = layer.layer(MockService::<(), ()>::new(|()| MockReply::pending()));
    // Ids of length 1 (cleanup takes 1 s) and 3 (3 s: past its 2 s timeout).
    for rid in ["a", "bbb"] {
        let call = tokio::spawn(
            Context::new()
                .with_request_id(id(rid))
                .scope(svc.clone().oneshot(())),
        );
        tokio::task::yield_now().await;
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
    }
    let started = Instant::now();
    let report = layer
        .shutdown()
        .drain_with_grace(Duration::ZERO, Duration::from_secs(10))
        .await;
    assert_eq!(*done.lock().unwrap(), ["a"], "the slow cleanup was dropped");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "waited for cleanups"
    );
    assert_eq!(report.in_flight_at_start(), 0);
}

#[tokio::test]
async fn cancel_reasons_display_and_the_service_exposes_its_inner() {
    assert_eq!(
        CancelReason::CallerDropped.to_string(),
        "caller dropped the response future"
    );
    let mut svc = CancelLayer::new().layer(7_u8);
    assert_eq!(*svc.get_ref(), 7);
    *svc.get_mut() = 8;
    assert_eq!(svc.into_inner(), 8);
    let shutdown = Shutdown::default();
    let svc = crate::Cancel::new(
        service_fn(|()| async { Ok::<_, Error>(()) }),
        &CancelLayer::with_shutdown(&shutdown),
    );
    shutdown.close();
    let mut svc = svc;
    let fut = svc.call(());
    assert_eq!(fut.await.unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test]
#[should_panic(expected = "polled after it completed")]
async fn polling_a_response_future_after_it_completed_panics() {
    let mut svc = CancelLayer::new().layer(service_fn(|()| async { Ok::<_, Error>(()) }));
    let mut fut = pin!(svc.call(()));
    assert!(matches!(poll_once(fut.as_mut()), Poll::Ready(Ok(()))));
    let _ = poll_once(fut.as_mut());
}

/// A tiny seeded generator (xorshift) for the mixed-load test.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(start_paused = true)]
async fn under_mixed_load_every_admitted_request_is_accounted_for_once_and_nothing_leaks() {
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (layer, seen) = recording(CancelLayer::new());
    let shutdown = layer.shutdown().clone();
    let svc = layer.layer(service_fn({
        let live = live.clone();
        move |ms: u64| {
            let live = live.clone();
            async move {
                struct Live(Arc<std::sync::atomic::AtomicUsize>);
                impl Drop for Live {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _live = Live(live);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, Error>(ms)
            }
        }
    }));
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut calls = Vec::new();
    for i in 0..300_u64 {
        let ms = next(&mut rng) % 2_000;
        // One caller in five gives up after a random wait.
        let patience = next(&mut rng)
            .is_multiple_of(5)
            .then(|| next(&mut rng) % 1_500);
        let svc = svc.clone();
        calls.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 3)).await;
            let call = svc.oneshot(ms);
            match patience {
                Some(p) => tokio::time::timeout(Duration::from_millis(p), call)
                    .await
                    .map_err(|_| "gave up"),
                None => Ok(call.await),
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    let at_drain = seen.lock().unwrap().len();
    let in_flight = shutdown.in_flight();
    let report = shutdown.drain(Duration::from_millis(700)).await;
    assert_eq!(report.in_flight_at_start(), in_flight, "counts add up");
    let (mut ok, mut cancelled, mut closed, mut gave_up) = (0, 0, 0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) if e.kind() == ErrorKind::Cancelled => cancelled += 1,
            Ok(Err(e)) if e.kind() == ErrorKind::Closed => closed += 1,
            Ok(Err(e)) => panic!("unexpected error {e}"),
            Err(_) => gave_up += 1,
        }
    }
    assert_eq!(ok + cancelled + closed + gave_up, 300);
    assert_eq!(
        live.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no handler left alive"
    );
    assert_eq!(shutdown.in_flight(), 0);
    assert_eq!(report.unfinished(), 0);
    assert_eq!(closed, report.refused(), "every refused call was counted");
    assert!(closed > 0 && report.cancelled() > 0 && report.completed() > 0);
    // One cleanup per cancellation, whatever its cause.
    let reasons = reasons(&seen);
    assert_eq!(reasons.len(), cancelled + gave_up);
    let by_shutdown = reasons
        .iter()
        .filter(|r| **r == CancelReason::Shutdown)
        .count();
    assert_eq!(by_shutdown, cancelled, "the drain's cancellations");
    // Cancellations after the drain began (drain deadline or callers that
    // gave up during it) are in the report.
    assert_eq!(report.cancelled(), reasons.len() - at_drain);
}

/// An inner service that is never ready, as a saturated limit below.
#[derive(Clone)]
struct NeverReady;

impl Service<()> for NeverReady {
    type Response = ();
    type Error = Error;
    type Future = std::future::Ready<Result<(), Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Pending
    }

    fn call(&mut self, (): ()) -> Self::Future {
        unreachable!("never ready, never called")
    }
}

#[tokio::test(start_paused = true)]
async fn once_draining_a_caller_is_refused_at_once_without_waiting_for_the_inner_to_be_ready() {
    let layer = CancelLayer::new();
    let shutdown = layer.shutdown();
    let mut svc = layer.layer(NeverReady);
    // Before the drain, readiness is the inner's: still pending.
    assert!(poll_once(pin!(svc.ready())).is_pending());

    let report = shutdown.drain(Duration::from_secs(5)).await;
    assert_eq!(report.in_flight_at_start(), 0);
    let refused = tokio::time::timeout(Duration::from_secs(1), svc.oneshot(()))
        .await
        .expect("a refused call must not wait for the inner's readiness");
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_request_nobody_asks_about_makes_no_token_and_completes() {
    let (layer, seen) = recording(CancelLayer::new());
    let svc = layer.layer(service_fn(|()| async {
        tokio::task::yield_now().await;
        let made = Context::with_current(|c| c.unwrap().peek_cancellation().is_some());
        Ok::<_, Error>(made)
    }));
    assert!(!svc.clone().oneshot(()).await.unwrap(), "no token was made");
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(layer.shutdown().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_token_first_made_after_the_request_went_pending_is_watched_when_it_fires() {
    let (layer, seen) = recording(CancelLayer::new());
    let svc = layer.layer(service_fn(|()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Made only now, two polls in; a task cancels it a second later.
        let token = current_token();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            token.cancel();
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Error>(())
    }));
    let started = Instant::now();
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(reasons(&seen), [CancelReason::Token]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_a_token_made_after_the_first_pending_for_the_tasks_holding_it() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let layer = CancelLayer::new();
    let shutdown = layer.shutdown().clone();
    let svc = layer.layer(service_fn(move |()| {
        let tx = tx.clone();
        async move {
            tokio::task::yield_now().await;
            rampart_core::spawn(async move {
                current_token().cancelled().await;
                let _ = tx.lock().unwrap().take().unwrap().send(());
            });
            std::future::pending::<Result<(), Error>>().await
        }
    }));
    let call = tokio::spawn(svc.oneshot(()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = shutdown.drain(Duration::ZERO).await;
    assert_eq!(report.cancelled(), 1);
    assert_eq!(
        call.await.unwrap().unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    tokio::time::timeout(Duration::from_secs(1), rx)
        .await
        .expect("the spawned task saw the shutdown")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_drop_guard_in_the_handler_sees_the_token_cancelled_when_the_caller_leaves() {
    struct Guard(Arc<Mutex<Option<bool>>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            // Asks for the token only while being dropped: nobody made it
            // before, and it is cancelled all the same.
            let cancelled = Context::with_current(|c| {
                c.and_then(Context::cancellation)
                    .map(CancellationToken::is_cancelled)
            });
            *self.0.lock().unwrap() = cancelled;
        }
    }
    let saw = Arc::new(Mutex::new(None));
    let kept = saw.clone();
    let svc = CancelLayer::new().layer(service_fn(move |()| {
        let guard = Guard(kept.clone());
        async move {
            let _guard = guard;
            std::future::pending::<Result<(), Error>>().await
        }
    }));
    let mut call = Box::pin(svc.oneshot(()));
    assert!(poll_once(call.as_mut()).is_pending());
    drop(call);
    assert_eq!(*saw.lock().unwrap(), Some(true));
}

/// A waker that counts its wake-ups.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn counting_waker() -> (std::task::Waker, Arc<CountingWaker>) {
    let count = Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
    (std::task::Waker::from(count.clone()), count)
}

fn wakes(count: &CountingWaker) -> usize {
    count.0.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn cancel_all_wakes_the_waker_of_the_latest_poll_when_the_request_moved_to_another_task() {
    let mock = MockService::<(), ()>::new(|()| MockReply::pending());
    let (layer, seen) = recording(CancelLayer::new());
    let shutdown = layer.shutdown().clone();
    let mut svc = layer.layer(mock.clone());
    let mut fut = pin!(svc.call(()));
    let (first, first_count) = counting_waker();
    let (second, second_count) = counting_waker();
    // Pending under one task, then under another (and again the same).
    for waker in [&first, &second, &second] {
        let mut cx = std::task::Context::from_waker(waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    shutdown.cancel_all();
    assert_eq!(wakes(&first_count), 0, "the old task is not woken");
    assert_eq!(wakes(&second_count), 1, "the task polling it now is");
    let mut cx = std::task::Context::from_waker(&second);
    let Poll::Ready(Err(err)) = fut.as_mut().poll(&mut cx) else {
        panic!("cancelled at its next poll");
    };
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(reasons(&seen), [CancelReason::Shutdown]);
    assert_eq!(mock.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn requests_that_ended_are_not_woken_by_cancel_all_and_later_ones_are_cancelled_at_their_first_pending()
 {
    let mock = MockService::<(), ()>::new(|()| MockReply::pending());
    let (layer, seen) = recording(CancelLayer::new());
    let shutdown = layer.shutdown().clone();
    let mut svc = layer.layer(mock.clone());
    let (ended, ended_count) = counting_waker();
    {
        // Pending once, then dropped by its caller: it leaves the waiters.
        let mut fut = pin!(svc.call(()));
        let mut cx = std::task::Context::from_waker(&ended);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    let (waiting, waiting_count) = counting_waker();
    let mut fut = pin!(svc.call(()));
    let mut cx = std::task::Context::from_waker(&waiting);
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    shutdown.cancel_all();
    assert_eq!(wakes(&ended_count), 0);
    assert_eq!(wakes(&waiting_count), 1);
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Err(_))));
    // Admitted after `cancel_all`: cancelled as soon as it is pending.
    let mut late = pin!(svc.call(()));
    let Poll::Ready(Err(err)) = late.as_mut().poll(&mut cx) else {
        panic!("cancelled at its first pending");
    };
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(
        reasons(&seen),
        [
            CancelReason::CallerDropped,
            CancelReason::Shutdown,
            CancelReason::Shutdown
        ]
    );
    assert_eq!(mock.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancel_all_wakes_requests_pending_on_every_lane_and_the_drain_counts_them_all() {
    let layer = CancelLayer::new();
    let shutdown = layer.shutdown().clone();
    let svc = layer.layer(service_fn(|()| {
        std::future::pending::<Result<(), std::io::Error>>()
    }));
    // Calls made and first polled on many threads: their lanes (given
    // round-robin to threads) cover several of the shutdown's lanes.
    let threads = 4 * crate::shutdown::LANES;
    let pending: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
                s.spawn(move || {
                    let (waker, count) = counting_waker();
                    let mut fut = Box::pin(svc.call(()));
                    let mut cx = std::task::Context::from_waker(&waker);
                    assert!(fut.as_mut().poll(&mut cx).is_pending());
                    (fut, waker, count)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let lanes_used = shutdown
        .shared
        .lanes
        .iter()
        .filter(|l| l.waiters.len() > 0)
        .count();
    assert!(
        lanes_used > 1,
        "the requests spread over lanes ({lanes_used})"
    );
    assert_eq!(shutdown.in_flight(), threads);
    let drain = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { shutdown.drain(Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    // The deadline passed: `cancel_all` woke every one of them.
    for (mut fut, waker, count) in pending {
        assert_eq!(wakes(&count), 1);
        let mut cx = std::task::Context::from_waker(&waker);
        let Poll::Ready(Err(err)) = fut.as_mut().poll(&mut cx) else {
            panic!("cancelled");
        };
        assert_eq!(err.kind(), ErrorKind::Cancelled);
    }
    let report = drain.await.unwrap();
    assert!(report.deadline_hit());
    assert_eq!((report.cancelled(), report.unfinished()), (threads, 0));
    assert_eq!(shutdown.in_flight(), 0);
    assert!(shutdown.shared.lanes.iter().all(|l| l.waiters.len() == 0));
}
