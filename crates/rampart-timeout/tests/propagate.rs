//! The client side of propagation: `PropagateDeadlineLayer` writes the
//! remaining time on outgoing requests (paused clock).

mod common;
use common::ms;
use http::{HeaderMap, HeaderValue, Request, Response};
use rampart_core::{Context, ErrorKind};
use rampart_testkit::{MockReply, MockService};
use rampart_timeout::{DeadlineHeaders, DeadlineLayer, PropagateDeadlineLayer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};

type Req = Request<()>;
type Res = Response<()>;

/// The headers of every request the mock was called with.
type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// A mock that records the headers of every request it is called with.
fn recording() -> (MockService<Req, Res>, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mock = MockService::<Req, Res>::new(|_| MockReply::ok(Response::new(())));
    let log = seen.clone();
    mock.on_call(move |req: &Req| log.lock().unwrap().push(req.headers().clone()));
    (mock, seen)
}

fn grpc() -> Req {
    Request::post("/pkg.Svc/M")
        .header("content-type", "application/grpc+proto")
        .body(())
        .unwrap()
}

fn plain() -> Req {
    Request::get("/").body(()).unwrap()
}

/// Sends `req` through the layer inside a context whose deadline is
/// `total` from now, after `spent` of it went by.
async fn send(
    layer: &PropagateDeadlineLayer,
    mock: &MockService<Req, Res>,
    req: Req,
    total: Duration,
    spent: Duration,
) -> Result<Res, rampart_core::Error> {
    let ctx = Context::new().with_deadline(Instant::now() + total);
    tokio::time::advance(spent).await;
    ctx.scope(layer.clone().layer(mock.clone()).oneshot(req))
        .await
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_carry_the_remaining_time_not_the_original() {
    let (mock, seen) = recording();
    send(
        &PropagateDeadlineLayer::new(),
        &mock,
        grpc(),
        ms(1000),
        ms(300),
    )
    .await
    .unwrap();
    let h = &seen.lock().unwrap()[0];
    assert_eq!(h["grpc-timeout"], "700000u");
    assert!(
        h.get("x-request-timeout-ms").is_none(),
        "gRPC requests get grpc-timeout only"
    );
}

#[tokio::test(start_paused = true)]
async fn http_requests_carry_the_remaining_milliseconds() {
    let (mock, seen) = recording();
    send(
        &PropagateDeadlineLayer::new(),
        &mock,
        plain(),
        ms(1000),
        ms(300),
    )
    .await
    .unwrap();
    let custom = PropagateDeadlineLayer::with_headers(
        DeadlineHeaders::new()
            .try_http_header("x-deadline-ms")
            .unwrap(),
    );
    send(&custom, &mock, plain(), ms(90), ms(0)).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0]["x-request-timeout-ms"], "700");
    assert!(seen[0].get("grpc-timeout").is_none());
    assert_eq!(seen[1]["x-deadline-ms"], "90");
}

#[tokio::test(start_paused = true)]
async fn a_shorter_header_already_there_is_kept_a_longer_or_garbled_one_replaced() {
    let (mock, seen) = recording();
    let layer = PropagateDeadlineLayer::new();
    for existing in ["200m", "5S", "garbage"] {
        let mut req = grpc();
        req.headers_mut()
            .insert("grpc-timeout", HeaderValue::from_static(existing));
        send(&layer, &mock, req, ms(1000), ms(0)).await.unwrap();
    }
    let seen = seen.lock().unwrap();
    let written: Vec<_> = seen
        .iter()
        .map(|h| h["grpc-timeout"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(written, ["200m", "1000000u", "1000000u"]);
    assert!(
        seen.iter()
            .all(|h| h.get_all("grpc-timeout").iter().count() == 1)
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_deadline_the_request_goes_out_untouched() {
    let (mock, seen) = recording();
    PropagateDeadlineLayer::new()
        .layer(mock.clone())
        .oneshot(grpc())
        .await
        .unwrap();
    PropagateDeadlineLayer::new()
        .layer(mock)
        .oneshot(plain())
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .all(|h| h.get("grpc-timeout").is_none() && h.get("x-request-timeout-ms").is_none())
    );
}

#[tokio::test(start_paused = true)]
async fn with_no_time_left_nothing_is_sent() {
    let (mock, _) = recording();
    let layer = PropagateDeadlineLayer::new();
    let err = send(&layer, &mock, grpc(), ms(100), ms(100))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    // Less than a millisecond cannot be written in the HTTP header.
    let err = send(&layer, &mock, plain(), Duration::from_micros(900), ms(0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    // Even when nothing would be written, an expired deadline is not sent.
    let quiet = PropagateDeadlineLayer::with_headers(
        DeadlineHeaders::new()
            .without_http_header()
            .without_grpc_timeout(),
    );
    let err = send(&quiet, &mock, plain(), ms(10), ms(20))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(mock.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn headers_can_be_turned_off() {
    let (mock, seen) = recording();
    let quiet = PropagateDeadlineLayer::with_headers(
        DeadlineHeaders::new()
            .without_http_header()
            .without_grpc_timeout(),
    );
    send(&quiet, &mock, plain(), ms(500), ms(0)).await.unwrap();
    send(&quiet, &mock, grpc(), ms(500), ms(0)).await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .all(|h| h.get("grpc-timeout").is_none() && h.get("x-request-timeout-ms").is_none())
    );
    assert_eq!(quiet.headers().http_header_name(), None);
}

#[tokio::test(start_paused = true)]
async fn a_context_in_the_request_extensions_counts_too_and_the_earliest_wins() {
    let (mock, seen) = recording();
    let now = Instant::now();
    let mut req = grpc();
    req.extensions_mut()
        .insert(Context::new().with_deadline(now + ms(40)));
    PropagateDeadlineLayer::new()
        .layer(mock.clone())
        .oneshot(req)
        .await
        .unwrap();
    let mut req = grpc();
    req.extensions_mut()
        .insert(Context::new().with_deadline(now + ms(900)));
    Context::new()
        .with_deadline(now + ms(60))
        .scope(PropagateDeadlineLayer::new().layer(mock).oneshot(req))
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0]["grpc-timeout"], "40000000n");
    assert_eq!(seen[1]["grpc-timeout"], "60000000n");
}

#[tokio::test(start_paused = true)]
async fn a_client_stack_sends_the_deadline_its_deadline_layer_set() {
    let (mock, seen) = recording();
    let client = ServiceBuilder::new()
        .layer(DeadlineLayer::new(ms(300)))
        .layer(PropagateDeadlineLayer::new())
        .service(mock);
    client.clone().oneshot(plain()).await.unwrap();
    // Inside a caller with less time left, the caller's deadline is sent.
    Context::new()
        .with_deadline(Instant::now() + ms(120))
        .scope(client.oneshot(grpc()))
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0]["x-request-timeout-ms"], "300");
    assert_eq!(seen[1]["grpc-timeout"], "120000u");
}

#[tokio::test(start_paused = true)]
async fn inner_errors_are_rampart_errors() {
    let mock = MockService::<Req, Res>::scripted([MockReply::err("refused")]);
    let err = PropagateDeadlineLayer::new()
        .layer(mock)
        .oneshot(plain())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Inner);
}

#[test]
fn an_invalid_header_name_is_a_typed_error() {
    // `DeadlineHeaders` lives in rampart-core; its error converts into the
    // one `ConfigError` (re-exported here) with `?`.
    let build = |name| -> Result<DeadlineHeaders, rampart_timeout::ConfigError> {
        Ok(DeadlineHeaders::new().try_http_header(name)?)
    };
    let err = build("bad header\n").unwrap_err();
    assert_eq!(err.field(), "header");
    assert!(DeadlineHeaders::new().try_http_header("").is_err());
}
