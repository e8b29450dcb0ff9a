//! With the `metrics` feature, the timeout and deadline layers count what
//! they cut short on the `metrics` facade, labelled by the layer's name:
//! exact values after scripted runs on the paused clock (the `layer` field
//! of their tracing events is in `tracing.rs`).
#![cfg(feature = "metrics")]

mod common;
use common::{ms, within_an_hour};
use http::{HeaderValue, Request, Response};
use rampart_core::{Context, ErrorKind};
use rampart_testkit::{Gate, MetricsCapture, MetricsSnapshot, MockReply, MockService, ReadyMode};
use rampart_timeout::{
    DeadlineHeaders, DeadlineLayer, OnMalformed, PropagateDeadlineLayer, TimeoutLayer,
};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const FIRED: &str = "rampart.timeout.fired";
const EXCEEDED: &str = "rampart.deadline.exceeded";
const ON_ARRIVAL: &str = "rampart.deadline.expired_on_arrival";
const MALFORMED: &str = "rampart.deadline.header.malformed";

/// The four counters of `layer` (`None`: not registered for that layer).
fn counters(s: &MetricsSnapshot, layer: &str) -> [Option<u64>; 4] {
    [FIRED, EXCEEDED, ON_ARRIVAL, MALFORMED].map(|name| s.counter(name, layer))
}

#[tokio::test(start_paused = true)]
async fn one_slow_call_among_three_is_one_timeout_fired() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| TimeoutLayer::new(ms(100)).name("attempt"));
    let mock = MockService::scripted([
        MockReply::ok(1u8).after(ms(50)),
        MockReply::ok(2u8).after(ms(500)),
        MockReply::ok(3u8),
    ]);
    let svc = cap.install(|| layer.layer(mock.clone()));
    assert_eq!(svc.clone().oneshot(()).await.unwrap(), 1);
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(svc.oneshot(()).await.unwrap(), 3);
    assert_eq!(mock.dropped(), 1);

    let s = cap.snapshot();
    // A timeout layer registers no series it cannot record.
    assert_eq!(counters(&s, "attempt"), [Some(1), Some(0), None, None]);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_cut_short_by_the_request_deadline_counts_as_deadline_exceeded() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| TimeoutLayer::new(ms(1000)).name("attempt"));
    let mock = MockService::new(|(): ()| MockReply::<u8>::pending());
    let ctx = Context::new().with_deadline(Instant::now() + ms(50));
    let err = within_an_hour(ctx.scope(cap.install(|| layer.layer(mock)).oneshot(())))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);

    let s = cap.snapshot();
    assert_eq!(counters(&s, "attempt"), [Some(0), Some(1), None, None]);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_spent_waiting_for_readiness_is_counted_once() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| TimeoutLayer::new(ms(100)).name("attempt"));
    let mock = MockService::new(|(): ()| MockReply::ok(1u8));
    mock.set_ready(ReadyMode::Gated(Gate::new())); // never opened
    let err = within_an_hour(cap.install(|| layer.layer(mock.clone())).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(mock.calls(), 0);

    let s = cap.snapshot();
    assert_eq!(counters(&s, "attempt"), [Some(1), Some(0), None, None]);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_counts_the_calls_it_cut_short_and_those_that_arrived_too_late() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| DeadlineLayer::new(ms(200)).name("request"));
    let mock = MockService::scripted([
        MockReply::ok(1u8).after(ms(100)),
        MockReply::ok(2u8).after(ms(300)), // cut short at 200 ms
    ]);
    let svc = cap.install(|| layer.layer(mock.clone()));
    assert_eq!(svc.clone().oneshot(()).await.unwrap(), 1);
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    // Two requests whose (outer) deadline already passed: not sent.
    for _ in 0..2 {
        let ctx = Context::new().with_deadline(Instant::now());
        let err = ctx.scope(svc.clone().oneshot(())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    }
    // A wait for readiness that uses up the budget.
    mock.set_ready(ReadyMode::Gated(Gate::new()));
    let err = within_an_hour(svc.oneshot(())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(mock.calls(), 2);

    let s = cap.snapshot();
    assert_eq!(counters(&s, "request"), [None, Some(2), Some(2), None]);
}

fn grpc(timeout: &'static [u8]) -> Request<()> {
    Request::post("/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", HeaderValue::from_bytes(timeout).unwrap())
        .body(())
        .unwrap()
}

fn http(value: &'static [u8]) -> Request<()> {
    Request::get("/")
        .header(
            "x-request-timeout-ms",
            HeaderValue::from_bytes(value).unwrap(),
        )
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn malformed_deadline_headers_are_counted_whether_ignored_or_rejected() {
    let cap = MetricsCapture::new();
    let (lenient, strict) = cap.install(|| {
        let server = |policy| {
            DeadlineLayer::from_headers(ms(5000), DeadlineHeaders::new()).on_malformed(policy)
        };
        (
            server(OnMalformed::Ignore).name("lenient"),
            server(OnMalformed::Reject).name("strict"),
        )
    });
    let mock = MockService::<Request<()>, Response<String>>::new(|_| {
        MockReply::ok(Response::new("ok".into()))
    });
    let lenient = cap.install(|| lenient.layer(mock.clone()));
    let strict = cap.install(|| strict.layer(mock.clone()));
    for req in [grpc(b"1x"), http(b"-5"), http(b"12ms"), grpc(b"100m")] {
        let res = lenient.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    for req in [http(b"soon"), grpc(b"123456789S"), http(b"250")] {
        strict.clone().oneshot(req).await.unwrap();
    }
    // A caller's deadline of zero: expired on arrival, not malformed.
    let err = strict.oneshot(grpc(b"0n")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(mock.calls(), 5);

    let s = cap.snapshot();
    assert_eq!(counters(&s, "lenient"), [None, Some(0), Some(0), Some(3)]);
    assert_eq!(counters(&s, "strict"), [None, Some(0), Some(1), Some(2)]);
}

#[tokio::test(start_paused = true)]
async fn a_client_request_with_no_time_left_is_counted_as_expired_on_arrival() {
    let cap = MetricsCapture::new();
    let layer = cap.install(|| PropagateDeadlineLayer::new().name("billing-client"));
    let mock = MockService::<Request<()>, Response<()>>::new(|_| MockReply::ok(Response::new(())));
    let svc = cap.install(|| layer.layer(mock.clone()));
    let get = || Request::get("/").body(()).unwrap();
    // No deadline, then plenty of time: sent.
    svc.clone().oneshot(get()).await.unwrap();
    let ctx = Context::new().with_deadline(Instant::now() + ms(800));
    ctx.scope(svc.clone().oneshot(get())).await.unwrap();
    // Less than a millisecond left: not sent.
    let ctx = Context::new().with_deadline(Instant::now() + ms(800));
    tokio::time::advance(ms(800)).await;
    let err = ctx.scope(svc.oneshot(get())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(mock.calls(), 2);

    let s = cap.snapshot();
    assert_eq!(counters(&s, "billing-client"), [None, None, Some(1), None]);
}

#[tokio::test(start_paused = true)]
async fn two_timeout_layers_with_different_names_record_separately() {
    let cap = MetricsCapture::new();
    let (fast, slow) = cap.install(|| {
        (
            TimeoutLayer::new(ms(10)).name("fast"),
            TimeoutLayer::new(ms(1000)).name("slow"),
        )
    });
    let mock = MockService::new(|(): ()| MockReply::ok(1u8).after(ms(100)));
    for _ in 0..3 {
        cap.install(|| fast.layer(mock.clone()))
            .oneshot(())
            .await
            .unwrap_err();
        cap.install(|| slow.layer(mock.clone()))
            .oneshot(())
            .await
            .unwrap();
    }
    let unnamed = cap.install(|| TimeoutLayer::new(ms(10)));
    cap.install(|| unnamed.layer(mock))
        .oneshot(())
        .await
        .unwrap_err();

    let s = cap.snapshot();
    assert_eq!(s.counter(FIRED, "fast"), Some(3));
    assert_eq!(s.counter(FIRED, "slow"), Some(0));
    assert_eq!(s.counter(FIRED, "default"), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_an_inner_layer_hits_first_is_counted_by_the_deadline_layer() {
    // A queue or limit inside gives up at the request's deadline and
    // answers `DeadlineExceeded` before the deadline layer's own timer
    // fires: the operator still sees the deadline in the deadline layer's
    // counter.
    let cap = MetricsCapture::new();
    let layer = cap.install(|| DeadlineLayer::new(ms(100)).name("edge"));
    let inner = tower::service_fn(|(): ()| async {
        tokio::time::sleep(ms(100)).await;
        Err::<u8, _>(rampart_core::Error::deadline_exceeded())
    });
    let err = within_an_hour(cap.install(|| layer.layer(inner)).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    // An inner failure of another kind is not a deadline.
    let other = tower::service_fn(|(): ()| async { Err::<u8, _>(rampart_core::Error::closed()) });
    let err = within_an_hour(cap.install(|| layer.layer(other)).oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);

    let s = cap.snapshot();
    assert_eq!(counters(&s, "edge")[1], Some(1));
}
