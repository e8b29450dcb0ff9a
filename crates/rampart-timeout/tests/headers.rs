//! The server side of propagation: `DeadlineLayer::from_headers` starts the
//! deadline from `grpc-timeout` / the HTTP header, caps it, and handles
//! hostile values per policy (paused clock).

mod common;
use common::{ms, within_an_hour};
use http::{HeaderValue, Request, Response};
use proptest::prelude::*;
use rampart_core::grpc::Code;
use rampart_core::{Context, ErrorKind, HandleErrorsLayer};
use rampart_testkit::{MockReply, MockService};
use rampart_timeout::{DeadlineHeaders, DeadlineLayer, FromHeaders, OnMalformed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

type Req = Request<()>;
type Res = Response<String>;

/// The deadlines the inner work saw, one per call.
type Seen = Arc<Mutex<Vec<Option<Instant>>>>;

const BUDGET: Duration = Duration::from_secs(5);

fn server(policy: OnMalformed) -> DeadlineLayer<FromHeaders> {
    DeadlineLayer::from_headers(BUDGET, DeadlineHeaders::new()).on_malformed(policy)
}

/// A mock answering 200 at once that records the deadline it saw.
fn recording() -> (MockService<Req, Res>, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mock = MockService::<Req, Res>::new(|_| MockReply::ok(Response::new("ok".into())));
    let log = seen.clone();
    mock.on_call(move |_| log.lock().unwrap().push(Context::current_deadline()));
    (mock, seen)
}

fn grpc(timeout: &[u8]) -> Req {
    Request::post("/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", HeaderValue::from_bytes(timeout).unwrap())
        .body(())
        .unwrap()
}

fn http(ms_header: &[u8]) -> Req {
    Request::get("/")
        .header(
            "x-request-timeout-ms",
            HeaderValue::from_bytes(ms_header).unwrap(),
        )
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_starts_the_deadline() {
    let (mock, seen) = recording();
    let now = Instant::now();
    let res = within_an_hour(
        server(OnMalformed::Ignore)
            .layer(mock)
            .oneshot(grpc(b"250m")),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(*seen.lock().unwrap(), [Some(now + ms(250))]);
}

#[tokio::test(start_paused = true)]
async fn http_header_starts_the_deadline_and_a_custom_name_works() {
    let (mock, seen) = recording();
    let now = Instant::now();
    server(OnMalformed::Ignore)
        .layer(mock.clone())
        .oneshot(http(b"1500"))
        .await
        .unwrap();
    let custom = DeadlineLayer::from_headers(
        BUDGET,
        DeadlineHeaders::new()
            .try_http_header("x-deadline-ms")
            .unwrap(),
    );
    let req = Request::get("/")
        .header("x-deadline-ms", "40")
        .body(())
        .unwrap();
    custom.layer(mock).oneshot(req).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [Some(now + ms(1500)), Some(now + ms(40))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_longer_caller_deadline_is_capped_by_the_budget_and_no_header_means_the_budget() {
    let (mock, seen) = recording();
    let now = Instant::now();
    let svc = server(OnMalformed::Reject).layer(mock);
    svc.clone().oneshot(grpc(b"1H")).await.unwrap();
    svc.clone().oneshot(http(b"999999")).await.unwrap();
    svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [Some(now + BUDGET); 3]);
}

#[tokio::test(start_paused = true)]
async fn the_propagated_deadline_fires_with_deadline_exceeded() {
    let mock = MockService::<Req, Res>::new(|_| MockReply::pending());
    let start = Instant::now();
    let err = within_an_hour(
        server(OnMalformed::Ignore)
            .layer(mock.clone())
            .oneshot(grpc(b"300m")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), ms(300));
    assert_eq!(mock.dropped(), 1);
}

#[tokio::test(start_paused = true)]
async fn expired_on_arrival_is_answered_without_calling_the_inner_service() {
    let mock = MockService::<Req, Res>::new(|_| MockReply::ok(Response::new(String::new())));
    let svc = HandleErrorsLayer::new().layer(server(OnMalformed::Reject).layer(mock.clone()));
    for zero in [&b"0n"[..], b"0m", b"0S", b"00000000H"] {
        let res = within_an_hour(svc.clone().oneshot(grpc(zero)))
            .await
            .unwrap();
        assert_eq!(
            Code::from_headers(res.headers()),
            Some(Code::DeadlineExceeded),
            "{zero:?}"
        );
    }
    let res = within_an_hour(svc.oneshot(http(b"0"))).await.unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(mock.calls(), 0);
}

/// The hostile values of the issue, and a few more.
fn hostile() -> Vec<Vec<u8>> {
    vec![
        b"123456789S".to_vec(),
        b"abc".to_vec(),
        b"".to_vec(),
        vec![b'9'; 1000],
        [vec![b'9'; 1000], b"S".to_vec()].concat(),
        b"-1S".to_vec(),
        b"1.5S".to_vec(),
        b"10s".to_vec(),
        b" 1S".to_vec(),
        b"\xff\xfe".to_vec(),
        b"1e3".to_vec(),
    ]
}

#[tokio::test(start_paused = true)]
async fn hostile_headers_are_ignored_under_the_ignore_policy() {
    for value in hostile() {
        let (mock, seen) = recording();
        let now = Instant::now();
        let svc = server(OnMalformed::Ignore).layer(mock.clone());
        assert_eq!(
            svc.clone().oneshot(grpc(&value)).await.unwrap().status(),
            200
        );
        assert_eq!(svc.oneshot(http(&value)).await.unwrap().status(), 200);
        assert_eq!(mock.calls(), 2, "{value:?}");
        assert_eq!(
            *seen.lock().unwrap(),
            [Some(now + BUDGET); 2],
            "{value:?}: the budget applies"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn hostile_headers_are_rejected_with_400_or_invalid_argument_under_the_reject_policy() {
    for value in hostile() {
        let mock = MockService::<Req, Res>::new(|_| MockReply::ok(Response::new(String::new())));
        let svc = server(OnMalformed::Reject).layer(mock.clone());
        let res = within_an_hour(svc.clone().oneshot(grpc(&value)))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{value:?}");
        assert_eq!(res.headers()["content-type"], "application/grpc");
        assert_eq!(
            Code::from_headers(res.headers()),
            Some(Code::InvalidArgument),
            "{value:?}"
        );
        let res = within_an_hour(svc.oneshot(http(&value))).await.unwrap();
        assert_eq!(res.status(), 400, "{value:?}");
        assert_eq!(
            mock.calls(),
            0,
            "{value:?}: the inner service is never called"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_repeated_deadline_header_is_malformed() {
    let mock = MockService::<Req, Res>::new(|_| MockReply::ok(Response::new(String::new())));
    let mut req = grpc(b"1S");
    req.headers_mut()
        .append("grpc-timeout", HeaderValue::from_static("1S"));
    let res = within_an_hour(server(OnMalformed::Reject).layer(mock.clone()).oneshot(req))
        .await
        .unwrap();
    assert_eq!(
        Code::from_headers(res.headers()),
        Some(Code::InvalidArgument)
    );
    assert_eq!(mock.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_read_only_grpc_timeout_and_http_requests_only_the_http_header() {
    let (mock, seen) = recording();
    let now = Instant::now();
    let svc = server(OnMalformed::Reject).layer(mock);
    let mut g = grpc(b"100m");
    g.headers_mut()
        .insert("x-request-timeout-ms", HeaderValue::from_static("garbage"));
    svc.clone().oneshot(g).await.unwrap();
    let mut h = http(b"200");
    h.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("garbage"));
    svc.oneshot(h).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [Some(now + ms(100)), Some(now + ms(200))]
    );
}

#[tokio::test(start_paused = true)]
async fn headers_can_be_turned_off() {
    let (mock, seen) = recording();
    let now = Instant::now();
    let headers = DeadlineHeaders::new()
        .without_grpc_timeout()
        .without_http_header();
    let svc = DeadlineLayer::from_headers(ms(700), headers)
        .on_malformed(OnMalformed::Reject)
        .layer(mock);
    svc.clone().oneshot(grpc(b"garbage")).await.unwrap();
    svc.oneshot(http(b"1")).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [Some(now + ms(700)); 2]);
}

#[tokio::test(start_paused = true)]
async fn a_context_stored_in_the_request_is_updated_and_inherited() {
    let seen = Arc::new(Mutex::new(None));
    let log = seen.clone();
    let mock = MockService::<Req, Res>::new(|_| MockReply::ok(Response::new(String::new())));
    mock.on_call(move |req: &Req| {
        *log.lock().unwrap() = Some((
            Context::from_request(req).and_then(Context::deadline),
            Context::current().and_then(|c| c.request_id().map(ToString::to_string)),
        ));
    });
    let now = Instant::now();
    let mut req = grpc(b"80m");
    let id = rampart_core::RequestId::parse(b"edge-7").unwrap();
    req.extensions_mut()
        .insert(Context::new().with_request_id(id));
    server(OnMalformed::Ignore)
        .layer(mock)
        .oneshot(req)
        .await
        .unwrap();
    let (stored, id) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(stored, Some(now + ms(80)));
    assert_eq!(id.as_deref(), Some("edge-7"));
}

proptest! {
    // Seeded: the same 256 cases on every run.
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20_250_401_u64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any header value: no panic, and either the inner service runs with a
    /// deadline within the budget, or (reject policy) the request is
    /// answered without it.
    #[test]
    fn any_header_value_is_handled_per_policy(
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
        reject in any::<bool>(),
        use_grpc in any::<bool>(),
    ) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let policy = if reject { OnMalformed::Reject } else { OnMalformed::Ignore };
        let (mock, seen) = recording();
        let mut req = if use_grpc { grpc(b"1S") } else { http(b"1") };
        let name = if use_grpc { "grpc-timeout" } else { "x-request-timeout-ms" };
        req.headers_mut().insert(name, value);
        let (res, now) = rt.block_on(async {
            let now = Instant::now();
            (server(policy).layer(mock.clone()).oneshot(req).await, now)
        });
        match res {
            Ok(res) if res.status() == 200 && Code::from_headers(res.headers()).is_none() => {
                prop_assert_eq!(mock.calls(), 1);
                let at = seen.lock().unwrap()[0].unwrap();
                prop_assert!(at > now && at <= now + BUDGET);
            }
            Ok(_) => {
                prop_assert!(reject, "only the reject policy answers by itself");
                prop_assert_eq!(mock.calls(), 0);
            }
            Err(e) => {
                // "0…" values: expired on arrival.
                prop_assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
                prop_assert_eq!(mock.calls(), 0);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_rejected_grpc_web_header_is_answered_in_grpc_web_with_the_requests_content_type() {
    let (mock, _) = recording();
    let req = Request::post("/pkg.Svc/Method")
        .header("content-type", "application/grpc-web+proto")
        .header("grpc-timeout", "soon")
        .body(())
        .unwrap();
    let res = server(OnMalformed::Reject)
        .layer(mock.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/grpc-web+proto"
    );
    assert_eq!(
        res.headers().get("grpc-status").unwrap(),
        &HeaderValue::from(Code::InvalidArgument as i32)
    );
    assert_eq!(
        res.headers().get("grpc-message").unwrap(),
        "malformed grpc-timeout"
    );
    assert_eq!(mock.calls(), 0);
}
