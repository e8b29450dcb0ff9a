//! What the layers record on the `metrics` facade: exact counts after a
//! scripted run, per layer name.
#![cfg(feature = "metrics")]

use http::{Request, Response};
use rampart_context::{PropagateContextLayer, RequestIdLayer};
use rampart_core::{Context, ErrorKind, RequestId};
use rampart_testkit::{MetricsCapture, MetricsSnapshot};
use std::convert::Infallible;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt, service_fn};

fn echo_service() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone
{
    service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) })
}

fn request(ids: &[&'static str]) -> Request<()> {
    let mut b = Request::builder();
    for id in ids {
        b = b.header("x-request-id", *id);
    }
    b.body(()).unwrap()
}

async fn send<S>(svc: &S, req: Request<()>) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone,
{
    svc.clone().oneshot(req).await.unwrap()
}

const NAMES: [&str; 3] = [
    "rampart.request_id.generated",
    "rampart.request_id.accepted",
    "rampart.request_id.refused",
];

/// The three counters of `layer`. (A snapshot resets what it reads: take
/// one per check.)
fn counts(s: &MetricsSnapshot, layer: &str) -> [Option<u64>; 3] {
    NAMES.map(|n| s.counter(n, layer))
}

#[tokio::test(start_paused = true)]
async fn every_request_is_counted_once_as_generated_accepted_or_refused() {
    let cap = MetricsCapture::new();
    let svc = cap.install(|| RequestIdLayer::new().name("edge").layer(echo_service()));
    // 2 without an id, 3 valid, 3 refused (control character, too long,
    // sent twice).
    send(&svc, request(&[])).await;
    send(&svc, request(&[])).await;
    for id in ["req-1", "req-2", "01936f8e-7b7c-7cc3-9b1a-3f2d5e6a7b8c"] {
        let res = send(&svc, request(&[id])).await;
        assert_eq!(res.headers()["x-request-id"], id);
    }
    let long: &'static str = Box::leak("a".repeat(200).into_boxed_str());
    for ids in [&["bad\tid"][..], &[long][..], &["a", "b"][..]] {
        let res = send(&svc, request(ids)).await;
        assert_ne!(res.headers()["x-request-id"], ids[0]);
    }
    let s = cap.snapshot();
    assert_eq!(counts(&s, "edge"), [Some(2), Some(3), Some(3)]);
    let mut names = NAMES.map(str::to_owned).to_vec();
    names.sort();
    assert_eq!(s.names(), names);
}

#[tokio::test(start_paused = true)]
async fn two_layers_with_different_names_record_separately() {
    let cap = MetricsCapture::new();
    let (a, b) = cap.install(|| {
        (
            RequestIdLayer::new().name("a").layer(echo_service()),
            RequestIdLayer::builder()
                .header("x-correlation-id")
                .accept_incoming(false)
                .name(String::from("b"))
                .build()
                .unwrap()
                .layer(echo_service()),
        )
    });
    send(&a, request(&["req-1"])).await;
    send(&a, request(&[])).await;
    send(&a, request(&[])).await;
    let mut refused = request(&[]);
    refused
        .headers_mut()
        .insert("x-correlation-id", "req-2".parse().unwrap());
    send(&b, refused).await;
    send(&b, request(&[])).await;
    let s = cap.snapshot();
    assert_eq!(counts(&s, "a"), [Some(2), Some(1), Some(0)]);
    // Incoming ids are not accepted by `b`: the one it got was refused.
    assert_eq!(counts(&s, "b"), [Some(1), Some(0), Some(1)]);
}

#[tokio::test(start_paused = true)]
async fn layers_named_in_their_builders_register_no_series_under_the_default_name() {
    let cap = MetricsCapture::new();
    let (ids, client) = cap.install(|| {
        (
            RequestIdLayer::builder().name("edge").build().unwrap(),
            PropagateContextLayer::builder()
                .name("out")
                .build()
                .unwrap(),
        )
    });
    send(&cap.install(|| ids.layer(echo_service())), request(&[])).await;
    drop(cap.install(|| client.layer(echo_service())));
    let s = cap.snapshot();
    assert_eq!(counts(&s, "edge"), [Some(1), Some(0), Some(0)]);
    assert_eq!(counts(&s, "default"), [None, None, None]);
    assert_eq!(s.counter("rampart.context.missing", "default"), None);
    assert_eq!(s.counter("rampart.context.missing", "out"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn an_unnamed_layer_records_as_default_and_a_custom_header_keeps_the_name() {
    let cap = MetricsCapture::new();
    let (plain, custom) = cap.install(|| {
        (
            RequestIdLayer::new().layer(echo_service()),
            RequestIdLayer::new()
                .name("custom")
                .with_header(http::HeaderName::from_static("x-trace"))
                .layer(echo_service()),
        )
    });
    send(&plain, request(&[])).await;
    let mut req = request(&[]);
    req.headers_mut().insert("x-trace", "t-1".parse().unwrap());
    let res = send(&custom, req).await;
    assert_eq!(res.headers()["x-trace"], "t-1");
    let s = cap.snapshot();
    assert_eq!(counts(&s, "default"), [Some(1), Some(0), Some(0)]);
    assert_eq!(counts(&s, "custom"), [Some(0), Some(1), Some(0)]);
}

#[tokio::test(start_paused = true)]
async fn an_id_set_by_a_layer_further_out_is_counted_by_that_layer_only() {
    let cap = MetricsCapture::new();
    let svc = cap.install(|| {
        tower::ServiceBuilder::new()
            .layer(RequestIdLayer::new().name("outer"))
            .layer(RequestIdLayer::new().name("inner"))
            .service(echo_service())
    });
    send(&svc, request(&["req-1"])).await;
    send(&svc, request(&[])).await;
    let s = cap.snapshot();
    assert_eq!(counts(&s, "outer"), [Some(1), Some(1), Some(0)]);
    assert_eq!(counts(&s, "inner"), [Some(0), Some(0), Some(0)]);
}

#[tokio::test(start_paused = true)]
async fn propagation_counts_calls_without_a_context_and_calls_past_the_deadline() {
    let cap = MetricsCapture::new();
    let (client, other) = cap.install(|| {
        (
            PropagateContextLayer::new()
                .with_deadline()
                .name("billing")
                .layer(echo_service()),
            PropagateContextLayer::builder()
                .name("other")
                .build()
                .unwrap()
                .layer(echo_service()),
        )
    });
    let id = RequestId::parse(b"req-1").unwrap();
    // Sent with a context: nothing counted.
    let ctx = Context::new()
        .with_request_id(id.clone())
        .with_timeout(Duration::from_millis(100));
    ctx.clone()
        .scope(client.clone().oneshot(request(&[])))
        .await
        .unwrap();
    // No context at all: counted as missing, sent untouched.
    let res = client.clone().oneshot(request(&[])).await.unwrap();
    assert!(res.headers().get("x-request-id").is_none());
    // The deadline passed: not sent, counted as expired (twice).
    tokio::time::advance(Duration::from_millis(150)).await;
    for _ in 0..2 {
        let err = ctx
            .clone()
            .scope(client.clone().oneshot(request(&[])))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    }
    // The other layer saw one call without a context.
    other.clone().oneshot(request(&[])).await.unwrap();
    let s = cap.snapshot();
    assert_eq!(
        s.counter("rampart.context.deadline.expired", "billing"),
        Some(2)
    );
    assert_eq!(s.counter("rampart.context.missing", "billing"), Some(1));
    assert_eq!(
        s.counter("rampart.context.deadline.expired", "other"),
        Some(0)
    );
    assert_eq!(s.counter("rampart.context.missing", "other"), Some(1));
}
