//! HTTP and gRPC classification through the retry layer: idempotency,
//! `Retry-After`, connection refused, gRPC codes and pushback, the attempt
//! header — on a paused clock with scripted services.

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response, StatusCode};
use http_body_util::Full;
use rampart_core::classify::{ErrorRef, Outcome, classify_fn};
use rampart_core::{BoxError, ErrorKind};
use rampart_retry::{Backoff, ReplayBody, RetryLayer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

type Req = Request<ReplayBody<Full<Bytes>>>;

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(Instant, http::HeaderMap)>>>);

impl Seen {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn gaps(&self) -> Vec<Duration> {
        let v = self.0.lock().unwrap();
        v.windows(2).map(|w| w[1].0 - w[0].0).collect()
    }
    fn header(&self, i: usize, name: &str) -> Option<String> {
        let v = self.0.lock().unwrap();
        v[i].1.get(name).map(|h| h.to_str().unwrap().to_owned())
    }
}

/// A service answering with `replies` in order (then 200), recording each
/// request.
fn scripted(
    replies: Vec<Result<Response<()>, BoxError>>,
) -> (
    impl tower::Service<Req, Response = Response<()>, Error = BoxError, Future: Send> + Clone,
    Seen,
) {
    let seen = Seen::default();
    let s = seen.clone();
    let replies = Arc::new(Mutex::new(replies.into_iter()));
    let svc = service_fn(move |req: Req| {
        s.0.lock()
            .unwrap()
            .push((Instant::now(), req.headers().clone()));
        let next = replies.lock().unwrap().next();
        async move { next.unwrap_or_else(|| Ok(Response::new(()))) }
    });
    (svc, seen)
}

fn status(code: u16) -> Response<()> {
    Response::builder().status(code).body(()).unwrap()
}

fn retry_after(code: u16, value: &str) -> Response<()> {
    Response::builder()
        .status(code)
        .header("retry-after", value)
        .body(())
        .unwrap()
}

fn refused() -> Result<Response<()>, BoxError> {
    Err(Box::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionRefused,
    )))
}

fn request(method: Method) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("http://upstream/items")
        .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
        .unwrap()
}

fn grpc(code: u8, pushback: Option<&str>) -> Response<()> {
    let mut b = Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", code.to_string());
    if let Some(p) = pushback {
        b = b.header("grpc-retry-pushback-ms", p);
    }
    b.body(()).unwrap()
}

fn grpc_request() -> Request<Full<Bytes>> {
    Request::post("http://upstream/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn layer() -> RetryLayer<rampart_core::classify::HttpOrGrpcClassify, rampart_retry::ReplayHttp> {
    RetryLayer::http()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .stats()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_after_2_waits_2_seconds() {
    let (svc, seen) = scripted(vec![Ok(retry_after(503, "2"))]);
    let started = Instant::now();
    let res = layer()
        .layer(svc)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(seen.gaps(), [Duration::from_secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_cap_returns_the_failure_without_waiting() {
    let (svc, seen) = scripted(vec![Ok(retry_after(503, "99999"))]);
    let started = Instant::now();
    let res = layer()
        .layer(svc)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "99999");
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(seen.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date_is_honoured() {
    // Whole seconds from the wall clock: at least 1 s, at most 3 s away.
    let at = httpdate_in(Duration::from_secs(3));
    let (svc, seen) = scripted(vec![Ok(retry_after(429, &at))]);
    layer()
        .layer(svc)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    let gap = seen.gaps()[0];
    assert!(
        gap >= Duration::from_secs(1) && gap <= Duration::from_secs(3),
        "{gap:?}"
    );
}

fn httpdate_in(d: Duration) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now() + d)
}

#[tokio::test(start_paused = true)]
async fn post_is_not_retried_on_503() {
    let (svc, seen) = scripted(vec![Ok(status(503))]);
    let res = layer()
        .layer(svc)
        .oneshot(request(Method::POST))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn post_is_retried_on_connection_refused_before_sending() {
    let (svc, seen) = scripted(vec![refused()]);
    let res = layer()
        .layer(svc)
        .oneshot(request(Method::POST))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(seen.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn post_is_not_retried_after_a_timeout_that_may_have_reached_the_peer() {
    let (svc, seen) = scripted(vec![Err(Box::new(rampart_core::Error::timeout()))]);
    let err = layer()
        .layer(svc)
        .oneshot(request(Method::POST))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(seen.count(), 1);
    // The same failure on a GET is retried.
    let (svc, seen) = scripted(vec![Err(Box::new(rampart_core::Error::timeout()))]);
    let res = layer()
        .layer(svc)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    assert_eq!((res.status(), seen.count()), (StatusCode::OK, 2));
}

#[tokio::test(start_paused = true)]
async fn idempotent_retries_give_up_with_the_last_response() {
    let (svc, seen) = scripted(vec![Ok(status(502)), Ok(status(504)), Ok(status(503))]);
    let l = layer();
    let res = l.layer(svc).oneshot(request(Method::PUT)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.count(), 3);
    assert_eq!(l.stats().unwrap().exhausted, 1);
    // 4xx other than 408/429 is final.
    let (svc, seen) = scripted(vec![Ok(status(404))]);
    let res = layer()
        .layer(svc)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    assert_eq!((res.status().as_u16(), seen.count()), (404, 1));
}

#[tokio::test(start_paused = true)]
async fn attempt_header_is_set_on_retries() {
    let (svc, seen) = scripted(vec![Ok(status(503)), Ok(status(503))]);
    RetryLayer::http()
        .backoff(Backoff::none())
        .attempt_header(HeaderName::from_static("x-retry-attempt"))
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    assert_eq!(seen.count(), 3);
    assert_eq!(seen.header(0, "x-retry-attempt"), None);
    assert_eq!(seen.header(1, "x-retry-attempt").as_deref(), Some("2"));
    assert_eq!(seen.header(2, "x-retry-attempt").as_deref(), Some("3"));
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_is_retried_and_pushback_sets_the_delay() {
    let (svc, seen) = scripted(vec![
        Ok(grpc(14, None)),
        Ok(grpc(14, Some("250"))),
        Ok(grpc(0, None)),
    ]);
    let res = RetryLayer::http()
        .max_attempts(4)
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(grpc_request())
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "0");
    assert_eq!(
        seen.gaps(),
        [Duration::from_millis(100), Duration::from_millis(250)]
    );
}

// gRPC A6: after a pushback the backoff restarts from its initial delay.
// 100 ms doubling, UNAVAILABLE four times, the second with a pushback of
// 50 ms: sleeps 100, 50, 100, 200 ms (not 100, 50, 200, 400).
#[tokio::test(start_paused = true)]
async fn grpc_pushback_restarts_the_backoff_from_its_initial_delay() {
    let (svc, seen) = scripted(vec![
        Ok(grpc(14, None)),
        Ok(grpc(14, Some("50"))),
        Ok(grpc(14, None)),
        Ok(grpc(14, None)),
        Ok(grpc(0, None)),
    ]);
    let res = RetryLayer::http()
        .max_attempts(5)
        .backoff(
            Backoff::exponential(Duration::from_millis(100))
                .multiplier(2.0)
                .jitter(rampart_retry::Jitter::None),
        )
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(grpc_request())
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "0");
    let ms = |v: u64| Duration::from_millis(v);
    assert_eq!(seen.gaps(), [ms(100), ms(50), ms(100), ms(200)]);
}

// The same rule for HTTP: a `Retry-After` restarts the backoff too.
#[tokio::test(start_paused = true)]
async fn retry_after_restarts_the_backoff_too() {
    let (svc, seen) = scripted(vec![
        Ok(status(503)),
        Ok(status(503)),
        Ok(retry_after(503, "1")),
        Ok(status(503)),
    ]);
    RetryLayer::http()
        .max_attempts(5)
        .backoff(
            Backoff::exponential(Duration::from_millis(100)).jitter(rampart_retry::Jitter::None),
        )
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    let ms = |v: u64| Duration::from_millis(v);
    assert_eq!(seen.gaps(), [ms(100), ms(200), ms(1000), ms(100)]);
}

#[tokio::test(start_paused = true)]
async fn grpc_garbled_pushback_and_bare_resource_exhausted_are_not_retried() {
    for reply in [
        Ok(grpc(14, Some("-1"))),
        Ok(grpc(14, Some("soon"))),
        Ok(grpc(8, None)),
    ] {
        let (svc, seen) = scripted(vec![reply]);
        layer().layer(svc).oneshot(grpc_request()).await.unwrap();
        assert_eq!(seen.count(), 1);
    }
    // RESOURCE_EXHAUSTED with a valid pushback is.
    let (svc, seen) = scripted(vec![Ok(grpc(8, Some("10")))]);
    layer().layer(svc).oneshot(grpc_request()).await.unwrap();
    assert_eq!(seen.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_closure_decides_what_is_retryable() {
    let (svc, seen) = scripted(vec![Ok(status(409)), Ok(status(409))]);
    let res = RetryLayer::http()
        .classify(classify_fn(
            |r: Result<&Response<()>, ErrorRef<'_>>| match r {
                Ok(res) if res.status() == StatusCode::CONFLICT => Outcome::Retryable {
                    after: Some(Duration::from_millis(5)),
                },
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Fatal,
            },
        ))
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(request(Method::POST))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(seen.gaps(), [Duration::from_millis(5); 2]);
}

#[tokio::test(start_paused = true)]
async fn cloneable_http_requests_can_skip_body_replay() {
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let svc = service_fn(move |req: Request<()>| {
        let mut n = c.lock().unwrap();
        *n += 1;
        let code = if *n == 1 { 503 } else { 200 };
        assert_eq!(req.uri(), "/x");
        async move { Ok::<_, BoxError>(Response::builder().status(code).body(()).unwrap()) }
    });
    let res = RetryLayer::http()
        .clone_requests()
        .backoff(Backoff::none())
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(Request::get("/x").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(*calls.lock().unwrap(), 2);
}
