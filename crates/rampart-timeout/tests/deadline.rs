//! `DeadlineLayer`: sets the Context deadline (earliest wins), bounds the
//! whole call, rejects expired-on-arrival requests (paused clock).

mod common;
use common::{ms, within_an_hour};
use rampart_core::{Context, ErrorKind};
use rampart_testkit::{Gate, MockReply, MockService, ReadyMode};
use rampart_timeout::{ConfigError, DeadlineLayer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

/// The deadlines the inner work saw, one per call.
type Seen = Arc<Mutex<Vec<Option<Instant>>>>;

fn deadline(d: Duration) -> DeadlineLayer {
    DeadlineLayer::new(d)
}

/// A mock that records the deadline the inner work sees, then never answers.
fn recording() -> (MockService<(), ()>, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mock = MockService::<(), ()>::new(|()| MockReply::pending());
    let log = seen.clone();
    mock.on_call(move |()| log.lock().unwrap().push(Context::current_deadline()));
    (mock, seen)
}

#[tokio::test(start_paused = true)]
async fn fires_exactly_at_the_deadline_with_deadline_exceeded() {
    let (mock, seen) = recording();
    let start = Instant::now();
    let err = within_an_hour(deadline(ms(300)).layer(mock.clone()).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), ms(300));
    assert_eq!(*seen.lock().unwrap(), [Some(start + ms(300))]);
    assert_eq!(mock.dropped(), 1, "the inner call was dropped");
}

#[tokio::test(start_paused = true)]
async fn inner_work_sees_the_deadline_through_context_current() {
    let svc = deadline(ms(300)).layer(tower::service_fn(|()| async {
        tokio::time::sleep(ms(100)).await;
        let ctx = Context::current().expect("a context is in scope");
        Ok::<_, std::convert::Infallible>(ctx.remaining())
    }));
    let left = within_an_hour(svc.oneshot(())).await.unwrap();
    assert_eq!(left, Some(ms(200)));
}

#[tokio::test(start_paused = true)]
async fn nested_deadlines_the_shorter_wins_whichever_is_outside() {
    for (outer, inner) in [(ms(300), ms(5000)), (ms(5000), ms(300))] {
        let (mock, seen) = recording();
        let svc = deadline(outer).layer(deadline(inner).layer(mock));
        let start = Instant::now();
        let err = within_an_hour(svc.oneshot(())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
        assert_eq!(start.elapsed(), ms(300), "outer {outer:?}, inner {inner:?}");
        assert_eq!(*seen.lock().unwrap(), [Some(start + ms(300))]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_callers_shorter_context_deadline_is_never_extended() {
    let (mock, seen) = recording();
    let start = Instant::now();
    let caller = Context::new().with_deadline(start + ms(120));
    let err =
        within_an_hour(caller.scope(deadline(Duration::from_secs(5)).layer(mock).oneshot(())))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), ms(120));
    assert_eq!(*seen.lock().unwrap(), [Some(start + ms(120))]);
}

#[tokio::test(start_paused = true)]
async fn the_layer_keeps_the_callers_request_id_and_token() {
    let id = rampart_core::RequestId::parse(b"req-42").unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let caller = Context::new()
        .with_request_id(id)
        .with_cancellation(token.clone());
    let svc = deadline(ms(300)).layer(tower::service_fn(|()| async {
        let ctx = Context::current().unwrap();
        Ok::<_, std::convert::Infallible>((
            ctx.request_id().map(ToString::to_string),
            ctx.cancellation().is_some(),
        ))
    }));
    let (id, has_token) = within_an_hour(caller.scope(svc.oneshot(()))).await.unwrap();
    assert_eq!(id.as_deref(), Some("req-42"));
    assert!(has_token);
}

#[tokio::test(start_paused = true)]
async fn expired_on_arrival_never_reaches_the_inner_service() {
    let mock = MockService::<(), ()>::new(|()| MockReply::ok(()));
    let start = Instant::now();
    tokio::time::advance(ms(50)).await;
    let caller = Context::new().with_deadline(start + ms(10)); // 40 ms ago
    let err = caller
        .scope(
            deadline(Duration::from_secs(5))
                .layer(mock.clone())
                .oneshot(()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(mock.calls(), 0);
    assert_eq!(start.elapsed(), ms(50), "answered at once");
}

#[tokio::test(start_paused = true)]
async fn the_wait_for_readiness_counts_against_the_deadline() {
    let mock = MockService::<(), ()>::new(|()| MockReply::ok(()));
    mock.set_ready(ReadyMode::Gated(Gate::new()));
    let start = Instant::now();
    let err = within_an_hour(deadline(ms(400)).layer(mock.clone()).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), ms(400));
    assert_eq!(mock.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_service_called_after_waiting_for_readiness_sees_the_deadline() {
    let gate = Gate::new();
    let (mock, seen) = recording();
    mock.set_ready(ReadyMode::Gated(gate.clone()));
    let start = Instant::now();
    let opener = tokio::spawn(async move {
        tokio::time::sleep(ms(100)).await;
        gate.open();
    });
    let err = within_an_hour(deadline(ms(400)).layer(mock).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(*seen.lock().unwrap(), [Some(start + ms(400))]);
    opener.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_timeout_inside_a_deadline_reports_whichever_fires_first() {
    let mock = MockService::<(), ()>::new(|()| MockReply::pending());
    let svc = deadline(ms(250)).layer(rampart_timeout::TimeoutLayer::new(ms(100)).layer(mock));
    let err = within_an_hour(svc.clone().oneshot(())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let svc = deadline(ms(50)).layer(
        rampart_timeout::TimeoutLayer::new(ms(100))
            .layer(MockService::<(), ()>::new(|()| MockReply::pending())),
    );
    let err = within_an_hour(svc.oneshot(())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
}

#[test]
fn zero_budget_is_refused_by_try_new_naming_the_field() {
    let err: ConfigError = DeadlineLayer::try_new(Duration::ZERO).unwrap_err();
    assert_eq!(err.field(), "budget");
    assert!(err.to_string().contains("budget"), "{err}");
    assert_eq!(DeadlineLayer::try_new(ms(5)).unwrap().budget(), ms(5));
    assert_eq!(deadline(ms(5)).budget(), ms(5));
}

#[tokio::test(start_paused = true)]
async fn a_zero_budget_means_already_expired() {
    let (mock, _) = recording();
    let err = deadline(Duration::ZERO)
        .layer(mock.clone())
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(
        mock.calls(),
        0,
        "expired on arrival: the inner is not called"
    );
    let server =
        DeadlineLayer::from_headers(Duration::ZERO, rampart_timeout::DeadlineHeaders::new());
    assert_eq!(server.budget(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn wraps_a_box_service_and_bounds_a_never_ready_one() {
    let ready =
        tower::util::BoxService::new(MockService::<u32, u32>::new(|n| MockReply::ok(n + 1)));
    assert_eq!(deadline(ms(100)).layer(ready).oneshot(1).await.unwrap(), 2);

    let mock = MockService::<u32, u32>::new(|n| MockReply::ok(n + 1));
    mock.set_ready(ReadyMode::Gated(Gate::new()));
    let start = Instant::now();
    let never = tower::util::BoxService::new(mock.clone());
    let err = within_an_hour(deadline(ms(100)).layer(never).oneshot(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(mock.calls(), 0);
}
